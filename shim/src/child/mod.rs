//! A container's process: the shim binary run again (with [`crate::launch::CHILD_ENV`]) to
//! become one wasm container, the way runc's init becomes a Linux one.
//!
//! It starts single-threaded, with the descriptors `spawn` placed, and in this order:
//! blocks the signals it will hand to the program (see `signals`); reads its [`Launch`];
//! makes or joins its namespaces while the shim validates the program (it was born in the
//! container's cgroup, see `task::fork_exec`); loads the program (from the
//! compile cache the shim filled while validating the Create); makes its own mount
//! namespace rooted at the rootfs (an exec joins the main process's); answers Ready. On
//! Start it confines itself for good (uid, gid, no capabilities, `no_new_privs`, seccomp)
//! and only then makes threads and runs guest code. Its exit status is the program's.

mod confine;
mod devices;
mod exit_report;
mod name_service;
mod namespaces;
mod netns;
mod rlimits;
mod root;
mod signals;
mod stop_clock;
mod sysctl;

pub use root::handover_supported;

use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::Spec;
use runtime::{CodeUpgrade, Controls, ExitStatus, Program, StdioFiles, WasiPlan};
use thiserror::Error;

use crate::child::confine::{ConfineError, Confinement};
use crate::child::exit_report::Ending;
use crate::child::stop_clock::{Overdue, StopClock, STOP_GRACE, TEARDOWN_GRACE};
use crate::error::{render, ShimError, ShimResult};
use crate::launch::{self, FailureKind, FromChild, Launch, ToChild, CONTROL_FD, LOG_FD};
use signals::Signals;

/// Runs the container's process to its end; never returns.
pub fn run() -> ! {
    // Nothing this process starts is a shim's child: its role is not passed on. While the
    // process is still single-threaded, as changing the environment requires.
    std::env::remove_var(crate::launch::CHILD_ENV);
    // SAFETY: `spawn` placed the control socket and the log at these descriptors, and
    // nothing else in this fresh process owns them.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let log = unsafe { File::from_raw_fd(LOG_FD) };
    // First, so that a signal sent from now on is the program's, not the process's end
    // before it was ready (a signal that comes even earlier ends the process with it, which
    // the shim reports the same way).
    // With a terminal this process is its session's foreground: ^Z, or a background read
    // or write, would stop it with no one to continue it. Its init would ignore them too.
    for signal in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: setting a signal's disposition to ignore.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let signals = match Signals::block() {
        Ok(signals) => signals,
        Err(e) => fail(&control, ShimError::internal("blocking signals", e)),
    };
    let launch = match launch::receive::<ToChild>(&control) {
        Ok(Some(ToChild::Launch(launch))) => launch,
        _ => std::process::exit(1),
    };
    let identity = &launch.identity;
    crate::logger::init_with_sink(
        Some(log),
        identity.debug,
        &identity.namespace,
        &identity.shim_id,
        true,
    );
    runtime::set_single_threaded_compilation();
    runtime::set_compile_cache(crate::cache_config::compile_cache(&launch.bundle, |key| {
        std::env::var(key).ok()
    }));
    runtime::set_tiering(crate::cache_config::tiering(|key| std::env::var(key).ok()));
    let upgrade = CodeUpgrade::default();
    let program = match prepare(&launch, &control, &upgrade) {
        Ok(program) => program,
        Err(e) => fail(&control, e),
    };
    // The signal thread's watch on the shim (see `watch`).
    let shim = match control.try_clone() {
        Ok(shim) => shim,
        Err(e) => fail(&control, ShimError::internal("control socket", e)),
    };
    if launch::send(&control, &FromChild::Ready).is_err() {
        std::process::exit(1);
    }
    let limit = wait_for_start(&control, &signals, &upgrade);
    // An exec runs its program even in a precompile-only task: the annotation is the
    // container's (a pod's, in Kubernetes), and says nothing of what an exec asks for.
    let status = if launch.join.is_none() && crate::precompile::requested(&launch.spec) {
        // Its work (the optimized code in the cache) was done at Create.
        log::info!(
            "{}: a precompile-only task; the program is not run",
            launch.name
        );
        ExitStatus::Exited(0)
    } else {
        run_program(&launch, program, signals, shim, limit, upgrade)
    };
    let code = status.code();
    match &status {
        ExitStatus::Trapped(_) | ExitStatus::Failed(_) | ExitStatus::OutOfMemory(_) => {
            log::warn!("{}: {status}", launch.name)
        }
        _ => log::info!("{}: {status}", launch.name),
    }
    exit_report::report_and_exit(
        &control,
        Ending {
            code,
            oom: matches!(status, ExitStatus::OutOfMemory(_)),
            status: status.to_string(),
        },
    )
}

/// Reports why the process could not become the container, and ends it. The message is
/// the whole chain of causes: only text crosses to the shim.
fn fail(control: &UnixStream, e: ShimError) -> ! {
    let _ = launch::send(
        control,
        &FromChild::Failed {
            kind: FailureKind::from(&e),
            message: render(&e),
        },
    );
    std::process::exit(1)
}

/// Everything before Ready: namespaces, cgroup (the shim's part), program, root, and the
/// handover directory a server on baseline code gets its optimized code through.
fn prepare(launch: &Launch, control: &UnixStream, upgrade: &CodeUpgrade) -> ShimResult<Program> {
    // Before the process can see the image's files (see `name_service`).
    name_service::use_built_in_services_only()
        .map_err(|e| ShimError::internal("the process's name lookups", e))?;
    // Refused before anything is made (a host namespace is told from the shim's own).
    if launch.join.is_none() {
        sysctl::check(&launch.spec).map_err(|e| ShimError::InvalidArgument(render(&e)))?;
    }
    // A session of its own: the shim's terminal signals never reach it, and with `-t` the
    // pty becomes its controlling terminal, so the interrupt character is a real SIGINT.
    let _ = nix::unistd::setsid();
    if launch.terminal {
        // SAFETY: TIOCSCTTY on descriptor 0 (the pty's slave) with argument 0.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            log::debug!(
                "{}: the pty did not become the controlling terminal: {}",
                launch.name,
                std::io::Error::last_os_error()
            );
        }
    }
    // `comm` (what `top` and `ps -o comm` show) is the executable's name, `exe` after a
    // start through /proc/self/exe: name the process after its program instead.
    if let Some(name) = launch
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref()?.first().cloned())
        .and_then(|p| Some(p.rsplit('/').next()?.to_string()))
        .and_then(|n| std::ffi::CString::new(n).ok())
    {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (truncated to 15 bytes).
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
    let started = std::time::Instant::now();
    let joinable = match launch.join {
        Some(main) => Some(namespaces::Joinable::open(main)?),
        None => {
            namespaces::enter_from_spec(&launch.spec)?;
            // In those namespaces, through the host's /proc (an exec sets none, as runc's).
            sysctl::write(&launch.spec).map_err(|e| ShimError::InvalidArgument(render(&e)))?;
            None
        }
    };
    let entered = started.elapsed();
    // The shim validates the program meanwhile (and, on a kernel that could not start this
    // process in its v2 cgroup, moves it there).
    let handover = match launch::receive::<ToChild>(control) {
        Ok(Some(ToChild::Joined { handover })) => handover,
        _ => std::process::exit(1),
    };
    // Held before the root changes: the host's path to it is gone after.
    if let Some(path) = handover {
        match root::detached_read_only(&path) {
            Ok(directory) => upgrade.attach_directory(directory),
            Err(e) => log::warn!(
                "{}: serving baseline code for good: the handover directory {}: {}",
                launch.name,
                path.display(),
                render(&e)
            ),
        }
    }
    if joinable.is_none() {
        namespaces::enter_cgroup_namespace(&launch.spec)?;
    }
    let joined = started.elapsed();
    let plan = WasiPlan::from_spec(&launch.spec, &launch.rootfs)?;
    let mut program = Program::load(plan)?;
    let loaded = started.elapsed();
    let dev = match joinable {
        Some(joinable) => {
            joinable.join()?;
            root::has_device_tmpfs()
        }
        None => {
            let pivoted = root::pivot_into(&launch.rootfs, &program.plan().preopens, &launch.spec)?;
            for (guest, why) in pivoted.left_out {
                log::warn!("{}: tmpfs {guest} left out: {why}", launch.name);
                program.leave_out_tmpfs(&guest, why);
            }
            pivoted.dev
        }
    };
    // A preopen of its own: writable, whatever the rootfs is (as `/dev` is a mount of its
    // own under runc), so `/dev/null` takes writes under `--read-only` too.
    if dev {
        program.add_host_tmpfs("/dev");
    }
    program.enter_own_root(&launch.rootfs)?;
    // After the load, which may write a compile cache entry (a small RLIMIT_FSIZE must not
    // fail it) and whose compile must not count against RLIMIT_CPU; while still privileged,
    // as a limit above the shim's own needs CAP_SYS_RESOURCE.
    rlimits::apply(launch.spec.process().as_ref())
        .map_err(|e| ShimError::InvalidArgument(render(&e)))?;
    // Where a start's time goes, for an operator comparing nodes.
    log::debug!(
        "{}: {} ready: namespaces {entered:?}, validation {:?} more, load {:?}, root {:?}",
        launch.name,
        program.guest_path(),
        joined - entered,
        loaded - joined,
        started.elapsed() - loaded,
    );
    Ok(program)
}

/// Waits for Start, returning a memory limit an Update set meanwhile (optimized code
/// offered meanwhile goes to `upgrade`). A handled signal before it ends the process as the
/// signal would have (128 + signal: killed before it ran); so does a shim that went away.
fn wait_for_start(control: &UnixStream, signals: &Signals, upgrade: &CodeUpgrade) -> Option<u64> {
    let mut limit = None;
    use std::os::fd::{AsFd, BorrowedFd};
    loop {
        // SAFETY: the signalfd outlives this borrow.
        let signal_fd = unsafe { BorrowedFd::borrow_raw(signals.raw_fd()) };
        let mut fds = [
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(signal_fd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[1]) {
            let signal = signals.next().unwrap_or(libc::SIGTERM);
            std::process::exit(128 + signal);
        }
        if ready(&fds[0]) {
            match launch::receive::<ToChild>(control) {
                Ok(Some(ToChild::Start)) => return limit,
                Ok(Some(ToChild::MemoryLimit(bytes))) => limit = Some(bytes),
                Ok(Some(ToChild::OptimizedCode)) => upgrade.offer(),
                _ => std::process::exit(1),
            }
        }
    }
}

/// The memory limit the spec sets, in bytes.
fn memory_limit(spec: &Spec) -> Option<u64> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0)
        .map(|l| l as u64)
}

/// Confines the process and runs the program to its end, with the memory limit an Update
/// set before Start, if any, and its way to optimized code.
fn run_program(
    launch: &Launch,
    program: Program,
    signals: Signals,
    shim: UnixStream,
    limit: Option<u64>,
    upgrade: CodeUpgrade,
) -> ExitStatus {
    let controls = Controls {
        upgrade,
        ..Controls::default()
    };
    controls
        .gauge
        .set_limit(limit.or_else(|| memory_limit(&launch.spec)).unwrap_or(0));
    let stream = |fd: i32| {
        // SAFETY: `spawn` placed the program's streams at 0–2; each is taken once.
        launch.stdio[fd as usize].then(|| unsafe { File::from_raw_fd(fd) })
    };
    let stdio = StdioFiles {
        stdin: stream(0),
        stdout: stream(1),
        stderr: stream(2),
        terminal: launch.terminal,
    };
    let confinement = Confinement::from_process(launch.spec.process().as_ref());
    let watched = controls.clone();
    // An HTTP component's stop is a drain, which may rightly take its time.
    let stop_grace = (!program.is_server()).then_some(STOP_GRACE);
    // The runtime shows this error as text only: render its whole chain here.
    program.run_blocking_confined(stdio, &controls, move || {
        let ready = || -> Result<(), ProgramThreadError> {
            confinement.apply()?;
            // Made after the confinement, which it inherits.
            watch(signals, shim, watched, stop_grace).map_err(ProgramThreadError::SignalThread)
        };
        ready().map_err(|e| render(&e))
    })
}

/// Why the program's thread could not be made ready to run guest code: the program then
/// never runs, and its process fails as if it had.
#[derive(Debug, Error)]
enum ProgramThreadError {
    /// The process could not give up its privileges.
    #[error(transparent)]
    Confine(#[from] ConfineError),
    /// The thread that hands signals to the program (and watches the shim) could not start.
    #[error("starting the signal thread")]
    SignalThread(#[source] std::io::Error),
}

/// Hands every signal the process receives from now on to the program's stopper, applies
/// the memory limits the shim sends (an Update), passes on optimized code (see
/// [`runtime::CodeUpgrade`]), and ends the process at once if its shim
/// goes away (the control socket closes). A container does not outlive its shim, as it did
/// not when it ran inside it: nothing would report its exit or clean up after it.
///
/// With `stop_grace`, a stop the program has not answered within it ends the process with
/// the status the stop asked for (see `stop_clock`).
fn watch(
    signals: Signals,
    shim: UnixStream,
    controls: Controls,
    stop_grace: Option<Duration>,
) -> std::io::Result<()> {
    use std::os::fd::{AsFd, BorrowedFd};
    let mut clock = StopClock::new(stop_grace);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            // SAFETY: the signalfd lives as long as this thread.
            let signal_fd = unsafe { BorrowedFd::borrow_raw(signals.raw_fd()) };
            let mut fds = [
                PollFd::new(signal_fd, PollFlags::POLLIN),
                PollFd::new(shim.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, clock.timeout(Instant::now())) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
            if let Some(overdue) = clock.check(controls.stopper.settled(), Instant::now()) {
                end_unanswered_stop(&shim, overdue);
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[1]) {
                match launch::receive::<ToChild>(&shim) {
                    Ok(Some(ToChild::MemoryLimit(bytes))) => controls.gauge.set_limit(bytes),
                    Ok(Some(ToChild::OptimizedCode)) => controls.upgrade.offer(),
                    Ok(Some(_)) => {}
                    // SAFETY: _exit ends the process without running anything else.
                    _ => unsafe { libc::_exit(128 + libc::SIGKILL) },
                }
            }
            if ready(&fds[0]) {
                match signals.next() {
                    Ok(signal) => {
                        controls.stopper.stop(signal);
                        // The status reports the first signal, as the stopper does.
                        let first = controls.stopper.requested().unwrap_or(signal);
                        clock.stopped(first, Instant::now());
                    }
                    Err(_) => return,
                }
            }
        })
        .map(drop)
}

/// Ends the process for a stop its program did not answer in time: its thread is inside a
/// blocking host call, where a Linux process would have been ended by the signal.
fn end_unanswered_stop(shim: &UnixStream, overdue: Overdue) -> ! {
    let Overdue {
        signal,
        tearing_down,
    } = overdue;
    let status = ExitStatus::Signaled(signal);
    if tearing_down {
        log::info!(
            "stop by signal {signal}: the program's output did not drain in {} ms; ending \
             its process",
            TEARDOWN_GRACE.as_millis()
        );
    } else {
        log::info!(
            "stop by signal {signal} unanswered for {} ms (the program is in a blocking host \
             call); ending its process",
            STOP_GRACE.as_millis()
        );
    }
    exit_report::report_and_exit(
        shim,
        Ending {
            code: status.code(),
            oom: false,
            status: status.to_string(),
        },
    )
}
