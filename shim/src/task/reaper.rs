//! The reaper: one thread that sees every container process of this shim exit, reaps it,
//! and hands its status to the exit loop (see `exits`).
//!
//! It waits on pidfds in an epoll set rather than on `waitpid(-1)`, so it never takes the
//! status of a child it does not own (hook commands and runc shims are waited for by the
//! code that started them).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Arc, Mutex};

/// A container process that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildExit {
    /// Its pid.
    pub pid: u32,
    /// Its status as containerd reports one: the exit code, or 128 + the killing signal.
    pub code: u32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

/// The epoll set of watched processes.
pub struct Reaper {
    epoll: OwnedFd,
    /// The pidfds in the set, by pid, closed once their process is reaped.
    watched: Mutex<HashMap<u32, OwnedFd>>,
}

impl Reaper {
    /// Starts the reaper's thread, which sends each exit to `exits`.
    pub fn start(exits: mpsc::Sender<ChildExit>) -> io::Result<Arc<Reaper>> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let reaper = Arc::new(Reaper {
            // SAFETY: a fresh descriptor nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            watched: Mutex::new(HashMap::new()),
        });
        let thread_reaper = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || thread_reaper.run(exits))?;
        Ok(reaper)
    }

    /// Watches the process `pid` (through a copy of `pidfd`); its exit will be sent once.
    /// A process that has already exited is seen at once: an unreaped process's pidfd stays
    /// readable.
    pub fn watch(&self, pid: u32, pidfd: &OwnedFd) -> io::Result<()> {
        let fd = pidfd.try_clone()?;
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(pid),
        };
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: valid descriptors and event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        watched.insert(pid, fd);
        Ok(())
    }

    fn run(&self, exits: mpsc::Sender<ChildExit>) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        loop {
            // SAFETY: the buffer holds `events.len()` events.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    -1,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("reaper: epoll_wait: {}", io::Error::last_os_error());
                return;
            }
            for event in &events[..n as usize] {
                let pid = event.u64 as u32;
                let Some(fd) = self
                    .watched
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&pid)
                else {
                    continue;
                };
                // SAFETY: removing a descriptor we added.
                unsafe {
                    libc::epoll_ctl(
                        self.epoll.as_raw_fd(),
                        libc::EPOLL_CTL_DEL,
                        fd.as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
                let exit = reap(pid);
                log::debug!("reaped {pid}: status {}", exit.code);
                if exits.send(exit).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reaps `pid`, which has exited, and reads its status.
fn reap(pid: u32) -> ChildExit {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
            Ok(WaitStatus::Exited(_, code)) => {
                return ChildExit {
                    pid,
                    code: (code & 0xff) as u32,
                    signal: None,
                }
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return ChildExit {
                    pid,
                    code: 128 + signal as u32,
                    signal: Some(signal as i32),
                }
            }
            // Stopped or continued: not an end (waitpid without WUNTRACED does not report
            // those, but be explicit).
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("reaping {pid}: {e}");
                return ChildExit {
                    pid,
                    code: 255,
                    signal: None,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pidfd(pid: u32) -> OwnedFd {
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(fd >= 0);
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    #[test]
    // The reaper under test does the waiting.
    #[allow(clippy::zombie_processes)]
    fn exits_and_kills_are_reported_with_their_codes() {
        let (tx, rx) = mpsc::channel();
        let reaper = Reaper::start(tx).unwrap();
        let quick = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let slow = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // The quick one may have exited already: still seen.
        std::thread::sleep(Duration::from_millis(100));
        reaper.watch(quick.id(), &pidfd(quick.id())).unwrap();
        reaper.watch(slow.id(), &pidfd(slow.id())).unwrap();
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            first,
            ChildExit {
                pid: quick.id(),
                code: 7,
                signal: None
            }
        );
        unsafe { libc::kill(slow.id() as i32, libc::SIGKILL) };
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((second.pid, second.code), (slow.id(), 137));
        assert_eq!(second.signal, Some(libc::SIGKILL));
    }
}
