//! Containers this shim does not run itself: a pod's sandbox (pause) and native Linux
//! containers go to a containerd-shim-runc-v2 per group (`proxy`); which group a container
//! belongs to (`pod`); and the pod's cgroup, which the shim joins so that a pod's limits
//! count its wasm containers (`pod_cgroup`).

pub mod pod;
pub mod pod_cgroup;
pub mod proxy;
