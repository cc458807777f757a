//! Loading a program: finding its file, compiling it (through the compile cache, tiered or
//! not) and linking it, so that what comes out is a [`Program`] ready to instantiate.
//! Everything that can fail because of the input fails here, at Create; running it (the
//! executor, one instance per run, the exit status) is `execution`'s.

use std::path::Path;

use wasmtime::component::Component;
use wasmtime::{InstancePre, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::artifact::Artifact;
use crate::cache::{compile_cache, CompileCache};
use crate::engine::{serving_of, shared_of, EngineFamily, Serving, Shared, Tier};
use crate::error::EngineError;
use crate::host::{ComponentHost, Host};
use crate::http::ServeSettings;
use crate::optimizer::PendingOptimization;
use crate::preopen::PinnedPreopens;
use crate::program_bytes::{classify, ProgramKind};
use crate::settings::tiering;
use crate::source::ProgramSource;
use crate::{RuntimeError, WasiPlan};

/// A compiled, linked program ready to run: everything that can fail because of the input
/// (missing file, corrupt wasm, unknown imports, missing export) has failed by the time this
/// exists.
///
/// Its fields are the crate's so that `execution` can take a loaded program apart to run it;
/// only this module makes one.
pub struct Program {
    /// What the program is given: args, env, cwd and preopens.
    pub(crate) plan: WasiPlan,
    /// The plan's preopens, opened (and so checked) once at load.
    pub(crate) pinned: PinnedPreopens,
    /// Where the program was found inside the container, for messages.
    pub(crate) guest_path: String,
    /// The linked code, by kind of program.
    pub(crate) compiled: Compiled,
    /// Which compiler made that code.
    pub(crate) tier: Tier,
    /// Set while the program runs baseline code whose optimized code is being compiled.
    pub(crate) pending: Option<PendingOptimization>,
}

/// The linked program, by kind.
pub(crate) enum Compiled {
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
        pre: ProxyPre<ComponentHost>,
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
                    RuntimeError::Engine(EngineError::LostCode {
                        guest_path: source.guest_path().to_string(),
                    })
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
        let linker = shared.component_linker()?;
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
    /// reached by their paths inside the container, never through the host's. Also where
    /// `HOME` gets its default, as runc gives it inside the container.
    pub fn enter_own_root(&mut self, rootfs: &Path) -> Result<(), RuntimeError> {
        self.plan.preopens = self.plan.preopens.relocated(rootfs);
        self.pinned = self.plan.preopens.pin_in_own_root(&self.plan.cwd)?;
        // runc's rule, from the /etc/passwd of this root (see `home`): a spec without HOME,
        // or with an empty one, gets the home of its uid.
        let env = &mut self.plan.env;
        env.retain(|(k, v)| !(k == "HOME" && v.is_empty()));
        if !env.iter().any(|(k, _)| k == "HOME") {
            let home = crate::home::home_of(Path::new("/"), self.plan.uid);
            env.push(("HOME".to_string(), home));
        }
        Ok(())
    }

    /// Leaves out the plan's tmpfs at `guest`, which the host could not mount, before
    /// [`Program::enter_own_root`] (see [`crate::PreopenPlan::leave_out_tmpfs`]).
    pub fn leave_out_tmpfs(&mut self, guest: &str, why: String) {
        self.plan.preopens.leave_out_tmpfs(guest, why);
    }

    /// Adds the tmpfs the host mounted at `guest` of its own accord, before
    /// [`Program::enter_own_root`] (see [`crate::PreopenPlan::add_host_tmpfs`]).
    pub fn add_host_tmpfs(&mut self, guest: &str) {
        self.plan.preopens.add_host_tmpfs(guest);
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
    /// that runs the program in another process waits for (see [`crate::Controls::upgrade`]).
    pub fn pending_optimization(&self) -> Option<&PendingOptimization> {
        self.pending.as_ref()
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
/// by `serving`'s linker, with the HTTP handler export it must have. Also what the
/// optimized code a server switches to is linked with (see `execution`).
pub(crate) fn proxy_pre(
    guest_path: &str,
    component: &Component,
    serving: &Serving,
) -> Result<ProxyPre<ComponentHost>, RuntimeError> {
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
