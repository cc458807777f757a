//! A program's file and what is known of its bytes.
//!
//! A large program whose digest the memo remembers is not read at all unless its compiled
//! form is missing: its kind comes from the first bytes, its digest and HTTP-ness from the
//! memo. Any other program is read whole when opened, as before, and what reading found is
//! remembered for next time once the program has loaded.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::digest_memo::{DigestMemo, Remembered, WasmDigest};
use crate::file_identity::FileIdentity;
use crate::program_bytes::read_capped;
use crate::{Entrypoint, PreopenPlan, RuntimeError};

/// Below this size reading and hashing a program costs less than proving its identity (an
/// overlay's identity reads the mount table), so small programs are always read.
const REMEMBER_FROM: u64 = 1 << 20;
/// Enough of a file to tell a module from a component.
const HEAD: usize = 8;

/// An opened program file.
pub(crate) struct ProgramSource {
    guest_path: String,
    file: File,
    /// The whole file, once read.
    bytes: Option<Vec<u8>>,
    /// The first bytes, when the whole file was not read.
    head: Vec<u8>,
    /// Found in the memo: the file is not read unless the compiled form is missing.
    remembered: Option<Remembered>,
    /// Worked out from the bytes, each when first needed.
    digest: Option<WasmDigest>,
    http_handler: Option<bool>,
    /// The identity the file had before it was read, and when the read began; `None` when
    /// the file is not one to remember.
    identity: Option<(FileIdentity, SystemTime)>,
    memo: Option<DigestMemo>,
}

impl ProgramSource {
    /// Finds and opens the program (see [`Entrypoint::open`]), consulting `memo`, and reads
    /// it unless the memo remembers it.
    pub(crate) fn open(
        entrypoint: &Entrypoint,
        preopens: &PreopenPlan,
        cwd: &str,
        path_var: Option<&str>,
        memo: Option<DigestMemo>,
    ) -> Result<Self, RuntimeError> {
        let (guest_path, file, size) = entrypoint.open(preopens, cwd, path_var)?;
        let identity = match &memo {
            Some(_) if size >= REMEMBER_FROM => {
                FileIdentity::of(&file).map(|id| (id, SystemTime::now()))
            }
            _ => None,
        };
        let remembered = match (&memo, &identity) {
            (Some(memo), Some((identity, _))) => memo.recall(identity),
            _ => None,
        };
        let mut source = ProgramSource {
            guest_path,
            file,
            bytes: None,
            head: Vec::new(),
            remembered,
            digest: None,
            http_handler: None,
            identity,
            memo,
        };
        if source.remembered.is_some() {
            let mut head = [0u8; HEAD];
            let got = source
                .file
                .read_at(&mut head, 0)
                .map_err(|e| RuntimeError::io(format!("reading {}", source.guest_path), e))?;
            source.head = head[..got].to_vec();
            // The memo only ever holds binary programs; anything else is read as usual.
            if source.head.starts_with(b"\0asm") {
                log::debug!(
                    "{}: digest remembered by its identity; not read",
                    source.guest_path
                );
            } else {
                source.remembered = None;
            }
        }
        if source.remembered.is_none() {
            source.read()?;
        }
        Ok(source)
    }

    fn read(&mut self) -> Result<&[u8], RuntimeError> {
        if self.bytes.is_none() {
            self.bytes = Some(read_capped(&self.file, &self.guest_path)?);
        }
        Ok(self.bytes.as_deref().unwrap_or_default())
    }

    /// Where the program was found inside the container.
    pub(crate) fn guest_path(&self) -> &str {
        &self.guest_path
    }

    /// Enough of the file to classify it: all of it when read, else its first bytes.
    pub(crate) fn head(&self) -> &[u8] {
        self.bytes.as_deref().unwrap_or(&self.head)
    }

    /// The digest the memo gave, when the file was not read.
    pub(crate) fn remembered_digest(&self) -> Option<WasmDigest> {
        self.remembered.map(|r| r.digest)
    }

    /// Drops what the memo said and reads the file: its compiled form was missing, so it is
    /// compiled from these bytes, and everything about it (kind, HTTP-ness, the digest it is
    /// stored under) must come from them rather than from a memo that may be older.
    pub(crate) fn forget(&mut self) -> Result<(), RuntimeError> {
        self.remembered = None;
        self.read().map(|_| ())
    }

    /// The program's bytes.
    pub(crate) fn bytes(&mut self) -> Result<&[u8], RuntimeError> {
        self.read()
    }

    /// The sha256 of the program's bytes.
    pub(crate) fn digest(&mut self) -> Result<WasmDigest, RuntimeError> {
        if let Some(remembered) = self.remembered {
            return Ok(remembered.digest);
        }
        if let Some(digest) = self.digest {
            return Ok(digest);
        }
        let digest: WasmDigest = Sha256::digest(self.read()?).into();
        self.digest = Some(digest);
        Ok(digest)
    }

    /// Whether the program, a component, is an HTTP handler (see
    /// [`crate::program_bytes::is_http_handler`]).
    pub(crate) fn is_http_handler(&mut self) -> Result<bool, RuntimeError> {
        if let Some(remembered) = self.remembered {
            return Ok(remembered.http_handler);
        }
        if let Some(handler) = self.http_handler {
            return Ok(handler);
        }
        let handler = crate::program_bytes::is_http_handler(self.read()?);
        self.http_handler = Some(handler);
        Ok(handler)
    }

    /// Stores what reading the file found, for the next start of the same file, when the
    /// file was settled before the read and has not changed since. Called once the program
    /// has loaded (a program that fails to is not worth remembering), so everything the
    /// memo holds has been worked out: HTTP-ness is asked of components only.
    ///
    /// A file read too soon after its last change (the first start of an image pulled a
    /// moment before) is read and hashed once more if it has settled since, and remembered
    /// if that read finds the same bytes: a write the ctime could have hidden would show
    /// there. That read is one more hash after a compile that took seconds, and it spares
    /// the second start the read and hash it would otherwise pay.
    pub(crate) fn remember(self) {
        self.remember_at(SystemTime::now());
    }

    /// [`ProgramSource::remember`] at time `now`.
    fn remember_at(mut self, now: SystemTime) {
        let (Some(memo), Some((identity, read_at))) = (self.memo.take(), self.identity) else {
            return;
        };
        if self.remembered.is_some() || !self.head().starts_with(b"\0asm") {
            return;
        }
        if !identity.still_matches(&self.file) {
            return;
        }
        if !identity.settled_before(read_at) {
            if !identity.settled_before(now) {
                return;
            }
            let (Ok(digest), Ok(again)) =
                (self.digest(), read_capped(&self.file, &self.guest_path))
            else {
                return;
            };
            if <WasmDigest>::from(Sha256::digest(&again)) != digest
                || !identity.still_matches(&self.file)
            {
                return;
            }
        }
        if let Ok(digest) = self.digest() {
            let http_handler = self.http_handler.unwrap_or(false);
            memo.remember(
                &identity,
                &Remembered {
                    digest,
                    http_handler,
                },
            );
        }
    }

    /// Whether the file's bytes were read (tests check that a remembered program's were not).
    #[cfg(test)]
    pub(crate) fn was_read(&self) -> bool {
        self.bytes.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_identity::test_overlay::{TestLayer, TestOverlay};
    use std::time::Duration;

    /// A large "program": a module header and padding.
    fn program_bytes(fill: u8) -> Vec<u8> {
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.resize(REMEMBER_FROM as usize + 1, fill);
        bytes
    }

    fn open(rootfs: &std::path::Path, name: &str, memo: &DigestMemo) -> ProgramSource {
        let plan = PreopenPlan::from_mounts(rootfs, false, &[]).unwrap();
        let entrypoint = Entrypoint::parse(name).unwrap();
        ProgramSource::open(&entrypoint, &plan, "/", None, Some(memo.clone())).unwrap()
    }

    #[test]
    fn a_layer_program_is_remembered_then_not_read_in_the_next_container() {
        let bytes = program_bytes(0x5a);
        let layer = TestLayer::with(&[("app.wasm", &bytes)]);
        let (Some(first_container), Some(second_container)) =
            (TestOverlay::over(&layer), TestOverlay::over(&layer))
        else {
            return;
        };
        let memo_dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::new(memo_dir.path().join("digests"));
        let digest: WasmDigest = Sha256::digest(&bytes).into();

        let mut first = open(&first_container.merged(), "/app.wasm", &memo);
        assert!(
            first.identity.is_some(),
            "a settled layer file has an identity"
        );
        assert!(first.was_read());
        assert_eq!(first.digest().unwrap(), digest);
        first.remember();

        let mut second = open(&second_container.merged(), "/app.wasm", &memo);
        assert!(!second.was_read(), "a remembered program was read again");
        assert_eq!(second.head(), &bytes[..HEAD]);
        assert_eq!(second.remembered_digest(), Some(digest));
        assert_eq!(second.digest().unwrap(), digest);
        assert!(!second.is_http_handler().unwrap());
        // Its compiled form missing, it is read and everything comes from the bytes.
        second.forget().unwrap();
        assert_eq!(second.remembered_digest(), None);
        assert_eq!(second.bytes().unwrap(), &bytes[..]);
        assert_eq!(second.digest().unwrap(), digest);
    }

    #[test]
    fn a_memo_that_no_longer_fits_the_bytes_gives_way_to_them() {
        let bytes = program_bytes(0x5a);
        let layer = TestLayer::with(&[("app.wasm", &bytes)]);
        let Some(container) = TestOverlay::over(&layer) else {
            return;
        };
        let memo_dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::new(memo_dir.path().join("digests"));
        let mut first = open(&container.merged(), "/app.wasm", &memo);
        let Some((identity, _)) = first.identity else {
            panic!("a settled layer file has an identity");
        };
        // A memo entry claiming other bytes (as one written for a file since changed).
        let wrong = Remembered {
            digest: [9; 32],
            http_handler: true,
        };
        memo.remember(&identity, &wrong);
        first = open(&container.merged(), "/app.wasm", &memo);
        assert_eq!(first.remembered_digest(), Some(wrong.digest));
        first.forget().unwrap();
        assert_eq!(
            first.digest().unwrap(),
            <WasmDigest>::from(Sha256::digest(&bytes))
        );
        assert!(!first.is_http_handler().unwrap());
    }

    /// A layer program opened and hashed in a fresh container, its read dated to the
    /// instant of its last change.
    struct ReadTooSoon {
        _layer: TestLayer,
        container: TestOverlay,
        memo_dir: tempfile::TempDir,
        memo: DigestMemo,
        source: ProgramSource,
        changed: SystemTime,
    }

    /// `None` where overlays cannot be mounted.
    fn read_too_soon(fill: u8) -> Option<ReadTooSoon> {
        let layer = TestLayer::with(&[("app.wasm", &program_bytes(fill))]);
        let container = TestOverlay::over(&layer)?;
        let memo_dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::new(memo_dir.path().join("digests"));
        let mut source = open(&container.merged(), "/app.wasm", &memo);
        source.digest().unwrap();
        let (identity, read_at) = source
            .identity
            .as_mut()
            .expect("a settled layer file has an identity");
        let changed = identity.changed_at().unwrap();
        *read_at = changed;
        Some(ReadTooSoon {
            _layer: layer,
            container,
            memo_dir,
            memo,
            source,
            changed,
        })
    }

    #[test]
    fn a_program_read_too_soon_is_read_again_once_settled_and_then_remembered() {
        let Some(soon) = read_too_soon(2) else {
            return;
        };
        // Settled by now (the layer was made 200 ms ago): read again, found the same,
        // remembered.
        soon.source.remember();
        assert!(!open(&soon.container.merged(), "/app.wasm", &soon.memo).was_read());
    }

    #[test]
    fn a_program_not_settled_before_its_read_is_not_remembered() {
        let Some(soon) = read_too_soon(1) else {
            return;
        };
        // As if that instant were still now.
        soon.source
            .remember_at(soon.changed + Duration::from_millis(10));
        assert!(open(&soon.container.merged(), "/app.wasm", &soon.memo).was_read());
        assert!(!soon.memo_dir.path().join("digests").exists());
    }

    #[test]
    fn small_and_text_programs_are_always_read() {
        let mut text = b"(module)".to_vec();
        text.resize(REMEMBER_FROM as usize + 1, b' ');
        let layer = TestLayer::with(&[("text.wat", &text), ("small.wasm", b"\0asm\x01\0\0\0")]);
        let Some(container) = TestOverlay::over(&layer) else {
            return;
        };
        let memo_dir = tempfile::tempdir().unwrap();
        let memo = DigestMemo::new(memo_dir.path().join("digests"));
        for name in ["/text.wat", "/small.wasm"] {
            let mut source = open(&container.merged(), name, &memo);
            source.digest().unwrap();
            source.remember();
            assert!(
                open(&container.merged(), name, &memo).was_read(),
                "{name} was not read"
            );
        }
        assert!(!memo_dir.path().join("digests").exists());
    }
}
