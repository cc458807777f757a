//! Task stats in containerd's cgroup v1 `Metrics` message, which `ctr task metrics`, CRI and
//! kubelet decode.

use containerd_shim_protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

use crate::container::Container;
use crate::error::{ShimError, ShimResult};

/// The type URL containerd registers for cgroup v1 metrics.
const METRICS_V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";

/// What a cgroup v1 memory controller reports as the limit of an unlimited cgroup (the
/// largest page-aligned i64). CRI treats anything this large as "no limit"; a 0 would make it
/// compute the available memory as a negative number.
const UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

/// CPU time of the program's thread and the size of its instance's linear memory.
pub fn container_metrics(container: &Container) -> ShimResult<Any> {
    let cpu = container.cpu();
    let (memory, peak) = container.memory();
    let metrics = Metrics {
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: cpu.total_ns,
                user: cpu.user_ns,
                kernel: cpu.kernel_ns,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            rss: memory,
            usage: Some(MemoryEntry {
                usage: memory,
                max: peak,
                limit: match container.memory_limit() {
                    0 => UNLIMITED,
                    limit => limit,
                },
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let value = metrics
        .write_to_bytes()
        .map_err(|e| ShimError::Internal(format!("encoding metrics: {e}")))?;
    Ok(Any {
        type_url: METRICS_V1_TYPE_URL.to_string(),
        value,
        ..Default::default()
    })
}
