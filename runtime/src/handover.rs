//! The host's side of handing optimized code to a process that cannot reach the compile
//! cache (the process's side is `upgrade`).
//!
//! An HTTP component's first start serves baseline code from a process whose root is its
//! container's rootfs: the cache is not in its view. When the optimized code is ready, the
//! host hard-links the checked cache entry into a directory of that container's own (a
//! [`HandoverDir`], made in the cache's directory so the link is the same file), and the
//! process, which holds that directory as a detached, read-only mount taken before its
//! root changed, maps the code from there.
//!
//! Why a file on a path and not a descriptor passed over a socket: wasmtime maps a
//! component's code only from a path, and makes its instances' memory images copy-on-write
//! mappings of that same file. Code it is handed as memory gets its images in a memfd
//! instead, which measured a quarter slower per request (each instance faults its image in
//! a page at a time).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::cache::compile_cache;

/// The name of the optimized code in a handover directory.
pub(crate) const HANDED_OVER: &str = "optimized.cwasm";

/// A compile-cache entry opened and checked (see `CompileCache::open_sound`): what a host
/// hands over, linked from this very descriptor, so an entry evicted or replaced since the
/// check is never the one handed over.
#[derive(Debug)]
pub struct CheckedEntry(pub(crate) File);

/// The directory a host hands one container's optimized code through; removed (with what
/// it holds) at [`HandoverDir::remove`] or when dropped.
#[derive(Debug)]
pub struct HandoverDir {
    path: PathBuf,
}

/// Tells apart the handover directories this process makes for one container id (a
/// container deleted and created again gets a new one).
static MADE: AtomicU64 = AtomicU64::new(0);

impl HandoverDir {
    /// Makes a handover directory for container `id` of containerd namespace `namespace`
    /// in the compile cache's directory. `None` without a compile cache. Traversable, not
    /// listable, by the container's user, which need not be root.
    pub fn create(namespace: &str, id: &str) -> std::io::Result<Option<HandoverDir>> {
        let Some(parent) = Self::parent() else {
            return Ok(None);
        };
        let name = format!(
            "{}.{}-{}",
            Self::prefix(namespace, id),
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        std::fs::create_dir_all(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))?;
        Ok(Some(HandoverDir { path }))
    }

    /// Removes the handover directories of container `id` of `namespace` that a host which
    /// died left behind (they may hold links to entries the cache has since evicted).
    pub fn remove_stale(namespace: &str, id: &str) {
        let Some(parent) = Self::parent() else {
            return;
        };
        let prefix = format!("{}.", Self::prefix(namespace, id));
        let Ok(entries) = std::fs::read_dir(&parent) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => log::info!("removed {}", entry.path().display()),
                    Err(e) => log::warn!("removing {}: {e}", entry.path().display()),
                }
            }
        }
    }

    fn parent() -> Option<PathBuf> {
        Some(compile_cache()?.dir().join("handover"))
    }

    /// The start of the names of a container's handover directories: a hash, so that no
    /// namespace or id (which may hold `-`, `.` or `/`) is mistaken for another.
    fn prefix(namespace: &str, id: &str) -> String {
        let digest = Sha256::digest(format!("{namespace}/{id}").as_bytes());
        digest[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The directory, for the process to attach.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts `entry` here as the handed-over code: a hard link of the checked descriptor
    /// (the same file, so the same page cache), made readable by the container's user.
    pub fn put(&self, entry: &CheckedEntry) -> std::io::Result<()> {
        let target = self.path.join(HANDED_OVER);
        let _ = std::fs::remove_file(&target);
        let mode = entry.0.metadata()?.permissions().mode();
        entry
            .0
            .set_permissions(std::fs::Permissions::from_mode(mode | 0o444))?;
        let target = CString::new(target.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        // SAFETY: linkat of a descriptor this process holds (AT_EMPTY_PATH: the descriptor
        // itself; the host has CAP_DAC_READ_SEARCH) to a NUL-terminated path.
        let rc = unsafe {
            libc::linkat(
                entry.0.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Removes the directory and what it holds, now rather than when dropped (a container's
    /// Delete). The process that held it keeps the code it loaded.
    pub fn remove(&self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing {}: {e}", self.path.display()),
        }
    }
}

impl Drop for HandoverDir {
    fn drop(&mut self) {
        self.remove();
    }
}
