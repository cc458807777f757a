//! `containerd-shim-wasmtime-v1`: the containerd runtime v2 shim for WebAssembly.
//!
//! containerd runs this binary three ways: `start` (answer the handshake, make sure a daemon
//! serves the task), `delete` (clean up after a dead daemon) and, through `start`, as the
//! daemon itself (no action) that serves the task API over ttrpc. `-v` and `-info` describe it.
//! The daemon runs it a fourth way, as each wasm container's own process (`child`), and a
//! fifth, as the helper that compiles optimized code in the background
//! (`bootstrap::compile_helper`).
//!
//! A library with a thin binary, so that tests drive the task service without a containerd.
//! Its parts, each importing only those below it:
//!
//! | module | role |
//! |---|---|
//! | `bootstrap` | flags, `start`, the daemon and its serve loop, `delete`, `-info`, the compile helper |
//! | `task` | the ttrpc task service: containers, processes, events, exits, stdio, tty, hooks, mounts, stats |
//! | `runc` | native containers and pod sandboxes handed to a runc shim, pod grouping, the pod's cgroup |
//! | `child` | a container's own process: namespaces, root, confinement, running the program |
//! | `cgroup` | a container's cgroup on v1 and v2: limits, freezer, OOM notices, statistics |
//! | `launch`, `precompile`, `mount_options`, `cache_config`, `logger`, `clock`, `error` | what the daemon and a container's process share |

mod bootstrap;
mod cache_config;
mod cgroup;
mod child;
mod clock;
mod error;
mod launch;
mod logger;
mod mount_options;
mod precompile;
mod runc;
mod task;

pub use bootstrap::main;
