//! cgroup v1: writing resources the way runc's fs driver does, the cpuset initialisation a
//! new v1 cgroup needs, and the v1 freezer.

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};

use super::{read_file, read_u64, write_file, CgroupError, ContainerCgroup};
use crate::error::render;

/// Gives a new cpuset cgroup its parent's cpus and mems. The kernel creates a v1 cpuset
/// cgroup with both empty, and moving a pid into it then fails with ENOSPC; runc copies
/// them level by level from the root down, which is what the caller's loop does.
pub(super) fn copy_cpuset_from_parent(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        // A missing file (in a fake tree) counts as empty, like a new kernel cgroup's.
        let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if current.trim().is_empty() {
            let inherited = read_file(parent, file)?;
            write_file(dir, file, inherited.trim())?;
        }
    }
    Ok(())
}

/// Writes `resources` into the v1 hierarchies that carry them. A controller that is not
/// mounted is skipped (logged); a value the kernel refuses is an error, as in runc.
pub(super) fn apply(
    cgroup: &ContainerCgroup,
    resources: &LinuxResources,
) -> Result<(), CgroupError> {
    if let Some(memory) = resources.memory() {
        match cgroup.v1_dir("memory") {
            Some(dir) => apply_memory(dir, memory)?,
            None if memory.limit().is_some() => {
                log::warn!("no memory cgroup hierarchy: memory limit not applied");
            }
            None => {}
        }
    }
    if let Some(cpu) = resources.cpu() {
        match cgroup.v1_dir("cpu") {
            Some(dir) => apply_cpu(dir, cpu)?,
            None => log::debug!("no cpu cgroup hierarchy: cpu resources skipped"),
        }
        match cgroup.v1_dir("cpuset") {
            Some(dir) => apply_cpuset(dir, cpu)?,
            None => log::debug!("no cpuset cgroup hierarchy: cpuset skipped"),
        }
    }
    if let Some(pids) = resources.pids() {
        match cgroup.v1_dir("pids") {
            Some(dir) => write_file(dir, "pids.max", &pids_max(pids))?,
            None => log::debug!("no pids cgroup hierarchy: pids limit skipped"),
        }
    }
    if let Some(block_io) = resources.block_io() {
        match cgroup.v1_dir("blkio") {
            Some(dir) => apply_blkio_weight(dir, block_io)?,
            None => log::debug!("no blkio cgroup hierarchy: weight skipped"),
        }
    }
    Ok(())
}

/// Memory, swap, reservation, swappiness and the OOM killer switch.
fn apply_memory(dir: &Path, memory: &LinuxMemory) -> Result<(), CgroupError> {
    let has_memsw = dir.join("memory.memsw.limit_in_bytes").exists();
    let limit = memory.limit();
    let mut swap = memory.swap();
    // runc: an unlimited memory with no swap given means unlimited swap too, since memsw
    // (memory + swap) must never be below the memory limit.
    if limit == Some(-1) && swap.is_none() && has_memsw {
        swap = Some(-1);
    }
    if swap.is_some() && !has_memsw {
        log::debug!("swap accounting is off: memory.memsw.limit_in_bytes not written");
        swap = None;
    }
    let write_limit = |value: i64| write_file(dir, "memory.limit_in_bytes", &value.to_string());
    let write_swap =
        |value: i64| write_file(dir, "memory.memsw.limit_in_bytes", &value.to_string());
    match (limit, swap) {
        (Some(limit), Some(swap)) => {
            // The kernel keeps memsw >= memory at all times and refuses (EINVAL) any single
            // write that breaks it, so the order depends on where the limits move. runc's
            // rule: if the new memsw is unlimited or above the current memory limit, write
            // memsw first (it then stays >= the old memory limit and the new one); otherwise
            // the new memsw is below the current memory limit, so that limit must drop first.
            // A missing file (fake tree) reads as unlimited.
            if swap_first(read_u64(dir, "memory.limit_in_bytes"), swap) {
                write_swap(swap)?;
                write_limit(limit)?;
            } else {
                write_limit(limit)?;
                write_swap(swap)?;
            }
        }
        (Some(limit), None) => write_limit(limit)?,
        (None, Some(swap)) => write_swap(swap)?,
        (None, None) => {}
    }
    if let Some(reservation) = memory.reservation() {
        write_file(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
    }
    if let Some(swappiness) = memory.swappiness() {
        if swappiness > 100 {
            return Err(CgroupError::InvalidValue {
                file: "memory.swappiness",
                value: swappiness.to_string(),
                reason: "the range is 0-100",
            });
        }
        write_file(dir, "memory.swappiness", &swappiness.to_string())?;
    }
    if memory.disable_oom_killer() == Some(true) {
        write_file(dir, "memory.oom_control", "1")?;
    }
    Ok(())
}

/// Whether `memory.memsw.limit_in_bytes` must be written before `memory.limit_in_bytes`:
/// when the new memsw (`swap`, -1 unlimited) is unlimited or above the current memory limit
/// (`None`: unreadable, taken as unlimited).
fn swap_first(current_limit: Option<u64>, swap: i64) -> bool {
    let current = current_limit.unwrap_or(u64::MAX);
    swap == -1 || u64::try_from(swap).is_ok_and(|swap| current < swap)
}

/// Shares, CFS bandwidth and real-time bandwidth.
fn apply_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(shares) = cpu.shares().filter(|&s| s != 0) {
        write_file(dir, "cpu.shares", &shares.to_string())?;
    }
    // The period goes first, but a period smaller than the current one can be refused
    // (EINVAL: old quota / new period exceeds the parent's); runc then writes the quota and
    // retries the period, and so does this.
    let mut period_pending = None;
    if let Some(period) = cpu.period().filter(|&p| p != 0) {
        match write_file(dir, "cpu.cfs_period_us", &period.to_string()) {
            Ok(()) => {}
            Err(CgroupError::Write { ref source, .. })
                if source.raw_os_error() == Some(libc::EINVAL)
                    && cpu.quota().is_some_and(|q| q != 0) =>
            {
                period_pending = Some(period);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(quota) = cpu.quota().filter(|&q| q != 0) {
        write_file(dir, "cpu.cfs_quota_us", &quota.to_string())?;
    }
    if let Some(period) = period_pending {
        write_file(dir, "cpu.cfs_period_us", &period.to_string())?;
    }
    // Real-time: the period before the runtime, as runc does.
    if let Some(period) = cpu.realtime_period().filter(|&p| p != 0) {
        write_file(dir, "cpu.rt_period_us", &period.to_string())?;
    }
    if let Some(runtime) = cpu.realtime_runtime().filter(|&r| r != 0) {
        write_file(dir, "cpu.rt_runtime_us", &runtime.to_string())?;
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

/// `pids.max`: a positive limit as is, anything else unlimited.
pub(super) fn pids_max(pids: &LinuxPids) -> String {
    match pids.limit() {
        limit if limit > 0 => limit.to_string(),
        _ => "max".to_string(),
    }
}

/// The block I/O weight: `blkio.weight` (CFQ), else `blkio.bfq.weight` (BFQ), else skipped
/// because the I/O scheduler has no weights.
fn apply_blkio_weight(dir: &Path, block_io: &LinuxBlockIo) -> Result<(), CgroupError> {
    let Some(weight) = block_io.weight().filter(|&w| w != 0) else {
        return Ok(());
    };
    match ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|file| dir.join(file).exists())
    {
        Some(file) => write_file(dir, file, &weight.to_string()),
        None => {
            log::debug!("no blkio weight file in {}: weight skipped", dir.display());
            Ok(())
        }
    }
}

/// How often the freezer state is polled, and how long before giving up.
const POLL: Duration = Duration::from_millis(1);
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets `freezer.state` and waits until it reads back: freezing passes through `FREEZING`
/// while each task is stopped. If it does not settle in time, the cgroup is thawed again so
/// it is not left half frozen, and the error says so.
pub(super) fn set_frozen(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let wanted = if frozen { "FROZEN" } else { "THAWED" };
    write_file(dir, "freezer.state", wanted)?;
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    let mut polls: u32 = 0;
    loop {
        if read_file(dir, "freezer.state")?.trim() == wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            if frozen {
                if let Err(e) = write_file(dir, "freezer.state", "THAWED") {
                    log::warn!("thawing after a failed freeze: {}", render(&e));
                }
            }
            return Err(CgroupError::FreezeTimeout {
                path: dir.join("freezer.state"),
                wanted,
            });
        }
        polls += 1;
        // A task forking while the freeze runs can leave the state in FREEZING; asking
        // again every 100 ms catches the newcomers.
        if polls.is_multiple_of(100) {
            write_file(dir, "freezer.state", wanted)?;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Hierarchies;
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    /// A fake v1 host: one directory per hierarchy with the root files the kernel has.
    fn fake_v1() -> (tempfile::TempDir, Hierarchies) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let mut mountinfo = String::new();
        for (i, (dir, options)) in [
            ("cpu,cpuacct", "rw,cpu,cpuacct"),
            ("memory", "rw,memory"),
            ("cpuset", "rw,cpuset"),
            ("pids", "rw,pids"),
            ("freezer", "rw,freezer"),
            ("systemd", "rw,xattr,name=systemd"),
        ]
        .iter()
        .enumerate()
        {
            let mount = root.join(dir);
            fs::create_dir(&mount).expect("mkdir");
            mountinfo.push_str(&format!(
                "{} 1 0:{} / {} rw,relatime - cgroup cgroup {options}\n",
                30 + i,
                30 + i,
                mount.display()
            ));
        }
        fs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").expect("write");
        fs::write(root.join("cpuset/cpuset.mems"), "0\n").expect("write");
        (tmp, Hierarchies::from_mountinfo(&mountinfo))
    }

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("resources json")
    }

    fn read(path: PathBuf) -> String {
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    #[test]
    fn create_writes_resources_and_copies_cpuset_into_every_new_level() {
        let (tmp, h) = fake_v1();
        let root = tmp.path();
        // The kernel's files in the new memory cgroup: swap accounting on, no limit yet.
        let memory_leaf = root.join("memory/default/hello");
        fs::create_dir_all(&memory_leaf).expect("mkdir");
        fs::write(
            memory_leaf.join("memory.limit_in_bytes"),
            "9223372036854771712",
        )
        .expect("w");
        fs::write(
            memory_leaf.join("memory.memsw.limit_in_bytes"),
            "9223372036854771712",
        )
        .expect("w");
        let r = resources(
            r#"{"memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432},
                "cpu": {"shares": 512, "quota": 20000, "period": 100000, "mems": "0"},
                "pids": {"limit": 10}}"#,
        );
        let cgroup = ContainerCgroup::create(&h, "/default/hello", Some(&r)).expect("create");
        assert_eq!(cgroup.path(), Path::new("/default/hello"));
        assert_eq!(read(memory_leaf.join("memory.limit_in_bytes")), "67108864");
        assert_eq!(
            read(memory_leaf.join("memory.memsw.limit_in_bytes")),
            "134217728"
        );
        assert_eq!(
            read(memory_leaf.join("memory.soft_limit_in_bytes")),
            "33554432"
        );
        let cpu = root.join("cpu,cpuacct/default/hello");
        assert_eq!(read(cpu.join("cpu.shares")), "512");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "20000");
        assert_eq!(read(root.join("pids/default/hello/pids.max")), "10");
        for level in ["cpuset/default", "cpuset/default/hello"] {
            assert_eq!(read(root.join(level).join("cpuset.cpus")), "0-1", "{level}");
            assert_eq!(read(root.join(level).join("cpuset.mems")), "0", "{level}");
        }
        assert!(root.join("systemd/default/hello").is_dir());
        assert!(root.join("freezer/default/hello").is_dir());
        let placement = cgroup.placement();
        assert_eq!((placement.v1.len(), placement.v2), (6, None));

        cgroup.remove();
        for dir in [
            "cpu,cpuacct",
            "memory",
            "cpuset",
            "pids",
            "freezer",
            "systemd",
        ] {
            assert!(!root.join(dir).join("default/hello").exists(), "{dir}");
            assert!(
                root.join(dir).join("default").exists(),
                "{dir}: parent kept"
            );
        }
    }

    #[test]
    fn swap_goes_first_when_it_rises_above_the_current_memory_limit() {
        const MIB: i64 = 1 << 20;
        let current = |mib: i64| Some((mib * MIB) as u64);
        // Raising 64/128 MiB to 512 MiB/1 GiB: memory first would exceed the old memsw.
        assert!(swap_first(current(64), 1024 * MIB));
        // Lowering 512 MiB/1 GiB to 64/128 MiB: memsw first would drop below the old memory.
        assert!(!swap_first(current(512), 128 * MIB));
        // Unlimited swap can always go first.
        assert!(swap_first(current(512), -1));
        // An unreadable current limit is taken as unlimited: memory first.
        assert!(!swap_first(None, 128 * MIB));
    }

    #[test]
    fn memory_and_swap_limits_are_both_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        fs::write(dir.join("memory.limit_in_bytes"), "67108864").expect("w");
        fs::write(dir.join("memory.memsw.limit_in_bytes"), "134217728").expect("w");
        let memory: LinuxMemory =
            serde_json::from_str(r#"{"limit": 536870912, "swap": 1073741824}"#).expect("json");
        apply_memory(dir, &memory).expect("apply");
        assert_eq!(read(dir.join("memory.limit_in_bytes")), "536870912");
        assert_eq!(read(dir.join("memory.memsw.limit_in_bytes")), "1073741824");
    }

    #[test]
    fn unlimited_memory_without_swap_makes_swap_unlimited_too() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        fs::write(dir.join("memory.limit_in_bytes"), "67108864").expect("w");
        fs::write(dir.join("memory.memsw.limit_in_bytes"), "134217728").expect("w");
        let memory: LinuxMemory = serde_json::from_str(r#"{"limit": -1}"#).expect("json");
        apply_memory(dir, &memory).expect("apply");
        assert_eq!(read(dir.join("memory.limit_in_bytes")), "-1");
        assert_eq!(read(dir.join("memory.memsw.limit_in_bytes")), "-1");
    }

    #[test]
    fn swap_is_skipped_without_swap_accounting() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let memory: LinuxMemory =
            serde_json::from_str(r#"{"limit": 1048576, "swap": 2097152}"#).expect("json");
        apply_memory(dir, &memory).expect("apply");
        assert_eq!(read(dir.join("memory.limit_in_bytes")), "1048576");
        assert!(!dir.join("memory.memsw.limit_in_bytes").exists());
    }

    #[test]
    fn pids_limit_of_zero_or_less_is_max() {
        for (limit, expected) in [(-1, "max"), (0, "max"), (42, "42")] {
            let pids: LinuxPids =
                serde_json::from_str(&format!(r#"{{"limit": {limit}}}"#)).expect("json");
            assert_eq!(pids_max(&pids), expected);
        }
    }

    #[test]
    fn an_existing_cpuset_is_not_overwritten() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (parent, child) = (tmp.path().to_path_buf(), tmp.path().join("c"));
        fs::create_dir(&child).expect("mkdir");
        fs::write(parent.join("cpuset.cpus"), "0-3").expect("w");
        fs::write(parent.join("cpuset.mems"), "0").expect("w");
        fs::write(child.join("cpuset.cpus"), "2").expect("w");
        copy_cpuset_from_parent(&parent, &child).expect("copy");
        assert_eq!(read(child.join("cpuset.cpus")), "2");
        assert_eq!(read(child.join("cpuset.mems")), "0");
    }

    #[test]
    fn freeze_and_thaw_write_freezer_state() {
        let (tmp, h) = fake_v1();
        let cgroup = ContainerCgroup::create(&h, "/f", None).expect("create");
        assert!(cgroup.has_freezer());
        cgroup.freeze().expect("freeze");
        assert_eq!(read(tmp.path().join("freezer/f/freezer.state")), "FROZEN");
        cgroup.thaw().expect("thaw");
        assert_eq!(read(tmp.path().join("freezer/f/freezer.state")), "THAWED");
    }

    #[test]
    fn pids_come_from_the_pids_hierarchy() {
        let (tmp, h) = fake_v1();
        let cgroup = ContainerCgroup::create(&h, "/p", None).expect("create");
        fs::write(tmp.path().join("pids/p/cgroup.procs"), "12\n34\n").expect("w");
        assert_eq!(cgroup.pids(), vec![12, 34]);
    }
}
