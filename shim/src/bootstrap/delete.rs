//! The `delete` action: containerd runs it when a shim died or could not be reached, to
//! clean up after it.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::SystemTime;

use containerd_shim_protos::api::DeleteResponse;

use crate::bootstrap::error::BootstrapError;
use crate::bootstrap::reply;
use crate::cgroup::{cgroups_path, ContainerCgroup, Hierarchies};
use crate::clock::timestamp;
use crate::error::render;
use crate::runc::proxy::{self as runc_proxy, ContainerdEndpoint, NATIVE_MARKER};
use crate::task::mount;

/// File in the bundle holding the pid of the daemon serving it.
pub const SHIM_PID_FILE: &str = "shim.pid";

/// Removes the handover directories a dead daemon left for the container (see
/// `runtime::HandoverDir`): they may hold links to cache entries since evicted.
fn remove_handover(bundle: &Path, namespace: &str, id: &str) {
    runtime::set_compile_cache(crate::cache_config::compile_cache(bundle, |key| {
        std::env::var(key).ok()
    }));
    runtime::HandoverDir::remove_stale(namespace, id);
}

/// Cleans up `bundle` after a dead shim and writes the `DeleteResponse` to `stdout`.
///
/// A container's process ends with its shim, so a dead shim leaves no guest behind; what
/// can be left is a daemon that stopped answering (killed here, if the pid file still names
/// this binary), the container's cgroup and the rootfs mount.
///
/// A native container's bundle belongs to the runc shim: its own `delete` cleans it (runc
/// state, init process, rootfs) and answers.
pub fn delete(
    bundle: &Path,
    id: &str,
    endpoint: &ContainerdEndpoint,
    stdout: &mut dyn Write,
) -> Result<(), BootstrapError> {
    if bundle.join(NATIVE_MARKER).exists() {
        match runc_proxy::delete_native(endpoint, id, bundle) {
            Ok(reply) => return reply::write(stdout, &reply, "DeleteResponse"),
            Err(e) => log::warn!("{id}: {}; cleaning up what we can", render(&e)),
        }
    }
    let socket = std::fs::read_to_string(bundle.join("address"))
        .ok()
        .map(|a| std::path::PathBuf::from(a.trim().trim_start_matches("unix://")));
    // A daemon that still answers serves other containers of its pod: leave it and its
    // socket alone. One that does not is dead or hung: it goes, and so does its socket file,
    // which nothing else removes.
    let answering = socket
        .as_ref()
        .is_some_and(|s| UnixStream::connect(s).is_ok());
    if !answering {
        kill_stale_daemon(bundle);
        if let Some(socket) = socket.filter(|s| is_socket(s)) {
            match std::fs::remove_file(&socket) {
                Ok(()) => log::info!("removed the dead shim's socket {}", socket.display()),
                Err(e) => log::debug!("removing {}: {e}", socket.display()),
            }
        }
    }
    if !answering {
        end_container_cgroup(bundle);
        remove_handover(bundle, &endpoint.namespace, id);
    }
    let removed = mount::unmount_all(&bundle.join("rootfs"));
    if removed > 0 {
        log::info!("unmounted the rootfs of {}", bundle.display());
    }
    let response = DeleteResponse {
        pid: 0,
        // By convention a task whose shim died reports what SIGKILL would have given.
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    };
    reply::write(stdout, &reply::encode(&response)?, "DeleteResponse")
}

/// Kills whatever is left in the container's cgroup and removes it. A container's process
/// ends by itself when its shim dies (see `child`); this covers one that had not noticed yet
/// and the cgroup directories, which only the shim's Delete would have removed.
fn end_container_cgroup(bundle: &Path) {
    let Ok(text) = std::fs::read(bundle.join("config.json")) else {
        return;
    };
    let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(&text) else {
        return;
    };
    let Some(path) = cgroups_path(&spec) else {
        return;
    };
    let Ok(cgroup) = Hierarchies::discover().and_then(|h| ContainerCgroup::open(&h, path)) else {
        return;
    };
    // A frozen (paused) process would hold the kill until thawed.
    if cgroup.has_freezer() {
        let _ = cgroup.thaw();
    }
    for pid in cgroup.pids() {
        // SAFETY: kill(2) with a pid of the dead shim's container's cgroup.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    cgroup.remove();
    log::info!("removed the cgroup {path} of a dead shim's container");
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Kills the daemon the bundle's pid file names, which no longer answers on its socket.
fn kill_stale_daemon(bundle: &Path) {
    let Ok(text) = std::fs::read_to_string(bundle.join(SHIM_PID_FILE)) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    if pid <= 1 || pid == std::process::id() as i32 {
        return;
    }
    // Only kill what is still our own binary: the pid may have been reused.
    let ours = std::env::current_exe().ok();
    let is_ours = || ours.is_some() && ours == std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    // A daemon whose socket is gone but which still lives is usually shutting down: it
    // unlinks its socket first, then delivers its last events (up to 5 s) and exits. A
    // containerd that reloaded its shims after a restart runs this cleanup as soon as the
    // connection closes; killing at once would lose those events.
    let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
    while is_ours() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if is_ours() {
        log::warn!("killing unresponsive shim daemon {pid}");
        // SAFETY: plain kill(2) on a pid we just checked.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// How long a daemon that stopped answering gets to finish on its own: a little more than
/// the event flush a shutting-down daemon allows itself.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(5500);

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn writes_a_delete_response_with_status_137() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        let mut out = Vec::new();
        delete(
            bundle.path(),
            "c1",
            &ContainerdEndpoint::default(),
            &mut out,
        )
        .unwrap();
        let response = DeleteResponse::parse_from_bytes(&out).unwrap();
        assert_eq!(response.exit_status, 137);
        assert!(response.exited_at.seconds > 0);
    }
}
