//! The container's process's own mount namespace, rooted at the container's rootfs.
//!
//! After this the process's whole filesystem is the rootfs with the spec's bind mounts and
//! tmpfs mounts at their destinations: nothing of the host is reachable, even by an absolute
//! path, even by code that escaped the wasm sandbox. The program's preopens are then opened
//! inside it (`Program::enter_own_root`). Kernel filesystems (`/proc`, `/sys`, devpts,
//! mqueue) are not mounted: no WASI call needs them. `/dev` is the spec's tmpfs with the
//! device nodes runc would make, and no other node opens (see `devices`).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;
use runtime::{Preopen, PreopenPlan, TmpfsMount};

use crate::child::devices;
use crate::error::{ShimError, ShimResult};
use crate::mount_options::{parse_options, remount_adding};

/// What goes at one destination inside the new root.
enum MountSource<'a> {
    /// A directory of the host, bound.
    Bind(&'a Preopen),
    /// A tmpfs of the container's own.
    Tmpfs(&'a TmpfsMount),
    /// The spec's tmpfs at `/dev`, where the container's device nodes go (see `devices`).
    Dev(&'a TmpfsMount),
}

/// What [`pivot_into`] made of the spec's mounts.
pub struct Pivoted {
    /// The tmpfs mounts left out, with why: a read-only rootfs (`ctr run --read-only`
    /// mounts a read-only view of the image) with no directory for one, where runc would
    /// fail the start. This shim ran such containers before it mounted tmpfs, and still does.
    pub left_out: Vec<(String, String)>,
    /// Whether the spec's `/dev` tmpfs was mounted, with the device nodes in it.
    pub dev: bool,
}

/// Makes a mount namespace whose root is `rootfs`, with the directories `preopens` holds
/// outside it bound at their destinations, its tmpfs mounts made there, the spec's `/dev`
/// tmpfs with the container's device nodes (see `devices`), the spec's file bind mounts
/// (docker's `/etc/hosts`, `/etc/resolv.conf`) where they can be, and the working directory
/// made if missing, as runc makes it.
pub fn pivot_into(rootfs: &Path, preopens: &PreopenPlan, spec: &Spec) -> ShimResult<Pivoted> {
    let mut left_out = Vec::new();
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| ShimError::internal("making a mount namespace", e))?;
    // Nothing done here may reach the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| ShimError::internal("making the mounts private", e))?;
    // pivot_root needs the new root to be a mount point (a plain directory from
    // `ctr run --rootfs` is not).
    bind(rootfs, rootfs)?;
    // Mount points are found and made inside the rootfs as if it were `/` already: the
    // image's symlinks resolve within it, so a link to `/etc` makes nothing on the host.
    let root = open_in_root(None, rootfs, OFlag::O_DIRECTORY)
        .map_err(|e| ShimError::internal(format!("opening the rootfs {}", rootfs.display()), e))?;
    let dev = devices::dev_tmpfs(spec).map(|options| TmpfsMount {
        guest: "/dev".to_string(),
        options,
    });
    // Parents before what goes inside them (a tmpfs at /data, a bind at /data/in), in
    // whatever order the spec lists them; otherwise in the spec's order (a stable sort).
    let mut mounts: Vec<(&str, MountSource)> = dev
        .iter()
        .map(|d| (d.guest.as_str(), MountSource::Dev(d)))
        .chain(
            preopens
                .outside(rootfs)
                .map(|p| (p.guest.as_str(), MountSource::Bind(p)))
                .chain(
                    preopens
                        .tmpfs
                        .iter()
                        .map(|t| (t.guest.as_str(), MountSource::Tmpfs(t))),
                ),
        )
        .collect();
    mounts.sort_by_key(|(guest, _)| Path::new(guest).components().count());
    let mut dev_top = None;
    for (guest, source) in mounts {
        // The nodes must go in the tmpfs mounted at the root's own /dev, not wherever an
        // image's link named /dev leads (the rootfs itself, for `/dev -> /`).
        if matches!(source, MountSource::Dev(_)) && !is_plain_directory_or_absent(&root, "dev") {
            log::warn!("/dev of the rootfs is not a directory: no device nodes");
            continue;
        }
        let target = match make_dir_in(&root, guest) {
            Ok(target) => target,
            Err(Errno::EROFS) if !matches!(source, MountSource::Bind(_)) => {
                left_out.push((
                    guest.to_string(),
                    "a read-only rootfs has no directory for it".to_string(),
                ));
                continue;
            }
            Err(e) => {
                return Err(ShimError::InvalidArgument(format!(
                    "making the mount point {guest} in the rootfs: {e}"
                )))
            }
        };
        match source {
            MountSource::Bind(preopen) => {
                bind(&preopen.host, &fd_path(&target))?;
                if preopen.read_only {
                    // The new mount is on top of the descriptor's directory: found again.
                    let top = open_in_root(Some(&root), Path::new(guest), OFlag::O_DIRECTORY)
                        .map_err(|e| {
                            ShimError::internal(format!("finding the mount at {guest}"), e)
                        })?;
                    remount_read_only(&fd_path(&top))?;
                }
            }
            MountSource::Tmpfs(tmpfs) | MountSource::Dev(tmpfs) => {
                mount_tmpfs(&fd_path(&target), tmpfs)?
            }
        }
        if matches!(source, MountSource::Dev(_)) {
            // Made now, in the fresh tmpfs, before anything is mounted below it.
            let dev = open_in_root(Some(&root), Path::new(guest), OFlag::O_DIRECTORY)
                .map_err(|e| ShimError::internal(format!("finding the mount at {guest}"), e))?;
            devices::make_nodes(&dev, spec)?;
            dev_top = Some(dev);
        }
    }
    bind_files(&root, spec);
    // No node in the image or a bound directory opens; those made in /dev do.
    devices::forbid_nodes(&root, rootfs, dev_top.as_ref().map(|_| rootfs.join("dev")))?;
    if let Some(dev) = &dev_top {
        devices::allow_nodes(dev)?;
    }
    // Best effort, as a missing one only means relative paths resolve at `/`.
    if let Some(cwd) = spec
        .process()
        .as_ref()
        .map(|p| p.cwd())
        .filter(|cwd| *cwd != Path::new("/"))
    {
        if let Err(e) = make_dir_in(&root, &cwd.to_string_lossy()) {
            log::debug!("working directory {}: {e}", cwd.display());
        }
    }
    std::env::set_current_dir(rootfs)
        .map_err(|e| ShimError::internal(format!("entering {}", rootfs.display()), e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| ShimError::internal("pivot_root", e))?;
    // The old root is stacked under the new one at `/`; detaching it leaves only the new.
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| ShimError::internal("detaching the host's root", e))?;
    std::env::set_current_dir("/").map_err(|e| ShimError::internal("entering /", e))?;
    let read_only = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if read_only {
        remount_read_only(Path::new("/"))?;
    }
    Ok(Pivoted {
        left_out,
        dev: dev_top.is_some(),
    })
}

/// An `O_PATH` descriptor of the directory `path` on the host (for tests).
#[cfg(test)]
pub(crate) fn open_directory(path: &Path) -> Result<OwnedFd, Errno> {
    open_in_root(None, path, OFlag::O_DIRECTORY)
}

/// Whether this process's root has the container's `/dev` tmpfs (an exec, in the main
/// process's mount namespace, asks): a mount of its own at `/dev`, with `/dev/null` in it.
pub fn has_device_tmpfs() -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (Ok(root), Ok(dev)) = (std::fs::metadata("/"), std::fs::metadata("/dev")) else {
        return false;
    };
    root.dev() != dev.dev()
        && std::fs::symlink_metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device())
}

/// Mounts a tmpfs with the spec's options at `target`. Options the kernel refuses (a bad
/// `size=`) are the spec's fault.
fn mount_tmpfs(target: &Path, tmpfs: &TmpfsMount) -> ShimResult<()> {
    let (flags, data) = parse_options(&tmpfs.options);
    // Only what a new tmpfs takes: the spec has no business binding or remounting here.
    let flags = flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    let data = (!data.is_empty()).then_some(data.as_str());
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, data).map_err(|e| {
        ShimError::InvalidArgument(format!(
            "mounting a tmpfs at {} with options {:?}: {e}",
            tmpfs.guest, tmpfs.options
        ))
    })
}

/// A descriptor of `path` as a detached mount of its own, read-only (and nosuid, nodev):
/// reachable through the descriptor alone, never by a path, and with no way up (`..` at a
/// detached mount's root stays there), so holding it after the root changes shows the
/// process that one directory of the host and nothing around it. Made while the process
/// still may (`open_tree` needs CAP_SYS_ADMIN).
pub fn detached_read_only(path: &Path) -> std::io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: open_tree with a NUL-terminated path; the result is a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor open_tree just gave this process.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attributes = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        // Out of the host mount's peer group: nothing mounted there reaches it.
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: mount_setattr on the descriptor's own mount (AT_EMPTY_PATH), with a
    // mount_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attributes as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Whether this kernel makes detached mounts (`open_tree`, `mount_setattr`: Linux 5.12),
/// which a server's switch to optimized code needs (see [`detached_read_only`]). Asked of
/// the kernel once per process.
pub fn handover_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| detached_read_only(Path::new("/")).is_ok())
}

/// The path through which a mount call reaches the directory or file `fd` holds.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Opens `path` (`O_PATH` and `flags`): inside `root` as if it were `/` (symlinks and `..`
/// cannot lead out of it), or on the host without one.
fn open_in_root(root: Option<&OwnedFd>, path: &Path, flags: OFlag) -> Result<OwnedFd, Errno> {
    let (dir, resolve) = match root {
        Some(root) => (
            root.as_raw_fd(),
            ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        ),
        None => (libc::AT_FDCWD, ResolveFlag::empty()),
    };
    let relative = match root {
        Some(_) => path.strip_prefix("/").unwrap_or(path),
        None => path,
    };
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | flags)
        .mode(Mode::empty())
        .resolve(resolve);
    let fd = nix::fcntl::openat2(dir, relative, how)?;
    // SAFETY: openat2 returned a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdir -p` of the container path `guest` inside `root`, each level resolved within it; a
/// symlink whose target is missing is followed (within the root) and its target made, as
/// runc makes mount points.
fn make_dir_in(root: &OwnedFd, guest: &str) -> Result<OwnedFd, Errno> {
    /// Symlinks followed at most, as the kernel's own bound on a path.
    const MAX_LINKS: usize = 40;
    let components = |path: &Path| -> Vec<OsString> {
        path.components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    };
    let mut pending: VecDeque<OsString> = components(Path::new(guest)).into();
    let mut made = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            made.pop();
            continue;
        }
        let parent = open_in_root(Some(root), &made, OFlag::O_DIRECTORY)?;
        // mkdirat never follows a symlink in its last component: an existing name (a
        // directory, or a link to one) fails with EEXIST and is resolved below.
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let candidate = made.join(&name);
        match open_in_root(Some(root), &candidate, OFlag::O_DIRECTORY) {
            Ok(_) => made = candidate,
            // A symlink to somewhere not there yet: make its target, inside the root.
            Err(Errno::ENOENT) => {
                let target = nix::fcntl::readlinkat(Some(parent.as_raw_fd()), name.as_os_str())?;
                links += 1;
                if links > MAX_LINKS {
                    return Err(Errno::ELOOP);
                }
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    made = PathBuf::from("/");
                }
                for component in components(&target).into_iter().rev() {
                    pending.push_front(component);
                }
            }
            Err(e) => return Err(e),
        }
    }
    open_in_root(Some(root), &made, OFlag::O_DIRECTORY)
}

/// Whether `name` in the directory `root` is a directory itself (not a link to one), or
/// not there.
fn is_plain_directory_or_absent(root: &OwnedFd, name: &str) -> bool {
    match nix::sys::stat::fstatat(
        Some(root.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        Err(e) => e == Errno::ENOENT,
    }
}

/// The file at container path `guest` inside `root`, made empty if missing, to bind a file
/// onto. Never follows a symlink out of the root.
fn make_file_in(root: &OwnedFd, guest: &str) -> Result<OwnedFd, Errno> {
    let path = Path::new(guest);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Errno::EINVAL);
    };
    let parent = make_dir_in(root, &parent.to_string_lossy())?;
    // O_CREAT with O_EXCL never follows a symlink: an existing name is opened below instead.
    match nix::fcntl::openat(
        Some(parent.as_raw_fd()),
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    ) {
        // SAFETY: a fresh descriptor, closed at once.
        Ok(fd) => drop(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let file = open_in_root(Some(root), path, OFlag::empty())?;
    let is_file = nix::sys::stat::fstat(file.as_raw_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .unwrap_or(false);
    if is_file {
        Ok(file)
    } else {
        Err(Errno::EISDIR)
    }
}

fn bind(source: &Path, target: &Path) -> ShimResult<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        ShimError::InvalidArgument(format!(
            "binding {} at {}: {e}",
            source.display(),
            target.display()
        ))
    })
}

/// A bind remount of `target` read-only, keeping the flags it has (`nodev` among them).
fn remount_read_only(target: &Path) -> ShimResult<()> {
    remount_adding(target, MsFlags::MS_RDONLY)
        .map_err(|e| ShimError::internal(format!("making {} read-only", target.display()), e))
}

/// Binds the spec's bind mounts of single files. They are not preopens (WASI preopens
/// directories), but through the rootfs a program reads `/etc/hosts` and the like as a
/// Linux process would. Best effort: a file that cannot be placed is logged and left out.
fn bind_files(root: &OwnedFd, spec: &Spec) {
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let is_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().as_deref() else {
            continue;
        };
        if !is_bind || !source.is_file() {
            continue;
        }
        let Some(guest) = m.destination().to_str() else {
            continue;
        };
        let read_only = m
            .options()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o == "ro");
        let result = match make_file_in(root, guest) {
            Ok(target) => bind(source, &fd_path(&target)).and_then(|()| {
                if !read_only {
                    return Ok(());
                }
                let top = open_in_root(Some(root), Path::new(guest), OFlag::empty())
                    .map_err(|e| ShimError::internal(format!("finding the mount at {guest}"), e))?;
                remount_read_only(&fd_path(&top))
            }),
            Err(e) => Err(ShimError::internal("no place for it in the rootfs", e)),
        };
        if let Err(e) = result {
            log::debug!("file mount {guest} left out: {}", crate::error::render(&e));
        }
    }
}
