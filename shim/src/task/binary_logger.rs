//! `binary://` stdio: a logging program the client names instead of FIFOs. nerdctl's log
//! drivers work this way, and so does `ctr run --log-uri binary:///path?key=value`.
//!
//! The shim starts the program as containerd's runc shim does, so a logger written for that
//! shim works unchanged:
//! - the URI's path is the program; each query pair `k=v` becomes two arguments `k v`;
//! - its environment is only `CONTAINER_ID` and `CONTAINER_NAMESPACE`;
//! - descriptor 3 reads the process's stdout, 4 its stderr, and 5 is a pipe the logger
//!   closes (or writes a byte to) once it is ready; the process starts only then;
//! - at Delete the shim waits for the logger to finish (it sees end-of-file when the
//!   process's output closes), and kills it after [`FINISH_BOUND`].

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{ShimError, ShimResult};
use crate::task::fork_exec::place_descriptors;

/// The scheme that names a logging program.
pub const SCHEME: &str = "binary://";

/// How long a logger may take to say it is ready before the Create fails.
const READY_BOUND: Duration = Duration::from_secs(30);

/// How long a logger may take to finish after the process's output closed, as containerd's
/// runc shim allows it (12 s), before it is killed.
const FINISH_BOUND: Duration = Duration::from_secs(12);

/// A running logging program, the shim's child. Reaped by [`BinaryLogger::finish`], or
/// killed and reaped when dropped unfinished (a Create that failed after it started).
pub struct BinaryLogger {
    program: PathBuf,
    /// Taken by `finish`; still here at drop means unfinished.
    child: Option<Child>,
}

/// A logger that is ready, and the ends its process writes its output to.
pub struct StartedLogger {
    /// The logger, to keep until the process is deleted.
    pub logger: BinaryLogger,
    /// The process's stdout: the logger reads the other end at descriptor 3.
    pub stdout: File,
    /// The process's stderr: the logger reads the other end at descriptor 4.
    pub stderr: File,
}

/// The program and arguments a `binary://` URI names, as Go's `url.Parse` and `Query` read
/// them (percent-decoding, `+` as a space in the query).
fn program_and_args(uri: &str) -> ShimResult<(PathBuf, Vec<OsString>)> {
    let rest = uri.strip_prefix(SCHEME).unwrap_or(uri);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = PathBuf::from(percent_decode(path, false));
    if !path.is_absolute() {
        return Err(ShimError::InvalidArgument(format!(
            "stdio {uri}: the logging program's path must be absolute"
        )));
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(OsString::from(percent_decode(key, true)));
        args.push(OsString::from(percent_decode(value, true)));
    }
    Ok((path, args))
}

/// `%XX` escapes decoded (an invalid one is kept as it is), and in a query `+` as a space.
fn percent_decode(text: &str, query: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if query => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pipe whose two ends are close-on-exec: (read, write).
fn pipe() -> ShimResult<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| ShimError::internal("a pipe for the logging program", e))
}

/// Starts the logging program `uri` names for process `id` of `namespace`, and waits until
/// it is ready.
pub fn start(uri: &str, id: &str, namespace: &str) -> ShimResult<StartedLogger> {
    let (program, args) = program_and_args(uri)?;
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let (ready_read, ready_write) = pipe()?;
    let placed = [
        out_read.as_raw_fd(),
        err_read.as_raw_fd(),
        ready_write.as_raw_fd(),
    ];
    let mut command = Command::new(&program);
    command
        .args(&args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: `place_descriptors` runs in the forked child before exec, as it requires, and
    // makes only async-signal-safe calls. A kernel without close_range fails the start, as
    // the logger could otherwise inherit the shim's descriptors.
    unsafe {
        command.pre_exec(move || match place_descriptors(3, &placed)? {
            true => Ok(()),
            false => Err(std::io::Error::from_raw_os_error(libc::ENOSYS)),
        });
    }
    let child = command.spawn().map_err(|e| {
        ShimError::InvalidArgument(format!(
            "stdio {uri}: starting the logging program {}: {e}",
            program.display()
        ))
    })?;
    drop((command, out_read, err_read, ready_write));
    let logger = BinaryLogger {
        program,
        child: Some(child),
    };
    wait_until_ready(&ready_read).map_err(|why| {
        ShimError::Internal(format!(
            "stdio {uri}: the logging program {} {why}",
            logger.program.display()
        ))
    })?;
    Ok(StartedLogger {
        logger,
        stdout: File::from(out_write),
        stderr: File::from(err_write),
    })
}

/// Waits for the logger's ready pipe: a byte, or its end (closed by the logger, or by its
/// exit, which the shim learns about at the process's end).
fn wait_until_ready(ready: &OwnedFd) -> Result<(), String> {
    let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
    let bound = PollTimeout::try_from(READY_BOUND).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, bound) {
        Ok(0) => Err(format!("was not ready within {} s", READY_BOUND.as_secs())),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("could not be waited for: {e}")),
    }
}

impl BinaryLogger {
    /// Waits for the logger to end once the process's output has closed, killing it after
    /// [`FINISH_BOUND`]; reaps it either way.
    pub fn finish(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + FINISH_BOUND;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => break,
            }
        }
        log::warn!(
            "the logging program {} did not end {} s after its process's output closed; \
             killed",
            self.program.display(),
            FINISH_BOUND.as_secs()
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for BinaryLogger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uri_gives_the_program_and_its_arguments_as_containerd_reads_them() {
        let (program, args) = program_and_args(
            "binary:///usr/local/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=/var/lib/nerdctl/1935db59",
        )
        .unwrap();
        assert_eq!(program, PathBuf::from("/usr/local/bin/nerdctl"));
        assert_eq!(
            args,
            ["_NERDCTL_INTERNAL_LOGGING", "/var/lib/nerdctl/1935db59"]
        );
        let (program, args) =
            program_and_args("binary:///opt/my%20logger?out=%2Ftmp%2Fa+b&flag").unwrap();
        assert_eq!(program, PathBuf::from("/opt/my logger"));
        assert_eq!(args, ["out", "/tmp/a b", "flag", ""]);
        assert!(program_and_args("binary://relative/logger").is_err());
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
    }

    #[test]
    fn a_logger_reads_the_output_and_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("logger.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nexec 5>&-\n/bin/cat <&3 >\"$2/out\"\n/bin/cat <&4 >\"$2/err\"\n\
             echo \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" >\"$2/who\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let uri = format!("binary://{}?dir={}", script.display(), dir.path().display());
        let started = start(&uri, "c1", "ns").unwrap();
        use std::io::Write;
        (&started.stdout).write_all(b"to stdout\n").unwrap();
        (&started.stderr).write_all(b"to stderr\n").unwrap();
        drop((started.stdout, started.stderr));
        let pid = started.logger.child.as_ref().map(Child::id).unwrap();
        started.logger.finish();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("out"), "to stdout\n");
        assert_eq!(read("err"), "to stderr\n");
        assert_eq!(read("who"), "ns/c1\n");
        // Reaped, not a zombie: its /proc entry is gone.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_missing_logger_fails_the_create_as_a_bad_request() {
        let Err(e) = start("binary:///no/such/logger", "c1", "ns") else {
            panic!("started a missing logger");
        };
        assert!(matches!(e, ShimError::InvalidArgument(_)), "{e:?}");
    }
}
