//! One wasm container: its program thread, its state and the events it raises.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use oci_spec::runtime::Spec;
use runtime::{thread_cpu_usage, CpuUsage, ExitStatus, MemoryGauge, Program, Stopper, WasiPlan};

use crate::clock::timestamp;
use crate::error::{ShimError, ShimResult};
use crate::events::Publisher;
use crate::lifecycle::{Exit, Lifecycle};
use crate::mount::{self, RootfsMount};
use crate::netns::NetworkPlan;
use crate::stdio::StdioPaths;

/// What the program thread is told after Create.
enum Command {
    /// Run the program, then report through the callback.
    Start(Box<dyn FnOnce(ExitStatus, CpuUsage) + Send>),
    /// Never run: the task was killed or deleted before Start.
    Abort,
}

/// What a Create request asks for, in the shim's own terms.
pub struct CreateParams {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Mounts that make up the rootfs (empty when the spec's root is already in place),
    /// as reported in the create event.
    pub rootfs: Vec<containerd_shim_protos::api::Mount>,
    /// The rootfs, mounted.
    pub mount: RootfsMount,
    /// The bundle's spec.
    pub spec: Spec,
    /// Where stdio goes.
    pub stdio: StdioPaths,
}

/// A wasm container. Shared between the task service and its program thread.
pub struct Container {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Where stdio goes.
    pub stdio: StdioPaths,
    /// Thread id of the program thread: unique per container and, like a process id, gone
    /// once the program ends.
    pub pid: u32,
    /// Memory limit from the spec, reported in stats (0: none).
    memory_limit: u64,
    state: Mutex<Lifecycle>,
    state_changed: Condvar,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    final_cpu: Mutex<Option<CpuUsage>>,
    stopper: Stopper,
    gauge: MemoryGauge,
    mounted_rootfs: Option<PathBuf>,
    publisher: Publisher,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it; the data
    // (plain state) is still meaningful, and refusing service would lose every task.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Container {
    /// Prepares a container whose rootfs is mounted: reads the spec, opens stdio and
    /// compiles the program on a new thread, which then waits for Start. Any failure leaves
    /// nothing behind: no mount, no thread, no open FIFO.
    pub fn create(params: CreateParams, publisher: Publisher) -> ShimResult<Arc<Container>> {
        let spec = &params.spec;
        let guard = params.mount;
        let rootfs = rootfs_dir(&params.bundle, spec, guard.is_mounted())?;

        let plan = WasiPlan::from_spec(spec, &rootfs)?;
        for (destination, why) in &plan.preopens.skipped {
            log::debug!("{}: mount {destination} not preopened: {why}", params.id);
        }
        let stdio = params.stdio.open()?;
        let memory_limit = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .map(|l| l.max(0) as u64)
            .unwrap_or(0);

        let network = NetworkPlan::from_spec(spec);
        let (ready_tx, ready_rx) = mpsc::channel::<ShimResult<u32>>();
        let (command_tx, command_rx) = mpsc::channel::<Command>();
        let stopper = Stopper::new();
        let gauge = MemoryGauge::default();
        let thread = {
            let stopper = stopper.clone();
            let gauge = gauge.clone();
            let id = params.id.clone();
            std::thread::Builder::new()
                .name("wasm".into())
                .spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() } as u32;
                    if let Err(e) = network.enter() {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    let program = match Program::load(plan) {
                        Ok(program) => program,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    log::debug!("{id}: loaded {}", program.guest_path());
                    if ready_tx.send(Ok(tid)).is_err() {
                        return;
                    }
                    drop(ready_tx);
                    let Ok(Command::Start(on_exit)) = command_rx.recv() else {
                        return;
                    };
                    let status = program.run_blocking(stdio, &stopper, &gauge);
                    on_exit(status, thread_cpu_usage(tid as i32));
                })
                .map_err(|e| ShimError::Internal(format!("starting the program thread: {e}")))?
        };
        let pid = match ready_rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(ShimError::Internal(
                    "the program thread ended while loading".to_string(),
                ));
            }
        };

        let container = Arc::new(Container {
            id: params.id,
            bundle: params.bundle,
            stdio: params.stdio,
            pid,
            memory_limit,
            state: Mutex::new(Lifecycle::Created),
            state_changed: Condvar::new(),
            commands: Mutex::new(Some(command_tx)),
            thread: Mutex::new(Some(thread)),
            final_cpu: Mutex::new(None),
            stopper,
            gauge,
            mounted_rootfs: guard.keep(),
            publisher,
        });
        container.publisher.publish(
            "/tasks/create",
            &TaskCreate {
                container_id: container.id.clone(),
                bundle: container.bundle.display().to_string(),
                rootfs: params.rootfs,
                io: Some(TaskIO {
                    stdin: container.stdio.stdin.clone(),
                    stdout: container.stdio.stdout.clone(),
                    stderr: container.stdio.stderr.clone(),
                    terminal: container.stdio.terminal,
                    ..Default::default()
                })
                .into(),
                pid,
                ..Default::default()
            },
        );
        Ok(container)
    }

    /// Runs the program. `/tasks/start` is queued before the program can run, so it always
    /// precedes the program's `/tasks/exit`.
    pub fn start(self: &Arc<Self>) -> ShimResult<u32> {
        let mut state = lock(&self.state);
        state.start(&self.id)?;
        self.publisher.publish(
            "/tasks/start",
            &TaskStart {
                container_id: self.id.clone(),
                pid: self.pid,
                ..Default::default()
            },
        );
        let me = Arc::clone(self);
        let on_exit = Box::new(move |status: ExitStatus, cpu: CpuUsage| {
            *lock(&me.final_cpu) = Some(cpu);
            match &status {
                ExitStatus::Trapped(_) | ExitStatus::Failed(_) => {
                    log::warn!("{}: {status}", me.id)
                }
                _ => log::info!("{}: {status}", me.id),
            }
            me.finish(status.code());
        });
        let sent = lock(&self.commands)
            .take()
            .map(|commands| commands.send(Command::Start(on_exit)).is_ok())
            .unwrap_or(false);
        drop(state);
        if !sent {
            self.finish(ExitStatus::Failed(String::new()).code());
            return Err(ShimError::Internal(format!(
                "task {}: the program thread is gone",
                self.id
            )));
        }
        Ok(self.pid)
    }

    /// Records the end of the program once, wakes waiters and raises `/tasks/exit`.
    fn finish(&self, code: u32) {
        self.finish_locked(&mut lock(&self.state), code);
    }

    /// `finish` for a caller that already holds the state lock. The exit event is queued
    /// before waiters wake: a waiter's next step is containerd's Delete, whose
    /// `/tasks/delete` must come after `/tasks/exit`.
    fn finish_locked(&self, state: &mut Lifecycle, code: u32) {
        if let Some(exit) = state.stop(code) {
            self.publisher.publish(
                "/tasks/exit",
                &TaskExit {
                    container_id: self.id.clone(),
                    id: self.id.clone(),
                    pid: self.pid,
                    exit_status: exit.code,
                    exited_at: Some(timestamp(exit.at)).into(),
                    ..Default::default()
                },
            );
            self.state_changed.notify_all();
        }
    }

    /// Tells a never-started program thread to give up, and records the task as ended.
    fn abort_locked(&self, state: &mut Lifecycle, code: u32) {
        if let Some(commands) = lock(&self.commands).take() {
            let _ = commands.send(Command::Abort);
        }
        self.finish_locked(state, code);
    }

    /// Delivers a signal. Terminating signals stop the program (status 128+signal); signals
    /// whose default action is to ignore them are accepted and ignored, as for a process
    /// that installed no handler.
    pub fn kill(&self, signal: u32) -> ShimResult<()> {
        let signal = signal as i32;
        // Held until the signal is delivered: a Start running concurrently must not turn the
        // task Running between our look at the state and our acting on it.
        let mut state = lock(&self.state);
        if let Lifecycle::Stopped(_) = *state {
            return Err(ShimError::NotFound(format!(
                "task {}: process already finished",
                self.id
            )));
        }
        match signal {
            0 => return Ok(()),
            libc::SIGCHLD | libc::SIGURG | libc::SIGWINCH | libc::SIGCONT => return Ok(()),
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {
                return Err(ShimError::Unimplemented(format!(
                    "signal {signal} (stop) cannot be delivered to a wasm program; use pause"
                )))
            }
            s if !(1..=64).contains(&s) => {
                return Err(ShimError::InvalidArgument(format!("invalid signal {s}")))
            }
            _ => {}
        }
        if *state == Lifecycle::Created {
            self.abort_locked(&mut state, 128 + signal as u32);
        } else {
            self.stopper.stop(signal);
        }
        Ok(())
    }

    /// Blocks until the program ends.
    pub fn wait(&self) -> Exit {
        let state = lock(&self.state);
        let state = self
            .state_changed
            .wait_while(state, |s| s.exit().is_none())
            .unwrap_or_else(|e| e.into_inner());
        // wait_while only returns once exit() is Some.
        state.exit().unwrap_or(Exit {
            code: 255,
            at: std::time::SystemTime::now(),
        })
    }

    /// The current state.
    pub fn lifecycle(&self) -> Lifecycle {
        *lock(&self.state)
    }

    /// Releases everything the container holds. Refused while the program runs: containerd
    /// kills and waits first.
    pub fn delete(&self) -> ShimResult<Exit> {
        let exit = {
            let mut state = lock(&self.state);
            match *state {
                Lifecycle::Running => {
                    return Err(ShimError::FailedPrecondition(format!(
                        "task {} is running; kill it before deleting",
                        self.id
                    )))
                }
                // Never started: like a created runc container, it is killed on delete.
                Lifecycle::Created => {
                    self.abort_locked(&mut state, 128 + libc::SIGKILL as u32);
                }
                Lifecycle::Stopped(_) => {}
            }
            state.exit()
        };
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        if let Some(rootfs) = &self.mounted_rootfs {
            mount::unmount_all(rootfs);
        }
        let exit = exit.unwrap_or(Exit {
            code: 255,
            at: std::time::SystemTime::now(),
        });
        self.publisher.publish(
            "/tasks/delete",
            &TaskDelete {
                container_id: self.id.clone(),
                id: self.id.clone(),
                pid: self.pid,
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            },
        );
        Ok(exit)
    }

    /// CPU time of the program: live while it runs, its final figure after.
    pub fn cpu(&self) -> CpuUsage {
        if let Some(cpu) = *lock(&self.final_cpu) {
            return cpu;
        }
        match self.lifecycle() {
            Lifecycle::Running => thread_cpu_usage(self.pid as i32),
            _ => CpuUsage::default(),
        }
    }

    /// The memory limit in bytes (0: none).
    pub fn memory_limit(&self) -> u64 {
        self.memory_limit
    }

    /// Linear memory of the program's instance (current, peak), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        (self.gauge.current(), self.gauge.peak())
    }
}

/// Where the container's root filesystem is: the mounts we just made, or the spec's root
/// (relative to the bundle, or absolute as docker gives it).
pub fn rootfs_dir(bundle: &Path, spec: &Spec, mounted: bool) -> ShimResult<PathBuf> {
    if mounted {
        return Ok(bundle.join("rootfs"));
    }
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let path = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    if !path.is_dir() {
        return Err(ShimError::InvalidArgument(format!(
            "rootfs {} is not a directory",
            path.display()
        )));
    }
    Ok(path)
}
