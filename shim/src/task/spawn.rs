//! Starting a container's process: the shim binary executed afresh in its child mode (see
//! `child`), inside its cgroup (see `fork_exec`), with the program's stdio at 0–2, the
//! control socket and the shim's log.
//!
//! Why a new executable and not a fork of the shim: the shim is multithreaded, and a forked
//! child may only touch locks no other thread held at the fork; the program's process goes
//! on to load wasm, allocate and log, which all take locks. Executing the binary again
//! costs about a millisecond (measured: `containerd-shim-wasmtime-v1 -v` in 0.9 ms) and
//! gives a clean, single-threaded process whose compiled program comes from the compile
//! cache as a file mapping, shared with every other process that maps it.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use runtime::StdioFiles;

use crate::cgroup::Placement;
use crate::error::{ShimError, ShimResult};
use crate::launch::{self, FromChild, Launch, ToChild, CHILD_ENV, CONTROL_FD, LOG_FD};
use crate::task::fork_exec::{fork_exec, reap, ExecPlan, Forked};

/// What is executed to become a container's process: this binary in its child mode,
/// `/proc/self/exe` with [`CHILD_ENV`] (the [`Default`], and the only one the shim uses).
///
/// A value the task service hands down rather than a constant so that its unit tests can
/// execute a stand-in that speaks the same protocol over the control socket (see
/// `service_tests`): everything else, this spawn, the pidfd, the reaper and the exit loop,
/// is the real thing, with no wasm run, no namespace entered and no root needed.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl Default for ChildCommand {
    fn default() -> Self {
        ChildCommand {
            program: PathBuf::from("/proc/self/exe"),
            args: Vec::new(),
            env: Vec::new(),
        }
    }
}

#[cfg(test)]
impl ChildCommand {
    /// `program` with `args`, and `env` added to the inherited environment.
    pub fn new(program: PathBuf, args: Vec<OsString>, env: Vec<(OsString, OsString)>) -> Self {
        ChildCommand { program, args, env }
    }
}

/// The shim's part of a process's start (see [`spawn`]), for the process.
#[derive(Debug, Default)]
pub struct Prepared {
    /// For a server that starts on baseline code: the directory its optimized code will
    /// come through (see `runtime::HandoverDir`).
    pub handover: Option<PathBuf>,
}

/// A container's process that is ready and waits for Start.
pub struct Spawned {
    /// Its pid: the task's pid.
    pub pid: u32,
    /// A pidfd, to signal it without racing pid reuse and to see it exit.
    pub pidfd: OwnedFd,
    /// The control socket: Start goes down it, the exit report comes up it.
    pub control: UnixStream,
}

/// Starts the process for `launch`, executing `child` already in the cgroup of `placement`
/// (see `fork_exec`), and waits until it is ready (or failed, which fails the Create or
/// Exec with the child's reason; the process is reaped before returning).
/// `meanwhile` runs while the new process starts and enters its namespaces, before it loads
/// its program: the shim's part, which validates the program (filling the compile cache the
/// process loads from). It returns, for a server on baseline code, its handover directory;
/// its failure fails the start.
pub fn spawn(
    child: &ChildCommand,
    launch: Launch,
    stdio: StdioFiles,
    placement: &Placement,
    meanwhile: impl FnOnce() -> ShimResult<Prepared>,
) -> ShimResult<Spawned> {
    let (ours, theirs) =
        UnixStream::pair().map_err(|e| ShimError::internal("a control socket", e))?;
    let log = match crate::logger::sink_copy() {
        Some(log) => log,
        None => File::open("/dev/null").map_err(|e| ShimError::internal("opening /dev/null", e))?,
    };
    // A stream the program does not have reads and writes /dev/null, as `Stdio::null()`.
    let stream = |file: Option<File>| match file {
        Some(file) => Ok(file),
        None => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| ShimError::internal("opening /dev/null", e)),
    };
    let (stdin, stdout, stderr) = (
        stream(stdio.stdin)?,
        stream(stdio.stdout)?,
        stream(stdio.stderr)?,
    );
    // `ps`, `docker top` and `/proc/PID/cmdline` show the program this process runs, with
    // its arguments, as a native container's (the role comes from `CHILD_ENV`).
    let spec_args = launch
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let mut argv = shown_arguments(&spec_args);
    if argv.is_empty() {
        argv.push(child.program.clone().into_os_string());
    }
    // A stand-in's own arguments (see `ChildCommand`) follow the program's name alone.
    if !child.args.is_empty() {
        argv.truncate(1);
        argv.extend(child.args.iter().cloned());
    }
    let mut env = child.env.clone();
    env.push((CHILD_ENV.into(), std::process::id().to_string().into()));
    // The control socket and the log go where the child looks for them.
    const _: () = assert!(CONTROL_FD == 3 && LOG_FD == 4);
    let forked = fork_exec(&ExecPlan {
        program: &child.program,
        argv,
        env: &env,
        fds: [
            stdin.as_raw_fd(),
            stdout.as_raw_fd(),
            stderr.as_raw_fd(),
            theirs.as_raw_fd(),
            log.as_raw_fd(),
        ],
        v1_dirs: &placement.v1,
        v2_dir: placement.v2.as_deref(),
    })
    .map_err(|e| ShimError::internal("starting the container's process", e))?;
    drop((stdin, stdout, stderr, theirs, log));
    let Forked {
        pid,
        pidfd,
        v2_pending,
    } = forked;
    let name = launch.name.clone();
    // As runc does: the spec's score, else the one inherited from the shim (containerd's
    // own plus one). CRI always gives one, so a pod's container is not kept at the shim's.
    if let Some(score) = launch
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.oom_score_adj())
    {
        if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), score.to_string()) {
            log::debug!("{name}: oom_score_adj {score}: {e}");
        }
    }
    if let Err(e) = launch::send(&ours, &ToChild::Launch(Box::new(launch))) {
        let status = reap(pid, true);
        return Err(ShimError::internal(
            format!("{name}: launching ({status})"),
            e,
        ));
    }
    // While the child executes the binary and enters its namespaces (about 2 ms), not
    // before: validating overlaps its start. It loads nothing before Joined, so the cache
    // holds what validation compiled.
    let prepared = meanwhile().and_then(|prepared| {
        if let (true, Some(dir)) = (v2_pending, &placement.v2) {
            join_cgroup(pid, &dir.join("cgroup.procs"))?;
        }
        Ok(prepared)
    });
    let handover = match prepared {
        Ok(prepared) => prepared.handover,
        Err(e) => {
            reap(pid, true);
            // A process that failed on its own (a namespace it could not enter) said why; the
            // socket holds that, or end-of-file now that the process is gone.
            return Err(match launch::receive::<FromChild>(&ours) {
                Ok(Some(FromChild::Failed { kind, message })) => kind.error(message),
                _ => e,
            });
        }
    };
    // A process that already failed has closed its end: the answer below says why.
    let _ = launch::send(&ours, &ToChild::Joined { handover });
    let answer = launch::receive::<FromChild>(&ours);
    match answer {
        Ok(Some(FromChild::Ready)) => Ok(Spawned {
            pid,
            pidfd,
            control: ours,
        }),
        Ok(Some(FromChild::Failed { kind, message })) => {
            reap(pid, false);
            Err(kind.error(message))
        }
        other => {
            let status = reap(pid, true);
            Err(ShimError::Internal(format!(
                "{name}: its process ended before it was ready ({status}; {other:?})"
            )))
        }
    }
}

/// How much of a program's command line its process shows: the whole of a usual one, and of
/// a very long one the arguments that fit, so that the exec never fails for its length
/// (the kernel refuses one argument over 128 KiB, and all over a quarter of the stack limit).
const SHOWN_ARGUMENTS_MAX: usize = 32 * 1024;

/// The leading `args` that fit in [`SHOWN_ARGUMENTS_MAX`] bytes, up to the first that holds a
/// NUL byte (which a command line cannot): only what `ps` shows, not what the program gets.
fn shown_arguments(args: &[String]) -> Vec<OsString> {
    let mut total = 0;
    args.iter()
        .take_while(|arg| {
            total += arg.len() + 1;
            total <= SHOWN_ARGUMENTS_MAX && !arg.contains('\0')
        })
        .map(OsString::from)
        .collect()
}

/// Moves process `pid` into the cgroup whose `cgroup.procs` file is `procs`: the slow way
/// in, for a kernel that could not make the process there (see `fork_exec`).
fn join_cgroup(pid: u32, procs: &Path) -> ShimResult<()> {
    std::fs::write(procs, pid.to_string()).map_err(|e| {
        ShimError::internal(
            format!("moving the process into its cgroup ({})", procs.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_shows_the_program_and_what_fits_of_its_arguments() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let shown = |list: Vec<String>| shown_arguments(&list);
        assert_eq!(
            shown(args(&["/app.wasm", "-p", "80"])),
            vec![
                OsString::from("/app.wasm"),
                OsString::from("-p"),
                OsString::from("80")
            ]
        );
        // A NUL byte cannot be in a command line: shown up to it.
        assert_eq!(
            shown(args(&["/app.wasm", "a\0b", "c"])),
            vec![OsString::from("/app.wasm")]
        );
        // A very long one: the arguments that fit, never more than the bound.
        let long = "x".repeat(10_000);
        let many = shown(vec![long.clone(); 10]);
        assert_eq!(many.len(), 3);
        assert!(many.iter().map(|a| a.len() + 1).sum::<usize>() <= SHOWN_ARGUMENTS_MAX);
        assert!(shown(Vec::new()).is_empty());
    }
}
