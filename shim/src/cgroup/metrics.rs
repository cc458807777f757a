//! Reading a cgroup's statistics into containerd's `Metrics` messages, as runc's shim
//! reports them (`ctr task metrics`, CRI stats, `docker stats`). Statistics are best
//! effort: a file that is missing or unreadable counts as zero rather than failing the call.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim_protos::cgroups::metrics as m1;
use containerd_shim_protos::cgroups_v2::metrics as m2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

use super::{read_keyed, read_u64, CgroupError, ContainerCgroup};

/// The type URLs containerd registers for the two messages.
const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// `cpuacct.stat` counts in USER_HZ ticks, which the kernel fixes at 100 per second for
/// every interface it exports, whatever its internal HZ.
const NANOS_PER_TICK: u64 = 1_000_000_000 / 100;

/// A v1 (or hybrid) cgroup's statistics as a v1 `Metrics` in an `Any`.
pub(super) fn v1(cgroup: &ContainerCgroup) -> Result<Any, CgroupError> {
    pack(V1_TYPE_URL, &v1_metrics(cgroup))
}

/// A pure v2 cgroup's statistics as a v2 `Metrics` in an `Any`.
pub(super) fn v2(dir: &Path) -> Result<Any, CgroupError> {
    pack(V2_TYPE_URL, &v2_metrics(dir))
}

fn pack(type_url: &str, message: &impl Message) -> Result<Any, CgroupError> {
    Ok(Any {
        type_url: type_url.to_string(),
        value: message.write_to_bytes().map_err(CgroupError::Encode)?,
        ..Default::default()
    })
}

/// The v1 message. CPU (with throttling) and memory (with swap, kernel and kernel_tcp) are
/// always present, zero where a file is missing, because clients read them without a nil
/// check: dockerd's `docker stats` crashed on a missing `cpu.throttling`. Pids and blkio are
/// present when their hierarchy is mounted.
fn v1_metrics(cgroup: &ContainerCgroup) -> m1::Metrics {
    let cpuacct = cgroup.v1_dir("cpuacct");
    let cpu = cgroup.v1_dir("cpu");
    let memory = cgroup.v1_dir("memory");
    let cpuacct_stat = keyed(cpuacct, "cpuacct.stat");
    let cpu_stat = keyed(cpu, "cpu.stat");
    let usage = m1::CPUUsage {
        total: number(cpuacct, "cpuacct.usage"),
        user: get(&cpuacct_stat, "user") * NANOS_PER_TICK,
        kernel: get(&cpuacct_stat, "system") * NANOS_PER_TICK,
        per_cpu: cpuacct
            .and_then(|dir| std::fs::read_to_string(dir.join("cpuacct.usage_percpu")).ok())
            .map(|text| {
                text.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let throttling = m1::Throttle {
        periods: get(&cpu_stat, "nr_periods"),
        throttled_periods: get(&cpu_stat, "nr_throttled"),
        throttled_time: get(&cpu_stat, "throttled_time"),
        ..Default::default()
    };
    let oom_control = keyed(memory, "memory.oom_control");
    m1::Metrics {
        cpu: MessageField::some(m1::CPUStat {
            usage: MessageField::some(usage),
            throttling: MessageField::some(throttling),
            ..Default::default()
        }),
        memory: MessageField::some(v1_memory(memory)),
        memory_oom_control: MessageField::from_option(memory.map(|_| m1::MemoryOomControl {
            oom_kill_disable: get(&oom_control, "oom_kill_disable"),
            under_oom: get(&oom_control, "under_oom"),
            oom_kill: get(&oom_control, "oom_kill"),
            ..Default::default()
        })),
        pids: MessageField::from_option(cgroup.v1_dir("pids").map(|dir| m1::PidsStat {
            current: read_u64(dir, "pids.current").unwrap_or(0),
            // "max" (no limit) reads as 0, as containerd reports it on v1.
            limit: read_u64(dir, "pids.max").unwrap_or(0),
            ..Default::default()
        })),
        blkio: MessageField::from_option(cgroup.v1_dir("blkio").map(v1_blkio)),
        ..Default::default()
    }
}

/// Memory usage entries and `memory.stat`.
fn v1_memory(dir: Option<&Path>) -> m1::MemoryStat {
    let entry = |prefix: &str| m1::MemoryEntry {
        usage: number(dir, &format!("{prefix}usage_in_bytes")),
        max: number(dir, &format!("{prefix}max_usage_in_bytes")),
        limit: number(dir, &format!("{prefix}limit_in_bytes")),
        failcnt: number(dir, &format!("{prefix}failcnt")),
        ..Default::default()
    };
    let stat = keyed(dir, "memory.stat");
    let s = |key: &str| get(&stat, key);
    m1::MemoryStat {
        cache: s("cache"),
        rss: s("rss"),
        rss_huge: s("rss_huge"),
        mapped_file: s("mapped_file"),
        dirty: s("dirty"),
        writeback: s("writeback"),
        pg_pg_in: s("pgpgin"),
        pg_pg_out: s("pgpgout"),
        pg_fault: s("pgfault"),
        pg_maj_fault: s("pgmajfault"),
        inactive_anon: s("inactive_anon"),
        active_anon: s("active_anon"),
        inactive_file: s("inactive_file"),
        active_file: s("active_file"),
        unevictable: s("unevictable"),
        hierarchical_memory_limit: s("hierarchical_memory_limit"),
        hierarchical_swap_limit: s("hierarchical_memsw_limit"),
        total_cache: s("total_cache"),
        total_rss: s("total_rss"),
        total_rss_huge: s("total_rss_huge"),
        total_mapped_file: s("total_mapped_file"),
        total_dirty: s("total_dirty"),
        total_writeback: s("total_writeback"),
        total_pg_pg_in: s("total_pgpgin"),
        total_pg_pg_out: s("total_pgpgout"),
        total_pg_fault: s("total_pgfault"),
        total_pg_maj_fault: s("total_pgmajfault"),
        total_inactive_anon: s("total_inactive_anon"),
        total_active_anon: s("total_active_anon"),
        total_inactive_file: s("total_inactive_file"),
        total_active_file: s("total_active_file"),
        total_unevictable: s("total_unevictable"),
        usage: MessageField::some(entry("memory.")),
        swap: MessageField::some(entry("memory.memsw.")),
        kernel: MessageField::some(entry("memory.kmem.")),
        kernel_tcp: MessageField::some(entry("memory.kmem.tcp.")),
        ..Default::default()
    }
}

/// Bytes and operations per device. The CFQ/BFQ files are used when they have entries,
/// else the throttle ones, which every kernel keeps, as containerd does.
fn v1_blkio(dir: &Path) -> m1::BlkIOStat {
    let entries = |name: &str| {
        let first = blkio_entries(dir, &format!("blkio.{name}"));
        if first.is_empty() {
            blkio_entries(dir, &format!("blkio.throttle.{name}"))
        } else {
            first
        }
    };
    m1::BlkIOStat {
        io_service_bytes_recursive: entries("io_service_bytes_recursive"),
        io_serviced_recursive: entries("io_serviced_recursive"),
        ..Default::default()
    }
}

/// Lines `MAJOR:MINOR Op value`; the `Total` line and malformed lines are dropped.
fn blkio_entries(dir: &Path, file: &str) -> Vec<m1::BlkIOEntry> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, op, value) = (fields.next()?, fields.next()?, fields.next()?);
            let (major, minor) = device.split_once(':')?;
            Some(m1::BlkIOEntry {
                op: op.to_string(),
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                value: value.parse().ok()?,
                ..Default::default()
            })
        })
        .collect()
}

/// The v2 message: pids, cpu, memory and memory events always present, io from `io.stat`.
/// An unlimited (`max`) limit reads as `u64::MAX`, as containerd reports it on v2.
fn v2_metrics(dir: &Path) -> m2::Metrics {
    let cpu = read_keyed(dir, "cpu.stat");
    let stat = read_keyed(dir, "memory.stat");
    let events = read_keyed(dir, "memory.events");
    let s = |key: &str| get(&stat, key);
    m2::Metrics {
        pids: MessageField::some(m2::PidsStat {
            current: read_u64(dir, "pids.current").unwrap_or(0),
            limit: limit_or_max(dir, "pids.max"),
            ..Default::default()
        }),
        cpu: MessageField::some(m2::CPUStat {
            usage_usec: get(&cpu, "usage_usec"),
            user_usec: get(&cpu, "user_usec"),
            system_usec: get(&cpu, "system_usec"),
            nr_periods: get(&cpu, "nr_periods"),
            nr_throttled: get(&cpu, "nr_throttled"),
            throttled_usec: get(&cpu, "throttled_usec"),
            nr_bursts: get(&cpu, "nr_bursts"),
            burst_usec: get(&cpu, "burst_usec"),
            ..Default::default()
        }),
        memory: MessageField::some(m2::MemoryStat {
            anon: s("anon"),
            file: s("file"),
            kernel_stack: s("kernel_stack"),
            slab: s("slab"),
            sock: s("sock"),
            shmem: s("shmem"),
            file_mapped: s("file_mapped"),
            file_dirty: s("file_dirty"),
            file_writeback: s("file_writeback"),
            anon_thp: s("anon_thp"),
            inactive_anon: s("inactive_anon"),
            active_anon: s("active_anon"),
            inactive_file: s("inactive_file"),
            active_file: s("active_file"),
            unevictable: s("unevictable"),
            slab_reclaimable: s("slab_reclaimable"),
            slab_unreclaimable: s("slab_unreclaimable"),
            pgfault: s("pgfault"),
            pgmajfault: s("pgmajfault"),
            workingset_refault: s("workingset_refault"),
            workingset_activate: s("workingset_activate"),
            workingset_nodereclaim: s("workingset_nodereclaim"),
            pgrefill: s("pgrefill"),
            pgscan: s("pgscan"),
            pgsteal: s("pgsteal"),
            pgactivate: s("pgactivate"),
            pgdeactivate: s("pgdeactivate"),
            pglazyfree: s("pglazyfree"),
            pglazyfreed: s("pglazyfreed"),
            thp_fault_alloc: s("thp_fault_alloc"),
            thp_collapse_alloc: s("thp_collapse_alloc"),
            usage: read_u64(dir, "memory.current").unwrap_or(0),
            usage_limit: limit_or_max(dir, "memory.max"),
            swap_usage: read_u64(dir, "memory.swap.current").unwrap_or(0),
            swap_limit: limit_or_max(dir, "memory.swap.max"),
            max_usage: read_u64(dir, "memory.peak").unwrap_or(0),
            swap_max_usage: read_u64(dir, "memory.swap.peak").unwrap_or(0),
            ..Default::default()
        }),
        memory_events: MessageField::some(m2::MemoryEvents {
            low: get(&events, "low"),
            high: get(&events, "high"),
            max: get(&events, "max"),
            oom: get(&events, "oom"),
            oom_kill: get(&events, "oom_kill"),
            oom_group_kill: get(&events, "oom_group_kill"),
            ..Default::default()
        }),
        io: MessageField::some(m2::IOStat {
            usage: io_entries(dir),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `io.stat` lines: `MAJOR:MINOR rbytes=N wbytes=N rios=N wios=N ...`.
fn io_entries(dir: &Path) -> Vec<m2::IOEntry> {
    let text = std::fs::read_to_string(dir.join("io.stat")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut entry = m2::IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for field in fields {
                let Some((key, value)) = field.split_once('=') else {
                    continue;
                };
                let value = value.parse().unwrap_or(0);
                match key {
                    "rbytes" => entry.rbytes = value,
                    "wbytes" => entry.wbytes = value,
                    "rios" => entry.rios = value,
                    "wios" => entry.wios = value,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

/// A v2 limit file: a number, or `u64::MAX` for `max`; 0 if missing.
fn limit_or_max(dir: &Path, file: &str) -> u64 {
    match std::fs::read_to_string(dir.join(file)) {
        Ok(text) if text.trim() == "max" => u64::MAX,
        Ok(text) => text.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

fn number(dir: Option<&Path>, file: &str) -> u64 {
    dir.and_then(|dir| read_u64(dir, file)).unwrap_or(0)
}

fn keyed(dir: Option<&Path>, file: &str) -> HashMap<String, u64> {
    dir.map(|dir| read_keyed(dir, file)).unwrap_or_default()
}

fn get(map: &HashMap<String, u64>, key: &str) -> u64 {
    map.get(key).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::v2::tests::{fake_v2, kernel_files};
    use super::super::Hierarchies;
    use super::*;
    use std::fs;

    fn write(dir: &Path, file: &str, text: &str) {
        fs::write(dir.join(file), text).expect("write");
    }

    #[test]
    fn v1_metrics_read_the_files_and_convert_ticks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut mountinfo = String::new();
        for (i, (dir, options)) in [
            ("cpu,cpuacct", "rw,cpu,cpuacct"),
            ("memory", "rw,memory"),
            ("pids", "rw,pids"),
        ]
        .iter()
        .enumerate()
        {
            fs::create_dir(tmp.path().join(dir)).expect("mkdir");
            mountinfo.push_str(&format!(
                "{i} 1 0:{i} / {} rw - cgroup cgroup {options}\n",
                tmp.path().join(dir).display()
            ));
        }
        let h = Hierarchies::from_mountinfo(&mountinfo);
        let cgroup = ContainerCgroup::create(&h, "/m", None).expect("create");
        let cpu = tmp.path().join("cpu,cpuacct/m");
        write(&cpu, "cpuacct.usage", "5000000000\n");
        write(&cpu, "cpuacct.usage_percpu", "3000000000 2000000000 \n");
        write(&cpu, "cpuacct.stat", "user 300\nsystem 150\n");
        write(
            &cpu,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 777\n",
        );
        let memory = tmp.path().join("memory/m");
        write(&memory, "memory.usage_in_bytes", "4096\n");
        write(&memory, "memory.max_usage_in_bytes", "8192\n");
        write(&memory, "memory.limit_in_bytes", "67108864\n");
        write(&memory, "memory.failcnt", "1\n");
        write(
            &memory,
            "memory.stat",
            "cache 10\nrss 20\npgpgin 30\ntotal_rss 40\nhierarchical_memsw_limit 50\n",
        );
        write(
            &memory,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        let pids = tmp.path().join("pids/m");
        write(&pids, "pids.current", "3\n");
        write(&pids, "pids.max", "max\n");

        let any = cgroup.metrics().expect("metrics");
        assert_eq!(any.type_url, V1_TYPE_URL);
        let m = m1::Metrics::parse_from_bytes(&any.value).expect("decode");
        let usage = &m.cpu.usage;
        assert_eq!(usage.total, 5_000_000_000);
        assert_eq!(usage.user, 3_000_000_000);
        assert_eq!(usage.kernel, 1_500_000_000);
        assert_eq!(usage.per_cpu, vec![3_000_000_000, 2_000_000_000]);
        assert_eq!(m.cpu.throttling.periods, 10);
        assert_eq!(m.cpu.throttling.throttled_periods, 2);
        assert_eq!(m.cpu.throttling.throttled_time, 777);
        let mem = &m.memory;
        assert_eq!(
            (
                mem.usage.usage,
                mem.usage.max,
                mem.usage.limit,
                mem.usage.failcnt
            ),
            (4096, 8192, 67108864, 1)
        );
        assert_eq!(
            (mem.cache, mem.rss, mem.pg_pg_in, mem.total_rss),
            (10, 20, 30, 40)
        );
        assert_eq!(mem.hierarchical_swap_limit, 50);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        assert!(m.blkio.is_none(), "no blkio hierarchy in this fake");
    }

    #[test]
    fn v1_messages_clients_read_unchecked_are_always_present() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("systemd")).expect("mkdir");
        let mountinfo = format!(
            "1 1 0:1 / {} rw - cgroup cgroup rw,name=systemd\n",
            tmp.path().join("systemd").display()
        );
        let h = Hierarchies::from_mountinfo(&mountinfo);
        let cgroup = ContainerCgroup::create(&h, "/bare", None).expect("create");
        let any = cgroup.metrics().expect("metrics");
        let m = m1::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert!(m.cpu.is_some() && m.cpu.usage.is_some() && m.cpu.throttling.is_some());
        assert!(m.memory.is_some() && m.memory.usage.is_some());
        assert!(m.memory.swap.is_some(), "swap");
        assert!(m.memory.kernel.is_some(), "kernel");
        assert!(m.memory.kernel_tcp.is_some(), "kernel_tcp");
    }

    #[test]
    fn v1_blkio_prefers_scheduler_files_then_throttle_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(tmp.path(), "blkio.io_service_bytes_recursive", "Total 0\n");
        write(
            tmp.path(),
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 512\nTotal 4608\n",
        );
        let stat = v1_blkio(tmp.path());
        let entries: Vec<_> = stat
            .io_service_bytes_recursive
            .iter()
            .map(|e| (e.major, e.minor, e.op.as_str(), e.value))
            .collect();
        assert_eq!(entries, vec![(8, 0, "Read", 4096), (8, 0, "Write", 512)]);
    }

    #[test]
    fn v2_metrics_read_the_files() {
        let (tmp, h) = fake_v2();
        let dir = tmp.path().join("cgroup/s");
        kernel_files(&dir);
        let cgroup = ContainerCgroup::create(&h, "/s", None).expect("create");
        write(&dir, "pids.current", "4\n");
        write(&dir, "pids.max", "max\n");
        write(
            &dir,
            "cpu.stat",
            "usage_usec 1000\nuser_usec 600\nsystem_usec 400\nnr_periods 5\nnr_throttled 1\nthrottled_usec 99\n",
        );
        write(&dir, "memory.current", "8192\n");
        write(&dir, "memory.max", "max\n");
        write(&dir, "memory.swap.current", "0\n");
        write(&dir, "memory.swap.max", "1048576\n");
        write(&dir, "memory.stat", "anon 100\nfile 200\nkernel_stack 16\nslab 32\nsock 0\nshmem 8\nfile_mapped 4\npgfault 7\npgmajfault 1\n");
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 1\nmax 2\noom 3\noom_kill 3\n",
        );
        write(
            &dir,
            "io.stat",
            "8:0 rbytes=4096 wbytes=512 rios=2 wios=1 dbytes=0 dios=0\n",
        );

        let any = cgroup.metrics().expect("metrics");
        assert_eq!(any.type_url, V2_TYPE_URL);
        let m = m2::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!((m.pids.current, m.pids.limit), (4, u64::MAX));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (1000, 600, 400)
        );
        assert_eq!(
            (m.cpu.nr_periods, m.cpu.nr_throttled, m.cpu.throttled_usec),
            (5, 1, 99)
        );
        let mem = &m.memory;
        assert_eq!((mem.usage, mem.usage_limit), (8192, u64::MAX));
        assert_eq!((mem.swap_usage, mem.swap_limit), (0, 1048576));
        assert_eq!(
            (mem.anon, mem.file, mem.kernel_stack, mem.slab),
            (100, 200, 16, 32)
        );
        assert_eq!(
            (mem.shmem, mem.file_mapped, mem.pgfault, mem.pgmajfault),
            (8, 4, 7, 1)
        );
        let ev = &m.memory_events;
        assert_eq!(
            (ev.low, ev.high, ev.max, ev.oom, ev.oom_kill),
            (0, 1, 2, 3, 3)
        );
        let io: Vec<_> =
            m.io.usage
                .iter()
                .map(|e| (e.major, e.rbytes, e.wios))
                .collect();
        assert_eq!(io, vec![(8, 4096, 1)]);
    }
}
