//! Compiled modules kept on disk, so a program is compiled once per machine and engine
//! configuration rather than at every container start.
//!
//! An entry is keyed by the sha256 of the wasm bytes and by wasmtime's engine compatibility
//! hash (wasmtime version, target, compiler settings), so a different engine never sees it.
//! Loading compiled code runs it without validation, so an entry is never trusted as found:
//! each file ends with a trailer holding the artifact's length and 64-bit xxh3 checksum,
//! checked before use; a corrupt, truncated or stale entry is removed and the program
//! compiled again. Entries are written to a temporary file and renamed into place (readers
//! see whole entries or none, and concurrent shims may race harmlessly), and the directory is
//! kept under a size bound by removing the least recently used entries (a hit refreshes an
//! entry's modification time).
//!
//! The artifact comes first in the file and the trailer after it, so wasmtime maps a hit
//! straight from the file (`deserialize_file`): no copy of the code, and a program's initial
//! memory is mapped copy-on-write from the page cache rather than copied at each start. The
//! checksum is xxh3 rather than sha256 because it runs at memory speed: integrity against
//! torn or damaged files is what it is for, and anyone able to write the cache directory
//! could rewrite any checksum there anyway. For CPython as a component (a 35 MB artifact)
//! a sha256 took about 33 ms of every start.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Starts every entry's trailer: the format, so a future layout is never misread.
const MAGIC: &[u8; 8] = b"wshimc2\n";
/// The trailer after the artifact: magic, the artifact's length, its xxh3 (little endian).
const TRAILER: usize = MAGIC.len() + 8 + 8;
/// Read size while checksumming an entry: large enough for few system calls, small enough to
/// stay in the CPU's cache between the copy and the hash.
const CHECK_CHUNK: usize = 256 << 10;
const EXTENSION: &str = "cwasm";
/// A temporary file this old was left by a shim that died while writing it.
const ABANDONED: Duration = Duration::from_secs(3600);
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

    /// The entry for `wasm` compiled by `engine`.
    fn entry(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.0.finalize();
        let wasm_hash = Sha256::digest(wasm);
        self.dir.join(format!(
            "{}-{}.{EXTENSION}",
            hex(&wasm_hash),
            hex(&engine_hash[..8])
        ))
    }

    /// The compiled module for `wasm`: from the cache when a sound entry is there, else
    /// compiled and stored. A cache that cannot be read or written only costs the compile.
    pub(crate) fn module(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Module> {
        self.cached(
            engine,
            wasm,
            |engine, bytes| Module::new(engine, bytes),
            Module::serialize,
            // SAFETY: `load` only passes a file holding what `Module::serialize` wrote
            // (checked against its stored checksum); wasmtime refuses an artifact from
            // another version or configuration. Entries are never changed in place (only
            // renamed over or removed), so the mapping stays what was checked.
            |engine, file| unsafe { Module::deserialize_open_file(engine, file) },
        )
    }

    /// [`CompileCache::module`] for a component.
    pub(crate) fn component(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<Component> {
        self.cached(
            engine,
            wasm,
            |engine, bytes| Component::new(engine, bytes),
            Component::serialize,
            // SAFETY: as for modules above. Components have no `deserialize_open_file`;
            // opening the checked file's /proc/self/fd link maps that same file, never one
            // renamed over its name since.
            |engine, file| unsafe {
                Component::deserialize_file(engine, format!("/proc/self/fd/{}", file.as_raw_fd()))
            },
        )
    }

    fn cached<T>(
        &self,
        engine: &Engine,
        wasm: &[u8],
        compile: impl FnOnce(&Engine, &[u8]) -> wasmtime::Result<T>,
        serialize: impl FnOnce(&T) -> wasmtime::Result<Vec<u8>>,
        deserialize: impl FnOnce(&Engine, File) -> wasmtime::Result<T>,
    ) -> wasmtime::Result<T> {
        let path = self.entry(engine, wasm);
        let (lookup, compiled) = self.load(engine, &path, deserialize);
        if let Some(compiled) = compiled {
            log::debug!("compiled module from the cache: {}", path.display());
            return Ok(compiled);
        }
        if lookup == Lookup::Rejected {
            log::warn!(
                "discarded a bad cache entry {}; compiling again",
                path.display()
            );
        }
        let module = compile(engine, wasm)?;
        match serialize(&module) {
            Ok(artifact) => {
                if let Err(e) = self.store(&path, &artifact) {
                    log::warn!("could not cache {}: {e}", path.display());
                }
            }
            Err(e) => log::warn!("could not serialize a compiled module: {e:#}"),
        }
        Ok(module)
    }

    fn load<T>(
        &self,
        engine: &Engine,
        path: &Path,
        deserialize: impl FnOnce(&Engine, File) -> wasmtime::Result<T>,
    ) -> (Lookup, Option<T>) {
        let Ok(file) = File::open(path) else {
            return (Lookup::Miss, None);
        };
        let meta = file.metadata().ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        let len = meta.map_or(0, |m| m.len());
        if !matches!(checked_artifact_len(&file, len), Ok(true)) {
            let _ = std::fs::remove_file(path);
            return (Lookup::Rejected, None);
        }
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
        std::fs::create_dir_all(&self.dir)?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let temp = self
            .dir
            .join(format!(".tmp-{}-{tid}-{nanos:x}", std::process::id()));
        let written = (|| {
            let mut file = File::create(&temp)?;
            file.write_all(artifact)?;
            file.write_all(&trailer(artifact))?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written?;
        self.evict(path);
        Ok(())
    }

    /// Removes the least recently used entries until the directory fits its bound, never
    /// `keep` (just written), and temporary files abandoned by dead writers.
    fn evict(&self, keep: &Path) {
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

/// The trailer written after `artifact`.
fn trailer(artifact: &[u8]) -> [u8; TRAILER] {
    let mut bytes = [0u8; TRAILER];
    bytes[..MAGIC.len()].copy_from_slice(MAGIC);
    bytes[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&(artifact.len() as u64).to_le_bytes());
    bytes[MAGIC.len() + 8..].copy_from_slice(&xxh3_64(artifact).to_le_bytes());
    bytes
}

/// Whether `file` (`len` bytes) is an artifact followed by a trailer that matches it: the
/// magic, the length (so a truncated or extended file fails) and the checksum of every byte.
fn checked_artifact_len(file: &File, len: u64) -> std::io::Result<bool> {
    let Some(artifact_len) = len.checked_sub(TRAILER as u64).filter(|&n| n > 0) else {
        return Ok(false);
    };
    let mut tail = [0u8; TRAILER];
    file.read_exact_at(&mut tail, artifact_len)?;
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&tail[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    if &tail[..MAGIC.len()] != MAGIC || word(MAGIC.len()) != artifact_len {
        return Ok(false);
    }
    let mut hasher = Xxh3::new();
    let mut chunk = vec![0u8; CHECK_CHUNK];
    let mut offset = 0u64;
    while offset < artifact_len {
        let want = (artifact_len - offset).min(CHECK_CHUNK as u64) as usize;
        file.read_exact_at(&mut chunk[..want], offset)?;
        hasher.update(&chunk[..want]);
        offset += want as u64;
    }
    Ok(hasher.digest() == word(MAGIC.len() + 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: &str = r#"(module (func (export "_start")))"#;

    fn deserialize_module(engine: &Engine, file: File) -> wasmtime::Result<Module> {
        // SAFETY: only for entries the cache itself wrote and checked, as in `module`.
        unsafe { Module::deserialize_open_file(engine, file) }
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
        cache.module(engine(), &wasm).unwrap();
        let stored = entries(cache.dir());
        assert_eq!(stored.len(), 1, "{stored:?}");
        let path = &stored[0];
        assert_eq!(*path, cache.entry(engine(), &wasm));
        assert_eq!(
            cache.load(engine(), path, deserialize_module).0,
            Lookup::Hit
        );
        let module = cache.module(engine(), &wasm).unwrap();
        assert!(module.get_export("_start").is_some());
    }

    #[test]
    fn a_compiled_component_is_stored_then_mapped_from_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), 1 << 30);
        let wasm = wat::parse_str(r#"(component (core module (func (export "f"))))"#).unwrap();
        cache.component(engine(), &wasm).unwrap();
        let path = cache.entry(engine(), &wasm);
        let deserialize = |engine: &Engine, file: File| unsafe {
            // SAFETY: an entry the cache wrote and checked, as in `component`.
            Component::deserialize_file(engine, format!("/proc/self/fd/{}", file.as_raw_fd()))
        };
        assert_eq!(cache.load(engine(), &path, deserialize).0, Lookup::Hit);
        // The hit is the same entry, not a second compile.
        cache.component(engine(), &wasm).unwrap();
        assert_eq!(entries(dir.path()), vec![path]);
    }

    #[test]
    fn corrupt_truncated_and_foreign_entries_are_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(dir.path(), 1 << 30);
        let wasm = wat::parse_str(MODULE).unwrap();
        cache.module(engine(), &wasm).unwrap();
        let path = cache.entry(engine(), &wasm);
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
            assert_eq!(
                cache.load(engine(), &path, deserialize_module).0,
                Lookup::Rejected
            );
            assert!(!path.exists(), "a rejected entry is removed");
            // The next lookup compiles and stores a sound entry again.
            cache.module(engine(), &wasm).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), good);
        }
    }

    #[test]
    fn the_least_recently_used_entries_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let modules: Vec<Vec<u8>> = (0..3)
            .map(|i| wat::parse_str(format!(r#"(module (func (export "f{i}")))"#)).unwrap())
            .collect();
        let unbounded = CompileCache::new(dir.path(), u64::MAX);
        unbounded.module(engine(), &modules[0]).unwrap();
        let size = std::fs::metadata(unbounded.entry(engine(), &modules[0]))
            .unwrap()
            .len();
        // Room for two entries (all three are about the same size).
        let cache = CompileCache::new(dir.path(), size * 2 + size / 2);
        let old = SystemTime::now() - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(cache.entry(engine(), &modules[0]))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.module(engine(), &modules[1]).unwrap();
        // A hit makes entry 0 the most recently used again.
        cache.module(engine(), &modules[0]).unwrap();
        File::options()
            .write(true)
            .open(cache.entry(engine(), &modules[1]))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.module(engine(), &modules[2]).unwrap();
        assert!(cache.entry(engine(), &modules[0]).exists());
        assert!(!cache.entry(engine(), &modules[1]).exists());
        assert!(cache.entry(engine(), &modules[2]).exists());
    }
}
