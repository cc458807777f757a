//! Handing optimized code to a process that cannot reach the compile cache.
//!
//! An HTTP component's first start serves baseline code from a process whose root is its
//! container's rootfs: the cache is not in its view. When the optimized code is ready, the
//! host hard-links the cache entry into a directory of that container's own (a
//! [`HandoverDir`], made in the cache's directory so the link is the same file), and the
//! process, which holds that directory as a detached, read-only mount (see
//! [`CodeUpgrade::attach_directory`](crate::CodeUpgrade::attach_directory)), maps it from
//! there.
//!
//! Why a file on a path and not a descriptor passed over a socket: wasmtime maps a
//! component's code only from a path, and makes its instances' memory images copy-on-write
//! mappings of that same file. Code it is handed as memory gets its images in a memfd
//! instead, which measured a quarter slower per request (each instance faults its image in
//! a page at a time).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use wasmtime::component::Component;
use wasmtime::Engine;

use crate::engine::compile_cache;

/// The name of the optimized code in a handover directory.
pub(crate) const HANDED_OVER: &str = "optimized.cwasm";

/// The directory a host hands one container's optimized code through; removed (with what
/// it holds) when dropped.
#[derive(Debug)]
pub struct HandoverDir {
    path: PathBuf,
}

impl HandoverDir {
    /// Makes the handover directory named `key` (unique on the node: containerd's namespace
    /// and the container's id) in the compile cache's directory, replacing one a dead host
    /// left. `None` without a compile cache. Traversable, not listable, by the container's
    /// user, which need not be root.
    pub fn create(key: &str) -> std::io::Result<Option<HandoverDir>> {
        let Some(path) = Self::path_for(key) else {
            return Ok(None);
        };
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))?;
        Ok(Some(HandoverDir { path }))
    }

    /// Where the handover directory named `key` is (whether or not it exists): for a host
    /// cleaning up after another that died. `None` without a compile cache.
    pub fn path_for(key: &str) -> Option<PathBuf> {
        let key: String = key
            .chars()
            .map(|c| if c == '/' || c == '\0' { '_' } else { c })
            .collect();
        Some(compile_cache()?.dir().join("handover").join(key))
    }

    /// The directory, for the process to attach.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the checked cache entry `entry` here as the handed-over code: a hard link (the
    /// same file, so the same page cache), or a copy where the two cannot be linked.
    pub(crate) fn put(&self, entry: &Path) -> std::io::Result<()> {
        let target = self.path.join(HANDED_OVER);
        let _ = std::fs::remove_file(&target);
        if std::fs::hard_link(entry, &target).is_err() {
            std::fs::copy(entry, &target)?;
        }
        Ok(())
    }
}

impl HandoverDir {
    /// Removes the directory and what it holds, now rather than when dropped (a container's
    /// Delete). The process that held it keeps the code it loaded.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Drop for HandoverDir {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Loads the component handed over in `dir` (a descriptor of the handover directory) for
/// `engine`, after checking it as the cache checks its entries.
pub(crate) fn load_component(dir: &OwnedFd, engine: &Engine) -> Result<Component, String> {
    let name = std::ffi::CString::new(HANDED_OVER).map_err(|e| e.to_string())?;
    // SAFETY: openat on a directory descriptor this process holds, with a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(format!(
            "opening the handed-over code: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor openat just gave this process.
    let file = File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if !matches!(crate::cache::entry_is_sound(&file, len), Ok(true)) {
        return Err("the handed-over code failed its checksum".into());
    }
    // wasmtime opens the code by path: from the handover directory as the working directory
    // for that one call (nothing else of this process uses it: WASI resolves every path from
    // a directory descriptor), then back.
    use nix::fcntl::{open, OFlag};
    let back = open(
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("holding the working directory: {e}"))?;
    // SAFETY: a descriptor open just gave this process.
    let back = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(back) };
    nix::unistd::fchdir(dir.as_fd().as_raw_fd())
        .map_err(|e| format!("entering the handover directory: {e}"))?;
    // SAFETY: the file was checked above, and only the host writes to this directory (the
    // process holds it read-only).
    let component = unsafe { Component::deserialize_file(engine, HANDED_OVER) };
    let returned = nix::unistd::fchdir(back.as_raw_fd());
    let component = component.map_err(|e| format!("loading the handed-over code: {e:#}"))?;
    returned.map_err(|e| format!("leaving the handover directory: {e}"))?;
    Ok(component)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CompileCache;

    fn directory(path: &Path) -> OwnedFd {
        use nix::fcntl::{open, OFlag};
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    }

    /// The checked entry, linked into a handover directory, loads from the directory's
    /// descriptor alone; a damaged one does not; the directory goes with its owner.
    #[test]
    fn handed_over_code_loads_from_the_directory_descriptor_and_only_when_sound() {
        let engine = &crate::engine::serving().unwrap().engine;
        let (cache_dir, handover_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cache = CompileCache::new(cache_dir.path(), 1 << 30);
        let wasm = wat::parse_str("(component)").unwrap();
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&wasm).into();
        let artifact = Component::new(engine, &wasm).unwrap().serialize().unwrap();
        cache.put_serialized(engine, &digest, &artifact);
        let handover = HandoverDir {
            path: handover_dir.path().join("ns-task"),
        };
        std::fs::create_dir(handover.path()).unwrap();
        let fd = directory(handover.path());
        assert!(
            load_component(&fd, engine).is_err(),
            "nothing handed over yet"
        );
        handover.put(&cache.entry(engine, &digest)).unwrap();
        let here = std::env::current_dir().unwrap();
        assert!(load_component(&fd, engine).is_ok());
        assert_eq!(
            std::env::current_dir().unwrap(),
            here,
            "the working directory is back"
        );
        // A hard link: the cache's own file.
        use std::os::unix::fs::MetadataExt;
        let linked = std::fs::metadata(handover.path().join(HANDED_OVER)).unwrap();
        let entry = std::fs::metadata(cache.entry(engine, &digest)).unwrap();
        assert_eq!(linked.ino(), entry.ino());
        // Damaged (the cache's entry with it: they are one file).
        let mut bytes = std::fs::read(handover.path().join(HANDED_OVER)).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(handover.path().join(HANDED_OVER), bytes).unwrap();
        assert!(load_component(&fd, engine).is_err());
        let path = handover.path().to_path_buf();
        drop(handover);
        assert!(!path.exists());
    }
}
