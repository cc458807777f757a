//! What hashing a program file found, remembered by the file's identity, so the next start
//! of the same unchanged file (the same image layer in a new container) finds its compiled
//! form without reading and hashing the wasm again. For an 18 MB CPython component that
//! read and sha256 were 25 ms of each start.
//!
//! Only image-layer files have an identity (see [`FileIdentity`]), and an entry is written
//! only for a file whose identity held through the whole read and whose last change was a
//! few clock ticks before it, so a file that changes later has another identity and is read
//! again. Entries live beside the compiled modules and are trusted as far as they are:
//! whoever can write there can already replace compiled code. Each is checked against its
//! own checksum and the identity it names, so a damaged or misplaced one is ignored. When
//! the compiled form a remembered digest names is gone, the program is read and everything
//! about it is worked out from its bytes again.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::file_identity::{FileIdentity, IDENTITY_LEN};

/// The sha256 of a program's bytes.
pub(crate) type WasmDigest = [u8; 32];

const MAGIC: &[u8; 8] = b"wshimd1\n";
const HTTP_HANDLER: u8 = 1;
/// Magic, identity, digest, flags, then the xxh3 of all of those.
const ENTRY_LEN: usize = MAGIC.len() + IDENTITY_LEN + 32 + 1 + 8;
/// Entries kept at most; past this the oldest quarter goes. Each is one small file, and one
/// lost costs a single extra hash.
const MAX_ENTRIES: usize = 4096;
/// A temporary file this old was left by a shim that died while writing it.
const ABANDONED: Duration = Duration::from_secs(3600);

/// What a program file's bytes were found to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remembered {
    /// The sha256 of the bytes, the compile cache's key.
    pub(crate) digest: WasmDigest,
    /// Whether the program is a component serving `wasi:http/incoming-handler`, which decides
    /// the engine it is compiled for before anything is compiled.
    pub(crate) http_handler: bool,
}

/// A directory of remembered digests.
#[derive(Debug, Clone)]
pub(crate) struct DigestMemo {
    dir: PathBuf,
}

impl DigestMemo {
    /// Entries in `dir`, created when first written.
    pub(crate) fn new(dir: PathBuf) -> Self {
        DigestMemo { dir }
    }

    fn path(&self, identity: &FileIdentity) -> PathBuf {
        let name = xxh3_128(&identity.to_bytes());
        self.dir.join(format!("{name:032x}"))
    }

    /// What the file with `identity` was found to be, if a sound entry says so.
    pub(crate) fn recall(&self, identity: &FileIdentity) -> Option<Remembered> {
        let bytes = std::fs::read(self.path(identity)).ok()?;
        let bytes: &[u8; ENTRY_LEN] = bytes.as_slice().try_into().ok()?;
        let (body, sum) = bytes.split_at(ENTRY_LEN - 8);
        if xxh3_64(body).to_le_bytes() != sum || &body[..MAGIC.len()] != MAGIC {
            return None;
        }
        let (stored_identity, rest) = body[MAGIC.len()..].split_at(IDENTITY_LEN);
        if stored_identity != identity.to_bytes() {
            return None;
        }
        let (digest, flags) = rest.split_at(32);
        Some(Remembered {
            digest: digest.try_into().ok()?,
            http_handler: flags[0] & HTTP_HANDLER != 0,
        })
    }

    /// Stores what the file with `identity` was found to be. Failing to is only a missed
    /// shortcut next time.
    pub(crate) fn remember(&self, identity: &FileIdentity, what: &Remembered) {
        let mut bytes = Vec::with_capacity(ENTRY_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&identity.to_bytes());
        bytes.extend_from_slice(&what.digest);
        bytes.push(if what.http_handler { HTTP_HANDLER } else { 0 });
        bytes.extend_from_slice(&xxh3_64(&bytes).to_le_bytes());
        let path = self.path(identity);
        if let Err(e) = crate::atomic_file::write_atomically(&self.dir, &path, &[&bytes]) {
            log::debug!("could not remember a digest in {}: {e}", self.dir.display());
            return;
        }
        self.prune();
    }

    /// Keeps the directory under [`MAX_ENTRIES`] by removing the oldest entries.
    fn prune(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut files: Vec<(SystemTime, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            // Left by a shim that died while writing it.
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                if now.duration_since(modified).unwrap_or_default() > ABANDONED {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            files.push((modified, entry.path()));
        }
        if files.len() <= MAX_ENTRIES {
            return;
        }
        files.sort();
        let excess = files.len() - MAX_ENTRIES * 3 / 4;
        for (_, path) in files.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_by_identity_and_ignores_damaged_entries() {
        let dir = tempfile::tempdir().unwrap();
        let identity = FileIdentity::for_test(1, (1_700_000_000, 1));
        let other_identity = FileIdentity::for_test(2, (1_700_000_000, 1));
        let memo = DigestMemo::new(dir.path().join("digests"));
        assert_eq!(memo.recall(&identity), None);
        let what = Remembered {
            digest: [7; 32],
            http_handler: true,
        };
        memo.remember(&identity, &what);
        assert_eq!(memo.recall(&identity), Some(what));
        assert_eq!(memo.recall(&other_identity), None);

        let path = memo.path(&identity);
        let good = std::fs::read(&path).unwrap();
        let mut flipped = good.clone();
        flipped[MAGIC.len() + IDENTITY_LEN] ^= 1;
        for bad in [flipped, good[..good.len() - 1].to_vec(), Vec::new()] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(memo.recall(&identity), None);
        }
        // An entry moved to another identity's name names the wrong file: ignored.
        std::fs::write(memo.path(&other_identity), &good).unwrap();
        assert_eq!(memo.recall(&other_identity), None);
    }
}
