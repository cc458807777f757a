//! The epoch ticker: one thread per process that advances every engine's epoch while some
//! program may be executing wasm, and sleeps otherwise.
//!
//! Each tick makes a running program yield to its executor, which is how a stop request
//! interrupts a loop that never calls the host and how programs sharing a shim share the
//! CPU. Ticking is only needed while a store exists: a shim whose HTTP component waits for
//! requests has none between requests, and ticking then would cost it 100 wake-ups a second
//! for nothing (a node with a thousand idle services spent its two cores on them).
//!
//! A store holds a [`Running`] for its whole life (see `host::new_store`). When none has
//! existed for [`IDLE_TICKS`] ticks the thread parks; the first new store wakes it. The tick
//! after a wake-up comes one [`EPOCH_TICK`] later, as it would have anyway.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while programs run: the bound on how long a stop request
/// or a neighbour can wait for a program that is computing.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks with no store before the thread parks: a short burst of requests to an HTTP
/// component keeps it awake rather than parking and waking it for each.
const IDLE_TICKS: u32 = 10;

struct Ticker {
    engines: Mutex<Vec<Engine>>,
    /// Stores alive now.
    running: AtomicUsize,
    /// Whether the thread is (about to be) waiting on `wake`.
    parked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

static TICKER: OnceLock<Ticker> = OnceLock::new();

fn ticker() -> &'static Ticker {
    TICKER.get_or_init(|| Ticker {
        engines: Mutex::new(Vec::new()),
        running: AtomicUsize::new(0),
        parked: AtomicBool::new(false),
        lock: Mutex::new(()),
        wake: Condvar::new(),
    })
}

/// Adds `engine` to those the ticker advances.
///
/// The thread itself starts with the first store (see [`Running::start`]), not here: a
/// container process loads its program with every privilege it was started with and only
/// then confines itself, and every thread it has must be made after that, so that each
/// inherits the confinement. A process that only compiles (the shim validating a Create)
/// never needs the thread at all.
pub(crate) fn tick(engine: Engine) -> std::io::Result<()> {
    ticker()
        .engines
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(engine);
    Ok(())
}

/// Starts the ticking thread once per process.
fn ensure_thread(ticker: &'static Ticker) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        if let Err(e) = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || run(ticker))
        {
            // Without ticks a computing program is stopped only at its next host call.
            log::warn!("starting the epoch ticker: {e}");
        }
    });
}

fn run(ticker: &'static Ticker) {
    let mut idle = 0;
    loop {
        std::thread::sleep(EPOCH_TICK);
        for engine in ticker
            .engines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            engine.increment_epoch();
        }
        if ticker.running.load(Ordering::SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        // `parked` is set before `running` is read, and a new store raises `running` before
        // it reads `parked` (both SeqCst): one of the two always sees the other, so a store
        // created now either keeps this thread from waiting or wakes it. The lock makes the
        // wake-up wait until this thread is really waiting.
        let mut guard = ticker.lock.lock().unwrap_or_else(PoisonError::into_inner);
        ticker.parked.store(true, Ordering::SeqCst);
        while ticker.running.load(Ordering::SeqCst) == 0 {
            guard = ticker
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        ticker.parked.store(false, Ordering::SeqCst);
        drop(guard);
        idle = 0;
    }
}

/// Held by a store for its life: the ticker keeps ticking while any exists.
pub(crate) struct Running(());

impl Running {
    /// Counts one more store, waking the ticker if it had parked.
    pub(crate) fn start() -> Running {
        let ticker = ticker();
        ensure_thread(ticker);
        if ticker.running.fetch_add(1, Ordering::SeqCst) == 0
            && ticker.parked.load(Ordering::SeqCst)
        {
            let _guard = ticker.lock.lock().unwrap_or_else(PoisonError::into_inner);
            ticker.wake.notify_one();
        }
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        ticker().running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_for(parked: bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while ticker().parked.load(Ordering::SeqCst) != parked && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        ticker().parked.load(Ordering::SeqCst) == parked
    }

    #[test]
    fn the_ticker_parks_without_stores_and_wakes_for_one() {
        tick(Engine::default()).unwrap();
        // The thread starts with the first store.
        drop(Running::start());
        // Other tests of this binary hold stores for a moment at a time.
        assert!(
            wait_for(true, Duration::from_secs(10)),
            "no store, yet still ticking"
        );
        let running = Running::start();
        assert!(
            wait_for(false, Duration::from_secs(2)),
            "a new store did not wake the ticker"
        );
        drop(running);
        assert!(
            wait_for(true, Duration::from_secs(10)),
            "the ticker did not park again"
        );
    }
}
