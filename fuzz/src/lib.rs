//! What the fuzz targets share: a fixed host tree that specs are mapped against, the
//! invariants a [`runtime::WasiPlan`] must keep, the structured inputs, and the packer's
//! image writer.
//!
//! Every check here panics on a violation, which libFuzzer records as a crash.

pub mod pack;
pub mod spec;
pub mod structured;
pub mod tree;

/// The packer's image writer, compiled in from its source: `wasm-oci-pack` is a binary
/// crate, so its modules cannot be depended on. Skipped by rustfmt: it is the packer's file.
#[path = "../../packer/src/image.rs"]
#[allow(dead_code)]
#[rustfmt::skip]
pub mod image;
