//! `containerd-shim-wasmtime-v1`: the containerd runtime v2 shim for WebAssembly.
//!
//! containerd runs this binary three ways: `start` (answer the handshake, make sure a daemon
//! serves the task), `delete` (clean up after a dead daemon) and, through `start`, as the
//! daemon itself (no action) that serves the task API over ttrpc. `-v` and `-info` describe it.
//! The daemon runs it a fourth way, as each wasm container's own process (`child`), and a
//! fifth, as the helper that compiles optimized code in the background (`compile_helper`).

mod cache_config;
mod cgroup;
mod child;
mod clock;
mod compile_helper;
mod confine;
mod container;
mod delete;
mod error;
mod events;
mod exits;
mod flags;
mod hooks;
mod info;
mod launch;
mod lifecycle;
mod logger;
mod metrics;
mod mount;
mod netns;
mod oom_watch;
mod pod;
mod pod_cgroup;
mod precompile;
mod process;
mod pty;
mod reaper;
mod reply;
mod runc_proxy;
mod serve;
mod service;
mod spawn;
mod start;
mod stdio_fifos;

use std::io::{stdin, stdout};
use std::path::PathBuf;
use std::process::ExitCode;

use flags::Flags;

fn main() -> ExitCode {
    // A container's process (see `child`): started by this shim, never by containerd.
    if std::env::args().nth(1).as_deref() == Some(launch::CHILD_ARG) {
        child::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(compile_helper::COMPILE_HELPER_ARG) {
        return compile_helper::run(&args[1..]);
    }
    let flags = match Flags::parse(args) {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("containerd-shim-wasmtime-v1: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("containerd-shim-wasmtime-v1: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: &Flags) -> Result<(), String> {
    if flags.version {
        print!("{}", info::version_text());
        return Ok(());
    }
    if flags.info {
        return info::runtime_info(&mut stdin().lock(), &mut stdout().lock());
    }
    let cwd = std::env::current_dir().map_err(|e| format!("reading the working directory: {e}"))?;
    match flags.action.as_str() {
        "start" => start::start(
            flags,
            &cwd,
            &mut stdin().lock(),
            &mut stdout().lock(),
            |key| std::env::var(key).ok(),
            &serve::DaemonLauncher,
        ),
        "delete" => {
            let bundle = if flags.bundle.is_empty() {
                cwd
            } else {
                PathBuf::from(&flags.bundle)
            };
            let endpoint = runc_proxy::ContainerdEndpoint {
                namespace: flags.namespace.clone(),
                grpc_address: flags.address.clone(),
                ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
                publish_binary: flags.publish_binary.clone(),
                debug: flags.debug,
                bootstrap: None,
            };
            delete::delete(&bundle, &flags.id, &endpoint, &mut stdout().lock())
        }
        "" => serve::serve(flags, &cwd),
        other => Err(format!(
            "unknown action {other:?} (expected start or delete)"
        )),
    }
}
