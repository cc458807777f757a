//! How a program gets optimized code while it runs (the host's side is `handover`): an
//! HTTP component that started on baseline code serves its later requests on the optimized
//! code once the host says it is in the program's handover directory.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;
use thiserror::Error;
use tokio::sync::Notify;
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::handover::HANDED_OVER;

/// Why handed-over code did not load: the server stays on its baseline code, which works.
#[derive(Debug, Error)]
pub(crate) enum UpgradeError {
    /// The host offered code, but gave the program no directory to take it from.
    #[error("no handover directory was attached")]
    NoDirectory,
    /// Nothing (or not a plain file) is in the handover directory.
    #[error("opening the handed-over code: {0}")]
    Open(#[source] nix::Error),
    /// The handed-over file's size could not be read.
    #[error(transparent)]
    Size(std::io::Error),
    /// The file is not the sound cache entry the host checked.
    #[error("the handed-over code failed its checksum")]
    Checksum,
    /// The working directory could not be held to come back to.
    #[error("holding the working directory: {0}")]
    HoldWorkingDirectory(#[source] nix::Error),
    /// The handover directory could not be made the working directory.
    #[error("entering the handover directory: {0}")]
    EnterDirectory(#[source] nix::Error),
    /// wasmtime would not load the code for the engine.
    #[error("loading the handed-over code: {0:#}")]
    Load(#[source] wasmtime::Error),
}

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
    /// [`crate::HandoverDir`]), as a descriptor of a detached mount of it; without one,
    /// offers are ignored.
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
    pub(crate) fn load(&self, engine: &Engine) -> Result<Component, UpgradeError> {
        let directory = self
            .inner
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let directory = directory.as_ref().ok_or(UpgradeError::NoDirectory)?;
        load_component(directory, engine)
    }
}

/// Loads the component handed over in `dir` (a descriptor of the handover directory) for
/// `engine`, after checking it as the cache checks its entries.
fn load_component(dir: &OwnedFd, engine: &Engine) -> Result<Component, UpgradeError> {
    let fd = openat(
        Some(dir.as_raw_fd()),
        HANDED_OVER,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(UpgradeError::Open)?;
    // SAFETY: a descriptor openat just gave this process.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let len = file.metadata().map_err(UpgradeError::Size)?.len();
    if !matches!(crate::cache::entry_is_sound(&file, len), Ok(true)) {
        return Err(UpgradeError::Checksum);
    }
    // wasmtime opens code by path only: from the handover directory as the working
    // directory for that one call, then back. The working directory is the whole
    // process's, but nothing else here resolves a relative path: WASI reaches every file
    // from a directory descriptor.
    let back = open(
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(UpgradeError::HoldWorkingDirectory)?;
    // SAFETY: a descriptor open just gave this process.
    let back = unsafe { OwnedFd::from_raw_fd(back) };
    nix::unistd::fchdir(dir.as_fd().as_raw_fd()).map_err(UpgradeError::EnterDirectory)?;
    // SAFETY: the file was checked above, and only the host writes to this directory (the
    // process holds it read-only).
    let component = unsafe { Component::deserialize_file(engine, HANDED_OVER) };
    if let Err(e) = nix::unistd::fchdir(back.as_raw_fd()) {
        // Never left in the handover directory: `/` (the container's) will do.
        log::warn!("leaving the handover directory: {e}");
        let _ = nix::unistd::chdir("/");
    }
    component.map_err(UpgradeError::Load)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CompileCache;

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

    /// The checked entry, linked into a handover directory, loads from the directory's
    /// descriptor alone; a damaged one does not.
    #[test]
    fn handed_over_code_loads_from_the_directory_descriptor_and_only_when_sound() {
        let engine = &crate::engine::serving().unwrap().engine;
        let (cache_dir, handover) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cache = CompileCache::new(cache_dir.path(), 1 << 30);
        let wasm = wat::parse_str("(component)").unwrap();
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&wasm).into();
        let artifact = Component::new(engine, &wasm).unwrap().serialize().unwrap();
        cache.put_serialized(engine, &digest, &artifact);
        let dir = open(
            handover.path(),
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let upgrade = CodeUpgrade::default();
        upgrade.attach_directory(unsafe { OwnedFd::from_raw_fd(dir) });
        assert!(upgrade.load(engine).is_err(), "nothing handed over yet");
        let handed = handover.path().join(HANDED_OVER);
        std::fs::hard_link(cache.entry(engine, &digest), &handed).unwrap();
        let here = std::env::current_dir().unwrap();
        assert!(upgrade.load(engine).is_ok());
        assert_eq!(
            std::env::current_dir().unwrap(),
            here,
            "the working directory is back"
        );
        let mut bytes = std::fs::read(&handed).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&handed, bytes).unwrap();
        assert!(upgrade.load(engine).is_err());
    }
}
