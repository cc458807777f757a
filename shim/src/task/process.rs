//! One process of a wasm container, as the shim keeps track of it: the container's main
//! process or an exec. The process itself runs elsewhere (see `spawn` and `child`); this is
//! its state machine, its pid and pidfd, its control socket, and the stdio and terminal the
//! shim holds for it. Events are not raised here: the task service and the exit loop raise
//! them next to the transitions they report.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use crate::cgroup::Placement;
use crate::error::{ShimError, ShimResult};
use crate::launch::{self, FromChild, Launch, ToChild};
use crate::task::binary_logger::BinaryLogger;
use crate::task::lifecycle::{Exit, Lifecycle};
use crate::task::pty::{OutputDone, Terminal};
use crate::task::reaper::ChildExit;
use crate::task::spawn::{spawn, ChildCommand, Prepared};
use crate::task::stdio_fifos::StdioPaths;

/// How long an ended program's exit waits for its client to read what is still in the
/// stdout/stderr pipes: ctr reports the exit and stops reading, so output still in a pipe
/// at the exit event can be lost. Bounded, for a client that reads nothing (`ctr run -d`).
const OUTPUT_READ_BOUND: Duration = Duration::from_secs(1);

/// How long an exit report waits for a terminal's last output to reach the client.
const TERMINAL_DRAIN: Duration = Duration::from_secs(2);

/// A process of a container.
pub struct Process {
    /// The container's id.
    pub container_id: String,
    /// The exec id; `None` for the container's main process.
    pub exec_id: Option<String>,
    /// Where stdio goes.
    pub stdio: StdioPaths,
    /// The process's pid, on the host.
    pub pid: u32,
    state: Mutex<Lifecycle>,
    state_changed: Condvar,
    /// Signals go through it: a pid may be reused once the process is reaped, a pidfd not.
    pidfd: OwnedFd,
    control: Mutex<UnixStream>,
    terminal: Mutex<Option<Terminal>>,
    /// Kept apart from `terminal` so waiting for the last output locks nothing.
    output_done: Option<Arc<OutputDone>>,
    /// Copies of stdout and stderr when they are FIFOs, to see what the client has not read.
    output_pipes: Mutex<Vec<File>>,
    /// The `binary://` logging program reading its output, finished at Delete.
    logger: Mutex<Option<BinaryLogger>>,
}

/// Locks a mutex even if a panicking thread poisoned it: the data (plain state) is still
/// meaningful, and refusing service would lose every task of the shim.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Start in progress: the process is Created and stays so (the state is locked) until
/// [`Starting::commit`], so the caller can announce the start before the program can end.
pub struct Starting<'a> {
    process: &'a Process,
    state: MutexGuard<'a, Lifecycle>,
}

impl Starting<'_> {
    /// Lets the program run.
    pub fn commit(mut self) -> ShimResult<u32> {
        let process = self.process;
        launch::send(&lock(&process.control), &ToChild::Start).map_err(|e| {
            ShimError::internal(format!("{}: its process is gone", process.name()), e)
        })?;
        *self.state = Lifecycle::Running;
        Ok(process.pid)
    }
}

impl Process {
    /// Opens stdio and starts the process for `launch` (whose stdio fields are filled in
    /// here) by executing `child` in the cgroup of `placement`, returning once it is ready
    /// to run; `meanwhile` runs while the process starts (see [`spawn`]). Any failure leaves nothing behind: no process, no
    /// open FIFO, no pty.
    pub fn create(
        child: &ChildCommand,
        container_id: &str,
        exec_id: Option<&str>,
        mut launch: Launch,
        stdio: StdioPaths,
        placement: &Placement,
        meanwhile: impl FnOnce() -> ShimResult<Prepared>,
    ) -> ShimResult<Arc<Process>> {
        let id = exec_id.unwrap_or(container_id);
        let (files, terminal, logger) = stdio.open(id, &launch.identity.namespace)?;
        let output_done = terminal.as_ref().map(Terminal::output_done);
        let output_pipes = crate::task::stdio_fifos::output_pipes(&files);
        launch.stdio = [
            files.stdin.is_some(),
            files.stdout.is_some(),
            files.stderr.is_some(),
        ];
        launch.terminal = files.terminal;
        let spawned = spawn(child, launch, files, placement, meanwhile)?;
        Ok(Arc::new(Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.map(str::to_string),
            stdio,
            pid: spawned.pid,
            state: Mutex::new(Lifecycle::Created),
            state_changed: Condvar::new(),
            pidfd: spawned.pidfd,
            control: Mutex::new(spawned.control),
            terminal: Mutex::new(terminal),
            output_done,
            output_pipes: Mutex::new(output_pipes),
            logger: Mutex::new(logger),
        }))
    }

    /// The id containerd knows this process by: the exec id, or the container id.
    pub fn id(&self) -> &str {
        self.exec_id.as_deref().unwrap_or(&self.container_id)
    }

    /// `task ID` or `task ID exec EXEC`, for logs and errors.
    pub fn name(&self) -> String {
        match &self.exec_id {
            None => format!("task {}", self.container_id),
            Some(exec_id) => format!("task {} exec {exec_id}", self.container_id),
        }
    }

    /// The pidfd, for the reaper.
    pub fn pidfd(&self) -> &OwnedFd {
        &self.pidfd
    }

    /// Begins a Start: refused unless the process is Created.
    pub fn begin_start(&self) -> ShimResult<Starting<'_>> {
        let state = lock(&self.state);
        // Checked on a copy: the state only becomes Running once the program may run.
        let mut probe = *state;
        probe.start(self.id())?;
        Ok(Starting {
            process: self,
            state,
        })
    }

    /// What the process said last and how its output ended, once the reaper saw it exit.
    /// Waits (bounded) for the client to read its output, unless SIGKILL ended it.
    pub fn collect(&self, exit: &ChildExit) -> bool {
        let control = lock(&self.control);
        let mut oom = false;
        if control.set_nonblocking(true).is_ok() {
            match launch::receive::<FromChild>(&control) {
                Ok(Some(FromChild::Exited { oom: o, .. })) => oom = o,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => log::debug!("{}: reading its exit report: {e}", self.name()),
            }
        }
        drop(control);
        if exit.signal != Some(libc::SIGKILL) {
            crate::task::stdio_fifos::wait_until_read(&lock(&self.output_pipes), OUTPUT_READ_BOUND);
            if let Some(output) = &self.output_done {
                output.wait(TERMINAL_DRAIN);
            }
        }
        lock(&self.output_pipes).clear();
        oom
    }

    /// Records the end of the process once; `announce` runs under the state lock before
    /// waiters wake: a waiter's next step is containerd's Delete, whose `/tasks/delete`
    /// must come after `/tasks/exit`.
    pub fn record_exit(&self, code: u32, announce: impl FnOnce(Exit)) -> Option<Exit> {
        let mut state = lock(&self.state);
        let exit = state.stop(code)?;
        announce(exit);
        self.state_changed.notify_all();
        Some(exit)
    }

    /// Delivers a signal to the process: its Linux meaning, with the program's own
    /// handling of terminating signals (see `child::signals`). Before Start a terminating
    /// signal ends the process as it would any process (128 + signal).
    pub fn kill(&self, signal: u32) -> ShimResult<()> {
        let signal = signal as i32;
        if !(0..=64).contains(&signal) {
            return Err(ShimError::InvalidArgument(format!(
                "invalid signal {signal}"
            )));
        }
        if let Lifecycle::Stopped(_) = *lock(&self.state) {
            return Err(ShimError::NotFound(format!(
                "{}: process already finished",
                self.name()
            )));
        }
        // SAFETY: pidfd_send_signal with our pidfd and no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Err(ShimError::NotFound(format!(
                    "{}: process already finished",
                    self.name()
                )));
            }
            return Err(ShimError::internal(
                format!("{}: signal {signal}", self.name()),
                e,
            ));
        }
        Ok(())
    }

    /// Ends a process the reaper does not watch (a Create whose hooks failed, an Exec that
    /// lost a race with its container's end): killed and reaped here, no event raised.
    pub fn discard(&self) {
        let _ = self.kill(libc::SIGKILL as u32);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid as i32), None);
        // Recorded, so that a Delete or a waiter does not wait for an exit no one reports.
        self.record_exit(128 + libc::SIGKILL as u32, |_| {});
        lock(&self.terminal).take();
    }

    /// Tells a server on baseline code that its optimized code is in its handover directory:
    /// its later requests run it. A process that has ended needs it no more.
    pub fn offer_optimized_code(&self) {
        match launch::send(&lock(&self.control), &ToChild::OptimizedCode) {
            Ok(()) => log::debug!("{}: optimized code handed over", self.name()),
            Err(e) => log::debug!("{}: optimized code not handed over: {e}", self.name()),
        }
    }

    /// Tells the process its container's new memory limit (an Update); a process that has
    /// ended has no use for it.
    pub fn set_memory_limit(&self, bytes: u64) {
        if matches!(self.lifecycle(), Lifecycle::Stopped(_)) {
            return;
        }
        if let Err(e) = launch::send(&lock(&self.control), &ToChild::MemoryLimit(bytes)) {
            log::debug!("{}: new memory limit not delivered: {e}", self.name());
        }
    }

    /// Blocks until the process's end is recorded.
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

    /// Ends the shim's part: refused while the program runs (containerd kills and waits
    /// first); a never-started process is killed and waited for, as runc kills a created
    /// container on delete. Closes the terminal.
    pub fn delete(&self) -> ShimResult<Exit> {
        match self.lifecycle() {
            Lifecycle::Running => {
                return Err(ShimError::FailedPrecondition(format!(
                    "{} is running; kill it before deleting",
                    self.name()
                )))
            }
            Lifecycle::Created => {
                let _ = self.kill(libc::SIGKILL as u32);
            }
            Lifecycle::Stopped(_) => {}
        }
        let exit = self.wait();
        lock(&self.terminal).take();
        // Its output closed with the process (and the shim's copies at its exit): the
        // logger has all of it, and ends.
        let logger = lock(&self.logger).take();
        if let Some(logger) = logger {
            logger.finish();
        }
        Ok(exit)
    }

    /// CPU time of the process while it runs (from `/proc/PID/stat`); nothing once ended.
    pub fn cpu(&self) -> CpuUsage {
        if !matches!(self.lifecycle(), Lifecycle::Running) {
            return CpuUsage::default();
        }
        process_cpu(self.pid).unwrap_or_default()
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

/// CPU time a process (or a container's processes together) consumed, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuUsage {
    /// Total time on CPU.
    pub total_ns: u64,
    /// Time in user mode.
    pub user_ns: u64,
    /// Time in kernel mode.
    pub kernel_ns: u64,
}

/// User and system time of process `pid`, from fields 14 and 15 of `/proc/PID/stat`.
fn process_cpu(pid: u32) -> Option<CpuUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ns = |field: &str| field.parse::<u64>().ok().map(|t| t * 1_000_000_000 / ticks);
    let user = ns(fields.get(11)?)?;
    let kernel = ns(fields.get(12)?)?;
    Some(CpuUsage {
        total_ns: user + kernel,
        user_ns: user,
        kernel_ns: kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_of_a_process_is_read_from_proc() {
        let me = process_cpu(std::process::id()).unwrap();
        assert_eq!(me.total_ns, me.user_ns + me.kernel_ns);
        assert!(process_cpu(u32::MAX).is_none());
    }
}
