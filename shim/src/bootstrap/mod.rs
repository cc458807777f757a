//! The binary's entry: which of its five roles this execution plays, decided from its
//! arguments, and each role's start. containerd's two actions (`start`, `delete`), the
//! daemon that `start` forks to serve the task API (`serve`), `-v` and `-info`; and the two
//! roles the daemon starts itself, a container's process (`crate::child`) and the compile
//! helper. Nothing here serves a request: that is `crate::task`.

pub mod compile_helper;
mod delete;
mod error;
mod flags;
mod info;
mod reply;
mod serve;
mod start;

use std::io::{stdin, stdout};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::child;
use crate::error::render;
use crate::launch;
use crate::runc::proxy as runc_proxy;
use error::BootstrapError;
use flags::Flags;

/// Runs the binary the way its arguments say (see the crate's doc). The only entry point:
/// the binary's `main` is this call.
pub fn main() -> ExitCode {
    // A container's process (see `child`): started by this shim, never by containerd.
    match launch::role() {
        launch::Role::Child => child::run(),
        launch::Role::Orphan => return ExitCode::FAILURE,
        launch::Role::Shim => {}
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
            let message = render(&e);
            log::error!("{message}");
            eprintln!("containerd-shim-wasmtime-v1: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: &Flags) -> Result<(), BootstrapError> {
    if flags.version {
        print!("{}", info::version_text());
        return Ok(());
    }
    if flags.info {
        return info::runtime_info(&mut stdin().lock(), &mut stdout().lock());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| BootstrapError::io("reading the working directory", e))?;
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
        other => Err(BootstrapError::UnknownAction(other.to_string())),
    }
}
