//! The namespaces a container's process enters before its program is loaded.
//!
//! The main process makes or joins what the spec's `linux.namespaces` asks for: network (as
//! `netns` plans it), IPC, UTS (with the spec's hostname) and cgroup. Its mount namespace is
//! always its own (see `root`). An exec joins every namespace of its container's main
//! process, mount namespace last: after that one, the host's paths are gone.
//!
//! Not made: a PID namespace (it would have to exist before the process does, and a wasm
//! program has no way to see or signal processes), a user namespace (the spec's ids are
//! taken as they are, on the host) and a time namespace (Docker 29 lists one by default; a
//! wasm program's clocks are the host's).

use std::fs::File;
use std::os::fd::AsFd;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::child::netns::NetworkPlan;
use crate::error::{ShimError, ShimResult};

/// Makes or joins the namespaces `spec` asks for, apart from the mount and cgroup
/// namespaces (see [`enter_cgroup_namespace`]).
pub fn enter_from_spec(spec: &Spec) -> ShimResult<()> {
    NetworkPlan::from_spec(spec).enter()?;
    enter(spec, &[LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts])
}

/// Makes or joins the cgroup namespace the spec asks for. Called once the process is in its
/// cgroup: a new namespace is rooted at the cgroup the process is in when it is made.
pub fn enter_cgroup_namespace(spec: &Spec) -> ShimResult<()> {
    enter(spec, &[LinuxNamespaceType::Cgroup])
}

/// Makes or joins those of the spec's namespaces whose type is in `which`.
fn enter(spec: &Spec, which: &[LinuxNamespaceType]) -> ShimResult<()> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for namespace in namespaces.iter().filter(|n| which.contains(&n.typ())) {
        let flag = match namespace.typ() {
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            LinuxNamespaceType::Network | LinuxNamespaceType::Mount => continue,
            other => {
                log::debug!("namespace {other:?} is not made for a wasm process");
                continue;
            }
        };
        match namespace.path() {
            Some(path) if !path.as_os_str().is_empty() => {
                let file = File::open(path).map_err(|e| {
                    ShimError::InvalidArgument(format!("namespace {}: {e}", path.display()))
                })?;
                setns(file.as_fd(), flag).map_err(|e| {
                    ShimError::InvalidArgument(format!("joining namespace {}: {e}", path.display()))
                })?;
            }
            _ => unshare(flag).map_err(|e| {
                ShimError::internal(format!("making a {:?} namespace", namespace.typ()), e)
            })?,
        }
        if namespace.typ() == LinuxNamespaceType::Uts {
            if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
                // SAFETY: sethostname reads `len` bytes from the pointer.
                let rc = unsafe {
                    libc::sethostname(hostname.as_ptr() as *const libc::c_char, hostname.len())
                };
                if rc < 0 {
                    return Err(ShimError::internal(
                        format!("setting the hostname {hostname}"),
                        std::io::Error::last_os_error(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The namespaces of the main process `pid`, opened now (while `/proc` is the host's) to be
/// joined later with [`join`].
pub struct Joinable {
    namespaces: Vec<(File, CloneFlags, &'static str)>,
}

impl Joinable {
    /// Opens `/proc/PID/ns/*` of the main process, checking (after opening them) that `pid`
    /// is still a process of this shim: a pid freed by the main process's end and taken by
    /// another process must not lend it its namespaces.
    pub fn open(pid: u32) -> ShimResult<Joinable> {
        let mut namespaces = Vec::new();
        // The mount namespace goes last: joining it changes the root.
        for (name, flag) in [
            ("net", CloneFlags::CLONE_NEWNET),
            ("ipc", CloneFlags::CLONE_NEWIPC),
            ("uts", CloneFlags::CLONE_NEWUTS),
            ("cgroup", CloneFlags::CLONE_NEWCGROUP),
            ("mnt", CloneFlags::CLONE_NEWNS),
        ] {
            let path = format!("/proc/{pid}/ns/{name}");
            let file = File::open(&path).map_err(|e| {
                ShimError::FailedPrecondition(format!(
                    "the container's main process {pid} is gone ({path}: {e})"
                ))
            })?;
            namespaces.push((file, flag, name));
        }
        let parent = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("PPid:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
            });
        if parent != Some(std::os::unix::process::parent_id()) {
            return Err(ShimError::FailedPrecondition(format!(
                "the container's main process {pid} is gone"
            )));
        }
        Ok(Joinable { namespaces })
    }

    /// Joins them all; afterwards the root is the container's.
    pub fn join(self) -> ShimResult<()> {
        for (file, flag, name) in self.namespaces {
            setns(file.as_fd(), flag).map_err(|e| {
                ShimError::internal(format!("joining the container's {name} namespace"), e)
            })?;
        }
        Ok(())
    }
}
