//! The integration suite: every test that drives a real containerd (and dockerd) against the
//! built shim, in one test binary. One binary because each one links wasmtime, and a link
//! costs far more than the tests in it; each area is a module of its own.
//!
//! `TEST_CONTAINERD_DIR` picks the containerd under test (see [`integration::Containerd`]);
//! `make test` runs this binary once per containerd line.

mod background_compile;
mod bad_input;
mod compile_cache;
mod components;
mod docker_specs;
mod dockerd;
mod faults;
mod filesystem;
mod http;
mod isolation;
mod lifecycle;
mod limits;
mod native;
mod network;
mod pod;
mod pod_neighbours;
mod pod_network;
mod run_basics;
mod soak;
mod stdio;
mod task_api;
