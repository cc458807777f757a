//! Signals sent to a container's process, turned into the program's stop requests.
//!
//! A wasm program has no signal handlers of its own; the shim gives every signal whose
//! default action ends a process the meaning it always had here: the program is stopped
//! cooperatively (an HTTP server drains, a command's output is flushed) and the process
//! exits with 128 + the signal. So the process blocks those signals from its first moment
//! (every thread made later inherits the mask) and reads them from a signalfd: before Start
//! the waiting loop ends the process on one, after Start a thread hands each to the
//! program's stopper. SIGKILL and SIGSTOP stay the kernel's; the stop signals keep their
//! default (the process stops, as any process would); signals a process ignores by default
//! stay ignored; and the faults wasmtime turns into traps (SIGSEGV, SIGBUS, SIGILL, SIGFPE)
//! are never blocked.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Signals delivered to the stopper: those whose default action terminates a process,
/// apart from the synchronous ones, glibc's internal ones (32 and 33) and SIGPIPE (which
/// the process ignores: a closed output is an EPIPE, not an end).
fn handled() -> impl Iterator<Item = i32> {
    let classic = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGSTKFLT,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
    ];
    classic.into_iter().chain(34..=64)
}

/// The process's signalfd.
pub struct Signals {
    fd: OwnedFd,
}

impl Signals {
    /// Blocks the handled signals on the calling thread (call it while the process has no
    /// other) and opens the signalfd that receives them.
    pub fn block() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data; the libc calls get valid pointers.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for signal in handled() {
                libc::sigaddset(&mut set, signal);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The descriptor, to poll.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next signal, waiting for one.
    pub fn next(&self) -> io::Result<i32> {
        // SAFETY: signalfd_siginfo is plain data, and read writes at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    &mut info as *mut libc::signalfd_siginfo as *mut libc::c_void,
                    size,
                )
            };
            if n == size as isize {
                return Ok(info.ssi_signo as i32);
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(if n < 0 {
                e
            } else {
                io::Error::other("a short read from the signalfd")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handled_signals_leave_the_kernels_and_glibcs_alone() {
        let set: Vec<i32> = handled().collect();
        for untouched in [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGILL,
            libc::SIGFPE,
            libc::SIGABRT,
            libc::SIGPIPE,
            libc::SIGCHLD,
            libc::SIGCONT,
            libc::SIGWINCH,
            32,
            33,
        ] {
            assert!(!set.contains(&untouched), "{untouched}");
        }
        assert!(set.contains(&libc::SIGTERM) && set.contains(&64));
    }
}
