//! cgroup v2 (pure unified layout): enabling controllers down the tree, writing resources
//! the way runc's fs2 driver does, and the v2 freezer.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::{read_file, read_keyed, v1::pids_max, write_file, CgroupError};
use crate::error::render;

/// The controllers a container's resources can need, in the order runc enables them.
const WANTED: &[&str] = &["cpu", "cpuset", "memory", "pids", "io"];

/// Names listed in a space-separated controller file (`cgroup.controllers`,
/// `cgroup.subtree_control`); a leading `+` is dropped so a fake tree's file, holding what
/// was written rather than what the kernel shows, reads the same.
fn controllers(dir: &Path, file: &str) -> HashSet<String> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| c.trim_start_matches('+').to_string())
        .collect()
}

/// Enables in `parent`'s `cgroup.subtree_control` the wanted controllers that the
/// hierarchy (`mount`) offers, so that `parent`'s children get their control files. One
/// write enables all of them; if the kernel refuses (one controller cannot be enabled, say
/// `cpu` beside a real-time task), each is tried alone so the others still apply. What
/// fails is logged and the resources of that controller are skipped later.
pub(super) fn enable_controllers(mount: &Path, parent: &Path) {
    let available = controllers(mount, "cgroup.controllers");
    let wanted: Vec<String> = WANTED
        .iter()
        .filter(|c| available.contains(**c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return;
    }
    if write_file(parent, "cgroup.subtree_control", &wanted.join(" ")).is_ok() {
        return;
    }
    for controller in &wanted {
        if let Err(e) = write_file(parent, "cgroup.subtree_control", controller) {
            log::debug!("enabling a cgroup controller: {e}");
        }
    }
}

/// Writes `resources` into the v2 cgroup `dir` of hierarchy `mount`. Resources of a
/// controller that is not enabled for `dir` are skipped (logged), except a memory limit
/// while the hierarchy has a memory controller: that is an error, since the container
/// would otherwise run without the limit its spec asks for.
pub(super) fn apply(
    mount: &Path,
    dir: &Path,
    resources: &LinuxResources,
) -> Result<(), CgroupError> {
    // The controllers a cgroup has are those its parent enabled for its children.
    let enabled = dir
        .parent()
        .map(|parent| controllers(parent, "cgroup.subtree_control"))
        .unwrap_or_default();
    let skip = |controller: &str| {
        log::debug!(
            "{controller} controller not enabled for {}: skipped",
            dir.display()
        );
    };
    if let Some(memory) = resources.memory() {
        if enabled.contains("memory") {
            apply_memory(dir, memory)?;
        } else if memory.limit().is_some_and(|l| l > 0) {
            if controllers(mount, "cgroup.controllers").contains("memory") {
                return Err(CgroupError::MemoryControllerDisabled {
                    path: dir.to_path_buf(),
                });
            }
            log::warn!("no memory cgroup controller: memory limit not applied");
        }
    }
    if let Some(cpu) = resources.cpu() {
        match enabled.contains("cpu") {
            true => apply_cpu(dir, cpu)?,
            false => skip("cpu"),
        }
        match enabled.contains("cpuset") {
            true => apply_cpuset(dir, cpu)?,
            false => skip("cpuset"),
        }
    }
    if let Some(pids) = resources.pids() {
        match enabled.contains("pids") {
            true => write_file(dir, "pids.max", &pids_max(pids))?,
            false => skip("pids"),
        }
    }
    if let Some(block_io) = resources.block_io() {
        match enabled.contains("io") {
            true => apply_io_weight(dir, block_io)?,
            false => skip("io"),
        }
    }
    // `linux.resources.unified` names v2 files directly; runc writes them as given.
    for (file, value) in resources.unified().iter().flatten() {
        if file.contains('/') || file.starts_with('.') {
            return Err(CgroupError::InvalidValue {
                file: "linux.resources.unified",
                value: file.clone(),
                reason: "must be a file name in the cgroup directory",
            });
        }
        write_file(dir, file, value)?;
    }
    Ok(())
}

/// runc's rendering of an OCI memory value for v2: 0 unset, -1 `max`.
fn memory_value(value: i64) -> Option<String> {
    match value {
        0 => None,
        -1 => Some("max".to_string()),
        n => Some(n.to_string()),
    }
}

/// `memory.swap.max` from OCI's swap, which is memory + swap (the v1 memsw meaning):
/// runc's conversion, `swap - limit`, with -1 meaning unlimited.
fn swap_max(limit: i64, swap: i64) -> Result<i64, CgroupError> {
    let invalid = |reason| CgroupError::InvalidValue {
        file: "memory.swap.max",
        value: swap.to_string(),
        reason,
    };
    // v1 compatibility: unlimited memory with no swap given means unlimited swap too.
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if limit == 0 || limit == -1 {
        return Err(invalid("a swap limit needs a memory limit"));
    }
    if limit < 0 || swap < limit {
        return Err(invalid("memory+swap must be at least the memory limit"));
    }
    Ok(swap - limit)
}

/// Swap, limit and reservation, in runc's order (swap first).
fn apply_memory(dir: &Path, memory: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = memory.limit().unwrap_or(0);
    let oci_swap = memory.swap().unwrap_or(0);
    let swap = swap_max(limit, oci_swap)?;
    let swap_text = match memory_value(swap) {
        // Memory and memory+swap equal: no swap at all.
        None if oci_swap > 0 => Some("0".to_string()),
        text => text,
    };
    if let Some(text) = swap_text {
        let missing = !dir.join("memory.swap.max").exists();
        // Without swap accounting the file is absent; "no swap" and "unlimited swap" then
        // hold anyway, as runc reasons. A real swap limit still fails loudly below.
        if missing && (text == "max" || text == "0") {
            log::debug!(
                "no memory.swap.max in {}: swap {text} skipped",
                dir.display()
            );
        } else {
            write_file(dir, "memory.swap.max", &text)?;
        }
    }
    if let Some(text) = memory_value(limit) {
        write_file(dir, "memory.max", &text)?;
    }
    if let Some(text) = memory.reservation().and_then(memory_value) {
        write_file(dir, "memory.low", &text)?;
    }
    if memory.swappiness().is_some() {
        log::debug!("memory.swappiness has no cgroup v2 equivalent: skipped");
    }
    Ok(())
}

/// runc's mapping of v1 `cpu.shares` (2..262144) onto v2 `cpu.weight` (1..10000).
pub(super) fn cpu_weight(shares: u64) -> u64 {
    1 + (shares.saturating_sub(2) * 9999) / 262_142
}

/// Weight and bandwidth.
fn apply_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        write_file(dir, "cpu.weight", &cpu_weight(shares).to_string())?;
    }
    let quota = cpu.quota().unwrap_or(0);
    let period = cpu.period().unwrap_or(0);
    if quota != 0 || period != 0 {
        let mut max = match quota {
            q if q > 0 => q.to_string(),
            _ => "max".to_string(),
        };
        // As runc: without a period, the kernel keeps the current one (100000 in a new
        // cgroup), so an update of the quota alone does not reset a custom period.
        if period != 0 {
            max.push_str(&format!(" {period}"));
        }
        write_file(dir, "cpu.max", &max)?;
    }
    if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
        log::debug!("real-time cpu bandwidth has no cgroup v2 equivalent: skipped");
    }
    Ok(())
}

/// The cpus and memory nodes the container may use.
fn apply_cpuset(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(cpus) = cpu.cpus().as_deref().filter(|c| !c.is_empty()) {
        write_file(dir, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|m| !m.is_empty()) {
        write_file(dir, "cpuset.mems", mems)?;
    }
    Ok(())
}

/// The block I/O weight: `io.bfq.weight` takes the v1 value (10..1000) as is; `io.weight`
/// (1..10000) gets runc's conversion.
fn apply_io_weight(dir: &Path, block_io: &LinuxBlockIo) -> Result<(), CgroupError> {
    let Some(weight) = block_io.weight().filter(|&w| w != 0) else {
        return Ok(());
    };
    if dir.join("io.bfq.weight").exists() {
        return write_file(dir, "io.bfq.weight", &weight.to_string());
    }
    let converted = 1 + (u64::from(weight).saturating_sub(10) * 9999) / 990;
    write_file(dir, "io.weight", &converted.to_string())
}

/// Whether the kernel has the v2 freezer (Linux 5.2 and later).
pub(super) fn has_freezer(dir: &Path) -> bool {
    dir.join("cgroup.freeze").exists()
}

const POLL: Duration = Duration::from_millis(1);
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes `cgroup.freeze`. Freezing waits for `frozen 1` in `cgroup.events`, which the
/// kernel sets once every task has stopped; on timeout the cgroup is thawed again. Thawing
/// takes effect at once and is not waited for (runc does the same).
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    write_file(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
    if !frozen {
        return Ok(());
    }
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        let events = read_file(dir, "cgroup.events")?;
        if events.lines().any(|line| line.trim() == "frozen 1") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            if let Err(e) = write_file(dir, "cgroup.freeze", "0") {
                log::warn!("thawing after a failed freeze: {}", render(&e));
            }
            return Err(CgroupError::FreezeTimeout {
                path: dir.join("cgroup.events"),
                wanted: "frozen 1",
            });
        }
        std::thread::sleep(POLL);
    }
}

/// `oom_kill` from `memory.events`.
pub(super) fn oom_kills(dir: &Path) -> u64 {
    read_keyed(dir, "memory.events")
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::{ContainerCgroup, Hierarchies};
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    /// A fake pure-v2 host: the root offers every controller a container needs.
    pub(in super::super) fn fake_v2() -> (tempfile::TempDir, Hierarchies) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mount = tmp.path().join("cgroup");
        fs::create_dir(&mount).expect("mkdir");
        fs::write(
            mount.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .expect("w");
        let mountinfo = format!(
            "35 24 0:30 / {} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
            mount.display()
        );
        let h = Hierarchies::from_mountinfo(&mountinfo);
        assert!(h.is_unified());
        (tmp, h)
    }

    /// Pre-creates the leaf with the kernel files the code checks for before writing.
    pub(in super::super) fn kernel_files(leaf: &Path) {
        fs::create_dir_all(leaf).expect("mkdir");
        fs::write(leaf.join("memory.swap.max"), "max\n").expect("w");
        fs::write(leaf.join("cgroup.freeze"), "0\n").expect("w");
        fs::write(leaf.join("cgroup.events"), "populated 1\nfrozen 1\n").expect("w");
    }

    fn read(path: PathBuf) -> String {
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    #[test]
    fn create_enables_controllers_down_the_tree_and_writes_resources() {
        let (tmp, h) = fake_v2();
        let mount = tmp.path().join("cgroup");
        let leaf = mount.join("kubepods.slice/kubepods-pod1.slice/cri-containerd-c1.scope");
        kernel_files(&leaf);
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 67108864, "swap": 100663296, "reservation": 1048576},
                "cpu": {"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0"},
                "pids": {"limit": 10}}"#,
        )
        .expect("json");
        let cgroup = ContainerCgroup::create(&h, "kubepods-pod1.slice:cri-containerd:c1", Some(&r))
            .expect("create");
        for dir in [
            &mount,
            &mount.join("kubepods.slice"),
            leaf.parent().expect("parent"),
        ] {
            let enabled = controllers(dir, "cgroup.subtree_control");
            for c in WANTED {
                assert!(enabled.contains(*c), "{c} not enabled in {}", dir.display());
            }
        }
        assert!(
            !leaf.join("cgroup.subtree_control").exists(),
            "leaf enables nothing"
        );
        assert_eq!(read(leaf.join("memory.max")), "67108864");
        assert_eq!(read(leaf.join("memory.swap.max")), "33554432");
        assert_eq!(read(leaf.join("memory.low")), "1048576");
        assert_eq!(read(leaf.join("cpu.weight")), "39");
        assert_eq!(read(leaf.join("cpu.max")), "20000 100000");
        assert_eq!(read(leaf.join("cpuset.cpus")), "0");
        assert_eq!(read(leaf.join("pids.max")), "10");
        let placement = cgroup.placement();
        assert_eq!((placement.v1.len(), placement.v2), (0, Some(leaf.clone())));

        assert!(cgroup.has_freezer());
        cgroup.freeze().expect("freeze");
        assert_eq!(read(leaf.join("cgroup.freeze")), "1");
        cgroup.thaw().expect("thaw");
        assert_eq!(read(leaf.join("cgroup.freeze")), "0");

        cgroup.remove();
        assert!(!leaf.exists());
        assert!(leaf.parent().expect("parent").exists());
    }

    #[test]
    fn only_controllers_the_root_offers_are_enabled() {
        let (tmp, h) = fake_v2();
        let mount = tmp.path().join("cgroup");
        fs::write(mount.join("cgroup.controllers"), "memory pids\n").expect("w");
        let r: LinuxResources =
            serde_json::from_str(r#"{"cpu": {"shares": 1024}, "pids": {"limit": 5}}"#)
                .expect("json");
        ContainerCgroup::create(&h, "/a/b", Some(&r)).expect("create");
        assert_eq!(read(mount.join("cgroup.subtree_control")), "+memory +pids");
        assert!(!mount.join("a/b/cpu.weight").exists(), "cpu is not enabled");
        assert_eq!(read(mount.join("a/b/pids.max")), "5");
    }

    #[test]
    fn a_memory_limit_without_the_enabled_controller_fails() {
        let (tmp, _) = fake_v2();
        let mount = tmp.path().join("cgroup");
        // The hierarchy offers memory, but the parent did not enable it for its children.
        fs::create_dir(mount.join("p")).expect("mkdir");
        fs::write(mount.join("p/cgroup.subtree_control"), "+pids").expect("w");
        let dir = mount.join("p/c");
        fs::create_dir(&dir).expect("mkdir");
        let r: LinuxResources =
            serde_json::from_str(r#"{"memory": {"limit": 1048576}}"#).expect("json");
        let result = apply(&mount, &dir, &r);
        assert!(
            matches!(result, Err(CgroupError::MemoryControllerDisabled { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn swap_conversion_follows_runc() {
        assert_eq!(swap_max(100, 300).ok(), Some(200));
        assert_eq!(swap_max(100, 100).ok(), Some(0));
        assert_eq!(swap_max(-1, 0).ok(), Some(-1));
        assert_eq!(swap_max(100, -1).ok(), Some(-1));
        assert_eq!(swap_max(100, 0).ok(), Some(0));
        assert!(swap_max(0, 300).is_err());
        assert!(swap_max(300, 100).is_err());
    }

    #[test]
    fn cpu_weight_follows_runc() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(262_144), 10_000);
    }

    #[test]
    fn negative_quota_is_max() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cpu: LinuxCpu = serde_json::from_str(r#"{"quota": -1, "period": 50000}"#).expect("j");
        apply_cpu(tmp.path(), &cpu).expect("apply");
        assert_eq!(read(tmp.path().join("cpu.max")), "max 50000");
    }

    #[test]
    fn oom_notices_come_from_memory_events_of_the_unified_cgroup() {
        let (tmp, h) = fake_v2();
        let cgroup = ContainerCgroup::create(&h, "/o", None).expect("create");
        let events = tmp.path().join("cgroup/o/memory.events");
        fs::write(&events, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").expect("w");
        let notifier = cgroup
            .oom_notifier()
            .expect("a memory cgroup")
            .expect("watch");
        assert_eq!(notifier.take(), 0);
        fs::write(&events, "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n").expect("w");
        assert_eq!(notifier.take(), 2);
    }

    #[test]
    fn freeze_times_out_and_thaws_when_the_kernel_never_says_frozen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("cgroup.events"), "populated 1\nfrozen 0\n").expect("w");
        let result = set_frozen(tmp.path(), true);
        assert!(
            matches!(result, Err(CgroupError::FreezeTimeout { .. })),
            "{result:?}"
        );
        assert_eq!(read(tmp.path().join("cgroup.freeze")), "0");
    }
}
