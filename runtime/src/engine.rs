use std::sync::{Arc, OnceLock};

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig, Strategy,
};

use crate::error::EngineError;
use crate::host::{ComponentHost, Host};

/// Which compiler made a program's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Winch's single-pass code: compiled many times faster, runs slower. What a first
    /// start runs while the optimized code is compiled in the background.
    Baseline,
    /// Cranelift's optimized code.
    Optimized,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Baseline => "baseline (Winch)",
            Tier::Optimized => "optimized (Cranelift)",
        })
    }
}

/// An engine with the linkers of the programs it runs.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Host>,
    /// Made when the first component is linked: a container's process runs one program,
    /// and defining WASI preview 2 and wasi:http in a linker cost a module's start a
    /// quarter of a millisecond it never used.
    component_linker: OnceLock<Result<wasmtime::component::Linker<ComponentHost>, EngineError>>,
}

impl Shared {
    /// The linker of command components (WASI preview 2 and wasi:http's client side).
    pub(crate) fn component_linker(
        &self,
    ) -> Result<&wasmtime::component::Linker<ComponentHost>, EngineError> {
        self.component_linker
            .get_or_init(|| {
                component_linker(&self.engine).map_err(|source| EngineError::Creation {
                    what: "the component linker",
                    source: std::sync::Arc::new(source),
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

static SHARED: OnceLock<Result<Shared, EngineError>> = OnceLock::new();
static BASELINE: OnceLock<Result<Shared, EngineError>> = OnceLock::new();
static OPTIMIZING: OnceLock<Result<Engine, EngineError>> = OnceLock::new();

/// The one wasmtime engine of this process.
///
/// All programs share it so compiled code, the epoch ticker and the WASI linker are set up once
/// per shim rather than once per container; creating an engine is by far the most expensive
/// step of a cold start.
pub fn shared_engine() -> Result<&'static Engine, EngineError> {
    shared().map(|s| &s.engine)
}

/// What `cell` holds, made by `make` on first use: an engine is made once per process, and
/// a failure to make it is kept too, so every later use reports it rather than trying again.
fn made<T>(
    cell: &'static OnceLock<Result<T, EngineError>>,
    what: &'static str,
    make: impl FnOnce() -> wasmtime::Result<T>,
) -> Result<&'static T, EngineError> {
    cell.get_or_init(|| {
        make().map_err(|source| EngineError::Creation {
            what,
            source: Arc::new(source),
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The optimizing engine and its linkers.
pub(crate) fn shared() -> Result<&'static Shared, EngineError> {
    made(&SHARED, "the wasmtime engine", || build(Tier::Optimized))
}

/// The baseline (Winch) engine and its linkers, made on first use.
pub(crate) fn baseline() -> Result<&'static Shared, EngineError> {
    made(&BASELINE, "the baseline (Winch) engine", || {
        build(Tier::Baseline)
    })
}

/// The command engine of `tier`.
pub(crate) fn shared_of(tier: Tier) -> Result<&'static Shared, EngineError> {
    match tier {
        Tier::Baseline => baseline(),
        Tier::Optimized => shared(),
    }
}

/// The engine background optimization compiles with: the shared engine's settings, but
/// compiling on the calling thread only, so a low-priority thread stays one low-priority
/// thread (the shared engine would spread the work over a pool at normal priority). Its code
/// is stored for the engine that runs it, whose compatibility each job checks (see
/// `optimizer`).
pub(crate) fn optimizing_engine() -> Result<&'static Engine, EngineError> {
    made(&OPTIMIZING, "the optimizing engine", || {
        let mut config = base_config();
        config.parallel_compilation(false);
        Engine::new(&config)
    })
}

/// An engine's compatibility hash as a number, to compare two engines of this binary (the
/// hasher's keys are fixed, so another process of the same build gets the same number).
pub(crate) fn compatibility(engine: &Engine) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// The configuration every engine of this process starts from.
pub(crate) fn base_config() -> Config {
    let mut config = Config::new();
    // Programs run as futures (wasmtime 48 enables async support by default) so a stop request
    // can cancel one that is parked in a host call (sleep, stdin) by dropping its future, not
    // only one that is computing; epochs make a computing one yield.
    config.epoch_interruption(true);
    if crate::settings::single_threaded() {
        config.parallel_compilation(false);
    }
    config
}

/// The configuration of an engine whose code is `tier`'s.
fn tier_config(tier: Tier) -> Config {
    let mut config = base_config();
    if tier == Tier::Baseline {
        config.strategy(Strategy::Winch);
        // Winch compiles the functions; Cranelift still compiles the trampolines between
        // host and wasm (one per function a table or export lets escape: thousands in an
        // interpreter) and a component's adapters. Optimizing those took a seventh of a
        // baseline compile of CPython, for code that runs only until the optimized tier
        // arrives.
        config.cranelift_opt_level(OptLevel::None);
    }
    config
}

fn build(tier: Tier) -> wasmtime::Result<Shared> {
    let engine = Engine::new(&tier_config(tier))?;

    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |host: &mut Host| &mut host.wasi)?;

    crate::ticker::tick(engine.clone())?;
    Ok(Shared {
        engine,
        linker,
        component_linker: OnceLock::new(),
    })
}

fn component_linker(
    engine: &Engine,
) -> wasmtime::Result<wasmtime::component::Linker<ComponentHost>> {
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // A command may make HTTP requests, as it may open sockets: what `wasmtime run -S http`
    // allows, without a flag (a container has no CLI flags to ask with). JavaScript's
    // `fetch` in a componentize-js command is wasi:http.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// How many requests an HTTP component serves at once (each is an instance of its own).
pub(crate) const MAX_CONCURRENT_REQUESTS: u32 = 1000;

/// An engine and linker HTTP components are served with.
pub(crate) struct Serving {
    pub(crate) engine: Engine,
    pub(crate) linker: wasmtime::component::Linker<ComponentHost>,
}

static SERVING: OnceLock<Result<Serving, EngineError>> = OnceLock::new();
static SERVING_BASELINE: OnceLock<Result<Serving, EngineError>> = OnceLock::new();

/// The engine for HTTP components on optimized code, made on first use.
///
/// It is separate from the shared engine because it uses the pooling allocator: an HTTP
/// component is instantiated once per request, and taking an instance's memories, tables and
/// stack from preallocated slots is several times cheaper than mapping them each time. Command
/// programs stay on the on-demand allocator, whose limits never reject a valid module (the
/// pool's fixed slot counts and sizes could), and a shim that serves no HTTP component never
/// reserves the pool's address space.
pub(crate) fn serving() -> Result<&'static Serving, EngineError> {
    made(&SERVING, "the HTTP serving engine", || {
        build_serving(Tier::Optimized)
    })
}

/// The engine for HTTP components on baseline (Winch) code, made on first use: what a
/// component serves with from its first start until its optimized code is ready. It
/// allocates on demand: a second pool's address space, reserved for the minutes a process
/// serves baseline code, would only take room from the optimized engine's.
pub(crate) fn serving_baseline() -> Result<&'static Serving, EngineError> {
    made(
        &SERVING_BASELINE,
        "the baseline (Winch) serving engine",
        || build_serving(Tier::Baseline),
    )
}

/// Which engines run a program: those of commands (modules and command components) or
/// those of HTTP handlers. Each has a baseline and an optimized engine, and a program's
/// optimized code is stored for the optimized one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EngineFamily {
    Command,
    Http,
}

impl EngineFamily {
    /// The engine of this family that runs `tier` code.
    pub(crate) fn engine(self, tier: Tier) -> Result<&'static Engine, EngineError> {
        match (self, tier) {
            (EngineFamily::Command, tier) => shared_of(tier).map(|s| &s.engine),
            (EngineFamily::Http, tier) => serving_of(tier).map(|s| &s.engine),
        }
    }
}

/// The serving engine of `tier`.
pub(crate) fn serving_of(tier: Tier) -> Result<&'static Serving, EngineError> {
    match tier {
        Tier::Baseline => serving_baseline(),
        Tier::Optimized => serving(),
    }
}

fn build_serving(tier: Tier) -> wasmtime::Result<Serving> {
    let engine = match tier {
        Tier::Baseline => Engine::new(&tier_config(Tier::Baseline))?,
        Tier::Optimized => {
            let mut pool = PoolingAllocationConfig::new();
            // A C or Rust component built with the preview 1 adapter holds a few core
            // instances (the program, the adapter, glue) and two memories; these totals
            // leave room for that many at the concurrency bound.
            pool.total_component_instances(MAX_CONCURRENT_REQUESTS)
                .total_core_instances(MAX_CONCURRENT_REQUESTS * 8)
                .total_memories(MAX_CONCURRENT_REQUESTS * 2)
                .total_tables(MAX_CONCURRENT_REQUESTS * 4)
                .total_stacks(MAX_CONCURRENT_REQUESTS);
            let config = base_config();
            let mut pooled = config.clone();
            pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            match Engine::new(&pooled) {
                Ok(engine) => engine,
                Err(e) => {
                    // The pool reserves its address space up front; a process with a virtual
                    // memory limit (ulimit -v) cannot have it, but can still serve, slower.
                    log::warn!(
                        "pooling allocator unavailable, serving with on-demand allocation: {e:#}"
                    );
                    Engine::new(&config)?
                }
            }
        }
    };
    let mut linker = wasmtime::component::Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::ticker::tick(engine.clone())?;
    Ok(Serving { engine, linker })
}
