//! The state each instance runs with (WASI contexts, the memory account), and the store
//! that carries it: what every engine's linkers are typed by, so below the engines and
//! everything that loads, runs or serves a program.

use std::path::PathBuf;

use thiserror::Error;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::MemoryGauge;

/// Why the WASI context of a run (or of one request to an HTTP handler) could not be made:
/// a directory pinned at load would not become a preopen. The run fails before any guest
/// code, with this on its stderr.
#[derive(Debug, Error)]
pub(crate) enum WasiContextError {
    /// One of the plan's preopens.
    #[error("preopening {} at {guest}: {source:#}", .host.display())]
    Preopen {
        /// Where it is on the host (or in the container's own root).
        host: PathBuf,
        /// Where the guest sees it.
        guest: String,
        /// wasmtime's reason.
        #[source]
        source: wasmtime::Error,
    },
    /// One of the directories the working directory adds (see `working_directory`).
    #[error("preopening {name} for the working directory {cwd}: {source:#}")]
    WorkingDirectory {
        /// The name the guest sees it by.
        name: String,
        /// The plan's working directory.
        cwd: String,
        /// wasmtime's reason.
        #[source]
        source: wasmtime::Error,
    },
}

/// Per-instance state the WASI host functions and the resource limiter work on.
pub(crate) struct Host {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limits: GaugeLimiter,
}

/// Accounts one instance's growth in its container's gauge. A growth past the limit is an
/// error, which traps the guest: like the kernel's OOM killer, the program is stopped rather
/// than told that malloc failed, and its status says so.
pub(crate) struct GaugeLimiter {
    pub(crate) gauge: MemoryGauge,
    /// What this instance added to the gauge, given back when the store goes.
    pub(crate) held: u64,
    /// The last growth charged, taken back if wasmtime then fails the growth itself.
    pub(crate) last_charge: u64,
}

impl GaugeLimiter {
    pub(crate) fn new(gauge: MemoryGauge) -> Self {
        GaugeLimiter {
            gauge,
            held: 0,
            last_charge: 0,
        }
    }
}

impl Drop for GaugeLimiter {
    fn drop(&mut self) {
        self.gauge.release(self.held);
    }
}

impl ResourceLimiter for GaugeLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.last_charge = 0;
        // Past the module's own maximum, memory.grow returns -1 as the spec says; that is
        // the program's business, not an OOM kill.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let charge = self.gauge.try_grow(current, desired)?;
        self.held += charge;
        self.last_charge = charge;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        log::debug!("memory growth failed after it was accounted: {error:#}");
        let charge = std::mem::take(&mut self.last_charge);
        self.gauge.release(charge);
        self.held -= charge;
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// Per-instance state of a component, a command's run or one request to an HTTP handler
/// alike: WASI preview 2 (stdio, clocks, random, the preopens), wasi:http (the request
/// served, and the requests it makes: JavaScript's `fetch`, Rust's `wstd`; they leave from
/// the container's network namespace as its sockets do), the resource table, and the
/// container's memory account.
pub(crate) struct ComponentHost {
    pub(crate) ctx: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: GaugeLimiter,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// A store that accounts memory in the container's gauge and yields to the executor at
/// every epoch tick, so a stop request is seen even in a loop that never calls the host.
pub(crate) fn new_store<T: 'static>(
    engine: &wasmtime::Engine,
    host: T,
    limits: fn(&mut T) -> &mut GaugeLimiter,
) -> Store<T> {
    let mut store = Store::new(engine, host);
    // The limiter closure lives exactly as long as the store, so it holds the store's
    // claim on the epoch ticker (see ticker.rs): ticks run while any store exists.
    let running = crate::ticker::Running::start();
    store.limiter(move |host| {
        let _ = &running;
        limits(host)
    });
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}
