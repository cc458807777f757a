//! The cgroups a test's daemons leave under a parent of the test's own (a pod's cgroup
//! parent, dockerd's `cgroup-parent`): found in every hierarchy, cgroup v1 (one per
//! controller, `/sys/fs/cgroup/CONTROLLER/PARENT`) and v2 (`/sys/fs/cgroup/PARENT`), and
//! removed deepest first.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the cgroup filesystems are mounted.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// Every cgroup directory at or below `parent` (an absolute cgroup path), deepest first.
pub fn dirs(parent: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
        out.push(dir.to_path_buf());
    }
    let relative = parent.trim_start_matches('/');
    let root = Path::new(CGROUP_MOUNT);
    // v2 (or v2's part of a hybrid host), then each v1 hierarchy.
    let candidates = std::iter::once(root.join(relative)).chain(
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|hierarchy| hierarchy.path().join(relative)),
    );
    let mut dirs = Vec::new();
    for dir in candidates {
        if dir.is_dir() && !dirs.contains(&dir) {
            walk(&dir, &mut dirs);
        }
    }
    dirs
}

/// The pids in the cgroups at or below `parent`, in any hierarchy.
pub fn pids(parent: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = dirs(parent)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes the cgroups at or below `parent`, waiting up to `timeout` for the processes of
/// each to leave it (a killed process leaves its cgroup a moment after the signal).
pub fn remove(parent: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for dir in dirs(parent) {
        while std::fs::remove_dir(&dir).is_err() && dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
