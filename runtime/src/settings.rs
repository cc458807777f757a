//! The process-wide switches a host sets before it loads its first program: whether to tier
//! and whether to compile on one thread only. At the bottom of the crate: everything may ask
//! them, and they know nothing else.

use std::sync::atomic::{AtomicBool, Ordering};

static TIERING: AtomicBool = AtomicBool::new(true);

/// Turns tiered compilation on (the default) or off. On: a program the compile cache does
/// not hold optimized starts on baseline code while its optimized code is compiled in the
/// background (see `optimizer`). Off: every program is compiled optimized before it starts.
pub fn set_tiering(enabled: bool) {
    TIERING.store(enabled, Ordering::SeqCst);
}

/// Whether tiered compilation is on.
pub(crate) fn tiering() -> bool {
    TIERING.load(Ordering::SeqCst)
}

static SINGLE_THREADED: AtomicBool = AtomicBool::new(false);

/// Whether [`set_single_threaded_compilation`] was called.
pub(crate) fn single_threaded() -> bool {
    SINGLE_THREADED.load(Ordering::SeqCst)
}

/// Makes this process compile on its calling thread only, never on a pool of helper threads.
/// A process that confines itself after loading its program calls this first: helper threads
/// made before the confinement would outlive it unconfined. Takes effect only before the
/// first engine is made.
pub fn set_single_threaded_compilation() {
    SINGLE_THREADED.store(true, Ordering::SeqCst);
}
