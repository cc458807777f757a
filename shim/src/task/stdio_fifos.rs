//! Opening the stdio a client asked for, without ever blocking on a missing peer.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use runtime::StdioFiles;

use crate::error::{ShimError, ShimResult};
use crate::task::binary_logger::{self, BinaryLogger};
use crate::task::pty::Terminal;

/// The stdio paths of a task, as given in Create.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    /// Path of the stdin FIFO (empty: none).
    pub stdin: String,
    /// Path of the stdout FIFO or file (empty: none).
    pub stdout: String,
    /// Path of the stderr FIFO or file (empty: none).
    pub stderr: String,
    /// Whether the client asked for a terminal.
    pub terminal: bool,
}

/// Strips a `file://` or `fifo://` scheme; other schemes are refused rather than misread as
/// paths (`binary://` is handled before, see [`StdioPaths::open`]).
fn local_path(uri: &str) -> ShimResult<&str> {
    if let Some(path) = uri
        .strip_prefix("file://")
        .or_else(|| uri.strip_prefix("fifo://"))
    {
        return Ok(path);
    }
    if uri.contains("://") {
        return Err(ShimError::Unimplemented(format!(
            "stdio {uri}: only FIFOs, file:// paths and binary:// loggers are supported"
        )));
    }
    Ok(uri)
}

impl StdioPaths {
    /// Opens the streams, and for a terminal the pty that stands between them and the
    /// program. A `binary://` stdout (and the same stderr, as containerd's log URI gives
    /// them) starts its logging program for process `id` of `namespace`, kept until the
    /// process is deleted (see `binary_logger`).
    ///
    /// stdin is opened non-blocking for reading, which succeeds before the client's writer
    /// arrives; the runtime waits for data through the reactor, and sees EOF when the client
    /// closes its end. stdout and stderr are opened read-write: that never blocks and never
    /// fails with ENXIO when the client's reader is not there yet (or anymore), and the client
    /// sees EOF once the program's last descriptor closes.
    pub fn open(
        &self,
        id: &str,
        namespace: &str,
    ) -> ShimResult<(StdioFiles, Option<Terminal>, Option<BinaryLogger>)> {
        let open_err =
            |path: &str, e: std::io::Error| ShimError::internal(format!("opening stdio {path}"), e);
        let output = |uri: &str| -> ShimResult<Option<File>> {
            if uri.is_empty() {
                return Ok(None);
            }
            let path = local_path(uri)?;
            let is_fifo = std::fs::metadata(path)
                .map(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
                .unwrap_or(false);
            let mut options = OpenOptions::new();
            if is_fifo {
                options.read(true).write(true);
            } else {
                options.append(true).create(true);
            }
            options
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map(Some)
                .map_err(|e| open_err(path, e))
        };
        let logged = |uri: &str| uri.starts_with(binary_logger::SCHEME);
        if logged(&self.stdout) || logged(&self.stderr) {
            if self.terminal {
                return Err(ShimError::Unimplemented(format!(
                    "stdio {}: a binary:// logger with a terminal is not supported",
                    self.stdout
                )));
            }
            if !(logged(&self.stdout) && (self.stderr == self.stdout || self.stderr.is_empty())) {
                return Err(ShimError::Unimplemented(format!(
                    "stdio: a binary:// logger takes stdout, and stderr only as the same URI \
                     (stdout {:?}, stderr {:?})",
                    self.stdout, self.stderr
                )));
            }
        }
        if self.terminal {
            // One stream: a terminal merges stdout and stderr, as runc's console does.
            let stdin = match self.stdin.as_str() {
                "" => None,
                uri => Some(local_path(uri)?),
            };
            let (terminal, slave) = Terminal::open(stdin, output(&self.stdout)?)?;
            let files = StdioFiles {
                stdin: Some(slave.stdin),
                stdout: Some(slave.stdout),
                stderr: Some(slave.stderr),
                terminal: true,
            };
            return Ok((files, Some(terminal), None));
        }
        let stdin = match self.stdin.as_str() {
            "" => None,
            uri => {
                let path = local_path(uri)?;
                Some(
                    OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                        .open(path)
                        .map_err(|e| open_err(path, e))?,
                )
            }
        };
        let (stdout, stderr, logger) = if logged(&self.stdout) {
            let started = binary_logger::start(&self.stdout, id, namespace)?;
            let stderr = (!self.stderr.is_empty()).then_some(started.stderr);
            (Some(started.stdout), stderr, Some(started.logger))
        } else {
            (output(&self.stdout)?, output(&self.stderr)?, None)
        };
        let files = StdioFiles {
            stdin,
            stdout,
            stderr,
            terminal: false,
        };
        Ok((files, None, logger))
    }
}

/// Copies of the program's stdout and stderr when they are FIFOs, to see how much of its
/// output the client has not read yet.
pub fn output_pipes(files: &StdioFiles) -> Vec<std::fs::File> {
    use std::os::unix::fs::FileTypeExt;
    if files.terminal {
        return Vec::new();
    }
    [files.stdout.as_ref(), files.stderr.as_ref()]
        .into_iter()
        .flatten()
        .filter(|f| f.metadata().is_ok_and(|m| m.file_type().is_fifo()))
        .filter_map(|f| f.try_clone().ok())
        .collect()
}

/// Waits, at most `bound`, until nothing is left unread in `pipes`.
pub fn wait_until_read(pipes: &[std::fs::File], bound: std::time::Duration) {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + bound;
    loop {
        let unread: libc::c_int = pipes
            .iter()
            .map(|pipe| {
                let mut n: libc::c_int = 0;
                // SAFETY: FIONREAD writes one int: the bytes in the pipe (either end).
                let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut n) };
                if rc == 0 {
                    n
                } else {
                    0
                }
            })
            .sum();
        if unread == 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
