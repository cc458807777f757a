//! Parts of the benchmark programs (src/bin) that are plain code: in the library, so that
//! `cargo test` runs their unit tests without building the benchmarks themselves.

pub mod chart;
pub mod fleet;
pub mod pss;
