//! mount(8)-style options as the kernel takes them: flags for `mount(2)` and the rest as the
//! filesystem's data string. Shared by the rootfs mounts containerd passes (`task::mount`)
//! and the tmpfs mounts a container's process makes in its own root (`child::root`).

use std::path::Path;

use nix::mount::MsFlags;

/// The per-mount flags the mount at `path` has now, as `mount(2)` takes them. A bind remount
/// sets all of them at once, so one that changes a single flag passes these along: a
/// read-only remount that did not would take `nodev` off (see `child::devices`).
pub fn flags_of_mount(path: &Path) -> nix::Result<MsFlags> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let have = statvfs(path)?.flags();
    let mut flags = MsFlags::empty();
    for (has, keep) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(has) {
            flags |= keep;
        }
    }
    Ok(flags)
}

/// A bind remount of the mount at `path` with `added` set and every flag it has kept (see
/// [`flags_of_mount`]): how a read-only or `nodev` remount leaves the mount's other flags.
pub fn remount_adding(path: &Path, added: MsFlags) -> nix::Result<()> {
    let flags = flags_of_mount(path)?;
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        flags | added | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
        None::<&str>,
    )
}

/// Splits `options` into kernel flags and the filesystem's data string. Propagation options
/// (`rprivate`, `shared`...) are not data; the callers set propagation themselves.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let none = MsFlags::empty();
        let (set, clear) = match option.as_str() {
            "ro" => (MsFlags::MS_RDONLY, none),
            "rw" => (none, MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, none),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, none),
            "nosuid" => (MsFlags::MS_NOSUID, none),
            "suid" => (none, MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, none),
            "dev" => (none, MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, none),
            "exec" => (none, MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, none),
            "atime" => (none, MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, none),
            "diratime" => (none, MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, none),
            "norelatime" => (none, MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, none),
            "nostrictatime" => (none, MsFlags::MS_STRICTATIME),
            "lazytime" => (MsFlags::MS_LAZYTIME, none),
            "nolazytime" => (none, MsFlags::MS_LAZYTIME),
            "sync" => (MsFlags::MS_SYNCHRONOUS, none),
            "async" => (none, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, none),
            "remount" => (MsFlags::MS_REMOUNT, none),
            "defaults" | "mand" | "nomand" => (none, none),
            // Propagation, which the callers set themselves.
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => (none, none),
            // What runc does itself rather than pass to the kernel as data (copy-up, idmaps,
            // recursive attributes, nosymfollow): left out here, where the filesystem would
            // refuse them as data, rather than failing the mount.
            option if is_runtime_only(option) => (none, none),
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

/// Options runc handles itself, none of them filesystem data.
fn is_runtime_only(option: &str) -> bool {
    const RECURSIVE: [&str; 20] = [
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "rnoatime",
        "ratime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
        "ridmap",
        "idmap",
    ];
    matches!(
        option,
        "tmpcopyup" | "nosymfollow" | "symfollow" | "copy-symlink"
    ) || RECURSIVE.contains(&option)
        || option.starts_with("idmap=")
        || option.starts_with("ridmap=")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(options: &[&str]) -> Vec<String> {
        options.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) =
            parse_options(&strings(&["ro", "rbind", "index=off", "lowerdir=/a:/b"]));
        assert!(flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC));
        assert_eq!(data, "index=off,lowerdir=/a:/b");
    }

    /// containerd's default `/run` and docker's `--tmpfs` options: every flag the kernel
    /// would refuse as tmpfs data is a flag.
    #[test]
    fn tmpfs_options_leave_only_tmpfs_data() {
        let (flags, data) = parse_options(&strings(&[
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rprivate",
            "noexec",
            "nodev",
        ]));
        assert_eq!(
            flags,
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV
        );
        assert_eq!(data, "mode=755,size=65536k");
        // A later option undoes an earlier one, as mount(8) and runc read them; what runc
        // does itself is not data.
        let (flags, data) =
            parse_options(&strings(&["noexec", "exec", "tmpcopyup", "rro", "size=1m"]));
        assert_eq!(flags, MsFlags::empty());
        assert_eq!(data, "size=1m");
    }
}
