//! The shim binary run a third way: as the helper that compiles a program's optimized code in
//! the background, in a process of its own at the kernel's idle priority (see
//! `runtime::run_compile_helper` for why a process and not a thread). The daemon starts it
//! through `/proc/self/exe`, as it starts containers' processes, so it is always this very
//! build, whose engine makes code the daemon's engines load.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

use crate::runc::pod_cgroup;

/// The first argument that makes this binary a compile helper.
pub const COMPILE_HELPER_ARG: &str = "--compile-helper";

/// The cgroups the daemon started in, one `cgroup.procs` file per hierarchy.
static HOME: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Has this daemon's background compiles run by compile helpers. Called as the daemon
/// starts, before it may join a pod's cgroup: each helper goes to the cgroups the daemon has
/// now, so a pod's shim compiles in the background outside the pod's limits, as a shim of
/// its own would.
pub fn register() {
    let _ = HOME.set(pod_cgroup::current_procs_files());
    runtime::set_compile_helper(
        PathBuf::from("/proc/self/exe"),
        vec![OsString::from(COMPILE_HELPER_ARG)],
        place,
    );
}

/// Moves a helper into the daemon's starting cgroups (a no-op for a daemon still in them).
/// A helper that cannot be moved still compiles: see below.
fn place(pid: u32) {
    let Some(home) = HOME.get() else {
        return;
    };
    let moved = pod_cgroup::place(pid, home);
    let line = format!(
        "compile helper {pid}: in {moved} of the {} cgroups the shim started in",
        home.len()
    );
    // Left where the shim is, in a pod's cgroup the compile shares the pod's limits; at
    // worst the pod's OOM killer takes the helper first (its score is the highest), and the
    // program keeps its baseline code.
    if moved < home.len() || home.is_empty() {
        log::warn!("{line}: the rest of its compile counts where the shim is");
    } else {
        log::debug!("{line}");
    }
}

/// The helper's main: `args` are what follows [`COMPILE_HELPER_ARG`]. Its error goes to
/// stderr, which the daemon logs.
pub fn run(args: &[String]) -> ExitCode {
    match runtime::run_compile_helper(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", crate::error::render(&e));
            ExitCode::FAILURE
        }
    }
}
