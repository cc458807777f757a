//! Running a loaded [`Program`]: a thread and a single-threaded executor of its own, the
//! program's WASI context and one instance per run (per request for an HTTP handler), stop
//! and pause requests, and the mapping of how it ended to an [`ExitStatus`]. Loading it
//! (compile and link) is `program`'s; this module never compiles.

use std::fmt::Display;
use std::time::Duration;

use thiserror::Error;
use wasmtime::component::ResourceTable;
use wasmtime::Val;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::engine::{serving, Tier};
use crate::host::{new_store, ComponentHost, GaugeLimiter, Host, WasiContextError};
use crate::http::{self, LoadOptimized, ServedCode};
use crate::preopen::PinnedPreopens;
use crate::program::{proxy_pre, Compiled, Program};
use crate::usage::OutOfMemory;
use crate::wasi_stdio::{output_stream, stdin_stream, Output, Stdin};
use crate::{Controls, ExitStatus, RuntimeError, StdioFiles, WasiPlan};

/// Why a loaded program did not get to run: its status is then
/// [`ExitStatus::Failed`] with this as the message, which its stderr shows too.
#[derive(Debug, Error)]
enum NotStarted {
    /// An HTTP handler reached its server without the socket it was to serve on.
    #[error("no listening socket was bound")]
    NoListener,
    /// Its WASI context could not be made.
    #[error(transparent)]
    Context(#[from] WasiContextError),
    /// The container's stdin could not be made the program's.
    #[error("opening stdin: {0}")]
    Stdin(#[source] std::io::Error),
    /// An HTTP handler reached the path that calls an entry point.
    #[error("an HTTP component is served, not called")]
    Served,
}

impl Program {
    /// Runs the program to its end on the calling thread, which it occupies until then.
    ///
    /// Each program gets a thread and a single-threaded executor of its own so that one
    /// program computing cannot delay another, nor the host's own request handling.
    pub fn run_blocking(self, stdio: StdioFiles, controls: &Controls) -> ExitStatus {
        self.run_blocking_confined(stdio, controls, || Ok::<(), std::convert::Infallible>(()))
    }

    /// [`Program::run_blocking`], with `confine` called on the calling thread once the host
    /// needs no more privilege and before any guest code runs or any helper thread exists:
    /// after an HTTP handler's listening socket is bound (a port below 1024 needs
    /// privilege), before the executor and its blocking-I/O threads, which inherit the
    /// thread's credentials and filters, are made. If `confine` fails, nothing runs, and
    /// the status (and the program's stderr) says why: its error is the host's own type,
    /// and only its text is kept.
    ///
    /// A command's blocking host calls (file I/O, a preview-1 sleep) run on this thread, so
    /// a stop request (`controls.stopper`) takes effect when the call under way returns:
    /// at once for most, but a sleep or a read of a FIFO may last. A host that must end such
    /// a program promptly ends its process once a stop has gone unanswered for a moment
    /// (the shim's container process does). An HTTP component's calls never block its
    /// thread: its stop is a drain.
    pub fn run_blocking_confined<E: Display>(
        self,
        stdio: StdioFiles,
        controls: &Controls,
        confine: impl FnOnce() -> Result<(), E>,
    ) -> ExitStatus {
        let listener = match &self.compiled {
            Compiled::Http { settings, .. } => match http::bind(settings.addr) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    return failed_before_running(
                        &stdio,
                        format!(
                            "{}: listening on {} ({}): {e}",
                            self.guest_path,
                            settings.addr,
                            http::LISTEN_ADDR_ENV
                        ),
                    )
                }
            },
            _ => None,
        };
        if let Err(e) = confine() {
            return failed_before_running(&stdio, format!("confining the program's thread: {e}"));
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return failed_before_running(&stdio, format!("creating the executor: {e}")),
        };
        let status = runtime.block_on(self.run(stdio, controls, listener));
        // Blocking host calls (file I/O) run on the executor's helper threads; a stopped
        // program may leave one waiting, which must not hold up the exit report.
        runtime.shutdown_timeout(Duration::from_millis(100));
        status
    }

    async fn run(
        self,
        stdio: StdioFiles,
        controls: &Controls,
        listener: Option<std::net::TcpListener>,
    ) -> ExitStatus {
        let stopper = &controls.stopper;
        let terminal = stdio.terminal;
        let outputs = output_stream(stdio.stdout, terminal)
            .and_then(|out| Ok((out, output_stream(stdio.stderr, terminal)?)));
        let (stdout, stderr) = match outputs {
            Ok(outputs) => outputs,
            Err(e) => return ExitStatus::Failed(format!("opening stdout/stderr: {e}")),
        };
        let status = match self
            .instantiate_and_call(
                stdio.stdin,
                terminal,
                stdout.clone(),
                stderr.clone(),
                controls,
                listener,
            )
            .await
        {
            Ok(status) => status,
            Err(e) => ExitStatus::Failed(e.to_string()),
        };
        // Also when it never ran (a failed instantiation): what follows is teardown.
        stopper.settle();
        let finish_output = async {
            // A trap is the guest's crash: like a Linux process's dying message, it belongs
            // on the container's stderr, where `ctr`, `kubectl logs` and `docker logs` show
            // it, after everything the program wrote.
            if let Some(out) = &stdout {
                out.drained().await;
            }
            if let Some(err) = &stderr {
                err.drained().await;
                if let ExitStatus::Trapped(msg)
                | ExitStatus::Failed(msg)
                | ExitStatus::OutOfMemory(msg) = &status
                {
                    err.write_message(&format!("Error: {msg}\n")).await;
                }
            }
        };
        // Output still waiting for a reader must not keep a finished program alive forever:
        // a stopped program gets a short grace, any program gives up on a stop request.
        if let ExitStatus::Signaled(_) = status {
            let _ = tokio::time::timeout(Duration::from_millis(500), finish_output).await;
        } else {
            tokio::select! {
                _ = finish_output => {}
                _ = stopper.wait() => {}
            }
        }
        status
    }

    async fn instantiate_and_call(
        self,
        stdin: Option<std::fs::File>,
        terminal: bool,
        stdout: Option<Output>,
        stderr: Option<Output>,
        controls: &Controls,
        listener: Option<std::net::TcpListener>,
    ) -> Result<ExitStatus, NotStarted> {
        if let Compiled::Http { pre, settings } = self.compiled {
            let listener = listener.ok_or(NotStarted::NoListener)?;
            let (plan, pinned) = (self.plan, self.pinned);
            let (out, err) = (stdout.clone(), stderr.clone());
            let new_ctx = Box::new(move || {
                wasi_builder(
                    &plan,
                    &pinned,
                    out.as_ref(),
                    err.as_ref(),
                    HostCalls::OnHelperThreads,
                )
                .map(|mut b| b.build())
            });
            // Baseline code switches to the optimized code the host hands over (see
            // `upgrade`), with the optimized serving engine: made before this process
            // confined itself, as `compile_tiered` looked in the cache for its code first.
            let optimized = (self.tier == Tier::Baseline).then(|| {
                let (upgrade, guest_path) = (controls.upgrade.clone(), self.guest_path.clone());
                Box::new(move || {
                    let serving = serving().map_err(RuntimeError::Engine)?;
                    let component = upgrade.load(&serving.engine)?;
                    Ok(proxy_pre(&guest_path, &component, serving)?)
                }) as LoadOptimized
            });
            let code = ServedCode { pre, optimized };
            return Ok(http::serve(
                code,
                listener,
                &settings,
                new_ctx,
                stderr,
                controls,
                &self.guest_path,
            )
            .await);
        }
        let mut builder = wasi_builder(
            &self.plan,
            &self.pinned,
            stdout.as_ref(),
            stderr.as_ref(),
            HostCalls::OnProgramThread,
        )?;
        match stdin_stream(stdin, terminal).map_err(NotStarted::Stdin)? {
            Stdin::Closed => {}
            Stdin::Terminal(tty) => {
                builder.stdin(tty);
            }
            Stdin::Pipe(pipe) => {
                builder.stdin(pipe);
            }
            Stdin::File(file) => {
                builder.stdin(file);
            }
        }
        let limits = GaugeLimiter::new(controls.gauge.clone());
        match self.compiled {
            Compiled::Module {
                pre,
                export,
                initialize_first,
            } => {
                let host = Host {
                    wasi: builder.build_p1(),
                    limits,
                };
                let mut store = new_store(pre.module().engine(), host, |h| &mut h.limits);
                let call = async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    if initialize_first {
                        let init = instance.get_typed_func::<(), ()>(&mut store, "_initialize")?;
                        init.call_async(&mut store, ()).await?;
                    }
                    let func = instance
                        .get_func(&mut store, &export)
                        .ok_or_else(|| wasmtime::format_err!("export `{export}` disappeared"))?;
                    let mut results = vec![Val::I32(0); func.ty(&store).results().len()];
                    func.call_async(&mut store, &[], &mut results).await
                };
                Ok(run_stoppable(controls, call).await)
            }
            Compiled::Component { pre } => {
                let host = ComponentHost {
                    ctx: builder.build(),
                    http: WasiHttpCtx::new(),
                    table: ResourceTable::new(),
                    limits,
                };
                let engine = pre.engine().clone();
                let mut store = new_store(&engine, host, |h| &mut h.limits);
                let call = async {
                    let command = pre.instantiate_async(&mut store).await?;
                    match command.wasi_cli_run().call_run(&mut store).await? {
                        Ok(()) => Ok(()),
                        // `run` returning its error result is exit status 1, as
                        // wasmtime's CLI reports it.
                        Err(()) => Err(I32Exit(1).into()),
                    }
                };
                Ok(run_stoppable(controls, call).await)
            }
            Compiled::Http { .. } => Err(NotStarted::Served),
        }
    }
}

/// The status of a program that could not start; its stderr gets the reason first, as a
/// Linux process's failed exec would show it (`ctr`, `kubectl logs` and `docker logs` show
/// stderr, not the shim's log).
fn failed_before_running(stdio: &StdioFiles, message: String) -> ExitStatus {
    if let Some(mut stderr) = stdio.stderr.as_ref() {
        use std::io::Write;
        let _ = writeln!(stderr, "Error: {message}");
    }
    ExitStatus::Failed(message)
}

/// Where a program's blocking host calls (file I/O; a preview-1 sleep) run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostCalls {
    /// On the program's own thread, as a native program's system calls do: a command is the
    /// only instance on its executor, and handing each call to a helper thread and back cost
    /// 15–25 µs (a 4 KiB read took 17–28 µs instead of about 1, a stat 48 instead of 5). A
    /// stop request is then honored when such a call returns; see
    /// [`Program::run_blocking_confined`] for what a host does about one that never does.
    OnProgramThread,
    /// On the executor's helper threads: an HTTP component's requests share one executor,
    /// and one request's slow read must not hold up the others.
    OnHelperThreads,
}

/// The WASI context every kind of program starts from: the plan's args, env, cwd and
/// preopens, and the container's stdout and stderr (stdin is the caller's business).
fn wasi_builder(
    plan: &WasiPlan,
    pinned: &PinnedPreopens,
    stdout: Option<&Output>,
    stderr: Option<&Output>,
    calls: HostCalls,
) -> Result<WasiCtxBuilder, WasiContextError> {
    let mut builder = WasiCtxBuilder::new();
    // Set first: each preopen takes the setting it finds when it is added.
    builder.allow_blocking_current_thread(calls == HostCalls::OnProgramThread);
    builder.args(&plan.args);
    builder.envs(&plan.env);
    builder.initial_cwd(&plan.cwd);
    // The network a program reaches is its container's network namespace, as for a Linux
    // container: wasmtime-wasi denies every socket by default, which would leave a wasip2
    // server or client (std::net, Go's net, Python's socket) unable to bind, connect or look
    // up a name in a container that has a network. What the namespace has (only loopback
    // for `--network none`, the pod's interfaces in Kubernetes) is the boundary; the host
    // answers name lookups from the files the container sees (/etc/hosts, resolv.conf).
    builder
        .inherit_network()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true);
    if let Some(out) = stdout {
        out.install_as_stdout(&mut builder);
    }
    if let Some(err) = stderr {
        err.install_as_stderr(&mut builder);
    }
    for (preopen, path) in plan.preopens.visible().zip(pinned.paths()) {
        let perms = if preopen.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(path, &preopen.guest, perms)
            .map_err(|source| WasiContextError::Preopen {
                host: preopen.host.clone(),
                guest: preopen.guest.clone(),
                source,
            })?;
    }
    // After them, in order: see `working_directory`.
    for dir in pinned.working_directory() {
        let perms = if dir.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&dir.path, &dir.name, perms)
            .map_err(|source| WasiContextError::WorkingDirectory {
                name: dir.name.clone(),
                cwd: plan.cwd.clone(),
                source,
            })?;
    }
    Ok(builder)
}

/// Runs `call` until it ends or a stop request comes.
async fn run_stoppable(
    controls: &Controls,
    call: impl std::future::Future<Output = wasmtime::Result<()>>,
) -> ExitStatus {
    let status = tokio::select! {
        // A stop request wins over a program that finishes in the same instant, and
        // reaches a paused program too (the pause gates only the program).
        biased;
        signal = controls.stopper.wait() => ExitStatus::Signaled(signal),
        result = controls.pauser.gate(call) => exit_status_of(result),
    };
    controls.stopper.settle();
    status
}

fn exit_status_of(result: wasmtime::Result<()>) -> ExitStatus {
    match result {
        Ok(()) => ExitStatus::Exited(0),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<I32Exit>() {
                ExitStatus::Exited(exit.0)
            } else if let Some(oom) = e.downcast_ref::<OutOfMemory>() {
                ExitStatus::OutOfMemory(oom.to_string())
            } else {
                // Traps (and host errors raised inside a call) carry the wasm backtrace as
                // context; `{:?}` prints the message with it.
                ExitStatus::Trapped(format!("{e:?}"))
            }
        }
    }
}
