//! The one report of how the container's process ended, and its end.
//!
//! Two threads may end the process: the program's, when the program ends, and the signal
//! thread, when a stop request has gone unanswered because the program's thread is inside a
//! blocking host call (see `watch`). Whichever comes first sends the report and exits; the
//! other finds the report taken and waits for the end, so the shim never reads two.

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::launch::{self, FromChild};

static TAKEN: AtomicBool = AtomicBool::new(false);

/// How the process ended, as the shim is told.
pub(super) struct Ending {
    pub(super) code: u32,
    pub(super) oom: bool,
    pub(super) status: String,
}

/// Sends `ending` to the shim and exits with its code, unless the other thread got there
/// first (then this one only waits for the end it is bringing).
pub(super) fn report_and_exit(control: &UnixStream, ending: Ending) -> ! {
    if TAKEN.swap(true, Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
    let _ = launch::send(
        control,
        &FromChild::Exited {
            code: ending.code,
            oom: ending.oom,
            status: ending.status,
        },
    );
    // _exit, not exit: the other thread may be inside the runtime (a blocking host call),
    // and exit's handlers must not run under it. Everything this process writes has already
    // been written (the log and the program's streams are unbuffered here).
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(ending.code as i32) }
}
