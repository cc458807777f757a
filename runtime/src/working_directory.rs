//! The spec's working directory (`ctr run --cwd`, `docker run -w`, `WORKDIR`) for programs
//! built on wasi-libc, which has no working directory of its own.
//!
//! wasi-libc's `getcwd` is always `/`, and it resolves a relative path `x` exactly as the
//! absolute `/x`: it strips leading `/` and `./` from paths and from preopen names alike,
//! then takes the preopen whose name is the longest matching prefix, the one registered
//! last among equals. Relative paths can therefore reach the working directory only through
//! a preopen whose stripped name is as empty as `/`'s, registered after it: `.`, the
//! wasmtime CLI's convention. Left at that, `.` would also take every absolute path that no
//! longer preopen name matches (`/etc/x` would open `<cwd>/etc/x`). So the directories it
//! would hide are preopened again under their own names:
//! - the working directory under its absolute name, for absolute paths into it;
//! - each top-level directory of the rootfs under `/NAME`, unless the working directory has
//!   an entry of that name (there relative paths win: `NAME/x` is `<cwd>/NAME/x`, as on
//!   Linux, and `/NAME/x` is looked up in the working directory too) or a mount already has
//!   that name;
//! - each mount below the working directory under its path relative to it, so that
//!   `data/x` in `/app` reaches the volume at `/app/data`, not the mount point beneath it.
//!
//! What still differs from Linux, with a working directory other than `/`: an absolute path
//! to a *file* at the top of the rootfs, or under a top-level name the working directory
//! shares, is looked up in the working directory.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::preopen::{NamedDirectory, PinnedPreopens, PreopenPlan};
use crate::RuntimeError;

/// More top-level entries than this in a rootfs are not preopened again (a rootfs is a
/// handful of directories; this bounds the work and the descriptors of a strange one).
const MAX_TOP_LEVEL: usize = 256;

impl PreopenPlan {
    /// Opens every visible preopen's directory, and what makes `cwd` the working directory
    /// (see [`crate::working_directory`]); see [`PinnedPreopens`]. Without a `/proc` (a host
    /// outside Linux containers' usual setup) the host paths are used as they are.
    pub fn pin(&self, cwd: &str) -> Result<PinnedPreopens, RuntimeError> {
        let mut pinned = self.pin_visible()?;
        pinned.working_directory = pin(self, cwd, &mut pinned);
        Ok(pinned)
    }

    /// [`PreopenPlan::pin`] for a process whose root is the container's rootfs (a relocated
    /// plan, after pivot_root): the directories are opened by their paths there, which
    /// cannot lead out of the container, so WASI contexts reach them by those paths and
    /// need no `/proc`.
    pub fn pin_in_own_root(&self, cwd: &str) -> Result<PinnedPreopens, RuntimeError> {
        let mut pinned = self.pin_visible_in_own_root()?;
        pinned.working_directory = pin(self, cwd, &mut pinned);
        Ok(pinned)
    }
}

/// The lexically normal form of an absolute `cwd` (`.` dropped, `..` taken back, no
/// trailing `/`); empty for `/`. Symlinks are resolved later, inside the container's root.
fn normalize(cwd: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(cwd).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("/{}", parts.join("/"))
    }
}

/// Opens `relative` as a directory inside the directory `root` holds, resolved as if `root`
/// were `/` (symlinks and `..` cannot lead out of it). `None` when there is no such
/// directory.
fn open_dir_in(root: &OwnedFd, relative: &str) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root.as_raw_fd(), relative, how)?;
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The preopens that make `cwd` the working directory of a wasi-libc program, in the order
/// they must be registered after the plan's visible preopens (see the module's doc). Opens
/// what it needs inside the preopens `pinned` holds and keeps the descriptors there. Empty
/// for `/`, for a directory the program cannot see or that does not exist (relative paths
/// then resolve at `/`), and without `/proc` (where nothing can be opened safely).
pub(crate) fn pin(
    plan: &PreopenPlan,
    cwd: &str,
    pinned: &mut PinnedPreopens,
) -> Vec<NamedDirectory> {
    let cwd = normalize(cwd);
    if cwd.is_empty() {
        return Vec::new();
    }
    if pinned.fds.len() != pinned.paths.len() {
        log::debug!("working directory {cwd}: no /proc/self/fd, relative paths resolve at /");
        return Vec::new();
    }
    let Some((holder_index, rest)) = plan.visible_index_of(&cwd) else {
        log::debug!("working directory {cwd} is not visible to the program");
        return Vec::new();
    };
    let Some(holder) = plan.visible().nth(holder_index) else {
        return Vec::new();
    };
    let mut named = Vec::new();
    let cwd_path = if rest.is_empty() {
        // A mount's destination: the mount itself, already preopened under that name.
        pinned.paths[holder_index].clone()
    } else {
        match open_dir_in(&pinned.fds[holder_index], rest) {
            Ok(fd) => {
                let path = pinned.path_of(holder_index, rest, &fd);
                pinned.fds_after.push(fd);
                named.push(NamedDirectory {
                    name: cwd.clone(),
                    path: path.clone(),
                    read_only: holder.read_only,
                });
                path
            }
            Err(Errno::ENOENT | Errno::ENOTDIR) => {
                log::debug!(
                    "working directory {cwd} does not exist in the container; relative paths \
                     resolve at /"
                );
                return Vec::new();
            }
            Err(e) => {
                log::warn!("working directory {cwd}: {e}; relative paths resolve at /");
                return Vec::new();
            }
        }
    };
    named.push(NamedDirectory {
        name: ".".into(),
        path: cwd_path.clone(),
        read_only: holder.read_only,
    });
    named.extend(top_level_directories(plan, &cwd, &cwd_path, pinned));
    named.extend(mounts_below(plan, &cwd, pinned));
    named
}

/// The rootfs's top-level directories that `.` would hide from absolute paths (see the
/// module's doc), opened inside the rootfs.
fn top_level_directories(
    plan: &PreopenPlan,
    cwd: &str,
    cwd_path: &Path,
    pinned: &mut PinnedPreopens,
) -> Vec<NamedDirectory> {
    if plan.rootfs_hidden {
        return Vec::new();
    }
    let rootfs = &plan.preopens[0];
    let entries = match std::fs::read_dir(&pinned.paths[0]) {
        Ok(entries) => entries,
        Err(e) => {
            log::warn!("listing the rootfs for the working directory {cwd}: {e}");
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    if names.len() > MAX_TOP_LEVEL {
        log::warn!(
            "the rootfs has {} top-level entries; absolute paths under all but the first \
             {MAX_TOP_LEVEL} resolve in the working directory {cwd}",
            names.len()
        );
        names.truncate(MAX_TOP_LEVEL);
    }
    let mut named = Vec::new();
    for name in names {
        let absolute = format!("/{name}");
        let has_mount = plan.visible().any(|p| p.guest == absolute);
        let is_cwd = absolute == cwd;
        // Relative paths win a name the working directory has (not following a symlink
        // there: the entry's name is what wasi-libc compares).
        let cwd_has_it = cwd_path.join(&name).symlink_metadata().is_ok();
        if has_mount || is_cwd || cwd_has_it {
            continue;
        }
        // Files and dangling links cannot be preopened: skipped.
        if let Ok(fd) = open_dir_in(&pinned.fds[0], &name) {
            named.push(NamedDirectory {
                name: absolute,
                path: pinned.path_of(0, &name, &fd),
                read_only: rootfs.read_only,
            });
            pinned.fds_after.push(fd);
        }
    }
    named
}

/// Each visible mount below `cwd`, under its path relative to it.
fn mounts_below(plan: &PreopenPlan, cwd: &str, pinned: &PinnedPreopens) -> Vec<NamedDirectory> {
    plan.visible()
        .zip(pinned.paths.iter())
        .filter_map(|(mount, path)| {
            let relative = mount.guest.strip_prefix(cwd)?.strip_prefix('/')?;
            (!relative.is_empty()).then(|| NamedDirectory {
                name: relative.to_string(),
                path: path.clone(),
                read_only: mount.read_only,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preopen::bind;

    /// The names of the preopens the working directory added, in order.
    fn names(pinned: &PinnedPreopens) -> Vec<&str> {
        pinned
            .working_directory()
            .iter()
            .map(|n| n.name.as_str())
            .collect()
    }

    /// `file` read through the added preopen called `name`.
    fn read(pinned: &PinnedPreopens, name: &str, file: &str) -> String {
        let dir = pinned
            .working_directory()
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no preopen {name} in {:?}", names(pinned)));
        std::fs::read_to_string(dir.path.join(file)).unwrap()
    }

    #[test]
    fn cwd_is_normalized_lexically() {
        assert_eq!(normalize("/"), "");
        assert_eq!(normalize("/app/./sub/"), "/app/sub");
        assert_eq!(normalize("/app/../etc"), "/etc");
        assert_eq!(normalize("/../.."), "");
    }

    #[test]
    fn the_working_directory_gets_dot_its_name_and_what_dot_would_hide() {
        let rootfs = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        for dir in ["srv/app/lib", "etc", "lib", "tmp"] {
            std::fs::create_dir_all(rootfs.path().join(dir)).unwrap();
        }
        std::fs::write(rootfs.path().join("srv/app/marker"), "cwd").unwrap();
        std::fs::write(rootfs.path().join("etc/marker"), "etc").unwrap();
        std::fs::write(rootfs.path().join("top-file"), "file").unwrap();
        std::os::unix::fs::symlink("etc", rootfs.path().join("etc-link")).unwrap();
        std::fs::create_dir(rootfs.path().join("srv/app/volume")).unwrap();
        std::fs::write(data.path().join("marker"), "volume").unwrap();
        let plan = PreopenPlan::from_mounts(
            rootfs.path(),
            true,
            &[bind("/srv/app/volume", data.path(), &["rbind"])],
        )
        .unwrap();
        assert!(plan.pin("/").unwrap().working_directory().is_empty());
        let pinned = plan.pin("/srv/app/").unwrap();
        // The absolute name, `.`, the rootfs's top-level directories but `lib` (the working
        // directory has one: relative `lib/x` wins) and files, and the mount below, by its
        // relative name.
        assert_eq!(
            names(&pinned),
            [
                "/srv/app",
                ".",
                "/etc",
                "/etc-link",
                "/srv",
                "/tmp",
                "volume"
            ]
        );
        assert_eq!(read(&pinned, ".", "marker"), "cwd");
        assert_eq!(read(&pinned, "/srv/app", "marker"), "cwd");
        assert_eq!(read(&pinned, "/etc", "marker"), "etc");
        // A top-level symlink is followed inside the rootfs.
        assert_eq!(read(&pinned, "/etc-link", "marker"), "etc");
        assert_eq!(read(&pinned, "volume", "marker"), "volume");
        let cwd = &pinned.working_directory()[1];
        assert!(
            cwd.read_only,
            "the rootfs is read-only, so is what is in it"
        );
        assert!(!pinned.working_directory()[6].read_only);
    }

    #[test]
    fn a_mount_as_working_directory_is_the_mount_again() {
        let rootfs = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("data")).unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(data.path().join("marker"), "volume").unwrap();
        let plan = PreopenPlan::from_mounts(
            rootfs.path(),
            false,
            &[bind("/data", data.path(), &["rbind", "ro"])],
        )
        .unwrap();
        let pinned = plan.pin("/data").unwrap();
        // No second `/data` (the mount has that name) and no rootfs `/data` under it.
        assert_eq!(names(&pinned), [".", "/etc"]);
        assert_eq!(read(&pinned, ".", "marker"), "volume");
        assert!(pinned.working_directory()[0].read_only);
    }

    #[test]
    fn a_missing_hidden_or_escaping_working_directory_adds_nothing() {
        let outside = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), rootfs.path().join("app")).unwrap();
        std::fs::create_dir(rootfs.path().join("real")).unwrap();
        let mut plan = PreopenPlan::from_mounts(rootfs.path(), false, &[]).unwrap();
        assert!(plan.pin("/nope").unwrap().working_directory().is_empty());
        // The absolute symlink target does not exist inside the rootfs.
        assert!(plan.pin("/app").unwrap().working_directory().is_empty());
        assert!(!plan.pin("/real").unwrap().working_directory().is_empty());
        plan.rootfs_hidden = true;
        assert!(plan.pin("/real").unwrap().working_directory().is_empty());
    }
}
