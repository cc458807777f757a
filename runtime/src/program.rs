use std::path::Path;
use std::time::Duration;

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{InstancePre, Module, Val};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::artifact::Artifact;
use crate::cache::{compile_cache, CompileCache};
use crate::engine::{serving, serving_of, shared_of, EngineFamily, Serving, Shared, Tier};
use crate::host::{new_store, ComponentHost, GaugeLimiter, Host, HttpHost};
use crate::http::ServeSettings;
use crate::optimizer::PendingOptimization;
use crate::preopen::PinnedPreopens;
use crate::program_bytes::{classify, ProgramKind};
use crate::settings::tiering;
use crate::source::ProgramSource;
use crate::usage::OutOfMemory;
use crate::wasi_stdio::{output_stream, stdin_stream, Output, Stdin};
use crate::{Controls, ExitStatus, RuntimeError, StdioFiles, WasiPlan};

/// A compiled, linked program ready to run: everything that can fail because of the input
/// (missing file, corrupt wasm, unknown imports, missing export) has failed by the time this
/// exists.
pub struct Program {
    plan: WasiPlan,
    pinned: PinnedPreopens,
    guest_path: String,
    compiled: Compiled,
    tier: Tier,
    /// Set while the program runs baseline code whose optimized code is being compiled.
    pending: Option<PendingOptimization>,
}

/// The linked program, by kind.
enum Compiled {
    /// A core module: run `export` (after `_initialize` for a reactor).
    Module {
        pre: InstancePre<Host>,
        export: String,
        initialize_first: bool,
    },
    /// A command component: run its `wasi:cli/run` export.
    Component { pre: CommandPre<ComponentHost> },
    /// An HTTP handler component: serve it, one instance per request.
    Http {
        pre: ProxyPre<HttpHost>,
        settings: ServeSettings,
    },
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("path", &self.guest_path)
            .finish()
    }
}

impl Program {
    /// Finds, reads, validates, compiles and links the program the plan names.
    ///
    /// A large program already compiled and remembered by the digest memo is not read at
    /// all: its kind comes from its first bytes and the rest from the memo and the cache.
    pub fn load(plan: WasiPlan) -> Result<Self, RuntimeError> {
        let source = Self::open_source(&plan)?;
        Self::load_from(source, plan, tiering())
    }

    /// Puts the program's optimized code in the compile cache now, whatever the tiering
    /// (a no-op when it is there already), and loads it: what a task that only warms a
    /// node's cache asks for, so its end means the next start runs optimized code.
    pub fn precompile(plan: WasiPlan) -> Result<Self, RuntimeError> {
        let source = Self::open_source(&plan)?;
        Self::load_from(source, plan, false)
    }

    /// [`Program::load`], unless the compile cache already holds the program compiled:
    /// then `None`, after no more than finding the program and its digest (none for a
    /// remembered program). A host that loads the program in another process calls this
    /// first: a load of its own then only pays when it compiles (with every core, into the
    /// cache), and the other process's load reports whatever a cached program still gets
    /// wrong (an entry point it lacks, say).
    ///
    /// `tiered` says whether a program compiled here may start on baseline code (see
    /// [`crate::set_tiering`]); this process's background thread then has its optimized
    /// code compiled (see [`crate::set_compile_helper`]). A host whose background compile
    /// would be charged to a budget the program shares passes `false`: the optimized code is
    /// compiled now, before the program runs. (The shim, in a pod's cgroup, moves its compile
    /// helpers out of it instead.)
    pub fn load_unless_compiled(
        plan: WasiPlan,
        tiered: bool,
    ) -> Result<Option<Self>, RuntimeError> {
        let mut source = Self::open_source(&plan)?;
        if let Some(cache) = compile_cache() {
            let family = match classify(source.guest_path(), source.head())? {
                ProgramKind::Component if source.is_http_handler()? => EngineFamily::Http,
                _ => EngineFamily::Command,
            };
            let engine = family
                .engine(Tier::Optimized)
                .map_err(RuntimeError::Engine)?;
            if cache.has_entry(engine, &source.digest()?) {
                // What it read is as true as after a load: the next start need not read it.
                source.remember();
                return Ok(None);
            }
        }
        Self::load_from(source, plan, tiered && tiering()).map(Some)
    }

    fn open_source(plan: &WasiPlan) -> Result<ProgramSource, RuntimeError> {
        ProgramSource::open(
            &plan.entrypoint,
            &plan.preopens,
            &plan.cwd,
            plan.path_var(),
            compile_cache().map(CompileCache::digests),
        )
    }

    /// Loads the program from `source`, its code tiered (see [`compile_tiered`]) or not.
    fn load_from(
        mut source: ProgramSource,
        plan: WasiPlan,
        tiered: bool,
    ) -> Result<Self, RuntimeError> {
        let (compiled, tier) = match Self::compile_and_link(&mut source, &plan, tiered)? {
            Some(compiled) => compiled,
            // Remembered, but its compiled form is gone: from the bytes, start to finish.
            None => {
                source.forget()?;
                Self::compile_and_link(&mut source, &plan, tiered)?.ok_or_else(|| {
                    RuntimeError::Engine(format!(
                        "{}: compiled from its bytes, yet not compiled",
                        source.guest_path()
                    ))
                })?
            }
        };
        let guest_path = source.guest_path().to_string();
        log::debug!("{guest_path}: {tier} code");
        let family = match compiled {
            Compiled::Http { .. } => EngineFamily::Http,
            _ => EngineFamily::Command,
        };
        let pending = match tier {
            Tier::Baseline => Some(PendingOptimization::new(
                &guest_path,
                source.digest()?,
                family,
            )),
            Tier::Optimized => None,
        };
        source.remember();
        let pinned = plan.preopens.pin(&plan.cwd)?;
        Ok(Program {
            plan,
            pinned,
            guest_path,
            compiled,
            tier,
            pending,
        })
    }

    /// The linked program and the tier of its code, or `None` when the memo gave its digest
    /// and the cache no longer has what it names (never for a program whose bytes were read).
    fn compile_and_link(
        source: &mut ProgramSource,
        plan: &WasiPlan,
        tiered: bool,
    ) -> Result<Option<(Compiled, Tier)>, RuntimeError> {
        let guest_path = source.guest_path().to_string();
        let compiled = match classify(&guest_path, source.head())? {
            ProgramKind::Module => {
                match compile_in::<Module>(source, tiered, EngineFamily::Command)? {
                    Some((module, tier)) => {
                        let shared = shared_of(tier).map_err(RuntimeError::Engine)?;
                        let export = plan.entrypoint.export.clone();
                        (
                            Self::link_module(&guest_path, module, export, shared)?,
                            tier,
                        )
                    }
                    None => return Ok(None),
                }
            }
            ProgramKind::Component => {
                if let Some(export) = &plan.entrypoint.export {
                    return Err(RuntimeError::InvalidProgram(format!(
                        "{guest_path}#{export}: a component runs its wasi:cli/run export; \
                         #NAME selects a function of a core module only"
                    )));
                }
                if source.is_http_handler()? {
                    // A first start serves baseline code until the optimized code is ready
                    // (see `http`): each request is an instance of its own, so requests
                    // after the switch run the new code.
                    let settings = ServeSettings::from_env(&plan.env)?;
                    match compile_in::<Component>(source, tiered, EngineFamily::Http)? {
                        Some((component, tier)) => {
                            let serving = serving_of(tier).map_err(RuntimeError::Engine)?;
                            (
                                Self::link_http(&guest_path, component, serving, settings)?,
                                tier,
                            )
                        }
                        None => return Ok(None),
                    }
                } else {
                    match compile_in::<Component>(source, tiered, EngineFamily::Command)? {
                        Some((component, tier)) => {
                            let shared = shared_of(tier).map_err(RuntimeError::Engine)?;
                            (Self::link_component(&guest_path, component, shared)?, tier)
                        }
                        None => return Ok(None),
                    }
                }
            }
        };
        Ok(Some(compiled))
    }

    fn link_module(
        guest_path: &str,
        module: Module,
        named_export: Option<String>,
        shared: &Shared,
    ) -> Result<Compiled, RuntimeError> {
        let linker = &shared.linker;
        let export = named_export.clone().unwrap_or_else(|| "_start".to_string());
        match module.get_export(&export) {
            Some(wasmtime::ExternType::Func(ty)) if ty.params().len() == 0 => {}
            Some(wasmtime::ExternType::Func(_)) => {
                return Err(RuntimeError::InvalidProgram(format!(
                    "{guest_path}: export `{export}` takes parameters; an entry point takes none"
                )))
            }
            _ if named_export.is_none() => {
                return Err(RuntimeError::InvalidProgram(format!(
                    "{guest_path} has no `_start` function to run (a library module?); name \
                     an exported function with {guest_path}#NAME"
                )))
            }
            _ => {
                return Err(RuntimeError::InvalidProgram(format!(
                    "{guest_path} has no exported function `{export}`"
                )))
            }
        }
        let initialize_first = export != "_start"
            && matches!(
                module.get_export("_initialize"),
                Some(wasmtime::ExternType::Func(_))
            );
        let pre = linker.instantiate_pre(&module).map_err(|e| {
            RuntimeError::InvalidProgram(format!("{guest_path} cannot be linked: {e:#}"))
        })?;
        Ok(Compiled::Module {
            pre,
            export,
            initialize_first,
        })
    }

    fn link_component(
        guest_path: &str,
        component: Component,
        shared: &Shared,
    ) -> Result<Compiled, RuntimeError> {
        let linker = &shared.component_linker;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            RuntimeError::InvalidProgram(format!("{guest_path} cannot be linked: {e:#}"))
        })?;
        let pre = CommandPre::new(pre).map_err(|e| {
            RuntimeError::InvalidProgram(format!(
                "{guest_path} is a component without a wasi:cli/run export (not a command): \
                 {e:#}"
            ))
        })?;
        Ok(Compiled::Component { pre })
    }

    fn link_http(
        guest_path: &str,
        component: Component,
        serving: &Serving,
        settings: ServeSettings,
    ) -> Result<Compiled, RuntimeError> {
        let pre = proxy_pre(guest_path, &component, serving)?;
        Ok(Compiled::Http { pre, settings })
    }

    /// Moves the program's view into its own mount namespace, once the calling process's
    /// root is the container's rootfs `rootfs` (as it was named before pivot_root) and the
    /// plan's mounts are bound at their destinations: from here on its directories are
    /// reached by their paths inside the container, never through the host's.
    pub fn enter_own_root(&mut self, rootfs: &Path) -> Result<(), RuntimeError> {
        self.plan.preopens = self.plan.preopens.relocated(rootfs);
        self.pinned = self.plan.preopens.pin_in_own_root(&self.plan.cwd)?;
        Ok(())
    }

    /// The plan the program was loaded from.
    pub fn plan(&self) -> &WasiPlan {
        &self.plan
    }

    /// Whether the program is an HTTP handler that [`Program::run_blocking`] serves until
    /// stopped, rather than a program that ends by itself.
    pub fn is_server(&self) -> bool {
        matches!(self.compiled, Compiled::Http { .. })
    }

    /// Where the program was found inside the container.
    pub fn guest_path(&self) -> &str {
        &self.guest_path
    }

    /// Which compiler made the code it runs.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// For a program that runs baseline code: its optimized code on the way, which a host
    /// that runs the program in another process waits for (see [`Controls::upgrade`]).
    pub fn pending_optimization(&self) -> Option<&PendingOptimization> {
        self.pending.as_ref()
    }

    /// Runs the program to its end on the calling thread, which it occupies until then.
    ///
    /// Each program gets a thread and a single-threaded executor of its own so that one
    /// program computing cannot delay another, nor the host's own request handling.
    pub fn run_blocking(self, stdio: StdioFiles, controls: &Controls) -> ExitStatus {
        self.run_blocking_confined(stdio, controls, || Ok(()))
    }

    /// [`Program::run_blocking`], with `confine` called on the calling thread once the host
    /// needs no more privilege and before any guest code runs or any helper thread exists:
    /// after an HTTP handler's listening socket is bound (a port below 1024 needs
    /// privilege), before the executor and its blocking-I/O threads, which inherit the
    /// thread's credentials and filters, are made. If `confine` fails, nothing runs.
    pub fn run_blocking_confined(
        self,
        stdio: StdioFiles,
        controls: &Controls,
        confine: impl FnOnce() -> Result<(), String>,
    ) -> ExitStatus {
        let listener = match &self.compiled {
            Compiled::Http { settings, .. } => match crate::http::bind(settings.addr) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    return failed_before_running(
                        &stdio,
                        format!(
                            "{}: listening on {} ({}): {e}",
                            self.guest_path,
                            settings.addr,
                            crate::http::LISTEN_ADDR_ENV
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
            Err(e) => return ExitStatus::Failed(format!("creating the executor: {e}")),
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
            Err(msg) => ExitStatus::Failed(msg),
        };
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
    ) -> Result<ExitStatus, String> {
        if let Compiled::Http { pre, settings } = self.compiled {
            let listener = listener.ok_or("no listening socket was bound")?;
            let (plan, pinned) = (self.plan, self.pinned);
            let (out, err) = (stdout.clone(), stderr.clone());
            let new_ctx = Box::new(move || {
                wasi_builder(&plan, &pinned, out.as_ref(), err.as_ref()).map(|mut b| b.build())
            });
            // Baseline code switches to the optimized code the host hands over (see
            // `upgrade`), with the optimized serving engine: made before this process
            // confined itself, as `compile_tiered` looked in the cache for its code first.
            let optimized = (self.tier == Tier::Baseline).then(|| {
                let (upgrade, guest_path) = (controls.upgrade.clone(), self.guest_path.clone());
                Box::new(move || {
                    let serving = serving().map_err(RuntimeError::Engine)?;
                    let component = upgrade
                        .load(&serving.engine)
                        .map_err(RuntimeError::Engine)?;
                    proxy_pre(&guest_path, &component, serving)
                }) as crate::http::LoadOptimized
            });
            let code = crate::http::ServedCode { pre, optimized };
            return Ok(crate::http::serve(
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
        let mut builder = wasi_builder(&self.plan, &self.pinned, stdout.as_ref(), stderr.as_ref())?;
        match stdin_stream(stdin, terminal).map_err(|e| format!("opening stdin: {e}"))? {
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
            Compiled::Http { .. } => Err("an HTTP component is served, not called".into()),
        }
    }
}

/// The program's code for `family`'s engines and its tier. `tiered` and a compile cache:
/// see [`compile_tiered`]; otherwise the optimized code, compiled now if the cache does not
/// hold it. `None` as [`compile`] says.
fn compile_in<T: Artifact>(
    source: &mut ProgramSource,
    tiered: bool,
    family: EngineFamily,
) -> Result<Option<(T, Tier)>, RuntimeError> {
    match compile_cache().filter(|_| tiered) {
        Some(cache) => compile_tiered::<T>(source, cache, family),
        None => {
            let optimized = family
                .engine(Tier::Optimized)
                .map_err(RuntimeError::Engine)?;
            Ok(compile::<T>(source, optimized)?.map(|code| (code, Tier::Optimized)))
        }
    }
}

/// Tiered compilation with `family`'s engines: the optimized code when the cache holds it;
/// else the baseline code, from the cache or compiled now by Winch (many times faster than
/// Cranelift), while the optimized code is compiled in the background (see `optimizer`) for
/// the next start; else, for a program Winch cannot compile (tail calls, GC, exceptions,
/// relaxed SIMD), the optimized code compiled now. A baseline entry never shadows an
/// optimized one: the optimized entry is looked for first. `None` as [`compile`] says.
pub(crate) fn compile_tiered<T: Artifact>(
    source: &mut ProgramSource,
    cache: &CompileCache,
    family: EngineFamily,
) -> Result<Option<(T, Tier)>, RuntimeError> {
    let optimized = family
        .engine(Tier::Optimized)
        .map_err(RuntimeError::Engine)?;
    let digest = source.digest()?;
    if let Some(code) = cache.get::<T>(optimized, &digest) {
        return Ok(Some((code, Tier::Optimized)));
    }
    // Made only now: a start whose optimized code is cached never needs the Winch engine.
    let baseline = match family.engine(Tier::Baseline) {
        Ok(baseline) => baseline,
        Err(e) => {
            log::debug!("{e}; compiling optimized code first");
            return Ok(compile::<T>(source, optimized)?.map(|code| (code, Tier::Optimized)));
        }
    };
    if let Some(code) = cache.get::<T>(baseline, &digest) {
        crate::optimizer::request::<T>(source, digest, family);
        return Ok(Some((code, Tier::Baseline)));
    }
    if source.remembered_digest().is_some() {
        return Ok(None);
    }
    match cache.compiled::<T>(baseline, &digest, source.bytes()?) {
        Ok(code) => {
            crate::optimizer::request::<T>(source, digest, family);
            Ok(Some((code, Tier::Baseline)))
        }
        Err(e) => {
            log::debug!(
                "{}: not for the baseline compiler ({e:#}); compiling optimized code first",
                source.guest_path()
            );
            let code = cache
                .compiled::<T>(optimized, &digest, source.bytes()?)
                .map_err(|e| not_valid::<T>(source, e))?;
            Ok(Some((code, Tier::Optimized)))
        }
    }
}

/// The code `engine` compiled from `source`: straight from the cache when the memo gave its
/// digest (`None` if the cache has nothing under it: the caller starts over from the
/// bytes), else from its bytes through the cache, else compiled from its bytes.
fn compile<T: Artifact>(
    source: &mut ProgramSource,
    engine: &wasmtime::Engine,
) -> Result<Option<T>, RuntimeError> {
    let cache = compile_cache();
    if let Some(digest) = source.remembered_digest() {
        return Ok(cache.and_then(|cache| cache.get::<T>(engine, &digest)));
    }
    let compiled = match cache {
        Some(cache) => {
            let digest = source.digest()?;
            cache.compiled::<T>(engine, &digest, source.bytes()?)
        }
        None => T::compile(engine, source.bytes()?),
    };
    compiled.map(Some).map_err(|e| not_valid::<T>(source, e))
}

/// The linked component an HTTP server instantiates for each request: `component` linked
/// by `serving`'s linker, with the HTTP handler export it must have.
fn proxy_pre(
    guest_path: &str,
    component: &Component,
    serving: &Serving,
) -> Result<ProxyPre<HttpHost>, RuntimeError> {
    let pre = serving.linker.instantiate_pre(component).map_err(|e| {
        RuntimeError::InvalidProgram(format!(
            "{guest_path} cannot be linked as an HTTP handler (wasi:http/proxy): {e:#}"
        ))
    })?;
    ProxyPre::new(pre).map_err(|e| {
        RuntimeError::InvalidProgram(format!(
            "{guest_path}: its wasi:http/incoming-handler export is not usable: {e:#}"
        ))
    })
}

/// The error for a program wasmtime would not compile.
fn not_valid<T: Artifact>(source: &ProgramSource, e: wasmtime::Error) -> RuntimeError {
    RuntimeError::InvalidProgram(format!(
        "{} is not a valid WebAssembly {}: {e:#}",
        source.guest_path(),
        T::WHAT
    ))
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

/// The WASI context every kind of program starts from: the plan's args, env, cwd and
/// preopens, and the container's stdout and stderr (stdin is the caller's business).
fn wasi_builder(
    plan: &WasiPlan,
    pinned: &PinnedPreopens,
    stdout: Option<&Output>,
    stderr: Option<&Output>,
) -> Result<WasiCtxBuilder, String> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&plan.args);
    builder.envs(&plan.env);
    builder.initial_cwd(&plan.cwd);
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
            .map_err(|e| {
                format!(
                    "preopening {} at {}: {e:#}",
                    preopen.host.display(),
                    preopen.guest
                )
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
            .map_err(|e| {
                format!(
                    "preopening {} for the working directory {}: {e:#}",
                    dir.name, plan.cwd
                )
            })?;
    }
    Ok(builder)
}

/// Runs `call` until it ends or a stop request comes.
async fn run_stoppable(
    controls: &Controls,
    call: impl std::future::Future<Output = wasmtime::Result<()>>,
) -> ExitStatus {
    tokio::select! {
        // A stop request wins over a program that finishes in the same instant, and
        // reaches a paused program too (the pause gates only the program).
        biased;
        signal = controls.stopper.wait() => ExitStatus::Signaled(signal),
        result = controls.pauser.gate(call) => exit_status_of(result),
    }
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
