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
                limit: container.memory_limit,
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
