//! Links the shim as a position-dependent executable unless `WASMTIME_SHIM_PIE=1`.
//!
//! Every container started with `ctr run` gets a shim process of its own. A PIE is relocated
//! at load, and its relocated read-only data (vtables, string tables of wasmtime, cranelift
//! and the protobuf code: about 1 MiB) becomes private dirty memory in each shim. Linked at a
//! fixed address, those pages stay clean page-cache pages that all shims share. Go's shims,
//! runc's included, are linked the same way. The cost is that the shim's own code is not randomized (heap, stacks,
//! libraries and the compiled wasm still are); `WASMTIME_SHIM_PIE=1 make build` keeps the PIE.

fn main() {
    println!("cargo:rerun-if-env-changed=WASMTIME_SHIM_PIE");
    if std::env::var("WASMTIME_SHIM_PIE").as_deref() != Ok("1") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
