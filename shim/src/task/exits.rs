//! The exit loop: turns each container process's end, as the reaper saw it, into the
//! task's recorded exit and its `/tasks/oom` and `/tasks/exit` events.
//!
//! The shape of containerd's Go runc shim: one reaper feeds one loop, which knows which
//! container and process a pid is. Each exit is finished on a thread of its own, because
//! finishing waits: for the client to read the last output, and, for a container's main
//! process, for its execs to be killed and reported first (their exits come before the
//! container's, as runc's shim reports them).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc, Mutex};

use containerd_shim_protos::events::task::{TaskExit, TaskOOM};
use containerd_shim_protos::topics;

use crate::clock::timestamp;
use crate::error::{ShimError, ShimResult};
use crate::task::container::Container;
use crate::task::events::Publisher;
use crate::task::process::{lock, Process};
use crate::task::reaper::{ChildExit, Reaper};

/// What a watched pid is.
pub enum Route {
    /// A container's main process.
    Init(Arc<Container>),
    /// One of a container's execs.
    Exec(Arc<Container>, Arc<Process>),
}

/// The pids the loop knows, and the reaper that watches them.
pub struct Exits {
    routes: Mutex<HashMap<u32, Route>>,
    reaper: Arc<Reaper>,
}

impl Exits {
    /// Starts the reaper and the loop, which publishes through `publisher`.
    pub fn start(publisher: Publisher) -> std::io::Result<Arc<Exits>> {
        let (tx, rx) = mpsc::channel::<ChildExit>();
        let exits = Arc::new(Exits {
            routes: Mutex::new(HashMap::new()),
            reaper: Reaper::start(tx)?,
        });
        let loop_exits = exits.clone();
        std::thread::Builder::new()
            .name("exits".into())
            .spawn(move || {
                for exit in rx {
                    let Some(route) = lock(&loop_exits.routes).remove(&exit.pid) else {
                        log::warn!("pid {} exited, but no task knows it", exit.pid);
                        continue;
                    };
                    // Handed back if no thread can be made: finished here then, late
                    // rather than never.
                    let job = Arc::new(Mutex::new(Some(route)));
                    let (thread_job, thread_publisher) = (job.clone(), publisher.clone());
                    let finisher =
                        std::thread::Builder::new()
                            .name("exit".into())
                            .spawn(move || {
                                if let Some(route) = lock(&thread_job).take() {
                                    finish(route, exit, &thread_publisher);
                                }
                            });
                    if let Err(e) = finisher {
                        log::warn!("pid {}: no thread to finish its exit ({e})", exit.pid);
                        if let Some(route) = lock(&job).take() {
                            finish(route, exit, &publisher);
                        }
                    }
                }
            })?;
        Ok(exits)
    }

    /// Watches process `pid` (whose pidfd is `pidfd`) for its end. Call it once the
    /// process's creation is announced: its exit is published after that.
    pub fn watch(&self, pid: u32, pidfd: &OwnedFd, route: Route) -> ShimResult<()> {
        lock(&self.routes).insert(pid, route);
        self.reaper.watch(pid, pidfd).map_err(|e| {
            lock(&self.routes).remove(&pid);
            ShimError::internal(format!("watching process {pid}"), e)
        })
    }
}

fn finish(route: Route, exit: ChildExit, publisher: &Publisher) {
    match route {
        Route::Init(container) => {
            // Nothing of a container outlives its main process.
            for exec in container.close_execs() {
                let _ = exec.kill(libc::SIGKILL as u32);
                exec.wait();
            }
            container.kill_remaining();
            let process = container.init.clone();
            report(&container, &process, exit, publisher);
        }
        Route::Exec(container, process) => report(&container, &process, exit, publisher),
    }
}

/// Records `exit` for `process` and publishes it, after an OOM event if the kernel (its
/// cgroup's notice, published by the container's alarm) or the program (a linear memory
/// that outgrew its limit) ended it for memory.
fn report(container: &Container, process: &Process, exit: ChildExit, publisher: &Publisher) {
    let program_oom = process.collect(&exit);
    let kernel_oom = container.check_oom();
    if program_oom && !kernel_oom {
        log::warn!(
            "{}: out of memory: the program outgrew its memory limit",
            process.name()
        );
        publisher.publish(
            topics::TASK_OOM_EVENT_TOPIC,
            &TaskOOM {
                container_id: process.container_id.clone(),
                ..Default::default()
            },
        );
    }
    log::info!("{}: exited with status {}", process.name(), exit.code);
    process.record_exit(exit.code, |recorded| {
        publisher.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            &TaskExit {
                container_id: process.container_id.clone(),
                id: process.id().to_string(),
                pid: process.pid,
                exit_status: recorded.code,
                exited_at: Some(timestamp(recorded.at)).into(),
                ..Default::default()
            },
        );
    });
}
