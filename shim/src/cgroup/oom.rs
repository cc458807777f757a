//! The kernel's own notice that a cgroup ran out of memory, as a descriptor to wait on.
//!
//! v1: an eventfd registered through `cgroup.event_control` on `memory.oom_control`; the
//! kernel adds one to it each time the cgroup hits its limit and reclaim cannot help (so
//! also when the OOM killer is disabled and nothing is killed). v2: an inotify watch of
//! `memory.events`, which the kernel marks modified whenever a count in it changes; the
//! `oom_kill` count says whether a process was killed. Waiting on the descriptor and
//! publishing are the caller's (`oom_watch`); this file only knows the kernel's side.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::v2::oom_kills;
use super::{write_file, CgroupError};

/// One cgroup's OOM notice.
#[derive(Debug)]
pub struct OomNotifier {
    /// Readable when something happened: the eventfd (v1) or the inotify descriptor (v2).
    fd: OwnedFd,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    V1,
    V2 {
        /// The cgroup's directory, whose `memory.events` is read on each notice.
        dir: PathBuf,
        /// `oom_kill` as last read: a notice counts only when it grew.
        seen: Mutex<u64>,
    },
}

impl OomNotifier {
    /// Registers an eventfd for the v1 memory cgroup at `dir`. The kernel keeps its own
    /// reference to the eventfd, and signals it once more when the cgroup is removed: drop
    /// the notifier (or stop reading it) before removing the cgroup.
    pub(super) fn v1(dir: &Path) -> Result<OomNotifier, CgroupError> {
        let control = dir.join("memory.oom_control");
        // SAFETY: eventfd returns a new descriptor or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(CgroupError::Read {
                path: control,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let event = unsafe { OwnedFd::from_raw_fd(raw) };
        let oom_control = std::fs::File::open(&control).map_err(|source| CgroupError::Read {
            path: control.clone(),
            source,
        })?;
        // The kernel resolves both numbers in this process's descriptor table when the line
        // is written; `memory.oom_control` may be closed afterwards.
        write_file(
            dir,
            "cgroup.event_control",
            &format!("{} {}", event.as_raw_fd(), oom_control.as_raw_fd()),
        )?;
        Ok(OomNotifier {
            fd: event,
            kind: Kind::V1,
        })
    }

    /// Watches `memory.events` of the v2 cgroup at `dir`, counting from its `oom_kill` now.
    pub(super) fn v2(dir: &Path) -> Result<OomNotifier, CgroupError> {
        let events = dir.join("memory.events");
        // SAFETY: inotify_init1 returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if raw < 0 {
            return Err(CgroupError::Read {
                path: events,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let inotify = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = std::ffi::CString::new(events.as_os_str().as_encoded_bytes()).map_err(|e| {
            CgroupError::Read {
                path: events.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            }
        })?;
        // SAFETY: a valid inotify descriptor and NUL-terminated path.
        if unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), name.as_ptr(), libc::IN_MODIFY) }
            < 0
        {
            return Err(CgroupError::Read {
                path: events,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(OomNotifier {
            fd: inotify,
            kind: Kind::V2 {
                dir: dir.to_path_buf(),
                seen: Mutex::new(oom_kills(dir)),
            },
        })
    }

    /// The descriptor to wait on (readable when [`OomNotifier::take`] may find something).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The OOM events since the last call, 0 for none; never blocks. Safe to call from two
    /// threads: each event is counted by one of them.
    pub fn take(&self) -> u64 {
        match &self.kind {
            Kind::V1 => {
                let mut count = 0u64;
                // SAFETY: reads 8 bytes into a u64 from our own non-blocking eventfd.
                let got = unsafe {
                    libc::read(
                        self.fd.as_raw_fd(),
                        (&mut count as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                if got == 8 {
                    count
                } else {
                    0
                }
            }
            Kind::V2 { dir, seen } => {
                let mut buf = [0u8; 1024];
                // Drained first, so a change after the read below wakes the watcher again.
                // SAFETY: reads into our own buffer from our own non-blocking descriptor.
                while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
                    > 0
                {}
                let now = oom_kills(dir);
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let new = now.saturating_sub(*seen);
                *seen = now.max(*seen);
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn v2_counts_only_new_oom_kills_and_drains_its_notices() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let events = tmp.path().join("memory.events");
        fs::write(&events, "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n").expect("w");
        let notifier = OomNotifier::v2(tmp.path()).expect("watch");
        // What was there before the watch is not news.
        assert_eq!(notifier.take(), 0);
        fs::write(&events, "low 0\nhigh 0\nmax 5\noom 3\noom_kill 3\n").expect("w");
        let mut fds = [libc::pollfd {
            fd: notifier.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 1000) }, 1);
        assert_eq!(notifier.take(), 2);
        assert_eq!(notifier.take(), 0);
        // SAFETY: as above; the notice was drained, so nothing is pending.
        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) }, 0);
    }

    /// The real kernel: a v1 memory cgroup with a 16 MiB limit and a process that goes past
    /// it. Needs root and a v1 memory hierarchy (the CI host has both).
    #[test]
    fn v1_eventfd_counts_a_real_oom_kill() {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("cgroup.event_control").exists() || unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: no v1 memory hierarchy or not root");
            return;
        }
        let dir = root.join(format!("wasmtime-shim-oom-test-{}", std::process::id()));
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("memory.limit_in_bytes"), "16777216").expect("limit");
        let notifier = OomNotifier::v1(&dir).expect("register");
        assert_eq!(notifier.take(), 0);
        let procs = dir.join("cgroup.procs");
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            // Into the cgroup, then a shell variable that doubles until the kernel kills it.
            .arg(format!(
                "echo $$ > {}; x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done",
                procs.display()
            ))
            .status()
            .expect("sh");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(notifier.take() >= 1);
        drop(notifier);
        fs::remove_dir(&dir).expect("rmdir");
    }
}
