use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::{Config, Engine, Linker};

use crate::cache::CompileCache;
use crate::program::{ComponentHost, Host};

/// How often the engine's epoch advances. Every running program yields to its executor at each
/// tick, which is what lets a stop request interrupt a busy loop that makes no host calls; the
/// tick bounds how long a signal can go unnoticed.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

struct Shared {
    engine: Engine,
    linker: Linker<Host>,
    component_linker: wasmtime::component::Linker<ComponentHost>,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

static COMPILE_CACHE: OnceLock<Option<CompileCache>> = OnceLock::new();

/// Sets where this process keeps compiled modules (`None`: nowhere, compile every time).
/// Takes effect only before the first program is loaded; returns false after that.
pub fn set_compile_cache(cache: Option<CompileCache>) -> bool {
    COMPILE_CACHE.set(cache).is_ok()
}

/// The compile cache, if the host set one.
pub(crate) fn compile_cache() -> Option<&'static CompileCache> {
    COMPILE_CACHE.get_or_init(|| None).as_ref()
}

/// The one wasmtime engine of this process.
///
/// All programs share it so compiled code, the epoch ticker and the WASI linker are set up once
/// per shim rather than once per container; creating an engine is by far the most expensive
/// step of a cold start.
pub fn shared_engine() -> Result<&'static Engine, String> {
    shared().map(|s| &s.engine)
}

pub(crate) fn shared_linker() -> Result<&'static Linker<Host>, String> {
    shared().map(|s| &s.linker)
}

pub(crate) fn shared_component_linker(
) -> Result<&'static wasmtime::component::Linker<ComponentHost>, String> {
    shared().map(|s| &s.component_linker)
}

fn shared() -> Result<&'static Shared, String> {
    SHARED
        .get_or_init(|| build().map_err(|e| format!("creating the wasmtime engine: {e:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

fn build() -> wasmtime::Result<Shared> {
    let mut config = Config::new();
    // Programs run as futures (wasmtime 48 enables async support by default) so a stop request
    // can cancel one that is parked in a host call (sleep, stdin) by dropping its future, not
    // only one that is computing; epochs make a computing one yield.
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;

    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |host: &mut Host| &mut host.wasi)?;
    let mut component_linker = wasmtime::component::Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)?;

    let ticker_engine = engine.clone();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            ticker_engine.increment_epoch();
        })?;
    Ok(Shared {
        engine,
        linker,
        component_linker,
    })
}
