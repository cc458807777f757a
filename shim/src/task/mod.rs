//! The task service containerd talks to (`service`) and what it keeps for each wasm
//! container: the container (`container`) and its processes (`process`, `lifecycle`,
//! `spawn`), their ends (`reaper`, `exits`), events (`events`), stdio and terminals
//! (`stdio_fifos`, `pty`, `binary_logger`), OCI hooks, the rootfs mount, OOM notices and statistics.

pub mod binary_logger;
pub mod cgroupless_metrics;
pub mod container;
pub mod events;
pub mod exits;
pub mod fork_exec;
pub mod hooks;
pub mod lifecycle;
pub mod mount;
pub mod oom_watch;
pub mod process;
pub mod pty;
pub mod reaper;
pub mod service;
pub mod spawn;
pub mod stdio_fifos;

#[cfg(test)]
mod service_tests;
