//! The rootfs mounts containerd passes in Create, mounted at `bundle/rootfs` and removed on
//! Delete (or by `shim delete` after a crash).

use std::path::{Path, PathBuf};

use containerd_shim_protos::api::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{ShimError, ShimResult};

/// Splits mount(8)-style options into kernel flags and the filesystem's data string.
fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "suid" | "dev" | "exec" | "async" | "defaults" => (MsFlags::empty(), MsFlags::empty()),
            other => {
                data.push(other.to_string());
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    (flags, data.join(","))
}

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
        .map_err(|e| ShimError::Internal(format!("creating {}: {e}", target.display())))?;
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
        let result = mount(Some(m.source.as_str()), &place, fstype, flags, data);
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
            return Err(ShimError::Internal(format!(
                "mounting rootfs ({} {} on {}): {e}",
                m.type_,
                m.source,
                place.display()
            )));
        }
    }
    Ok(())
}

/// Detaches every mount stacked on `target`. Returns how many were removed.
pub fn unmount_all(target: &Path) -> usize {
    let mut removed = 0;
    // Bounded: a loop that never sees EINVAL must not spin forever.
    for _ in 0..16 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => removed += 1,
            Err(_) => break,
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "rbind", "index=off", "lowerdir=/a:/b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC));
        assert_eq!(data, "index=off,lowerdir=/a:/b");
    }
}
