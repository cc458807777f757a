use tokio::sync::watch;

/// A handle that asks a running program to stop, on behalf of a signal.
///
/// A `watch` channel is used rather than a flag because the program's executor must be woken
/// while it awaits a host call (a sleep, a stdin read), not only at the next epoch tick.
/// Cloning gives another handle to the same program.
#[derive(Clone, Debug)]
pub struct Stopper {
    sender: watch::Sender<Option<i32>>,
}

impl Default for Stopper {
    fn default() -> Self {
        Self::new()
    }
}

impl Stopper {
    /// A stopper for a program that has not been asked to stop.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(None);
        Stopper { sender }
    }

    /// Asks the program to stop because of `signal`. The first signal wins: a later SIGKILL
    /// after a SIGTERM does not change the reported status, as with a Linux process that is
    /// already dying.
    pub fn stop(&self, signal: i32) {
        self.sender.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(signal);
                true
            } else {
                false
            }
        });
    }

    /// The signal the program was asked to stop with, if any.
    pub fn requested(&self) -> Option<i32> {
        *self.sender.borrow()
    }

    /// Resolves with the signal once a stop is requested.
    pub(crate) async fn wait(&self) -> i32 {
        let mut receiver = self.sender.subscribe();
        loop {
            if let Some(signal) = *receiver.borrow_and_update() {
                return signal;
            }
            if receiver.changed().await.is_err() {
                // The sender lives in `self`, so this cannot close while we wait.
                std::future::pending::<()>().await;
            }
        }
    }
}
