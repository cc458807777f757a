//! Background compiles in a process of their own, at the kernel's idle priority.
//!
//! A thread's nice value only orders it among the threads of its own autogroup: with
//! `CONFIG_SCHED_AUTOGROUP` (on in Debian's and most distributions' kernels) the scheduler
//! first shares the CPUs between sessions, equally, and only then among each session's
//! threads. A shim is a session of its own, so an optimizer thread at nice 19 in a shim that
//! runs nothing else took a whole share: half of this 2-core machine against a container's
//! start in another shim (measured: a lingering shim's compile slowed the next first start
//! of CPython from 1.2 s to 2.6 s). A process can sit in a session of its own and lower that
//! session's weight, which no thread can; so the host may have each background compile run
//! by a helper process (see [`set_compile_helper`]), which calls [`run_compile_helper`].
//!
//! The helper reads the wasm on stdin and writes the compiled artifact as the cache entry
//! it is given (so the pages it dirties are charged to its cgroup, not the caller's); the
//! caller keeps the claims and checks, so a helper that crashes or is killed only costs that
//! one compile.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use thiserror::Error;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::artifact::Artifact;
use crate::cache::write_entry;
use crate::engine::{base_config, compatibility};

/// The longest a helper may take. Generous: at idle priority on a busy node a compile of
/// tens of seconds can take many minutes. Past it the helper is taken to hang, and killed,
/// so the next program's compile is not held up for good.
const HELPER_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// A program that runs a compile helper: `program args… <kind> <engine> <entry>`.
struct CompileHelper {
    program: PathBuf,
    args: Vec<OsString>,
    place: fn(u32),
}

static HELPER: OnceLock<CompileHelper> = OnceLock::new();

/// Compiles wasm of one kind to an artifact (see [`Artifact::precompile`]).
type Precompile = fn(&Engine, &[u8]) -> wasmtime::Result<Vec<u8>>;

/// Has this process's background compiles run by `program` with `args`, followed by the
/// kind of artifact, the compatibility of the engine its code is for and the cache entry to
/// write; that process must call [`run_compile_helper`] with those three. Without it, the
/// background thread compiles in this process (at nice 19, which holds only within its
/// session: see the module docs).
///
/// `place` gets each helper's pid before the helper has its input: a host whose own
/// cgroup is a budget it shares (a pod's shim) moves the helper out of it, so the compile
/// is charged to neither the pod's memory nor its CPU.
pub fn set_compile_helper(program: PathBuf, args: Vec<OsString>, place: fn(u32)) {
    let _ = HELPER.set(CompileHelper {
        program,
        args,
        place,
    });
}

/// Why a compile helper produced no artifact.
#[derive(Debug, Error)]
pub enum CompileHelperError {
    /// It was not started with a kind, an engine and an entry it knows.
    #[error("compile helper: expected `module|component ENGINE ENTRY`, got {0:?}")]
    Arguments(Vec<String>),
    /// Its engine would not make code the caller's engine loads.
    #[error("compile helper: its engine is {ours:016x}, not the {wanted:016x} asked for")]
    Engine {
        /// This process's engine.
        ours: u64,
        /// The caller's.
        wanted: u64,
    },
    /// The engine could not be made.
    #[error("compile helper: creating its engine: {0:#}")]
    NoEngine(#[source] wasmtime::Error),
    /// Reading the wasm or writing the entry failed.
    #[error("compile helper: {context}: {source}")]
    Io {
        /// What it was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The program did not compile.
    #[error("compile helper: {0:#}")]
    Compile(#[source] wasmtime::Error),
}

/// Why a compile helper this process started stored no entry; the caller (the optimizer)
/// logs it and the program keeps its baseline code.
#[derive(Debug, Error)]
pub(crate) enum HelperFailure {
    /// The helper process could not be started.
    #[error("starting the compile helper: {0}")]
    Start(#[source] std::io::Error),
    /// It outlived [`HELPER_DEADLINE`] and was killed.
    #[error(
        "the compile helper took over {} minutes; killed",
        HELPER_DEADLINE.as_secs() / 60
    )]
    TimedOut,
    /// Its end could not be waited for.
    #[error("waiting for the compile helper: {0}")]
    Wait(#[source] std::io::Error),
    /// It failed without saying why.
    #[error("the compile helper ended with {0}")]
    Ended(ExitStatus),
    /// It failed, and said why: its one line of stderr (a [`CompileHelperError`]).
    #[error("{0}")]
    Said(String),
}

/// The main of a compile helper (see [`set_compile_helper`]): `args` are the kind
/// (`module` or `component`), the engine compatibility asked for and the cache entry to
/// write. Reads the wasm on stdin to its end and writes its optimized artifact as that
/// entry. It first leaves the caller's session for one of its own at the lowest weight, and
/// takes the idle scheduling policy before its compile threads exist (they inherit both), so
/// anything else runnable on the node goes first; and it offers itself first to the OOM
/// killer, since it is the one process whose loss costs only time.
pub fn run_compile_helper(args: &[String]) -> Result<(), CompileHelperError> {
    // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string. Named for
    // `ps` and `top`, where an `exe` busy at idle priority would puzzle an operator; the
    // compile threads take the name too.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"wasm-optimize".as_ptr());
    }
    lower_priority();
    let (compile, wanted, entry) = match args {
        [kind, engine, entry] => match (kind.as_str(), u64::from_str_radix(engine, 16)) {
            (Module::WHAT, Ok(wanted)) => (Module::precompile as Precompile, wanted, entry),
            (Component::WHAT, Ok(wanted)) => (Component::precompile as Precompile, wanted, entry),
            _ => return Err(CompileHelperError::Arguments(args.to_vec())),
        },
        _ => return Err(CompileHelperError::Arguments(args.to_vec())),
    };
    // Compiles over every core: at idle priority that takes only what nothing else wants.
    let engine = Engine::new(&base_config()).map_err(CompileHelperError::NoEngine)?;
    let ours = compatibility(&engine);
    if ours != wanted {
        return Err(CompileHelperError::Engine { ours, wanted });
    }
    let mut wasm = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut wasm)
        .map_err(|source| CompileHelperError::Io {
            context: "reading the wasm",
            source,
        })?;
    let artifact = compile(&engine, &wasm).map_err(CompileHelperError::Compile)?;
    let entry = Path::new(entry);
    // The cache's directory went away meanwhile (containerd's state removed): not made again.
    if !entry.parent().is_some_and(Path::is_dir) {
        return Err(CompileHelperError::Io {
            context: "writing the entry",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    write_entry(entry, &artifact).map_err(|source| CompileHelperError::Io {
        context: "writing the entry",
        source,
    })
}

/// A session of its own (its own autogroup) at nice 19, and the idle policy. Each step is
/// best effort: a kernel without autogroups has no file to write, and a helper that keeps
/// a higher priority still compiles correctly. The idle policy comes last, so whoever sees
/// it (`ps`, a test) sees every other step done.
fn lower_priority() {
    // SAFETY: setsid acts on this process only.
    unsafe { libc::setsid() };
    let _ = std::fs::write("/proc/self/autogroup", "19");
    // The shim inherits containerd's score (often -999), which would make this process,
    // the largest and least needed, the OOM killer's last choice on the node or in a pod.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    // SAFETY: setpriority and sched_setscheduler act on this process only.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// Compiles `wasm` (a `what`, see [`Artifact::WHAT`]) for `engine` and stores it as the
/// cache entry `entry`, in a helper process, if the host set one: `None` if not.
pub(crate) fn store_in_helper(
    what: &str,
    engine: &Engine,
    entry: &Path,
    wasm: &[u8],
) -> Option<Result<(), HelperFailure>> {
    let helper = HELPER.get()?;
    Some(helper.store(what, compatibility(engine), entry, wasm))
}

impl CompileHelper {
    fn store(
        &self,
        what: &str,
        engine: u64,
        entry: &Path,
        wasm: &[u8],
    ) -> Result<(), HelperFailure> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg(what)
            .arg(format!("{engine:016x}"))
            .arg(entry)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only system calls between fork and exec, and no allocation. The helper
        // dies with the thread that started it (this process's optimizer, which lives as
        // long as the process), so it never outlives a shim that was killed; and it inherits
        // no descriptor but its stdio (a host's listener or a container's pipe kept open by
        // it would keep them alive).
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                close_on_exec_from(3);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(HelperFailure::Start)?;
        // Before its input: until it has read all of it, it has allocated next to nothing.
        (self.place)(child.id());
        // The helper reads all its input before it does anything else, so writing it all
        // first cannot deadlock. A failed write (the helper died) shows in its status below.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(wasm);
        }
        let status = match wait_until(&mut child, Instant::now() + HELPER_DEADLINE) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HelperFailure::TimedOut);
            }
            Err(e) => return Err(HelperFailure::Wait(e)),
        };
        if status.success() {
            return Ok(());
        }
        // It writes one line before it fails, well within a pipe's buffer.
        let mut said = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut said);
        }
        Err(match said.trim() {
            "" => HelperFailure::Ended(status),
            said => HelperFailure::Said(said.to_string()),
        })
    }
}

/// `child`'s exit status once it ends, or `None` at `deadline`. Woken by the exit itself
/// (a pidfd), so the caller goes on (removing the baseline entry the helper's replaced) at
/// once; without pidfds, every 100 ms.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    // SAFETY: pidfd_open of this process's own child, not reaped before the loop's
    // `try_wait` says it ended; the descriptor is owned from here on.
    let pidfd = unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, child.id(), 0) as i32;
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match &pidfd {
            Some(pidfd) => {
                let mut ready = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let wait_ms = left.as_millis().min(60_000) as i32;
                // SAFETY: one pollfd, valid for the call.
                unsafe { libc::poll(&mut ready, 1, wait_ms) };
            }
            None => std::thread::sleep(left.min(Duration::from_millis(100))),
        }
    }
}

/// Marks every descriptor from `first` up close-on-exec; between fork and exec, so only
/// system calls. `close_range` does it in one (Linux 5.11); before that, one by one up to
/// the descriptor limit.
fn close_on_exec_from(first: u32) {
    // SAFETY: system calls on this process's own descriptor table.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
        {
            return;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as i32
        } else {
            1024
        };
        for fd in first as i32..top {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}
