//! Runs WASI programs described by OCI runtime specs with wasmtime.
//!
//! This crate is the wasm half of the shim and deliberately knows nothing about containerd or
//! ttrpc: it takes an OCI spec, a rootfs directory and already-open stdio files, and gives back
//! an exit status. Another host (a CLI, a benchmark, a different orchestrator) can reuse it.
//!
//! The path of one program through the crate:
//! [`WasiPlan::from_spec`] (spec → argv/env/cwd/preopens/entrypoint) →
//! [`Program::load`] (read, classify, compile and link the wasm once, on the shared engine) →
//! [`Program::run_blocking`] (instantiate with WASI and run to an [`ExitStatus`], stoppable
//! through a [`Stopper`]).

mod access;
mod artifact;
mod atomic_file;
mod cache;
mod compile_process;
mod controls;
mod digest_memo;
mod engine;
mod entrypoint;
mod error;
mod execution;
mod exit;
mod fifo_output;
mod file_identity;
mod handover;
mod home;
mod host;
mod http;
mod native_program;
mod optimizer;
mod pause;
mod plan;
mod preopen;
mod program;
mod program_bytes;
mod settings;
mod source;
mod stop;
mod terminal_stdio;
mod ticker;
#[cfg(test)]
mod tier_tests;
mod upgrade;
mod usage;
mod wasi_stdio;
mod working_directory;

pub use access::{AccessPolicy, MOUNTS_ANNOTATION, ROOTFS_ANNOTATION};
pub use cache::set_compile_cache;
pub use cache::CompileCache;
pub use compile_process::{run_compile_helper, set_compile_helper, CompileHelperError};
pub use controls::Controls;
pub use engine::{shared_engine, Tier};
pub use entrypoint::Entrypoint;
pub use error::{EngineError, RuntimeError};
pub use exit::ExitStatus;
pub use file_identity::unescape_octal;
pub use handover::{CheckedEntry, HandoverDir};
pub use http::{DEFAULT_DRAIN, DEFAULT_LISTEN_ADDR, DRAIN_SECONDS_ENV, LISTEN_ADDR_ENV};
pub use native_program::{native_entrypoint, NativeProgram};
pub use optimizer::{pending_optimizations, wait_for_optimizations, PendingOptimization};
pub use pause::Pauser;
pub use plan::WasiPlan;
pub use preopen::{NamedDirectory, PinnedPreopens, Preopen, PreopenPlan, TmpfsMount};
pub use program::Program;
pub use program_bytes::ProgramKind;
pub use settings::{set_single_threaded_compilation, set_tiering};
pub use stop::Stopper;
pub use upgrade::CodeUpgrade;
pub use usage::{MemoryGauge, OutOfMemory};
pub use wasi_stdio::StdioFiles;
