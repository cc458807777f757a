//! The terminal of a task started with `-t`: a pty the shim owns, copied over the client's
//! FIFOs.
//!
//! For a Linux container runc hands the pty master to the shim and the process gets the
//! slave; for a wasm container the shim makes the pty itself and gives the container's
//! process the slave as its stdin, stdout, stderr and controlling terminal (so the line
//! discipline's ^C is a real SIGINT to it). Two copier threads connect the master
//! to the client: stdin FIFO → master (the line discipline echoes and edits as on any
//! terminal), master → stdout FIFO. Resizes go to the master.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, SpecialCharacterIndices as Cc};

use crate::error::{ShimError, ShimResult};

/// The byte the control pipe carries to ask the stdin copier for end-of-file.
const CLOSE_STDIN: u8 = b'c';

/// The host side of a task's terminal. Dropping it stops both copiers: input at once,
/// output as soon as the client is not reading.
pub struct Terminal {
    master: File,
    /// To the stdin copier: [`CLOSE_STDIN`] asks for end-of-file, closing it stops it.
    stdin_control: Option<File>,
    /// Closed on drop: tells the output copier to give up on a client that does not read.
    _stop_output: OwnedFd,
    output_done: Arc<OutputDone>,
}

/// Set once the output copier has written everything the program wrote.
#[derive(Default)]
pub struct OutputDone {
    done: Mutex<bool>,
    changed: Condvar,
}

impl OutputDone {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.changed.notify_all();
    }

    /// Waits (at most `timeout`) until the program's last output reached the client, so its
    /// exit is reported after it.
    pub fn wait(&self, timeout: Duration) {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(done, timeout, |done| !*done);
    }
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

fn internal(what: &str, e: impl Into<crate::error::Cause>) -> ShimError {
    ShimError::internal(format_args!("terminal: {what}"), e)
}

fn set_cloexec(fd: &OwnedFd) -> ShimResult<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(drop)
        .map_err(|e| internal("FD_CLOEXEC", e))
}

fn set_nonblocking(file: &File) -> ShimResult<()> {
    let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| internal("F_GETFL", e))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(flags))
        .map(drop)
        .map_err(|e| internal("O_NONBLOCK", e))
}

impl Terminal {
    /// Opens a pty and starts copying: `stdin` (a FIFO path, or none) into it, its output
    /// into `stdout` (already open). The interrupt and quit characters typed on it are the
    /// line discipline's business: the container's process makes the pty its controlling
    /// terminal, so they reach it as SIGINT and SIGQUIT, as for a Linux process.
    pub fn open(
        stdin: Option<&str>,
        stdout: Option<File>,
    ) -> ShimResult<(Terminal, TerminalSlave)> {
        let pty = openpty(None, None).map_err(|e| internal("openpty", e))?;
        // openpty's descriptors are inherited by default: a process the shim spawns later
        // (a runc shim) would keep the slave open, and the program's end would never show.
        set_cloexec(&pty.master)?;
        set_cloexec(&pty.slave)?;
        let master = File::from(pty.master);
        let slave = File::from(pty.slave);
        let dup = |f: &File| f.try_clone().map_err(|e| internal("dup", e));
        let slave_files = TerminalSlave {
            stdin: dup(&slave)?,
            stdout: dup(&slave)?,
            stderr: slave,
        };
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| internal("pipe", e));

        let output_done = Arc::new(OutputDone::default());
        let (stop_read, stop_output) = pipe()?;
        if let Some(out) = &stdout {
            set_nonblocking(out)?;
        }
        let reader = dup(&master)?;
        let done = output_done.clone();
        std::thread::Builder::new()
            .name("tty-out".into())
            .spawn(move || {
                copy_output(reader, stdout, stop_read);
                done.set();
            })
            .map_err(|e| internal("starting the output copier", e))?;

        let mut stdin_control = None;
        if let Some(path) = stdin {
            let fifo = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| internal(&format!("opening stdin {path}"), e))?;
            let (control_read, control_write) = pipe()?;
            let writer = dup(&master)?;
            std::thread::Builder::new()
                .name("tty-in".into())
                .spawn(move || copy_input(fifo, File::from(control_read), writer))
                .map_err(|e| internal("starting the input copier", e))?;
            stdin_control = Some(File::from(control_write));
        }
        Ok((
            Terminal {
                master,
                stdin_control,
                _stop_output: stop_output,
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

    /// Ends the program's input, as `CloseIO` asks. The stdin copier does it, after the
    /// input the client wrote before asking: what is still in the FIFO, then end-of-file.
    /// Without a stdin FIFO there is nothing to end.
    pub fn close_stdin(&mut self) {
        if let Some(mut control) = self.stdin_control.take() {
            if let Err(e) = control.write_all(&[CLOSE_STDIN]) {
                log::debug!("terminal: asking for end-of-file: {e}");
            }
        }
    }

    /// The signal that the program's output has all reached the client.
    pub fn output_done(&self) -> Arc<OutputDone> {
        self.output_done.clone()
    }
}

/// master → client, until every slave descriptor is closed (EIO), or until the client
/// stops reading and the terminal is dropped (`stop` hangs up).
fn copy_output(mut master: File, mut stdout: Option<File>, stop: OwnedFd) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match master.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // EIO: the program's side is closed.
            Err(_) => return,
        };
        let Some(out) = stdout.as_mut() else {
            continue;
        };
        let mut pending = &buf[..n];
        while !pending.is_empty() {
            match out.write(pending) {
                Ok(k) => pending = &pending[k..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let mut fds = [
                        PollFd::new(out.as_fd(), PollFlags::POLLOUT),
                        PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                    ];
                    let _ = poll(&mut fds, PollTimeout::NONE);
                    if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                        // The task is gone and nobody reads: drop the rest.
                        return;
                    }
                }
                Err(_) => {
                    // The client is gone: keep draining the master so the program never
                    // blocks on a terminal nobody reads.
                    stdout = None;
                    break;
                }
            }
        }
    }
}

/// Writes client input into the terminal.
fn forward_input(master: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    master.write_all(bytes)
}

/// client → master, until the client closes its end, the terminal asks for end-of-file
/// (then the FIFO's remaining input goes first) or the terminal is dropped.
fn copy_input(mut fifo: File, mut control: File, mut master: File) {
    let mut buf = [0u8; 8192];
    let mut last_byte = b'\n';
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            let mut request = [0u8; 1];
            if !matches!(control.read(&mut request), Ok(1)) {
                // Hung up: the terminal is gone.
                return;
            }
            // CloseIO: what the client wrote before asking, then end-of-file.
            while let Ok(n @ 1..) = fifo.read(&mut buf) {
                if forward_input(&mut master, &buf[..n]).is_err() {
                    return;
                }
                last_byte = buf[n - 1];
            }
            let eof = tcgetattr(master.as_fd())
                .map(|t| t.control_chars[Cc::VEOF as usize])
                .unwrap_or(4);
            // End-of-file ends a read only at the start of a line; mid-line the first one
            // just hands over the partial line.
            let count = if last_byte == b'\n' { 1 } else { 2 };
            let _ = master.write_all(&vec![eof; count]);
            return;
        }
        let readable = fds[0].revents().unwrap_or(PollFlags::empty());
        // Linux reports POLLHUP on a FIFO only once a writer has come and gone: the client
        // closed its stdin, so the copy is over.
        if readable.contains(PollFlags::POLLHUP) && !readable.contains(PollFlags::POLLIN) {
            return;
        }
        match fifo.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if forward_input(&mut master, &buf[..n]).is_err() {
                    return;
                }
                last_byte = buf[n - 1];
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
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
        terminal.output_done().wait(Duration::from_secs(5));
        // The line discipline's output processing: \n becomes \r\n.
        assert_eq!(std::fs::read(&out_path).unwrap(), b"line\r\n");
    }

    #[test]
    fn close_stdin_delivers_pending_input_then_end_of_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fifo_path = fifo.to_str().unwrap().to_string();
        let (mut terminal, slave) = Terminal::open(Some(&fifo_path), None).unwrap();
        let mut client = OpenOptions::new().write(true).open(&fifo).unwrap();
        // A partial line, as `printf abc` leaves it: EOF must still end the program's read.
        client.write_all(b"abc").unwrap();
        terminal.close_stdin();
        let mut input = String::new();
        let mut stdin = slave.stdin;
        stdin.read_to_string(&mut input).unwrap();
        assert_eq!(input, "abc");
    }
}
