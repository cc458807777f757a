//! OCI lifecycle hooks for wasm containers.
//!
//! runc runs a Linux container's hooks itself; for a wasm container the shim is the runtime,
//! so it runs them at the points the OCI runtime spec names. NRI plugins, GPU toolkits and
//! network plugins rely on them: the create-time hooks see the pid Create returns (the
//! container's process, already in its cgroup and namespaces) before any wasm runs.
//!
//! | phase | when | state `status` | a failure |
//! |---|---|---|---|
//! | prestart, createRuntime, createContainer | Create, program loaded, before Create returns | `creating` | fails Create |
//! | startContainer | Start, before the program runs | `created` | fails Start; the program never runs |
//! | poststart | Start, after the program started | `running` | logged |
//! | poststop | Delete, after the program ended and the rootfs is unmounted | `stopped` | logged |

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};
use thiserror::Error;

use crate::error::{render, ShimError, ShimResult};

/// The hook phases of the OCI runtime spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Deprecated by OCI but still sent by older clients; runs with createRuntime.
    Prestart,
    /// After the runtime environment exists, before Create returns.
    CreateRuntime,
    /// After createRuntime (for wasm there is no separate container namespace to enter).
    CreateContainer,
    /// At Start, before the program runs.
    StartContainer,
    /// After the program started.
    Poststart,
    /// After the container is deleted.
    Poststop,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Prestart => "prestart",
            Phase::CreateRuntime => "createRuntime",
            Phase::CreateContainer => "createContainer",
            Phase::StartContainer => "startContainer",
            Phase::Poststart => "poststart",
            Phase::Poststop => "poststop",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Phase::Prestart | Phase::CreateRuntime | Phase::CreateContainer => "creating",
            Phase::StartContainer => "created",
            Phase::Poststart => "running",
            Phase::Poststop => "stopped",
        }
    }

    /// Whether a failing hook fails the operation (the rest only log, as OCI says).
    fn is_fatal(self) -> bool {
        !matches!(self, Phase::Poststart | Phase::Poststop)
    }
}

/// A container's hooks and what their state document says about it.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    hooks: Option<oci_spec::runtime::Hooks>,
    oci_version: String,
    id: String,
    bundle: PathBuf,
    annotations: std::collections::HashMap<String, String>,
}

impl Hooks {
    /// The hooks of `spec`, for container `id` in `bundle`.
    pub fn from_spec(spec: &Spec, id: &str, bundle: &Path) -> Hooks {
        Hooks {
            hooks: spec.hooks().clone(),
            oci_version: spec.version().clone(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            annotations: spec.annotations().clone().unwrap_or_default(),
        }
    }

    fn of(&self, phase: Phase) -> &[Hook] {
        let Some(hooks) = &self.hooks else {
            return &[];
        };
        #[allow(deprecated)]
        let list = match phase {
            Phase::Prestart => hooks.prestart(),
            Phase::CreateRuntime => hooks.create_runtime(),
            Phase::CreateContainer => hooks.create_container(),
            Phase::StartContainer => hooks.start_container(),
            Phase::Poststart => hooks.poststart(),
            Phase::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }

    /// The OCI state document a hook reads on its stdin.
    fn state(&self, phase: Phase, pid: u32) -> Vec<u8> {
        let mut state = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": phase.status(),
            "bundle": self.bundle,
            "annotations": self.annotations,
        });
        // A stopped container has no process; OCI leaves `pid` out then.
        if phase != Phase::Poststop {
            state["pid"] = pid.into();
        }
        serde_json::to_vec(&state).unwrap_or_default()
    }

    /// Runs the hooks of `phase` in order. For the phases that can fail a container, the
    /// first failure stops the rest and is returned with the hook's output; for poststart and
    /// poststop a failure is logged and the next hook runs.
    pub fn run(&self, phase: Phase, pid: u32) -> ShimResult<()> {
        let hooks = self.of(phase);
        if hooks.is_empty() {
            return Ok(());
        }
        let state = self.state(phase, pid);
        for hook in hooks {
            log::info!(
                "{}: {} hook {}",
                self.id,
                phase.name(),
                hook.path().display()
            );
            if let Err(why) = run_hook(hook, &state) {
                let what = format!("{} hook {} failed", phase.name(), hook.path().display());
                if phase.is_fatal() {
                    return Err(ShimError::failed_precondition(what, why));
                }
                log::warn!("{}: {what}: {}", self.id, render(&why));
            }
        }
        Ok(())
    }
}

/// How often a running hook is checked for its end: short next to any timeout a spec can
/// express (whole seconds), cheap for a hook that takes a while.
const POLL: Duration = Duration::from_millis(5);

/// Output kept from a failing hook for the error message.
const OUTPUT_LIMIT: usize = 4096;

/// Why one hook failed, after "<phase> hook <path> failed". The output a failing hook
/// printed is part of the message: it is what tells an operator why.
#[derive(Debug, Error)]
enum HookError {
    /// The file its output goes to could not be made.
    #[error("creating its output file")]
    OutputFile(#[source] std::io::Error),
    /// It could not be started (missing, not executable...).
    #[error("starting it")]
    Start(#[source] std::io::Error),
    /// Its end could not be waited for.
    #[error("waiting for it")]
    Wait(#[source] std::io::Error),
    /// It ran past the timeout its spec gives, and was killed.
    #[error("timed out after {seconds}s{output}")]
    TimedOut {
        /// The spec's timeout.
        seconds: u64,
        /// `: <output>`, or nothing (see `output_text`).
        output: String,
    },
    /// It ended unsuccessfully.
    #[error("{status}{output}")]
    Failed {
        /// How it ended.
        status: std::process::ExitStatus,
        /// `: <output>`, or nothing (see `output_text`).
        output: String,
    },
}

fn run_hook(hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let args = hook.args().clone().unwrap_or_default();
    let mut command = Command::new(hook.path());
    if let Some((arg0, rest)) = args.split_first() {
        command.arg0(arg0).args(rest);
    }
    // The hook's environment is exactly the one the spec gives, as runc does: the shim's
    // own (containerd's) must not leak into it.
    command.env_clear();
    for var in hook.env().as_deref().unwrap_or(&[]) {
        match var.split_once('=') {
            Some((key, value)) => command.env(key, value),
            None => command.env(var, ""),
        };
    }
    // Output goes to a temporary file rather than a pipe so a chatty hook cannot block on a
    // full pipe while we wait for it.
    let output = memory_file().map_err(HookError::OutputFile)?;
    let output_err = output.try_clone().map_err(HookError::OutputFile)?;
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::from(
            output.try_clone().map_err(HookError::OutputFile)?,
        ))
        .stderr(Stdio::from(output_err));
    let mut child = command.spawn().map_err(HookError::Start)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state closes the pipe early: not an error.
        let _ = stdin.write_all(state);
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(HookError::Wait(e)),
        }
        if let Some(limit) = timeout {
            if started.elapsed() >= limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::TimedOut {
                    seconds: limit.as_secs(),
                    output: output_text(output),
                });
            }
        }
        std::thread::sleep(POLL);
    };
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            status,
            output: output_text(output),
        })
    }
}

/// An anonymous in-memory file (close-on-exec in the shim; the hook gets its own copy as its
/// stdout and stderr).
fn memory_file() -> std::io::Result<std::fs::File> {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"oci-hook-output".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The hook's output, for an error message: `: <output>`, or nothing if it printed nothing.
fn output_text(mut file: std::fs::File) -> String {
    use std::io::Seek;
    let mut bytes = Vec::new();
    let _ = file.seek(std::io::SeekFrom::Start(0));
    let _ = file.take(OUTPUT_LIMIT as u64).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_hooks(hooks: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "hooks": hooks,
            "annotations": {"a": "b"},
        }))
        .unwrap()
    }

    #[test]
    fn hooks_get_the_state_args_and_only_their_env_and_failures_carry_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {out}.state; echo \"$0 $1 ${{HOME:-nohome}} $GREETING\" > {out}",
            out = out.display()
        );
        let spec = spec_with_hooks(serde_json::json!({
            "createRuntime": [{
                "path": "/bin/sh",
                // args[0] is the hook's argv[0]; for `sh -c`, the next ones are $0 and $1.
                "args": ["hook-name", "-c", script, "zero", "first"],
                "env": ["GREETING=hi"],
            }],
            "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}],
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}],
            "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 5"], "timeout": 1}],
        }));
        let hooks = Hooks::from_spec(&spec, "c1", Path::new("/bundle"));

        hooks.run(Phase::CreateRuntime, 42).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "zero first nohome hi"
        );
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(format!("{}.state", out.display())).unwrap())
                .unwrap();
        assert_eq!(state["id"], "c1");
        assert_eq!(state["pid"], 42);
        assert_eq!(state["status"], "creating");
        assert_eq!(state["bundle"], "/bundle");
        assert_eq!(state["ociVersion"], "1.2.0");
        assert_eq!(state["annotations"]["a"], "b");

        // poststart failures are only logged.
        hooks.run(Phase::Poststart, 42).unwrap();
        let err = hooks.run(Phase::StartContainer, 42).unwrap_err();
        assert_eq!(
            err.code(),
            containerd_shim_protos::ttrpc::Code::FAILED_PRECONDITION
        );
        let err = render(&err);
        assert!(
            err.contains("startContainer") && err.contains("boom"),
            "{err}"
        );
        assert!(err.contains("exit status: 3"), "{err}");

        let started = Instant::now();
        hooks.run(Phase::Poststop, 42).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "timeout not kept"
        );
        let fatal = spec_with_hooks(serde_json::json!({
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 5"], "timeout": 1}],
        }));
        let err = render(
            &Hooks::from_spec(&fatal, "c2", Path::new("/b"))
                .run(Phase::Prestart, 1)
                .unwrap_err(),
        );
        assert!(err.contains("timed out after 1s"), "{err}");
        let missing = spec_with_hooks(serde_json::json!({
            "createContainer": [{"path": "/no/such/hook"}],
        }));
        let err = render(
            &Hooks::from_spec(&missing, "c3", Path::new("/b"))
                .run(Phase::CreateContainer, 1)
                .unwrap_err(),
        );
        // The cause chain reaches the message: which hook, what step, and the OS's reason.
        assert_eq!(
            err,
            "createContainer hook /no/such/hook failed: starting it: \
             No such file or directory (os error 2)"
        );
    }
}
