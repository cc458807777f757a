use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

/// Freezes and thaws programs, the way a cgroup freezer does for a Linux container.
///
/// A running program is a future that returns to its executor at every epoch tick (and at
/// every host call that waits). While paused, the future is simply not polled again, so the
/// program stops at that point, uses no CPU, and continues exactly there when resumed.
/// Clones share the state: one pauser serves every program of a container.
#[derive(Clone, Debug, Default)]
pub struct Pauser {
    state: Arc<Mutex<PauseState>>,
}

#[derive(Debug, Default)]
struct PauseState {
    paused: bool,
    /// Programs parked by the pause, woken on resume.
    parked: Vec<Waker>,
}

impl Pauser {
    fn state(&self) -> MutexGuard<'_, PauseState> {
        // Plain flags: a panic elsewhere cannot leave them inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the programs at their next tick or host call return. Returns false if they were
    /// already paused.
    pub fn pause(&self) -> bool {
        !std::mem::replace(&mut self.state().paused, true)
    }

    /// Lets paused programs continue. Returns false if they were not paused.
    pub fn resume(&self) -> bool {
        let parked = {
            let mut state = self.state();
            if !std::mem::replace(&mut state.paused, false) {
                return false;
            }
            std::mem::take(&mut state.parked)
        };
        for waker in parked {
            waker.wake();
        }
        true
    }

    /// Whether the programs are paused.
    pub fn is_paused(&self) -> bool {
        self.state().paused
    }

    /// Runs `future`, parking it whenever the pauser is paused.
    pub(crate) async fn gate<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        std::future::poll_fn(|cx| {
            {
                let mut state = self.state();
                if state.paused {
                    if !state.parked.iter().any(|w| w.will_wake(cx.waker())) {
                        state.parked.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
            future.as_mut().poll(cx)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[test]
    fn a_paused_future_makes_no_progress_until_resumed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pauser = Pauser::default();
        let steps = Arc::new(AtomicU32::new(0));
        let worker = {
            let (pauser, steps) = (pauser.clone(), steps.clone());
            std::thread::spawn(move || {
                runtime.block_on(pauser.gate(async {
                    while steps.fetch_add(1, Ordering::SeqCst) < 1_000_000 {
                        tokio::task::yield_now().await;
                    }
                }))
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(pauser.pause());
        assert!(!pauser.pause());
        std::thread::sleep(Duration::from_millis(20));
        let frozen = steps.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(steps.load(Ordering::SeqCst), frozen);
        assert!(pauser.resume());
        assert!(!pauser.resume());
        worker.join().unwrap();
        assert!(steps.load(Ordering::SeqCst) > 1_000_000);
    }
}
