//! The daemon: serves the task API on the socket `start` created, until containerd asks it
//! to shut down with no task left.

use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};

use containerd_shim_protos::shim::shim_ttrpc::{create_task, Task};
use containerd_shim_protos::ttrpc::Server;

use crate::bootstrap::delete::SHIM_PID_FILE;
use crate::bootstrap::error::BootstrapError;
use crate::bootstrap::flags::Flags;
use crate::bootstrap::start::{Launcher, StartParams};
use crate::cache_config::{self, OPTIMIZATION_GRACE};
use crate::error::render;
use crate::logger;
use crate::runc::proxy::{ContainerdEndpoint, RuncShims};
use crate::task::events::Publisher;
use crate::task::service::TaskService;

/// The descriptor on which the daemon finds its listening socket.
const LISTENER_FD: i32 = 3;

/// Launches the daemon as a new session (so it outlives `start` and is not hit by signals
/// sent to containerd's process group) with the listening socket as descriptor 3.
///
/// The daemon is a fork of `start` that goes on to serve, not a new execution of the binary:
/// `start` has done nothing the daemon must not inherit (one thread, no logger, no engine),
/// and executing the 40 MB binary again (mapping, relocating, initialising) was a few
/// milliseconds of every container's start-up. Should `start` ever have more than one
/// thread, forking would be unsafe (only the forking thread survives, with whatever locks
/// the others held), and the daemon is executed as before.
pub struct DaemonLauncher;

impl Launcher for DaemonLauncher {
    fn launch(
        &self,
        flags: &Flags,
        params: &StartParams,
        listener: UnixListener,
        address: &str,
    ) -> Result<(), BootstrapError> {
        let daemon_flags = Flags {
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            address: params.grpc_address.clone(),
            publish_binary: flags.publish_binary.clone(),
            socket: address.to_string(),
            debug: params.debug,
            bootstrap: match &params.bootstrap {
                Some(bootstrap) => crate::bootstrap::start::bootstrap_flag(bootstrap)?,
                None => String::new(),
            },
            ..Default::default()
        };
        if !single_threaded() {
            return exec_daemon(&daemon_flags, &params.ttrpc_address, listener);
        }
        // SAFETY: this process has one thread (checked above), so the child is a complete
        // copy of it; the child never returns from here (it serves, then `_exit`s).
        match unsafe { libc::fork() } {
            -1 => Err(BootstrapError::io(
                "forking the shim daemon",
                std::io::Error::last_os_error(),
            )),
            0 => {
                let code = match become_daemon(listener, &params.ttrpc_address) {
                    Ok(()) => match std::env::current_dir() {
                        Ok(bundle) => match serve(&daemon_flags, &bundle) {
                            Ok(()) => 0,
                            Err(e) => {
                                log::error!("{}", render(&e));
                                1
                            }
                        },
                        Err(_) => 1,
                    },
                    // Nothing to tell it to: stdio is gone or going. containerd sees the
                    // socket refuse connections and fails the task.
                    Err(_) => 1,
                };
                // SAFETY: ends this process without running exit handlers or flushing
                // buffers inherited from `start`, which are `start`'s to finish.
                unsafe { libc::_exit(code) }
            }
            // The parent's copy of the listener closes here; the daemon's stays open.
            _ => Ok(()),
        }
    }
}

/// Whether this process has exactly one thread, so that forking it is safe.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

/// In the forked child: a session of its own, stdio away from containerd's pipes (containerd
/// reads `start`'s output until every copy of them closes), the listener at descriptor 3, and
/// containerd's ttrpc address where the daemon looks for it, as an executed daemon has them.
fn become_daemon(listener: UnixListener, ttrpc_address: &str) -> std::io::Result<()> {
    // SAFETY: plain system calls on descriptors this process owns.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The listener first: in a `start` run without stdio it may sit at 0-2, where
        // /dev/null is about to go.
        let fd = listener.into_raw_fd();
        if fd != LISTENER_FD {
            if libc::dup2(fd, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
        }
        // Close-on-exec, so the runc shims and hooks the daemon starts do not inherit it.
        if libc::fcntl(LISTENER_FD, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?
            .into_raw_fd();
        for fd in 0..=2 {
            // dup2 leaves the copy inheritable; /dev/null opened right at 0-2 is made so
            // by hand.
            let result = if fd == null {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(null, fd)
            };
            if result < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if null > 2 {
            libc::close(null);
        }
    }
    // Still one thread: nothing can read the environment concurrently.
    std::env::set_var("TTRPC_ADDRESS", ttrpc_address);
    Ok(())
}

/// Starts the daemon as a new execution of this binary (the daemon action), for a `start`
/// that cannot fork.
fn exec_daemon(
    daemon_flags: &Flags,
    ttrpc_address: &str,
    listener: UnixListener,
) -> Result<(), BootstrapError> {
    let exe =
        std::env::current_exe().map_err(|e| BootstrapError::io("finding our own binary", e))?;
    let fd = listener.as_raw_fd();
    let mut command = Command::new(exe);
    command
        .args([
            "-namespace",
            &daemon_flags.namespace,
            "-id",
            &daemon_flags.id,
        ])
        .args([
            "-address",
            &daemon_flags.address,
            "-socket",
            &daemon_flags.socket,
        ])
        .args(["-publish-binary", &daemon_flags.publish_binary])
        .env("TTRPC_ADDRESS", ttrpc_address)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if daemon_flags.debug {
        command.arg("-debug");
    }
    if !daemon_flags.bootstrap.is_empty() {
        command.args(["-bootstrap", &daemon_flags.bootstrap]);
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
        .map_err(|e| BootstrapError::io("spawning the shim daemon", e))
}

/// Runs the daemon until Shutdown.
pub fn serve(flags: &Flags, bundle: &Path) -> Result<(), BootstrapError> {
    limit_malloc_arenas();
    logger::init(
        &bundle.join("log"),
        flags.debug,
        &flags.namespace,
        &flags.id,
    );
    if flags.socket.is_empty() {
        return Err(BootstrapError::MissingSocket);
    }
    let _ = std::fs::write(bundle.join(SHIM_PID_FILE), std::process::id().to_string());
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| BootstrapError::MissingTtrpcAddress)?;
    let publisher = Publisher::start(&ttrpc_address, &flags.namespace)
        .map_err(|e| BootstrapError::io("starting the event publisher", e))?;
    let cache = cache_config::compile_cache(bundle, |key| std::env::var(key).ok());
    if let Some(cache) = &cache {
        log::debug!("compile cache in {}", cache.dir().display());
    }
    runtime::set_compile_cache(cache);
    runtime::set_tiering(cache_config::tiering(|key| std::env::var(key).ok()));
    crate::bootstrap::compile_helper::register();
    // Compile-time work that every Create needs (the engine and its WASI linkers, the
    // costliest step of a daemon's start-up): done beside the server rather than before it,
    // so containerd's Create, already waiting on the socket, is read and its rootfs mounted
    // meanwhile. Loading the program waits for the engine if it is not ready yet.
    let warm_up = || {
        if let Err(e) = runtime::shared_engine() {
            log::error!("{}", render(&e));
        }
    };
    if std::thread::Builder::new()
        .name("engine-init".into())
        .spawn(warm_up)
        .is_err()
    {
        warm_up();
    }
    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let socket = std::path::PathBuf::from(flags.socket.trim_start_matches("unix://"));
    let runc = RuncShims::new(ContainerdEndpoint {
        namespace: flags.namespace.clone(),
        grpc_address: flags.address.clone(),
        ttrpc_address,
        publish_binary: flags.publish_binary.clone(),
        debug: flags.debug,
        bootstrap: crate::bootstrap::start::parse_bootstrap_flag(&flags.bootstrap)?,
    });
    let identity = crate::launch::ShimIdentity {
        namespace: flags.namespace.clone(),
        shim_id: flags.id.clone(),
        debug: flags.debug,
    };
    let service: Arc<dyn Task + Send + Sync> = Arc::new(
        TaskService::new(
            publisher.clone(),
            shutdown_tx,
            socket,
            bundle.join(SHIM_PID_FILE),
            runc,
            identity,
        )
        .map_err(|e| BootstrapError::io("starting the exit loop", e))?,
    );
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
    // Idle request workers per connection: ttrpc's default keeps 3 (up to 5) waiting on
    // containerd's one connection. A worker blocked in Wait does not count as idle (ttrpc
    // starts another), so keeping one to three idle serves a pod of any size while each shim
    // keeps fewer stacks around.
    let mut server = Server::new()
        .set_thread_count_min(1)
        .set_thread_count_default(2)
        .set_thread_count_max(3)
        .add_listener(LISTENER_FD)
        .map_err(|source| BootstrapError::Server {
            what: "using the listening socket",
            source,
        })?
        .register_service(v3)
        .register_service(v2);
    server.start().map_err(|source| BootstrapError::Server {
        what: "starting the ttrpc server",
        source,
    })?;
    log::info!("serving {} on {}", flags.id, flags.socket);

    let _ = shutdown_rx.recv();
    log::info!("shutting down: no task left");
    // The pid file is gone already (see TaskService::shutdown); this only covers a shutdown
    // that did not come through it.
    let _ = std::fs::remove_file(bundle.join(SHIM_PID_FILE));
    publisher.flush(std::time::Duration::from_secs(5));
    // A first start's optimized code is still being compiled: finish it (the socket is gone,
    // containerd has let go of this process), so the next start of the program runs it
    // instead of compiling it again. Bounded, as a hung compile must not keep a shim forever.
    let pending = runtime::pending_optimizations();
    if pending > 0 {
        log::info!("finishing {pending} background optimization(s) before exiting");
        if !runtime::wait_for_optimizations(OPTIMIZATION_GRACE) {
            log::warn!("background optimization unfinished after {OPTIMIZATION_GRACE:?}; exiting");
        }
    }
    // Let the Shutdown reply reach containerd before the process goes away. The server is
    // not shut down gracefully: that would wait on workers parked in Wait.
    std::thread::sleep(std::time::Duration::from_millis(20));
    Ok(())
}

/// Caps glibc's malloc at two arenas. By default every thread that allocates gets an arena
/// of its own (up to eight per core), each holding at least a few of its pages dirty after
/// use: in a shim, with a thread per container and a dozen service threads, that is a
/// noticeable part of each container's memory. A shim's threads rarely allocate at the same
/// time, so two arenas cost no measurable contention. Called before the daemon starts any
/// thread.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator parameters; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
