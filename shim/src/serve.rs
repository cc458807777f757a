//! The daemon: serves the task API on the socket `start` created, until containerd asks it
//! to shut down with no task left.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};

use containerd_shim_protos::shim::shim_ttrpc::{create_task, Task};
use containerd_shim_protos::ttrpc::Server;

use crate::cache_config;
use crate::delete::SHIM_PID_FILE;
use crate::events::Publisher;
use crate::flags::Flags;
use crate::logger;
use crate::native::{ContainerdEndpoint, RuncShims};
use crate::service::TaskService;
use crate::start::{Launcher, StartParams};

/// The descriptor on which the daemon finds its listening socket.
const LISTENER_FD: i32 = 3;

/// Launches the daemon as a new session (so it outlives `start` and is not hit by signals
/// sent to containerd's process group) with the listening socket as descriptor 3.
pub struct DaemonLauncher;

impl Launcher for DaemonLauncher {
    fn launch(
        &self,
        flags: &Flags,
        params: &StartParams,
        listener: UnixListener,
        address: &str,
    ) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding our own binary: {e}"))?;
        let fd = listener.as_raw_fd();
        let mut command = Command::new(exe);
        command
            .args(["-namespace", &flags.namespace, "-id", &flags.id])
            .args(["-address", &params.grpc_address, "-socket", address])
            .args(["-publish-binary", &flags.publish_binary])
            .env("TTRPC_ADDRESS", &params.ttrpc_address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if params.debug {
            command.arg("-debug");
        }
        // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 clears close-on-exec on the copy; if the socket already is fd 3,
                // clear the flag by hand.
                let result = if fd == LISTENER_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, LISTENER_FD)
                };
                if result < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("spawning the shim daemon: {e}"))
    }
}

/// Runs the daemon until Shutdown.
pub fn serve(flags: &Flags, bundle: &Path) -> Result<(), String> {
    logger::init(
        &bundle.join("log"),
        flags.debug,
        &flags.namespace,
        &flags.id,
    );
    if flags.socket.is_empty() {
        return Err("the daemon needs -socket".into());
    }
    let _ = std::fs::write(bundle.join(SHIM_PID_FILE), std::process::id().to_string());
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set")?;
    let publisher = Publisher::start(&ttrpc_address, &flags.namespace)
        .map_err(|e| format!("starting the event publisher: {e}"))?;
    let cache = cache_config::compile_cache(bundle, |key| std::env::var(key).ok());
    if let Some(cache) = &cache {
        log::debug!("compile cache in {}", cache.dir().display());
    }
    runtime::set_compile_cache(cache);
    // Compile-time work that every Create needs: do it before the first request arrives.
    if let Err(e) = runtime::shared_engine() {
        log::error!("{e}");
    }
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let socket = std::path::PathBuf::from(flags.socket.trim_start_matches("unix://"));
    let runc = RuncShims::new(ContainerdEndpoint {
        namespace: flags.namespace.clone(),
        grpc_address: flags.address.clone(),
        ttrpc_address,
        publish_binary: flags.publish_binary.clone(),
        debug: flags.debug,
    });
    let service: Arc<dyn Task + Send + Sync> = Arc::new(TaskService::new(
        publisher.clone(),
        shutdown_tx,
        socket,
        runc,
    ));
    // containerd 1.6–2.2 call the task API as containerd.task.v2.Task, 2.3 with our
    // BootstrapResult as v3; the messages are the same, so serve both names.
    let v3 = create_task(service.clone());
    let v2 = create_task(service)
        .into_iter()
        .map(|(path, handler)| {
            (
                path.replace("/containerd.task.v3.", "/containerd.task.v2."),
                handler,
            )
        })
        .collect();
    let mut server = Server::new()
        .add_listener(LISTENER_FD)
        .map_err(|e| format!("using the listening socket: {e}"))?
        .register_service(v3)
        .register_service(v2);
    server
        .start()
        .map_err(|e| format!("starting the ttrpc server: {e}"))?;
    log::info!("serving {} on {}", flags.id, flags.socket);

    let _ = shutdown_rx.recv();
    log::info!("shutting down: no task left");
    publisher.flush(std::time::Duration::from_secs(5));
    // Let the Shutdown reply reach containerd before the process goes away. The server is
    // not shut down gracefully: that would wait on workers parked in Wait.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let _ = std::fs::remove_file(bundle.join(SHIM_PID_FILE));
    Ok(())
}
