//! Moving the shim that serves a pod into the pod's cgroup.
//!
//! Each wasm container's process has a cgroup of its own, below the pod's; the shim's own
//! work for the pod (validating and compiling programs, copying output) is the shim's. The
//! node (kubelet, cAdvisor, the OOM killer's pod limits) accounts a pod by its cgroup: the
//! parent of the cgroup the sandbox's spec names. Living there makes the shim's share count
//! where an operator looks for it.

use std::path::{Path, PathBuf};

use crate::cgroup::{expand_slice, Hierarchies, HierarchyKind};

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

/// The `cgroup.procs` files of this process's cgroups, one per hierarchy: where it goes
/// back to when it leaves the pod's cgroup.
pub fn current_procs_files() -> Vec<PathBuf> {
    let (Ok(hierarchies), Ok(text)) = (
        Hierarchies::discover(),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return Vec::new();
    };
    procs_files(&hierarchies, &text)
}

/// The `cgroup.procs` files of the cgroups a `/proc/PID/cgroup` text names
/// (`ID:CONTROLLERS:PATH` lines; v2's has no controllers), in the hierarchies found.
fn procs_files(hierarchies: &Hierarchies, proc_cgroup: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let named: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
        let hierarchy = hierarchies.list().iter().find(|h| match &h.kind {
            HierarchyKind::V2 => named.is_empty(),
            HierarchyKind::V1 { controllers } => {
                !named.is_empty()
                    && named.len() == controllers.len()
                    && named.iter().all(|c| controllers.iter().any(|k| k == c))
            }
        });
        if let Some(hierarchy) = hierarchy {
            let relative = path.trim_start_matches('/');
            files.push(hierarchy.mount.join(relative).join("cgroup.procs"));
        }
    }
    files
}

/// Moves this process into the cgroups whose `cgroup.procs` files are `files`; returns how
/// many took it.
pub fn leave_to(files: &[PathBuf]) -> usize {
    place(std::process::id(), files)
}

/// Moves process `pid` into the cgroups whose `cgroup.procs` files are `files`; returns how
/// many took it.
pub fn place(pid: u32, files: &[PathBuf]) -> usize {
    let pid = pid.to_string();
    files
        .iter()
        .filter(|file| match std::fs::write(file, &pid) {
            Ok(()) => true,
            Err(e) => {
                log::debug!("moving {pid} into {}: {e}", file.display());
                false
            }
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_cgroups_map_to_their_hierarchies_procs_files() {
        let hierarchies = Hierarchies::from_mountinfo(
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let files = procs_files(
            &hierarchies,
            "9:name=systemd:/\n4:memory:/system.slice/containerd.service\n\
             2:cpu,cpuacct:/\n0::/system.slice/containerd.service\n",
        );
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/systemd/cgroup.procs",
                "/sys/fs/cgroup/memory/system.slice/containerd.service/cgroup.procs",
                "/sys/fs/cgroup/cpu,cpuacct/cgroup.procs",
                "/sys/fs/cgroup/unified/system.slice/containerd.service/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
    }

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
