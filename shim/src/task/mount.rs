//! The rootfs mounts containerd passes in Create, mounted at `bundle/rootfs` and removed on
//! Delete (or by `shim delete` after a crash).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{ShimError, ShimResult};
use crate::mount_options::parse_options;

/// The rootfs mounts of one container, undone on drop unless the container took them over.
pub struct RootfsMount(Option<PathBuf>);

impl RootfsMount {
    /// Mounts `mounts` at `bundle/rootfs`; nothing when containerd passed none (the spec's
    /// root is then already in place).
    pub fn mount(mounts: &[Mount], bundle: &Path) -> ShimResult<RootfsMount> {
        if mounts.is_empty() {
            return Ok(RootfsMount(None));
        }
        let target = bundle.join("rootfs");
        mount_rootfs(mounts, &target)?;
        Ok(RootfsMount(Some(target)))
    }

    /// Whether anything was mounted.
    pub fn is_mounted(&self) -> bool {
        self.0.is_some()
    }

    /// Hands the mounts over to the caller, who must unmount them.
    pub fn keep(mut self) -> Option<PathBuf> {
        self.0.take()
    }
}

impl Drop for RootfsMount {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            unmount_all(path);
        }
    }
}

/// Mounts `mounts` in order onto `target`. On failure, unmounts what was already mounted.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> ShimResult<()> {
    std::fs::create_dir_all(target)
        .map_err(|e| ShimError::internal(format!("creating {}", target.display()), e))?;
    for m in mounts {
        let (flags, data) = parse_options(&m.options);
        let fstype = if m.type_.is_empty() {
            None
        } else {
            Some(m.type_.as_str())
        };
        let data = if data.is_empty() {
            None
        } else {
            Some(data.as_str())
        };
        let place = if m.target.is_empty() {
            target.to_path_buf()
        } else {
            target.join(m.target.trim_start_matches('/'))
        };
        let result = match data.and_then(|d| compact_lowerdir(d, page_size())) {
            Some(Ok((dir, data))) => {
                mount_in(&dir, m.source.as_str(), &place, fstype, flags, &data)
            }
            Some(Err(e)) => Err(e),
            None => mount(Some(m.source.as_str()), &place, fstype, flags, data),
        };
        // A read-only bind needs a second, remounting call: the first ignores MS_RDONLY.
        let result = result.and_then(|()| {
            if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
                mount(
                    None::<&str>,
                    &place,
                    None::<&str>,
                    flags | MsFlags::MS_REMOUNT,
                    None::<&str>,
                )
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            // A lazy unmount of the target takes every mount stacked on it or below it,
            // including a bind whose read-only remount just failed.
            unmount_all(target);
            return Err(ShimError::internal(
                format!(
                    "mounting rootfs ({} {} on {})",
                    m.type_,
                    m.source,
                    place.display()
                ),
                e,
            ));
        }
    }
    Ok(())
}

/// The size of a page: the kernel copies at most one page less its final NUL of a mount's
/// options.
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    }
}

/// For mount options too long for the kernel (`page` bytes and more), which is what
/// containerd's overlay snapshotter gives an image of many layers (each `lowerdir` entry is
/// an absolute path of some 70 bytes): the directory every `lowerdir` is under, and the
/// options with each `lowerdir` relative to it, to be mounted from there, as containerd
/// itself mounts them. `None` when the options fit or name no `lowerdir`; an error when even
/// the relative form does not fit.
fn compact_lowerdir(data: &str, page: usize) -> Option<Result<(PathBuf, String), nix::Error>> {
    if data.len() < page {
        return None;
    }
    let options: Vec<&str> = data.split(',').collect();
    let at = options.iter().position(|o| o.starts_with("lowerdir="))?;
    let lowers: Vec<&Path> = options[at]["lowerdir=".len()..]
        .split(':')
        .map(Path::new)
        .collect();
    // The deepest directory that is an ancestor of every layer (not the layer itself).
    let mut common = lowers.first()?.parent()?.to_path_buf();
    while !lowers
        .iter()
        .all(|l| l.starts_with(&common) && *l != common)
    {
        common = common.parent()?.to_path_buf();
    }
    if common.parent().is_none() || !common.is_absolute() {
        return Some(Err(nix::Error::E2BIG));
    }
    let relative: Vec<String> = lowers
        .iter()
        .filter_map(|l| l.strip_prefix(&common).ok())
        .map(|l| l.display().to_string())
        .collect();
    let mut compacted: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    compacted[at] = format!("lowerdir={}", relative.join(":"));
    let compacted = compacted.join(",");
    if compacted.len() >= page {
        return Some(Err(nix::Error::E2BIG));
    }
    Some(Ok((common, compacted)))
}

/// Mounts with the working directory `dir`, for options whose paths are relative to it: on
/// a thread of its own that first stops sharing the filesystem context (`unshare
/// CLONE_FS`), so no other thread of the shim ever sees that directory as its own. (Where
/// containerd forks a child to change directory, a thread is enough: the working directory
/// is per thread once unshared.)
fn mount_in(
    dir: &Path,
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: &str,
) -> Result<(), nix::Error> {
    // Resolved here: after the thread's chdir, a relative target would name another place.
    let target = std::path::absolute(target).map_err(|e| io_errno(&e))?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("mount-in".into())
            .spawn_scoped(scope, || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                nix::unistd::chdir(dir)?;
                mount(Some(source), &target, fstype, flags, Some(data))
            })
            // No thread to be had (a pids limit): the mount fails, the shim goes on.
            .map_err(|e| io_errno(&e))?;
        thread.join().unwrap_or_else(|_| {
            log::error!("the thread mounting {} panicked", target.display());
            Err(nix::Error::EIO)
        })
    })
}

/// The errno an I/O error carries (EAGAIN for one that carries none).
fn io_errno(e: &std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN))
}

/// Detaches every mount stacked on `target`. Returns how many were removed.
///
/// Detaching is immediate: once this returns, no path reaches the mounts, and containerd
/// may remove the snapshot and the bundle. What is slow is the end of a filesystem, when
/// its last reference goes: for overlay, a sync of the whole filesystem that holds the upper
/// directory (containerd's root), which takes from a few to tens of milliseconds on a disk
/// other work keeps busy, and made up a good part of every Delete. So each mount is held
/// open while it is detached, which leaves the detach alone in umount2, and the references
/// are let go on a thread of their own, where the filesystem ends (and syncs) without
/// holding up the reply. A daemon exiting meanwhile still finishes it: the kernel runs the
/// release as the process exits.
pub fn unmount_all(target: &Path) -> usize {
    let mut held = Vec::new();
    // Bounded: a loop that never sees EINVAL must not spin forever.
    for _ in 0..16 {
        // O_PATH: a reference to the mount, not to anything in it; no permission needed.
        let pin = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(target)
            .ok();
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => held.extend(pin),
            Err(_) => break,
        }
    }
    let removed = held.len();
    if removed > 0 {
        // If no thread can be had, the references go here (the spawn drops its closure).
        let _ = std::thread::Builder::new()
            .name("umount".into())
            .spawn(move || drop(held));
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_lowerdir_becomes_relative_to_the_layers_common_directory() {
        let root = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";
        let lowers: Vec<String> = (1..=100).rev().map(|n| format!("{root}/{n}/fs")).collect();
        let data = format!(
            "index=off,workdir={root}/101/work,upperdir={root}/101/fs,lowerdir={}",
            lowers.join(":")
        );
        assert!(data.len() > 4096);
        let (dir, compacted) = compact_lowerdir(&data, 4096).unwrap().unwrap();
        assert_eq!(dir, Path::new(root));
        let relative: Vec<String> = (1..=100).rev().map(|n| format!("{n}/fs")).collect();
        assert_eq!(
            compacted,
            format!(
                "index=off,workdir={root}/101/work,upperdir={root}/101/fs,lowerdir={}",
                relative.join(":")
            )
        );
        // Short options stay as they are.
        assert!(compact_lowerdir("lowerdir=/a/1:/a/2", 4096).is_none());
        // Options too long with no lowerdir are left to the kernel's refusal.
        assert!(compact_lowerdir(&"x".repeat(5000), 4096).is_none());
        // Layers under nothing but `/`, or still too long: refused with E2BIG.
        let scattered = format!("lowerdir=/{}:/{}", "a".repeat(3000), "b".repeat(3000));
        assert_eq!(
            compact_lowerdir(&scattered, 4096).unwrap().err(),
            Some(nix::Error::E2BIG)
        );
        let long = format!(
            "lowerdir={}",
            (0..1000)
                .map(|n| format!("/x/{n:08}"))
                .collect::<Vec<_>>()
                .join(":")
        );
        assert_eq!(
            compact_lowerdir(&long, 4096).unwrap().err(),
            Some(nix::Error::E2BIG)
        );
    }

    #[test]
    fn stacked_mounts_are_all_detached_at_once() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("rootfs");
        std::fs::create_dir(&target).unwrap();
        let tmpfs = |size: &str| {
            mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(size),
            )
        };
        if tmpfs("size=1m").is_err() {
            eprintln!("skipped: mounting needs CAP_SYS_ADMIN");
            return;
        }
        std::fs::write(target.join("in-the-first"), b"x").unwrap();
        tmpfs("size=2m").unwrap();
        assert_eq!(unmount_all(&target), 2);
        // Nothing is mounted there any more: the directory is the plain one underneath.
        assert_eq!(
            std::fs::metadata(&target).unwrap().dev(),
            std::fs::metadata(dir.path()).unwrap().dev()
        );
        assert!(!target.join("in-the-first").exists());
        assert_eq!(unmount_all(&target), 0);
    }
}
