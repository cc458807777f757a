//! `containerd-shim-wasmtime-v1`: everything is in the library (see its crate doc), so that
//! tests can drive the task service without a containerd.

fn main() -> std::process::ExitCode {
    containerd_shim_wasmtime::main()
}
