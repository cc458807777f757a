//! The host tree specs are mapped against, at a fixed path so that seeds and crash inputs
//! can name its directories as bind mount sources.
//!
//! ```text
//! /tmp/containerd-wasmtime-fuzz/
//!   rootfs/            the container's rootfs: programs, a directory, symlinks that point
//!                      out of it (absolute, relative, to a directory, to themselves), an
//!                      empty file and a FIFO
//!   data/              a directory bind mount source, with a symlink out of it
//!   data/nested/       another one, below the first
//!   file.txt           a file bind mount source
//!   outside/secret.wasm  reachable only through a mount of outside/ or of an ancestor
//! ```
//!
//! Several fuzz processes may share it: it is only ever added to (but see [`NO_FIFO_ENV`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where the tree lives.
pub const BASE: &str = "/tmp/containerd-wasmtime-fuzz";

/// When set (to any value), the rootfs has no FIFO (one made before is removed): an
/// entrypoint lookup that meets a FIFO blocks in `open(2)` until a writer comes, which
/// libFuzzer reports as a timeout. Only for fuzzing past that while it is not fixed; do not
/// mix with runs that keep the FIFO.
pub const NO_FIFO_ENV: &str = "FUZZ_NO_FIFO";

/// The tree's paths, canonical.
#[derive(Debug)]
pub struct Tree {
    pub base: PathBuf,
    pub rootfs: PathBuf,
    pub data: PathBuf,
    pub nested: PathBuf,
    pub file: PathBuf,
    pub outside: PathBuf,
    /// Regular files below each directory (by canonical path), not following symlinks:
    /// what a lookup confined to that directory may open.
    files_below: Mutex<HashMap<PathBuf, HashSet<(u64, u64)>>>,
}

const WASM: &[u8] = b"\0asm\x01\0\0\0";

/// The tree, made on first use.
pub fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| make(Path::new(BASE)).expect("cannot make the fuzz tree"))
}

fn make(base: &Path) -> std::io::Result<Tree> {
    let rootfs = base.join("rootfs");
    let data = base.join("data");
    let outside = base.join("outside");
    for dir in [
        rootfs.join("bin"),
        rootfs.join("dir"),
        data.join("nested"),
        outside.clone(),
    ] {
        fs::create_dir_all(dir)?;
    }
    let files: [(PathBuf, &[u8]); 9] = [
        (rootfs.join("app.wasm"), WASM),
        (rootfs.join("bin/tool.wasm"), WASM),
        (rootfs.join("bin/native"), b"\x7fELF\x02\x01\x01\0"),
        (rootfs.join("script.sh"), b"#!/bin/sh\necho hi\n"),
        (rootfs.join("empty"), b""),
        (data.join("data.wasm"), WASM),
        (data.join("nested/deep.wasm"), WASM),
        (base.join("file.txt"), b"a file bind mount\n"),
        (outside.join("secret.wasm"), b"\0asm\x01\0\0\0secret"),
    ];
    for (path, bytes) in files {
        if fs::symlink_metadata(&path).is_err() {
            write_new(&path, bytes)?;
        }
    }
    let secret = outside.join("secret.wasm");
    let links: [(PathBuf, PathBuf); 6] = [
        (rootfs.join("abs"), secret.clone()),
        (rootfs.join("rel"), "../outside/secret.wasm".into()),
        (rootfs.join("up"), "../../..".into()),
        (rootfs.join("loop"), "loop".into()),
        (
            rootfs.join("bin/up.wasm"),
            "../../outside/secret.wasm".into(),
        ),
        (data.join("escape"), "../outside/secret.wasm".into()),
    ];
    for (link, target) in links {
        if fs::symlink_metadata(&link).is_err() {
            ignore_exists(symlink(target, &link))?;
        }
    }
    let fifo = rootfs.join("fifo");
    if std::env::var_os(NO_FIFO_ENV).is_some() {
        if fs::symlink_metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo()) {
            ignore_missing(fs::remove_file(&fifo))?;
        }
    } else if fs::symlink_metadata(&fifo).is_err() {
        let path = std::ffi::CString::new(fifo.into_os_string().into_encoded_bytes())?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mkfifo(path.as_ptr(), 0o644) } != 0 {
            ignore_exists(Err(std::io::Error::last_os_error()))?;
        }
    }
    let canonical = |p: PathBuf| fs::canonicalize(p);
    Ok(Tree {
        base: canonical(base.to_path_buf())?,
        rootfs: canonical(rootfs)?,
        nested: canonical(data.join("nested"))?,
        data: canonical(data)?,
        file: canonical(base.join("file.txt"))?,
        outside: canonical(outside)?,
        files_below: Mutex::default(),
    })
}

/// Writes a file that must not exist yet, through a temporary name, so that a concurrent
/// process never reads it half-written.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    fs::remove_file(&tmp)?;
    ignore_exists(linked)
}

fn ignore_missing(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn ignore_exists(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

impl Tree {
    /// Whether `host` is in the tree (after resolving symlinks). A host path outside it
    /// (`/`, `/etc`, `/dev`, ...) is never opened by the targets: a lookup must not wander
    /// through the fuzzing machine's files and devices.
    pub fn contains(&self, host: &Path) -> bool {
        fs::canonicalize(host).is_ok_and(|p| p.starts_with(&self.base))
    }

    /// Whether the file open as `file` is one of the regular files below the directory
    /// `dir`, as a lookup confined to `dir` would find them.
    pub fn is_below(&self, file: &fs::File, dir: &Path) -> bool {
        let Ok(meta) = file.metadata() else {
            return false;
        };
        let Ok(dir) = fs::canonicalize(dir) else {
            return false;
        };
        let mut cache = self.files_below.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(dir.clone())
            .or_insert_with(|| regular_files(&dir))
            .contains(&(meta.dev(), meta.ino()))
    }
}

fn regular_files(dir: &Path) -> HashSet<(u64, u64)> {
    let mut found = HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                found.insert((meta.dev(), meta.ino()));
            }
        }
    }
    found
}
