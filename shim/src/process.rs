//! One wasm program of a container: its main program (the init process) or an exec. Owns the
//! program's thread, its state machine, its stdio and terminal, and the events that report it.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task::{TaskExecStarted, TaskExit, TaskOOM, TaskStart};
use runtime::{thread_cpu_usage, Controls, CpuUsage, ExitStatus, Program, Stopper, WasiPlan};

use crate::clock::timestamp;
use crate::confine::Confinement;
use crate::error::{ShimError, ShimResult};
use crate::events::Publisher;
use crate::lifecycle::{Exit, Lifecycle};
use crate::netns::NetworkPlan;
use crate::stdio::StdioPaths;
use crate::tty::{OutputDone, Terminal};

/// How long an ended program's exit waits for its client to read what is still in the
/// stdout/stderr pipes: ctr reports the exit and stops reading, so output still in a pipe
/// at the exit event can be lost. Bounded, for a client that reads nothing (`ctr run -d`).
const OUTPUT_READ_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// How long an exit report waits for a terminal's last output to reach the client.
const TERMINAL_DRAIN: Duration = Duration::from_secs(2);

/// What the program thread is told after Create or Exec.
enum Command {
    /// Run the program, then report through the callback.
    Start(Box<dyn FnOnce(ExitStatus, CpuUsage) + Send>),
    /// Never run: the process was killed or deleted before Start.
    Abort,
}

/// What a new process needs.
pub struct ProcessParams {
    /// The container's id.
    pub container_id: String,
    /// The exec id; `None` for the container's main program.
    pub exec_id: Option<String>,
    /// What to run.
    pub plan: WasiPlan,
    /// Where its stdio goes.
    pub stdio: StdioPaths,
    /// The network namespace its thread enters.
    pub network: NetworkPlan,
    /// The identity and limits its thread takes on before the program runs.
    pub confinement: Confinement,
    /// Pause and memory handles shared with the rest of the container; the stopper is the
    /// process's own.
    pub controls: Controls,
}

/// A wasm program with the life of a process: created, started, stopped, deleted.
pub struct Process {
    /// The container's id.
    pub container_id: String,
    /// The exec id; `None` for the container's main program.
    pub exec_id: Option<String>,
    /// Where stdio goes.
    pub stdio: StdioPaths,
    /// Thread id of the program thread: unique and, like a process id, gone once the
    /// program ends. Clients use `/proc/<pid>/ns/net` of it.
    pub pid: u32,
    state: Mutex<Lifecycle>,
    state_changed: Condvar,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    final_cpu: Mutex<Option<CpuUsage>>,
    stopper: Stopper,
    terminal: Mutex<Option<Terminal>>,
    /// Kept apart from `terminal` so waiting for the last output locks nothing.
    output_done: Option<Arc<OutputDone>>,
    publisher: Publisher,
}

/// Locks a mutex even if a panicking thread poisoned it: the data (plain state) is still
/// meaningful, and refusing service would lose every task of the shim.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Process {
    /// Opens stdio and loads the program on a new thread, which then waits for Start. Any
    /// failure leaves nothing behind: no thread, no open FIFO, no pty.
    pub fn create(params: ProcessParams, publisher: Publisher) -> ShimResult<Arc<Process>> {
        let controls = params.controls;
        let stopper = controls.stopper.clone();
        let (stdio, terminal) = params.stdio.open(&stopper)?;
        let output_done = terminal.as_ref().map(Terminal::output_done);
        let (ready_tx, ready_rx) = mpsc::channel::<ShimResult<u32>>();
        let (command_tx, command_rx) = mpsc::channel::<Command>();
        let network = params.network;
        let confinement = params.confinement;
        let plan = params.plan;
        let name = display_name(&params.container_id, params.exec_id.as_deref());
        let (program_tx, program_rx) = mpsc::channel::<Program>();
        // The thread enters its network namespace (creating one takes about half a
        // millisecond in the kernel) while this one loads the program, which needs no
        // namespace; the program is handed over once both are done.
        let thread = std::thread::Builder::new()
            .name("wasm".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() } as u32;
                if let Err(e) = network.enter() {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                if ready_tx.send(Ok(tid)).is_err() {
                    return;
                }
                drop(ready_tx);
                // No program: loading it failed and Create reports why.
                let Ok(program) = program_rx.recv() else {
                    return;
                };
                let Ok(Command::Start(on_exit)) = command_rx.recv() else {
                    return;
                };
                let pipes = crate::stdio::output_pipes(&stdio);
                let status =
                    program.run_blocking_confined(stdio, &controls, || confinement.apply());
                if status != ExitStatus::Signaled(libc::SIGKILL) {
                    crate::stdio::wait_until_read(&pipes, OUTPUT_READ_BOUND);
                }
                on_exit(status, thread_cpu_usage(tid as i32));
            })
            .map_err(|e| ShimError::Internal(format!("starting the program thread: {e}")))?;
        let loaded = Program::load(plan);
        let entered = ready_rx.recv();
        let pid = match (entered, loaded) {
            (Ok(Ok(pid)), Ok(program)) => {
                log::debug!("{name}: loaded {}", program.guest_path());
                if program_tx.send(program).is_err() {
                    let _ = thread.join();
                    return Err(ShimError::Internal(
                        "the program thread ended before its program was loaded".to_string(),
                    ));
                }
                pid
            }
            (entered, loaded) => {
                // The thread sees the channel close and ends.
                drop(program_tx);
                let _ = thread.join();
                return Err(match (entered, loaded) {
                    (Ok(Err(e)), _) => e,
                    (_, Err(e)) => e.into(),
                    _ => ShimError::Internal(
                        "the program thread ended while entering its namespace".to_string(),
                    ),
                });
            }
        };
        Ok(Arc::new(Process {
            container_id: params.container_id,
            exec_id: params.exec_id,
            stdio: params.stdio,
            pid,
            state: Mutex::new(Lifecycle::Created),
            state_changed: Condvar::new(),
            commands: Mutex::new(Some(command_tx)),
            thread: Mutex::new(Some(thread)),
            final_cpu: Mutex::new(None),
            stopper,
            terminal: Mutex::new(terminal),
            output_done,
            publisher,
        }))
    }

    /// The id containerd knows this process by: the exec id, or the container id.
    pub fn id(&self) -> &str {
        self.exec_id.as_deref().unwrap_or(&self.container_id)
    }

    fn name(&self) -> String {
        display_name(&self.container_id, self.exec_id.as_deref())
    }

    /// Runs the program; `before_exit` runs once it has ended, before its exit is recorded
    /// and reported. The start event is queued before the program can run, so it always
    /// precedes its exit.
    pub fn start(self: &Arc<Self>, before_exit: Box<dyn FnOnce() + Send>) -> ShimResult<u32> {
        let mut state = lock(&self.state);
        state.start(self.id())?;
        match &self.exec_id {
            None => self.publisher.publish(
                "/tasks/start",
                &TaskStart {
                    container_id: self.container_id.clone(),
                    pid: self.pid,
                    ..Default::default()
                },
            ),
            Some(exec_id) => self.publisher.publish(
                "/tasks/exec-started",
                &TaskExecStarted {
                    container_id: self.container_id.clone(),
                    exec_id: exec_id.clone(),
                    pid: self.pid,
                    ..Default::default()
                },
            ),
        }
        let me = Arc::clone(self);
        let on_exit = Box::new(move |status: ExitStatus, cpu: CpuUsage| {
            *lock(&me.final_cpu) = Some(cpu);
            let name = me.name();
            match &status {
                ExitStatus::Trapped(_) | ExitStatus::Failed(_) | ExitStatus::OutOfMemory(_) => {
                    log::warn!("{name}: {status}")
                }
                _ => log::info!("{name}: {status}"),
            }
            if let ExitStatus::OutOfMemory(_) = status {
                me.publisher.publish(
                    "/tasks/oom",
                    &TaskOOM {
                        container_id: me.container_id.clone(),
                        ..Default::default()
                    },
                );
            }
            if let Some(output) = &me.output_done {
                output.wait(TERMINAL_DRAIN);
            }
            before_exit();
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
                "{}: the program thread is gone",
                self.name()
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
                    container_id: self.container_id.clone(),
                    id: self.id().to_string(),
                    pid: self.pid,
                    exit_status: exit.code,
                    exited_at: Some(timestamp(exit.at)).into(),
                    ..Default::default()
                },
            );
            self.state_changed.notify_all();
        }
    }

    /// Tells a never-started program thread to give up, and records the process as ended.
    fn abort_locked(&self, state: &mut Lifecycle, code: u32) {
        if let Some(commands) = lock(&self.commands).take() {
            let _ = commands.send(Command::Abort);
        }
        self.finish_locked(state, code);
    }

    /// Drops a process that was never started nor announced (an Exec that lost a race): its
    /// thread is told to give up and joined, and no event is published.
    pub fn discard(&self) {
        if let Some(commands) = lock(&self.commands).take() {
            let _ = commands.send(Command::Abort);
        }
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        lock(&self.terminal).take();
    }

    /// Delivers a signal. Terminating signals stop the program (status 128+signal); signals
    /// whose default action is to ignore them are accepted and ignored, as for a process
    /// that installed no handler.
    pub fn kill(&self, signal: u32) -> ShimResult<()> {
        let signal = signal as i32;
        // Held until the signal is delivered: a Start running concurrently must not turn the
        // process Running between our look at the state and our acting on it.
        let mut state = lock(&self.state);
        if let Lifecycle::Stopped(_) = *state {
            return Err(ShimError::NotFound(format!(
                "{}: process already finished",
                self.name()
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
            at: SystemTime::now(),
        })
    }

    /// The current state.
    pub fn lifecycle(&self) -> Lifecycle {
        *lock(&self.state)
    }

    /// Ends the process's part: refused while the program runs (containerd kills and waits
    /// first); a never-started one is killed, as runc kills a created container on delete.
    /// Joins the thread and closes the terminal.
    pub fn delete(&self) -> ShimResult<Exit> {
        let exit = {
            let mut state = lock(&self.state);
            match *state {
                Lifecycle::Running => {
                    return Err(ShimError::FailedPrecondition(format!(
                        "{} is running; kill it before deleting",
                        self.name()
                    )))
                }
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
        lock(&self.terminal).take();
        Ok(exit.unwrap_or(Exit {
            code: 255,
            at: SystemTime::now(),
        }))
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

    /// Resizes the terminal; a process without one has nothing to resize.
    pub fn resize_pty(&self, width: u32, height: u32) -> ShimResult<()> {
        match lock(&self.terminal).as_ref() {
            Some(terminal) => terminal.resize(width, height),
            None => Ok(()),
        }
    }

    /// Ends the program's input (`CloseIO`). Without a terminal the program sees EOF as soon
    /// as the client closes its end of the stdin FIFO, since the shim keeps no writer open.
    pub fn close_stdin(&self) {
        if let Some(terminal) = lock(&self.terminal).as_mut() {
            terminal.close_stdin();
        }
    }
}

fn display_name(container_id: &str, exec_id: Option<&str>) -> String {
    match exec_id {
        None => format!("task {container_id}"),
        Some(exec_id) => format!("task {container_id} exec {exec_id}"),
    }
}
