//! Which device nodes a container's process can open: those runc gives a Linux container,
//! and no others.
//!
//! runc mounts the spec's tmpfs at `/dev`, makes the standard nodes in it (`null`, `zero`,
//! `full`, `random`, `urandom`, `tty`) and the spec's `linux.devices`, and relies on the
//! devices cgroup to refuse every other node, such as one an image carries in a layer
//! (`mknod` in a Dockerfile, a tar entry) or one under a bind-mounted host directory. This
//! process does not program the devices cgroup (on v2 that is an eBPF program), so it gets
//! the same outcome from the mounts instead: everything in the new root is `nodev`, except
//! the `/dev` tmpfs made here, which holds only the nodes runc would allow. A program that
//! writes to `/dev/null` then discards its output instead of filling a file in the
//! container's writable layer.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};

use crate::error::{ShimError, ShimResult};
use crate::mount_options::remount_adding;

/// The nodes every container gets, as runc makes them: path, major, minor.
const STANDARD: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Makes every mount of the new root `nodev`: `root` (the rootfs at `rootfs`, on the
/// host's side) and all below it. Before Linux 5.12 (no `mount_setattr`) each of those
/// mounts, as `/proc/self/mountinfo` lists them (a recursive bind brings the source's
/// submounts along: a bound host `/` its devtmpfs), is remounted with `nodev` added, but
/// `dev`, the `/dev` tmpfs, which has its nodes.
pub(crate) fn forbid_nodes(root: &OwnedFd, rootfs: &Path, dev: Option<PathBuf>) -> ShimResult<()> {
    match set_nodev(root, true, true) {
        Err(Errno::ENOSYS) => {}
        other => {
            return other.map_err(|e| ShimError::internal("making the root's mounts nodev", e))
        }
    }
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| ShimError::internal("reading /proc/self/mountinfo", e))?;
    for point in mount_points_below(&table, rootfs) {
        if Some(&point) == dev.as_ref() {
            continue;
        }
        remount_adding(&point, MsFlags::MS_NODEV)
            .map_err(|e| ShimError::internal(format!("making {} nodev", point.display()), e))?;
    }
    Ok(())
}

/// The mount points in `table` (mountinfo's format) at or below `dir`, parents first.
fn mount_points_below(table: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(runtime::unescape_octal(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| p.components().count());
    points.dedup();
    points
}

/// Takes `nodev` off the `/dev` tmpfs (its mount alone), which [`forbid_nodes`] set with
/// the rest. Without `mount_setattr` the fallback never set it there.
pub(crate) fn allow_nodes(dev: &OwnedFd) -> ShimResult<()> {
    match set_nodev(dev, false, false) {
        Ok(()) | Err(Errno::ENOSYS) => Ok(()),
        Err(e) => Err(ShimError::internal("making /dev a place for nodes", e)),
    }
}

fn set_nodev(mount_point: &OwnedFd, nodev: bool, recursive: bool) -> Result<(), Errno> {
    let (attr_set, attr_clr) = if nodev {
        (libc::MOUNT_ATTR_NODEV, 0)
    } else {
        (0, libc::MOUNT_ATTR_NODEV)
    };
    let attributes = libc::mount_attr {
        attr_set,
        attr_clr,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr on a descriptor we hold, with a valid attribute struct of the
    // size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount_point.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attributes as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// The spec's tmpfs at `/dev`, if it has one: where runc makes the container's nodes.
pub(crate) fn dev_tmpfs(spec: &Spec) -> Option<Vec<String>> {
    spec.mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .rev()
        .find(|m| m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.options().clone().unwrap_or_default())
}

/// Makes the standard nodes and the spec's `linux.devices` in `dev` (the container's
/// `/dev` tmpfs, just mounted, with nothing below it yet). A spec device outside `/dev`, or
/// one that cannot be made, is left out with a warning (runc would fail the start for the
/// latter; a device is rarely what a wasm program needs, and the log names it); the
/// standard ones must be made.
pub(crate) fn make_nodes(dev: &OwnedFd, spec: &Spec) -> ShimResult<()> {
    for (node, major, minor) in STANDARD {
        let standard = Node {
            kind: SFlag::S_IFCHR,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        make_node(dev, Path::new(node), &standard)
            .map_err(|e| ShimError::internal(format!("making /dev/{node}"), e))?;
    }
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    for device in &devices {
        if let Err(why) = make_spec_device(dev, device) {
            log::warn!("device {} left out: {why}", device.path().display());
        }
    }
    Ok(())
}

fn make_spec_device(dev: &OwnedFd, device: &LinuxDevice) -> Result<(), String> {
    let below = below_dev(device.path()).ok_or_else(|| "not a path below /dev".to_string())?;
    let kind = match device.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        other => return Err(format!("device type {other:?}")),
    };
    let mode = device.file_mode().unwrap_or(0o666) & 0o7777;
    let node = Node {
        kind,
        major: u64::try_from(device.major()).map_err(|_| "a negative major number")?,
        minor: u64::try_from(device.minor()).map_err(|_| "a negative minor number")?,
        mode,
        uid: device.uid().unwrap_or(0),
        gid: device.gid().unwrap_or(0),
    };
    make_node(dev, below, &node).map_err(|e| e.to_string())
}

/// `path` relative to `/dev`, if it names something below it (and never climbs out).
fn below_dev(path: &Path) -> Option<&Path> {
    path.strip_prefix("/dev").ok().filter(|p| {
        !p.as_os_str().is_empty()
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
    })
}

/// A device node to make: what `mknod` takes, and its owner.
struct Node {
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// `mknod` of `path` (relative, below `dev`) with its parents, with the node's mode and
/// owner.
fn make_node(dev: &OwnedFd, path: &Path, node: &Node) -> Result<(), Errno> {
    let mut parent = PathBuf::new();
    if let Some(dirs) = path.parent() {
        for component in dirs.components() {
            parent.push(component);
            match nix::sys::stat::mkdirat(
                Some(dev.as_raw_fd()),
                &parent,
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
    }
    match mknodat(
        Some(dev.as_raw_fd()),
        path,
        node.kind,
        Mode::from_bits_truncate(node.mode),
        makedev(node.major, node.minor),
    ) {
        Ok(()) => {}
        // Made already (a spec device listed twice, or one of the standard ones): the
        // first one stays, as runc keeps it.
        Err(Errno::EEXIST) => return Ok(()),
        Err(e) => return Err(e),
    }
    // The umask narrowed the mode, and the owner is the spec's: set both as given.
    nix::sys::stat::fchmodat(
        Some(dev.as_raw_fd()),
        path,
        Mode::from_bits_truncate(node.mode),
        // Just made by mknodat, in a tmpfs nothing else has written to: not a link.
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )?;
    let name =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: fchownat on a name below a directory descriptor we hold.
    let rc = unsafe {
        libc::fchownat(
            dev.as_raw_fd(),
            name.as_ptr(),
            node.uid,
            node.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    #[test]
    fn the_fallback_finds_every_mount_below_the_rootfs_parents_first() {
        let table = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
90 22 0:50 / /run/c/rootfs rw - overlay overlay rw
91 90 8:1 / /run/c/rootfs rw - ext4 /dev/sda1 rw
93 91 0:5 / /run/c/rootfs/host/dev rw - devtmpfs udev rw
92 91 8:1 /srv /run/c/rootfs/host rw - ext4 /dev/sda1 rw
94 91 0:60 / /run/c/rootfs/my\\040dir rw - tmpfs tmpfs rw
95 22 0:61 / /run/c/rootfs-other rw - tmpfs tmpfs rw
";
        let points = mount_points_below(table, Path::new("/run/c/rootfs"));
        assert_eq!(
            points,
            [
                "/run/c/rootfs",
                "/run/c/rootfs/host",
                "/run/c/rootfs/my dir",
                "/run/c/rootfs/host/dev",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn spec_devices_go_below_dev_only() {
        assert_eq!(below_dev(Path::new("/dev/fuse")), Some(Path::new("fuse")));
        assert_eq!(
            below_dev(Path::new("/dev/net/tun")),
            Some(Path::new("net/tun"))
        );
        for outside in [
            "/dev",
            "/dev/",
            "/devices/x",
            "/etc/x",
            "/dev/../etc/x",
            "dev/x",
        ] {
            assert_eq!(below_dev(Path::new(outside)), None, "{outside}");
        }
    }

    #[test]
    fn the_standard_nodes_and_the_specs_are_made_as_given() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mknod needs CAP_MKNOD");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dev = crate::child::root::open_directory(dir.path()).unwrap();
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": { "devices": [
                { "path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200,
                  "fileMode": 0o600, "uid": 1000, "gid": 1001 },
                { "path": "/etc/escape", "type": "c", "major": 1, "minor": 3 },
                { "path": "/dev/../escape", "type": "c", "major": 1, "minor": 3 }
            ]}
        }))
        .unwrap();
        make_nodes(&dev, &spec).unwrap();
        for (name, major, minor) in STANDARD {
            let meta = std::fs::symlink_metadata(dir.path().join(name)).unwrap();
            assert!(meta.file_type().is_char_device(), "{name}");
            assert_eq!(meta.permissions().mode() & 0o7777, 0o666, "{name}");
            assert_eq!(meta.rdev(), makedev(major, minor), "{name}");
        }
        let tun = std::fs::symlink_metadata(dir.path().join("net/tun")).unwrap();
        assert!(tun.file_type().is_char_device());
        assert_eq!(tun.permissions().mode() & 0o7777, 0o600);
        assert_eq!((tun.uid(), tun.gid()), (1000, 1001));
        assert_eq!(tun.rdev(), makedev(10, 200));
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["full", "net", "null", "random", "tty", "urandom", "zero"]
        );
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }
}
