//! Moving the shim that serves a pod into the pod's cgroup.
//!
//! Each wasm container's process has a cgroup of its own, below the pod's; the shim's own
//! work for the pod (validating and compiling programs, copying output) is the shim's. The
//! node (kubelet, cAdvisor, the OOM killer's pod limits) accounts a pod by its cgroup: the
//! parent of the cgroup the sandbox's spec names. Living there makes the shim's share count
//! where an operator looks for it.

use std::path::{Path, PathBuf};

use crate::cgroup::{expand_slice, Hierarchies};

/// The pod's cgroup, relative to each hierarchy's root, from a container's `cgroupsPath`:
/// its parent for the cgroupfs form (`/kubepods/burstable/pod<uid>/<id>`), the slice for the
/// systemd form (`kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`).
pub fn pod_cgroup(cgroups_path: &str) -> Option<PathBuf> {
    if cgroups_path.starts_with('/') {
        let parent = Path::new(cgroups_path).parent()?;
        return (parent != Path::new("/")).then(|| parent.to_path_buf());
    }
    let (slice, _) = cgroups_path.split_once(':')?;
    expand_slice(slice).ok()
}

/// Moves the processes `pids` into `cgroup` in every hierarchy where that cgroup exists
/// (runc made it when it created the sandbox). Returns how many hierarchies took them.
pub fn join(cgroup: &Path, pids: &[i32]) -> usize {
    let relative = cgroup.strip_prefix("/").unwrap_or(cgroup);
    let hierarchies = match Hierarchies::discover() {
        Ok(hierarchies) => hierarchies,
        Err(e) => {
            log::debug!("moving into the pod cgroup: {e}");
            return 0;
        }
    };
    let mut joined = 0;
    for hierarchy in hierarchies.list() {
        let dir = hierarchy.mount.join(relative);
        if !dir.is_dir() {
            continue;
        }
        let mut ok = true;
        for pid in pids {
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                log::debug!("moving {pid} into {}: {e}", dir.display());
                ok = false;
            }
        }
        if ok {
            joined += 1;
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_cgroup_is_the_parent_in_both_forms() {
        assert_eq!(
            pod_cgroup("/kubepods/burstable/pod123/abc"),
            Some(PathBuf::from("/kubepods/burstable/pod123"))
        );
        assert_eq!(pod_cgroup("/abc"), None);
        assert_eq!(
            pod_cgroup("kubepods-burstable-pod123.slice:cri-containerd:abc"),
            Some(PathBuf::from(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod123.slice"
            ))
        );
        assert_eq!(pod_cgroup("nonsense"), None);
    }
}
