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
//! The helper reads the wasm on stdin and writes the compiled artifact on stdout; the
//! caller keeps everything else (claims, checks, storing the entry), so a helper that
//! crashes or is killed only costs that one compile.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use thiserror::Error;
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::artifact::Artifact;
use crate::engine::{base_config, compatibility};

/// A program that runs a compile helper: `program args… <kind> <engine>`.
struct CompileHelper {
    program: PathBuf,
    args: Vec<OsString>,
    place: fn(u32),
}

static HELPER: OnceLock<CompileHelper> = OnceLock::new();

/// Compiles wasm of one kind to an artifact (see [`Artifact::precompile`]).
type Precompile = fn(&Engine, &[u8]) -> wasmtime::Result<Vec<u8>>;

/// Has this process's background compiles run by `program` with `args`, followed by the
/// kind of artifact and the compatibility of the engine its code is for; that process must
/// call [`run_compile_helper`] with those two. Without it, the background thread compiles
/// in this process (at nice 19, which holds only within its session: see the module docs).
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
    /// It was not started with a kind and an engine it knows.
    #[error("compile helper: expected `module|component <engine>`, got {0:?}")]
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
    #[error("compile helper: creating its engine: {0}")]
    NoEngine(String),
    /// Reading the wasm or writing the artifact failed.
    #[error("compile helper: {context}: {source}")]
    Io {
        /// What it was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The program did not compile.
    #[error("compile helper: {0}")]
    Compile(String),
}

/// The main of a compile helper (see [`set_compile_helper`]): `args` are the kind
/// (`module` or `component`) and the engine compatibility asked for. Reads the wasm on
/// stdin to its end, writes the optimized artifact on stdout. It first leaves the caller's
/// session for one of its own at the lowest weight, and takes the idle scheduling policy
/// before its compile threads exist (they inherit both), so anything else runnable on the
/// node goes first.
pub fn run_compile_helper(args: &[String]) -> Result<(), CompileHelperError> {
    // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string. Named for
    // `ps` and `top`, where an `exe` busy at idle priority would puzzle an operator; the
    // compile threads take the name too.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"wasm-optimize".as_ptr());
    }
    lower_priority();
    let (compile, wanted) = match args {
        [kind, engine] => match (kind.as_str(), u64::from_str_radix(engine, 16)) {
            (Module::WHAT, Ok(wanted)) => (Module::precompile as Precompile, wanted),
            (Component::WHAT, Ok(wanted)) => (Component::precompile as Precompile, wanted),
            _ => return Err(CompileHelperError::Arguments(args.to_vec())),
        },
        _ => return Err(CompileHelperError::Arguments(args.to_vec())),
    };
    // Compiles over every core: at idle priority that takes only what nothing else wants.
    let engine =
        Engine::new(&base_config()).map_err(|e| CompileHelperError::NoEngine(format!("{e:#}")))?;
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
    let artifact =
        compile(&engine, &wasm).map_err(|e| CompileHelperError::Compile(format!("{e:#}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&artifact)
        .and_then(|()| out.flush())
        .map_err(|source| CompileHelperError::Io {
            context: "writing the artifact",
            source,
        })
}

/// A session of its own (its own autogroup) at nice 19, and the idle policy. Each step is
/// best effort: a kernel without autogroups has no file to write, and a helper that keeps
/// a higher priority still compiles correctly.
fn lower_priority() {
    // SAFETY: setsid, setpriority and sched_setscheduler act on this process only.
    unsafe {
        libc::setsid();
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
    let _ = std::fs::write("/proc/self/autogroup", "19");
}

/// Compiles `wasm` (a `what`, see [`Artifact::WHAT`]) to an artifact for the engine whose
/// compatibility is `engine` in a helper process, if the host set one: `None` if not.
pub(crate) fn compile_in_helper(
    what: &str,
    engine: &Engine,
    wasm: &[u8],
) -> Option<Result<Vec<u8>, String>> {
    let helper = HELPER.get()?;
    Some(helper.compile(what, compatibility(engine), wasm))
}

impl CompileHelper {
    fn compile(&self, what: &str, engine: u64, wasm: &[u8]) -> Result<Vec<u8>, String> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg(what)
            .arg(format!("{engine:016x}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: only system calls between fork and exec. The helper dies with the thread
        // that started it (this process's optimizer, which lives as long as the process),
        // so it never outlives a shim that was killed; and it inherits no descriptor but its
        // stdio (a host's listener or a container's pipe kept open by it would keep them
        // alive).
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting the compile helper: {e}"))?;
        // Before its input: until it has read all of it, it has allocated next to nothing.
        (self.place)(child.id());
        // The helper reads all its input before it writes anything, so writing all of it
        // first cannot deadlock. A failed write (the helper died) shows in its status below.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(wasm);
        }
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for the compile helper: {e}"))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            return Err(match said.trim() {
                "" => format!("the compile helper ended with {}", output.status),
                said => said.to_string(),
            });
        }
        Ok(output.stdout)
    }
}
