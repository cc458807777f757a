//! The OOM watch: turns the kernel's notice that a container's cgroup ran out of memory
//! (see `cgroup::oom`) into `/tasks/oom`, as it happens.
//!
//! One thread per shim, started with the first container that has a memory cgroup, waits on
//! every container's notifier in one epoll set. The exit loop also looks at a container's
//! alarm before it publishes an exit, so an OOM kill is always announced before the exit it
//! caused, whichever of the two threads sees it first.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use containerd_shim_protos::events::task::TaskOOM;
use containerd_shim_protos::topics;

use crate::cgroup::OomNotifier;
use crate::task::events::Publisher;
use crate::task::process::lock;

/// The shim's OOM watch.
pub struct OomWatch {
    epoll: OwnedFd,
    publisher: Publisher,
    /// The alarms in the epoll set, by token. Weak: a container's alarm lives as long as
    /// the container, and is stopped (taken out of the set) before its cgroup is removed.
    alarms: Mutex<HashMap<u64, Weak<OomAlarm>>>,
    next_token: AtomicU64,
    /// The waiting thread, started at the first alarm: a shim that serves only native
    /// containers, or containers without a memory cgroup, never has one.
    thread: OnceLock<io::Result<()>>,
}

/// One container's OOM notice, registered with the watch.
pub struct OomAlarm {
    container_id: String,
    notifier: OomNotifier,
    token: u64,
    watch: Weak<OomWatch>,
    /// Held while a notice is read and published, so the exit loop cannot publish the
    /// container's exit between the two.
    publishing: Mutex<()>,
    stopped: AtomicBool,
}

impl OomWatch {
    /// An empty watch publishing through `publisher`.
    pub fn new(publisher: Publisher) -> io::Result<Arc<OomWatch>> {
        // SAFETY: epoll_create1 returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(OomWatch {
            // SAFETY: a fresh descriptor nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            publisher,
            alarms: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            thread: OnceLock::new(),
        }))
    }

    /// Watches `notifier` for container `container_id` until the returned alarm is stopped.
    pub fn watch(
        self: &Arc<Self>,
        container_id: &str,
        notifier: OomNotifier,
    ) -> io::Result<Arc<OomAlarm>> {
        if let Err(e) = self.thread.get_or_init(|| self.start_thread()) {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let alarm = Arc::new(OomAlarm {
            container_id: container_id.to_string(),
            notifier,
            token,
            watch: Arc::downgrade(self),
            publishing: Mutex::new(()),
            stopped: AtomicBool::new(false),
        });
        lock(&self.alarms).insert(token, Arc::downgrade(&alarm));
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and event.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                alarm.notifier.fd().as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            lock(&self.alarms).remove(&token);
            return Err(e);
        }
        Ok(alarm)
    }

    fn start_thread(self: &Arc<Self>) -> io::Result<()> {
        let watch = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("oom".into())
            .spawn(move || run(watch))
            .map(|_| ())
    }
}

/// Waits for notices until the watch is gone (the shim is exiting).
fn run(watch: Weak<OomWatch>) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
    loop {
        let Some(epoll) = watch.upgrade().map(|w| w.epoll.as_raw_fd()) else {
            return;
        };
        // SAFETY: the buffer holds `events.len()` events; the descriptor stays open while
        // the service (which owns the watch) lives, which is the shim's whole life.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::warn!("the OOM watch stopped: {}", io::Error::last_os_error());
            return;
        }
        let Some(watch) = watch.upgrade() else {
            return;
        };
        for event in &events[..n as usize] {
            let token = event.u64;
            let alarm = lock(&watch.alarms).get(&token).and_then(Weak::upgrade);
            if let Some(alarm) = alarm {
                alarm.check();
            }
        }
    }
}

impl OomAlarm {
    /// Publishes `/tasks/oom` if the kernel gave notice since the last look; returns whether
    /// it did. A stopped alarm (its container deleted) says nothing: removing a v1 cgroup
    /// signals its eventfd too.
    pub fn check(&self) -> bool {
        let _publishing = lock(&self.publishing);
        if self.stopped.load(Ordering::SeqCst) {
            return false;
        }
        let events = self.notifier.take();
        if events == 0 {
            return false;
        }
        let Some(watch) = self.watch.upgrade() else {
            return false;
        };
        log::warn!(
            "task {}: out of memory: the kernel's cgroup OOM killer acted ({events} notice{})",
            self.container_id,
            if events == 1 { "" } else { "s" }
        );
        watch.publisher.publish(
            topics::TASK_OOM_EVENT_TOPIC,
            &TaskOOM {
                container_id: self.container_id.clone(),
                ..Default::default()
            },
        );
        true
    }

    /// Takes the alarm out of the watch: called before the container's cgroup is removed.
    pub fn stop(&self) {
        let _publishing = lock(&self.publishing);
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(watch) = self.watch.upgrade() {
            lock(&watch.alarms).remove(&self.token);
            // SAFETY: valid descriptors; a descriptor not in the set only fails.
            unsafe {
                libc::epoll_ctl(
                    watch.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    self.notifier.fd().as_raw_fd(),
                    std::ptr::null_mut(),
                )
            };
        }
    }
}
