//! Compiled modules kept on disk, so a program is compiled once per machine and engine
//! configuration rather than at every container start.
//!
//! An entry is keyed by the sha256 of the wasm bytes and by wasmtime's engine compatibility
//! hash (wasmtime version, target, compiler settings), so a different engine never sees it.
//! Loading compiled code runs it without validation, so an entry is never trusted as found:
//! each file ends with a trailer holding the artifact's length and xxh3 checksums, checked
//! before use; a corrupt, truncated or stale entry is removed and the program compiled again.
//! Entries are written to a temporary file and renamed into place (readers see whole entries
//! or none, and concurrent shims may race harmlessly), and the directory is kept under a size
//! bound by removing the least recently used entries (a hit refreshes an entry's modification
//! time).
//!
//! The artifact comes first in the file and the trailer after it, so wasmtime maps a hit
//! straight from the file (`deserialize_file`): no copy of the code, and a program's initial
//! memory is mapped copy-on-write from the page cache rather than copied at each start. The
//! checksum is xxh3 rather than sha256 because it runs at memory speed: integrity against
//! torn or damaged files is what it is for, and anyone able to write the cache directory
//! could rewrite any checksum there anyway. For CPython as a component (a 35 MB artifact)
//! a sha256 took about 33 ms of every start. The check reads the entry through a mapping
//! (no copy into a buffer) and sums its two halves on two threads, each half with its own
//! checksum: for that artifact, about 2 ms instead of 5.
//!
//! Beside the entries, `digests/` remembers the digest of large program files by their
//! identity (see [`crate::digest_memo`]), so their hits need not read the wasm at all.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use xxhash_rust::xxh3::xxh3_64;

use crate::artifact::Artifact;
use crate::atomic_file::write_atomically;
use crate::digest_memo::{DigestMemo, WasmDigest};

/// Starts every entry's trailer: the format, so a future layout is never misread.
const MAGIC: &[u8; 8] = b"wshimc3\n";
/// The trailer after the artifact: magic, the artifact's length, the xxh3 of its first and
/// of its second half (little endian).
const TRAILER: usize = MAGIC.len() + 8 + 8 + 8;
/// Artifacts at least this large are checked on two threads; for smaller ones starting a
/// thread costs more than it saves.
const PARALLEL_CHECK_FROM: usize = 4 << 20;
const EXTENSION: &str = "cwasm";
/// A temporary file this old was left by a shim that died while writing it.
const ABANDONED: Duration = Duration::from_secs(3600);
/// How long a first start waits for another process compiling the same program before it
/// compiles the program itself (a compile that hung must not hang every later start).
pub(crate) const COMPILE_WAIT: Duration = Duration::from_secs(120);
/// An entry whose last use was marked this recently is not marked again on a hit: finer
/// recency than this does not change which entries eviction picks in practice.
const RECENT_USE: Duration = Duration::from_secs(10);

/// A directory of compiled modules with a size bound.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// Feeds `Hash` output into sha256, for a hash of the engine that is stable across
/// processes (std's hasher is randomly keyed).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
enum Lookup {
    Hit,
    Miss,
    /// Present but unusable (corrupt, truncated, incompatible): removed.
    Rejected,
}

impl CompileCache {
    /// A cache in `dir` (created when first written) holding at most `max_bytes`.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        CompileCache {
            dir: dir.into(),
            max_bytes,
        }
    }

    /// Where the entries live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where program digests are remembered by file identity.
    pub(crate) fn digests(&self) -> DigestMemo {
        DigestMemo::new(self.dir.join("digests"))
    }

    /// The entry for the wasm with sha256 `digest` compiled by `engine`.
    pub(crate) fn entry(&self, engine: &Engine, digest: &WasmDigest) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.0.finalize();
        self.dir.join(format!(
            "{}-{}.{EXTENSION}",
            hex(digest),
            hex(&engine_hash[..8])
        ))
    }

    /// Whether an entry is stored for the wasm with sha256 `digest` compiled by `engine`
    /// (not whether it is sound: loading it checks that).
    pub(crate) fn has_entry(&self, engine: &Engine, digest: &WasmDigest) -> bool {
        self.entry(engine, digest).is_file()
    }

    /// The compiled code for `wasm` (whose sha256 is `digest`): from the cache when a sound
    /// entry is there, else compiled and stored. A cache that cannot be read or written only
    /// costs the compile. Concurrent first starts of one program compile it once: the
    /// others wait for the entry (up to [`COMPILE_WAIT`], then compile it themselves).
    pub(crate) fn compiled<T: Artifact>(
        &self,
        engine: &Engine,
        digest: &WasmDigest,
        wasm: &[u8],
    ) -> wasmtime::Result<T> {
        if let Some(code) = self.get(engine, digest) {
            return Ok(code);
        }
        let claim = self.claim(engine, digest, COMPILE_WAIT);
        // Stored by the process that held the claim while this one waited?
        if claim.is_some() {
            if let Some(code) = self.get(engine, digest) {
                return Ok(code);
            }
        }
        let started = std::time::Instant::now();
        let artifact = T::precompile(engine, wasm)?;
        let compiled = started.elapsed();
        self.put_serialized(engine, digest, &artifact);
        let stored = started.elapsed();
        // Mapped back from the entry just written: its code then lives in the page cache,
        // shared with every process that maps the entry, not in memory of this one's.
        let mapped = self.get(engine, digest);
        // What a first start spends where, for an operator sizing a node.
        log::debug!(
            "compiled a {} of {} KiB into {} KiB in {} ms, stored in {} ms, mapped back in {} ms",
            T::WHAT,
            wasm.len() >> 10,
            artifact.len() >> 10,
            compiled.as_millis(),
            (stored - compiled).as_millis(),
            (started.elapsed() - stored).as_millis()
        );
        if let Some(code) = mapped {
            return Ok(code);
        }
        // SAFETY: `engine` made this artifact a moment ago.
        unsafe { T::deserialize_bytes(engine, &artifact) }
    }

    /// The code compiled by `engine` from the wasm with sha256 `digest`, if a sound entry
    /// holds it.
    pub(crate) fn get<T: Artifact>(&self, engine: &Engine, digest: &WasmDigest) -> Option<T> {
        // SAFETY: `load` passes only entries it checked.
        self.hit(engine, digest, |engine, file| unsafe {
            T::deserialize(engine, file)
        })
    }

    /// `engine`'s entry for the wasm with sha256 `digest`, opened and checked as a load
    /// checks it, but not loaded: for a process that maps it later from the descriptor. An
    /// unsound entry is removed.
    pub(crate) fn open_sound(&self, engine: &Engine, digest: &WasmDigest) -> Option<File> {
        match open_checked(&self.entry(engine, digest)) {
            (Lookup::Hit, Some((file, _))) => Some(file),
            _ => None,
        }
    }

    /// An exclusive claim on compiling `engine`'s entry for the wasm with sha256 `digest`,
    /// shared by every process (and thread) using this directory: a lock file beside the
    /// entry. Waits up to `wait` for a holder to finish; `None` if it did not, or if no
    /// lock file can be made (no directory yet: the caller compiles unclaimed). Released
    /// when dropped.
    pub(crate) fn claim(
        &self,
        engine: &Engine,
        digest: &WasmDigest,
        wait: Duration,
    ) -> Option<CompileLock> {
        self.lock(engine, digest, "lock", wait)
    }

    /// The background optimizer's claim on an entry: a lock of its own, never waited for
    /// by [`CompileCache::claim`], so a foreground compile never waits on a compile at the
    /// lowest priority. `None` while another process holds it.
    pub(crate) fn claim_background(
        &self,
        engine: &Engine,
        digest: &WasmDigest,
    ) -> Option<CompileLock> {
        self.lock(engine, digest, "optimizing", Duration::ZERO)
    }

    fn lock(
        &self,
        engine: &Engine,
        digest: &WasmDigest,
        kind: &str,
        wait: Duration,
    ) -> Option<CompileLock> {
        // Not ending in the entries' extension: eviction and listings never take it for one.
        let entry = self.entry(engine, digest);
        let stem = entry.file_stem()?.to_string_lossy().into_owned();
        let path = self.dir.join(format!(".{stem}.{kind}"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ok()?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Some(CompileLock { _file: file, path });
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes `engine`'s entry for the wasm with sha256 `digest`, if there is one.
    pub(crate) fn remove(&self, engine: &Engine, digest: &WasmDigest) {
        let _ = std::fs::remove_file(self.entry(engine, digest));
    }

    /// [`CompileCache::put`] for code already serialized.
    pub(crate) fn put_serialized(&self, engine: &Engine, digest: &WasmDigest, artifact: &[u8]) {
        let path = self.entry(engine, digest);
        if let Err(e) = self.store(&path, artifact) {
            log::warn!("could not cache {}: {e}", path.display());
        }
    }

    /// The compiled program stored under `digest`, if a sound entry holds it; an unsound one
    /// is removed (and logged), so the caller compiles again.
    fn hit<T>(
        &self,
        engine: &Engine,
        digest: &WasmDigest,
        deserialize: impl FnOnce(&Engine, File) -> wasmtime::Result<T>,
    ) -> Option<T> {
        let path = self.entry(engine, digest);
        match self.load(engine, &path, deserialize) {
            (_, Some(compiled)) => {
                log::debug!("compiled module from the cache: {}", path.display());
                Some(compiled)
            }
            (Lookup::Rejected, None) => {
                log::warn!(
                    "discarded a bad cache entry {}; compiling again",
                    path.display()
                );
                None
            }
            _ => None,
        }
    }

    fn load<T>(
        &self,
        engine: &Engine,
        path: &Path,
        deserialize: impl FnOnce(&Engine, File) -> wasmtime::Result<T>,
    ) -> (Lookup, Option<T>) {
        let (file, modified) = match open_checked(path) {
            (_, Some(checked)) => checked,
            (lookup, None) => return (lookup, None),
        };
        match deserialize(engine, file) {
            Ok(module) => {
                // A hit marks the entry as recently used, for eviction. One marked moments
                // ago needs no new mark: that saves each start of a busy program a write
                // (a journaled inode update, on the disk containerd's state is on).
                let now = SystemTime::now();
                let stale =
                    modified.is_none_or(|m| now.duration_since(m).unwrap_or_default() > RECENT_USE);
                if stale {
                    if let Ok(file) = File::options().write(true).open(path) {
                        let _ = file.set_modified(now);
                    }
                }
                (Lookup::Hit, Some(module))
            }
            Err(e) => {
                log::debug!("cache entry {} refused: {e:#}", path.display());
                let _ = std::fs::remove_file(path);
                (Lookup::Rejected, None)
            }
        }
    }

    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        write_entry(path, artifact)?;
        self.evict(path);
        Ok(())
    }

    /// Removes the least recently used entries until the directory fits its bound, never
    /// `keep` (just written), and temporary files abandoned by dead writers.
    pub(crate) fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") {
                if now.duration_since(modified).unwrap_or_default() > ABANDONED {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if meta.is_file() && name.ends_with(EXTENSION) {
                files.push((modified, meta.len(), path));
            }
        }
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                log::debug!("evicted {} from the compile cache", path.display());
                total -= len;
            }
        }
    }
}

/// A held claim on compiling one entry (see [`CompileCache::claim`]). Its file
/// is removed when the claim ends, while still locked: a process that opened it meanwhile
/// and locks the removed file finds the entry stored when it looks again.
pub(crate) struct CompileLock {
    _file: File,
    path: PathBuf,
}

impl Drop for CompileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `artifact` with its trailer as the entry at `path` (whose directory is the
/// cache's), atomically: what [`CompileCache`] stores, and what a compile helper (see
/// `compile_process`) writes for it.
pub(crate) fn write_entry(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomically(dir, path, &[artifact, &trailer(artifact)])
}

/// Where the artifact is split for its two checksums.
fn halves(artifact: &[u8]) -> (&[u8], &[u8]) {
    artifact.split_at(artifact.len() / 2)
}

/// The trailer written after `artifact`.
fn trailer(artifact: &[u8]) -> [u8; TRAILER] {
    let (first, second) = halves(artifact);
    let mut bytes = [0u8; TRAILER];
    bytes[..MAGIC.len()].copy_from_slice(MAGIC);
    bytes[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&(artifact.len() as u64).to_le_bytes());
    bytes[MAGIC.len() + 8..MAGIC.len() + 16].copy_from_slice(&xxh3_64(first).to_le_bytes());
    bytes[MAGIC.len() + 16..].copy_from_slice(&xxh3_64(second).to_le_bytes());
    bytes
}

/// The entry at `path`, opened and checked, with when it was last marked used: a `Hit`; a
/// `Miss` when there is none; `Rejected` (and removed) when it is not sound.
fn open_checked(path: &Path) -> (Lookup, Option<(File, Option<SystemTime>)>) {
    let Ok(file) = File::open(path) else {
        return (Lookup::Miss, None);
    };
    let meta = file.metadata().ok();
    let modified = meta.as_ref().and_then(|m| m.modified().ok());
    let len = meta.map_or(0, |m| m.len());
    if !matches!(entry_is_sound(&file, len), Ok(true)) {
        let _ = std::fs::remove_file(path);
        return (Lookup::Rejected, None);
    }
    (Lookup::Hit, Some((file, modified)))
}

/// Whether `file` (`len` bytes) is an artifact followed by a trailer that matches it: the
/// magic, the length (so a truncated or extended file fails) and the checksums of every byte.
pub(crate) fn entry_is_sound(file: &File, len: u64) -> std::io::Result<bool> {
    if len <= TRAILER as u64 {
        return Ok(false);
    }
    let mapped = ReadOnlyMap::new(file, len)?;
    let (artifact, tail) = mapped.bytes().split_at(mapped.bytes().len() - TRAILER);
    if tail[..MAGIC.len()] != MAGIC[..] {
        return Ok(false);
    }
    let (first, second) = halves(artifact);
    // A process that will confine itself (and, for an exec, join a mount namespace, which
    // the kernel refuses while another thread shares its filesystem context) makes no
    // helper thread here.
    let sums = if artifact.len() >= PARALLEL_CHECK_FROM && !crate::settings::single_threaded() {
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("cache-check".into())
                .spawn_scoped(scope, || xxh3_64(second));
            let first_sum = xxh3_64(first);
            let second_sum = match helper.map(|h| h.join()) {
                Ok(Ok(sum)) => sum,
                // No thread to be had: sum it here.
                _ => xxh3_64(second),
            };
            (first_sum, second_sum)
        })
    } else {
        (xxh3_64(first), xxh3_64(second))
    };
    Ok(trailer_fields(tail) == (artifact.len() as u64, sums.0, sums.1))
}

/// The length and the two checksums a trailer records.
fn trailer_fields(tail: &[u8]) -> (u64, u64, u64) {
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&tail[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    (
        word(MAGIC.len()),
        word(MAGIC.len() + 8),
        word(MAGIC.len() + 16),
    )
}

/// A read-only mapping of a whole file, so checking an entry reads the page cache in place
/// instead of copying 35 MB through a buffer.
struct ReadOnlyMap {
    addr: *mut libc::c_void,
    len: usize,
}

impl ReadOnlyMap {
    fn new(file: &File, len: u64) -> std::io::Result<Self> {
        let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidData)?;
        // SAFETY: a fresh private read-only mapping of an open file; nothing aliases it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ReadOnlyMap { addr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `addr` maps `len` readable bytes until drop. Entries are never written in
        // place, so the bytes do not change while borrowed. (Someone truncating an entry
        // behind the cache's back would fault the reader with SIGBUS, as it would fault
        // wasmtime's own mapping of the entry; the old checks through read(2) could not.)
        unsafe { std::slice::from_raw_parts(self.addr.cast::<u8>(), self.len) }
    }
}

impl Drop for ReadOnlyMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

static COMPILE_CACHE: OnceLock<Option<CompileCache>> = OnceLock::new();

/// Sets where this process keeps compiled modules (`None`: nowhere, compile every time).
/// Takes effect only before the first program is loaded; returns false after that.
pub fn set_compile_cache(cache: Option<CompileCache>) -> bool {
    COMPILE_CACHE.set(cache).is_ok()
}

/// The compile cache, if the host set one.
pub(crate) fn compile_cache() -> Option<&'static CompileCache> {
    COMPILE_CACHE.get_or_init(|| None).as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::Component;
    use wasmtime::Module;

    const MODULE: &str = r#"(module (func (export "_start")))"#;

    fn load_module(engine: &Engine, file: File) -> wasmtime::Result<Module> {
        // SAFETY: `load` passes only entries it checked.
        unsafe { <Module as Artifact>::deserialize(engine, file) }
    }

    fn digest(wasm: &[u8]) -> WasmDigest {
        Sha256::digest(wasm).into()
    }

    fn engine() -> &'static Engine {
        crate::shared_engine().unwrap()
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_compiled_module_is_stored_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path().join("c"), 1 << 30);
        let wasm = wat::parse_str(MODULE).unwrap();
        cache
            .compiled::<Module>(engine(), &digest(&wasm), &wasm)
            .unwrap();
        let stored = entries(cache.dir());
        assert_eq!(stored.len(), 1, "{stored:?}");
        let path = &stored[0];
        assert_eq!(*path, cache.entry(engine(), &digest(&wasm)));
        assert_eq!(cache.load(engine(), path, load_module).0, Lookup::Hit);
        let module = cache
            .compiled::<Module>(engine(), &digest(&wasm), &wasm)
            .unwrap();
        assert!(module.get_export("_start").is_some());
    }

    #[test]
    fn a_compiled_component_is_stored_then_mapped_from_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), 1 << 30);
        let wasm = wat::parse_str(r#"(component (core module (func (export "f"))))"#).unwrap();
        cache
            .compiled::<Component>(engine(), &digest(&wasm), &wasm)
            .unwrap();
        let path = cache.entry(engine(), &digest(&wasm));
        // SAFETY: `load` passes only entries it checked.
        let deserialize = |engine: &Engine, file: File| unsafe {
            <Component as Artifact>::deserialize(engine, file)
        };
        assert_eq!(cache.load(engine(), &path, deserialize).0, Lookup::Hit);
        // The hit is the same entry, not a second compile.
        cache
            .compiled::<Component>(engine(), &digest(&wasm), &wasm)
            .unwrap();
        assert_eq!(entries(dir.path()), vec![path]);
    }

    #[test]
    fn corrupt_truncated_and_foreign_entries_are_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), 1 << 30);
        let wasm = wat::parse_str(MODULE).unwrap();
        cache
            .compiled::<Module>(engine(), &digest(&wasm), &wasm)
            .unwrap();
        let path = cache.entry(engine(), &digest(&wasm));
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        let mut flipped_code = good.clone();
        flipped_code[(good.len() - TRAILER) / 2] ^= 0x01;
        let mut extended = good.clone();
        extended.insert(0, 0);
        let foreign = {
            // A well-formed entry whose artifact is not wasmtime's: the checksum matches,
            // deserialization must still refuse it.
            let mut bytes = b"not a compiled module".to_vec();
            bytes.extend_from_slice(&trailer(&bytes));
            bytes
        };
        for bad in [
            flipped,
            flipped_code,
            extended,
            good[..good.len() / 2].to_vec(),
            good[..good.len() - 1].to_vec(),
            b"".to_vec(),
            foreign,
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(cache.load(engine(), &path, load_module).0, Lookup::Rejected);
            assert!(!path.exists(), "a rejected entry is removed");
            // The next lookup compiles and stores a sound entry again.
            cache
                .compiled::<Module>(engine(), &digest(&wasm), &wasm)
                .unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), good);
        }
    }

    #[test]
    fn a_hit_needs_only_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), 1 << 30);
        let wasm = wat::parse_str(MODULE).unwrap();
        assert!(cache.get::<Module>(engine(), &digest(&wasm)).is_none());
        assert!(!cache.has_entry(engine(), &digest(&wasm)));
        cache
            .compiled::<Module>(engine(), &digest(&wasm), &wasm)
            .unwrap();
        assert!(cache.has_entry(engine(), &digest(&wasm)));
        let module = cache.get::<Module>(engine(), &digest(&wasm)).unwrap();
        assert!(module.get_export("_start").is_some());
        let other = wat::parse_str(r#"(module (func (export "other")))"#).unwrap();
        assert!(cache.get::<Module>(engine(), &digest(&other)).is_none());
    }

    #[test]
    fn large_entries_are_checked_in_both_halves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let artifact: Vec<u8> = (0..PARALLEL_CHECK_FROM + 1)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut good = artifact.clone();
        good.extend_from_slice(&trailer(&artifact));
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            entry_is_sound(&File::open(&path).unwrap(), bytes.len() as u64).unwrap()
        };
        assert!(check(&good));
        let middle = artifact.len() / 2;
        for at in [0, middle - 1, middle, artifact.len() - 1, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(!check(&bad), "a flipped byte at {at} went unnoticed");
        }
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let modules: Vec<Vec<u8>> = (0..3)
            .map(|i| wat::parse_str(format!(r#"(module (func (export "f{i}")))"#)).unwrap())
            .collect();
        let unbounded = CompileCache::new(dir.path(), u64::MAX);
        unbounded
            .compiled::<Module>(engine(), &digest(&modules[0]), &modules[0])
            .unwrap();
        let size = std::fs::metadata(unbounded.entry(engine(), &digest(&modules[0])))
            .unwrap()
            .len();
        // Room for two entries (all three are about the same size).
        let cache = CompileCache::new(dir.path(), size * 2 + size / 2);
        let old = SystemTime::now() - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(cache.entry(engine(), &digest(&modules[0])))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache
            .compiled::<Module>(engine(), &digest(&modules[1]), &modules[1])
            .unwrap();
        // A hit makes entry 0 the most recently used again.
        cache
            .compiled::<Module>(engine(), &digest(&modules[0]), &modules[0])
            .unwrap();
        File::options()
            .write(true)
            .open(cache.entry(engine(), &digest(&modules[1])))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache
            .compiled::<Module>(engine(), &digest(&modules[2]), &modules[2])
            .unwrap();
        assert!(cache.entry(engine(), &digest(&modules[0])).exists());
        assert!(!cache.entry(engine(), &digest(&modules[1])).exists());
        assert!(cache.entry(engine(), &digest(&modules[2])).exists());
    }
}
