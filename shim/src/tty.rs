//! The terminal of a task started with `-t`: a pty the shim owns, copied over the client's
//! FIFOs.
//!
//! For a Linux container runc hands the pty master to the shim and the process gets the
//! slave; a wasm program runs inside the shim, so the shim makes the pty itself and gives the
//! program the slave as its stdin, stdout and stderr. Two copier threads connect the master
//! to the client: stdin FIFO → master (the line discipline echoes and edits as on any
//! terminal), master → stdout FIFO. Resizes go to the master.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, Winsize};

use crate::error::{ShimError, ShimResult};

/// The host side of a task's terminal.
pub struct Terminal {
    master: File,
    /// Written to (or dropped) to tell the stdin copier to stop.
    stop_stdin: Option<OwnedFd>,
    /// Signalled when the output copier has written everything the program wrote.
    output_done: mpsc::Receiver<()>,
}

/// The slave side, for the program: three descriptors of the same terminal.
pub struct TerminalSlave {
    /// The program's stdin.
    pub stdin: File,
    /// The program's stdout.
    pub stdout: File,
    /// The program's stderr.
    pub stderr: File,
}

fn internal(what: &str, e: impl std::fmt::Display) -> ShimError {
    ShimError::Internal(format!("terminal: {what}: {e}"))
}

impl Terminal {
    /// Opens a pty and starts copying: `stdin` (a FIFO path, or none) into it, its output
    /// into `stdout` (already open).
    pub fn open(
        stdin: Option<&str>,
        stdout: Option<File>,
    ) -> ShimResult<(Terminal, TerminalSlave)> {
        let pty = openpty(None, None).map_err(|e| internal("openpty", e))?;
        let master = File::from(pty.master);
        let slave = File::from(pty.slave);
        let dup = |f: &File| f.try_clone().map_err(|e| internal("dup", e));
        let slave_files = TerminalSlave {
            stdin: dup(&slave)?,
            stdout: dup(&slave)?,
            stderr: slave,
        };

        let (done_tx, output_done) = mpsc::channel();
        let reader = dup(&master)?;
        std::thread::Builder::new()
            .name("tty-out".into())
            .spawn(move || {
                copy_output(reader, stdout);
                let _ = done_tx.send(());
            })
            .map_err(|e| internal("starting the output copier", e))?;

        let mut stop_stdin = None;
        if let Some(path) = stdin {
            let fifo = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| internal(&format!("opening stdin {path}"), e))?;
            let (wake_read, wake_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| internal("pipe", e))?;
            let writer = dup(&master)?;
            std::thread::Builder::new()
                .name("tty-in".into())
                .spawn(move || copy_input(fifo, wake_read, writer))
                .map_err(|e| internal("starting the input copier", e))?;
            stop_stdin = Some(wake_write);
        }
        Ok((
            Terminal {
                master,
                stop_stdin,
                output_done,
            },
            slave_files,
        ))
    }

    /// Sets the terminal's size, as `ResizePty` asks.
    pub fn resize(&self, width: u32, height: u32) -> ShimResult<()> {
        let size = Winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc < 0 {
            return Err(internal("resizing", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Ends the program's input, as `CloseIO` asks: the stdin copier stops and the terminal
    /// gets an end-of-file character, which a read on the slave returns as EOF.
    pub fn close_stdin(&mut self) {
        self.stop_stdin = None;
        let eof = [control_char(&self.master, libc::VEOF).unwrap_or(4)];
        if let Err(e) = (&self.master).write_all(&eof) {
            log::debug!("terminal: writing EOF: {e}");
        }
    }

    /// Waits (at most `timeout`) until everything the program wrote has been copied to the
    /// client, so its exit is reported after its last output.
    pub fn wait_output(&self, timeout: Duration) {
        let _ = self.output_done.recv_timeout(timeout);
    }
}

/// The terminal's control character `index` (VEOF...), from its termios.
fn control_char(master: &File, index: usize) -> Option<u8> {
    let termios = nix::sys::termios::tcgetattr(master.as_fd()).ok()?;
    termios.control_chars.get(index).copied()
}

/// master → client, until every slave descriptor is closed (EIO) or the client is gone.
fn copy_output(mut master: File, stdout: Option<File>) {
    let mut buf = [0u8; 8192];
    let mut stdout = stdout;
    loop {
        let n = match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: the program's side is closed.
            Err(_) => break,
        };
        if let Some(out) = stdout.as_mut() {
            if out.write_all(&buf[..n]).is_err() {
                // Keep draining the master so the program never blocks on a dead client.
                stdout = None;
            }
        }
    }
}

/// client → master, until the client closes its end or the terminal is told to stop.
fn copy_input(mut fifo: File, wake: OwnedFd, mut master: File) {
    let mut buf = [0u8; 8192];
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let woken = fds[1].revents().is_some_and(|r| !r.is_empty());
        let readable = fds[0].revents().unwrap_or(PollFlags::empty());
        if woken {
            return;
        }
        // Linux reports POLLHUP on a FIFO only once a writer has come and gone: the client
        // closed its stdin, so the copy is over (as when `CloseIO` arrives).
        if readable.contains(PollFlags::POLLHUP) && !readable.contains(PollFlags::POLLIN) {
            return;
        }
        match fifo.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if master.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(slave: &File) -> (u16, u16) {
        let mut size = Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the pointer, which lives across the call.
        let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(rc, 0);
        (size.ws_col, size.ws_row)
    }

    #[test]
    fn the_program_sees_the_size_resize_sets_and_its_output_reaches_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out");
        let out = File::create(&out_path).unwrap();
        let (terminal, slave) = Terminal::open(None, Some(out)).unwrap();
        terminal.resize(132, 43).unwrap();
        assert_eq!(size_of(&slave.stdout), (132, 43));
        (&slave.stdout).write_all(b"line\n").unwrap();
        drop(slave);
        terminal.wait_output(Duration::from_secs(5));
        // The line discipline's output processing: \n becomes \r\n.
        assert_eq!(std::fs::read(&out_path).unwrap(), b"line\r\n");
    }

    #[test]
    fn close_stdin_gives_the_program_end_of_file() {
        let (mut terminal, slave) = Terminal::open(None, None).unwrap();
        (&terminal.master).write_all(b"abc\n").unwrap();
        terminal.close_stdin();
        let mut input = String::new();
        let mut stdin = slave.stdin;
        stdin.read_to_string(&mut input).unwrap();
        assert_eq!(input, "abc\n");
    }
}
