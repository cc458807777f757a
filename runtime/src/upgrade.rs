//! How a host hands a program optimized code while it runs: an HTTP component that started
//! on baseline code (see `optimizer`) serves its later requests on the optimized code once
//! the host says it is in the program's handover directory (see `handover`).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use wasmtime::component::Component;
use wasmtime::Engine;

/// A running program's way to optimized code; clones share it.
#[derive(Clone, Debug, Default)]
pub struct CodeUpgrade {
    inner: Arc<Upgrade>,
}

#[derive(Debug, Default)]
struct Upgrade {
    /// The handover directory, held as a descriptor (the process cannot name it).
    directory: Mutex<Option<OwnedFd>>,
    offered: Notify,
}

impl CodeUpgrade {
    /// Gives the program the handover directory its optimized code will come through (see
    /// [`crate::HandoverDir`]); without one, offers are ignored.
    pub fn attach_directory(&self, directory: OwnedFd) {
        *self
            .inner
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(directory);
    }

    /// Tells the program its optimized code is in the handover directory.
    pub fn offer(&self) {
        // A permit is kept when no one waits yet, so an offer is never missed.
        self.inner.offered.notify_one();
    }

    /// The next offer.
    pub(crate) async fn next(&self) {
        self.inner.offered.notified().await
    }

    /// The handed-over component, for `engine`.
    pub(crate) fn load(&self, engine: &Engine) -> Result<Component, String> {
        let directory = self
            .inner
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let directory = directory
            .as_ref()
            .ok_or("no handover directory was attached")?;
        crate::handover::load_component(directory, engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_made_before_anyone_waits_is_seen_and_none_is_invented() {
        let upgrade = CodeUpgrade::default();
        upgrade.clone().offer();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let wait = |upgrade: &CodeUpgrade| {
            runtime.block_on(async {
                tokio::time::timeout(std::time::Duration::from_millis(50), upgrade.next()).await
            })
        };
        assert!(wait(&upgrade).is_ok());
        assert!(wait(&upgrade).is_err(), "one offer, one wake-up");
        let engine = Engine::default();
        assert!(upgrade.load(&engine).is_err(), "no directory attached");
    }
}
