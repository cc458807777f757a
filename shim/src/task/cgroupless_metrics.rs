//! Task stats, for a container without a cgroup, in containerd's cgroup v1 `Metrics`
//! message, which `ctr task metrics`, CRI and kubelet decode. A container with a cgroup is
//! measured by it (see `cgroup::metrics`).

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage as ProtoCpuUsage, MemoryEntry, MemoryStat, Metrics, Throttle,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

use crate::error::{ShimError, ShimResult};
use crate::task::container::Container;
use crate::task::process::CpuUsage;

/// The type URL containerd registers for cgroup v1 metrics.
const METRICS_V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// What a cgroup v1 memory controller reports as the limit of an unlimited cgroup (the
/// largest page-aligned i64). CRI treats anything this large as "no limit"; a 0 would make it
/// compute the available memory as a negative number.
const UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

/// Metrics of a container without a cgroup (its spec names none): the CPU time and resident
/// memory of its processes, from `/proc`.
pub fn container_metrics(container: &Container) -> ShimResult<Any> {
    let mut memory = resident_bytes(container.init.pid);
    for exec in container.execs() {
        memory += resident_bytes(exec.pid);
    }
    let metrics = metrics_of(container.cpu(), memory, memory, container.memory_limit());
    let value = metrics
        .write_to_bytes()
        .map_err(|e| ShimError::internal("encoding metrics", e))?;
    Ok(Any {
        type_url: METRICS_V1_TYPE_URL.to_string(),
        value,
        ..Default::default()
    })
}

/// Resident memory of process `pid` (field 2 of `/proc/PID/statm`, in pages); 0 once gone.
fn resident_bytes(pid: u32) -> u64 {
    let pages = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// The metrics of a program that used `cpu` and holds `memory` bytes (`peak` at most) under
/// `limit` (0: none). The CPU and memory messages that runc's shim always fills are present
/// too, zero where wasm has nothing to count, because clients read them without a check:
/// dockerd 28's `docker stats` reads `cpu.throttling` unconditionally and crashed on a
/// missing one. (Pids, blkio and the rest, which dockerd checks for, stay absent.)
fn metrics_of(cpu: CpuUsage, memory: u64, peak: u64, limit: u64) -> Metrics {
    let entry = |usage, max, limit| {
        Some(MemoryEntry {
            usage,
            max,
            limit,
            ..Default::default()
        })
        .into()
    };
    Metrics {
        cpu: Some(CPUStat {
            usage: Some(ProtoCpuUsage {
                total: cpu.total_ns,
                user: cpu.user_ns,
                kernel: cpu.kernel_ns,
                ..Default::default()
            })
            .into(),
            // Without a cgroup no CFS quota applies: zero periods throttled.
            throttling: Some(Throttle::default()).into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            rss: memory,
            usage: entry(
                memory,
                peak,
                match limit {
                    0 => UNLIMITED,
                    limit => limit,
                },
            ),
            swap: entry(0, 0, UNLIMITED),
            kernel: entry(0, 0, UNLIMITED),
            kernel_tcp: entry(0, 0, UNLIMITED),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_runc_fills_is_present_after_a_round_trip() {
        let cpu = CpuUsage {
            total_ns: 30,
            user_ns: 20,
            kernel_ns: 10,
        };
        let bytes = metrics_of(cpu, 4096, 8192, 0).write_to_bytes().unwrap();
        let metrics = Metrics::parse_from_bytes(&bytes).unwrap();
        let cpu = metrics.cpu.as_ref().unwrap();
        assert_eq!(cpu.usage.as_ref().map(|u| u.total), Some(30));
        assert_eq!(cpu.throttling.as_ref().map(|t| t.periods), Some(0));
        let memory = metrics.memory.as_ref().unwrap();
        let usage = memory.usage.as_ref().unwrap();
        assert_eq!(
            (usage.usage, usage.max, usage.limit),
            (4096, 8192, UNLIMITED)
        );
        for entry in [&memory.swap, &memory.kernel, &memory.kernel_tcp] {
            assert!(entry.is_some());
        }
        let limited = metrics_of(CpuUsage::default(), 1, 1, 1 << 20);
        assert_eq!(limited.memory.usage.limit, 1 << 20);
    }
}
