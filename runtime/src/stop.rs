use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// A handle that asks a running program to stop, on behalf of a signal.
///
/// A `watch` channel is used rather than a flag because the program's executor must be woken
/// while it awaits a host call (a sleep, a stdin read), not only at the next epoch tick.
/// Cloning gives another handle to the same program.
#[derive(Clone, Debug)]
pub struct Stopper {
    sender: watch::Sender<StopState>,
    /// Set once the program has stopped running (by itself or on request): what is left is
    /// the host's bounded teardown (draining output), which a host waiting on a stop must
    /// not cut short.
    settled: Arc<AtomicBool>,
}

/// The first stop signal (the one the status reports) and whether SIGKILL has come since:
/// a program that stops gracefully (an HTTP server draining) must still end at once on a
/// later SIGKILL.
#[derive(Clone, Copy, Debug, Default)]
struct StopState {
    first: Option<i32>,
    killed: bool,
}

impl Default for Stopper {
    fn default() -> Self {
        Self::new()
    }
}

impl Stopper {
    /// A stopper for a program that has not been asked to stop.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(StopState::default());
        Stopper {
            sender,
            settled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the program has stopped running guest code and host calls, so a stop request
    /// has been answered (or no longer needs to be).
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::SeqCst)
    }

    /// Records that the program has stopped running.
    pub(crate) fn settle(&self) {
        self.settled.store(true, Ordering::SeqCst);
    }

    /// Asks the program to stop because of `signal`. The first signal wins: a later SIGKILL
    /// after a SIGTERM does not change the reported status, as with a Linux process that is
    /// already dying.
    pub fn stop(&self, signal: i32) {
        self.sender.send_if_modified(|current| {
            let mut changed = false;
            if current.first.is_none() {
                current.first = Some(signal);
                changed = true;
            }
            if signal == libc::SIGKILL && !current.killed {
                current.killed = true;
                changed = true;
            }
            changed
        });
    }

    /// The signal the program was asked to stop with, if any.
    pub fn requested(&self) -> Option<i32> {
        self.sender.borrow().first
    }

    /// Resolves with the signal once a stop is requested.
    pub(crate) async fn wait(&self) -> i32 {
        let mut receiver = self.sender.subscribe();
        loop {
            if let Some(signal) = receiver.borrow_and_update().first {
                return signal;
            }
            if receiver.changed().await.is_err() {
                // The sender lives in `self`, so this cannot close while we wait.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once SIGKILL is requested, whatever signal came first.
    pub(crate) async fn wait_for_kill(&self) {
        let mut receiver = self.sender.subscribe();
        loop {
            if receiver.borrow_and_update().killed {
                return;
            }
            if receiver.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
