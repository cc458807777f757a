//! `HOME` for a spec that does not set it, as runc sets it: the home directory of the spec's
//! uid in the container's own `/etc/passwd`, or `/` when the file or the entry is missing.
//! Neither docker nor CRI nor ctr put `HOME` in the spec; under runc every container
//! process has it all the same, and programs rely on it (a home-relative config or cache
//! path, Python's `expanduser`, Rust's `home_dir`).

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::PreopenPlan;

/// What runc falls back to: the root of the container.
const DEFAULT_HOME: &str = "/";

/// How much of `/etc/passwd` is read: far more than any real one, and a bound on what an
/// image can make Create read.
const PASSWD_LIMIT: u64 = 1 << 20;

/// The home directory of `uid` as the program's filesystem (`preopens`) has it.
pub(crate) fn home_of(preopens: &PreopenPlan, uid: u32) -> String {
    read_passwd(preopens)
        .and_then(|passwd| home_in(&passwd, uid))
        .unwrap_or_else(|| DEFAULT_HOME.to_string())
}

/// The container's `/etc/passwd`, opened inside the preopen that holds it as if that were
/// `/` (an image's symlink cannot lead to a host file), never blocking on a FIFO. `None`
/// when there is none or it cannot be read.
fn read_passwd(preopens: &PreopenPlan) -> Option<String> {
    let (preopen, relative) = preopens.locate("/etc/passwd")?;
    let root = std::fs::File::open(&preopen.host).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .mode(Mode::empty())
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(std::os::fd::AsRawFd::as_raw_fd(&root), relative, how).ok()?;
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(PASSWD_LIMIT).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The home field of the first well-formed `passwd` line whose uid is `uid`.
fn home_in(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.trim().split(':').collect();
        match fields.as_slice() {
            [_name, _password, line_uid, _gid, _gecos, home, ..]
                if line_uid.parse::<u32>().ok() == Some(uid) =>
            {
                Some(home.to_string())
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "# a comment\n\
        root:x:0:0:root:/root:/bin/bash\n\
        broken line\n\
        short:x:7\n\
        app:x:1000:1000:App,,,:/home/app:/bin/sh\n\
        again:x:1000:1000::/elsewhere:/bin/sh\n\
        nohome:x:1001:1001:::/bin/sh\n";

    #[test]
    fn the_first_entry_of_the_uid_gives_the_home() {
        assert_eq!(home_in(PASSWD, 0).as_deref(), Some("/root"));
        assert_eq!(home_in(PASSWD, 1000).as_deref(), Some("/home/app"));
        // An empty home field is what the file says (runc passes it on too).
        assert_eq!(home_in(PASSWD, 1001).as_deref(), Some(""));
        assert_eq!(home_in(PASSWD, 7), None);
        assert_eq!(home_in(PASSWD, 4242), None);
        assert_eq!(home_in("", 0), None);
    }

    fn plan_of(rootfs: &std::path::Path) -> PreopenPlan {
        PreopenPlan::from_mounts(rootfs, false, &[]).unwrap()
    }

    #[test]
    fn the_passwd_of_the_rootfs_is_read_and_a_missing_one_gives_the_root() {
        let rootfs = tempfile::tempdir().unwrap();
        assert_eq!(home_of(&plan_of(rootfs.path()), 0), "/");
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(rootfs.path().join("etc/passwd"), PASSWD).unwrap();
        assert_eq!(home_of(&plan_of(rootfs.path()), 1000), "/home/app");
        assert_eq!(home_of(&plan_of(rootfs.path()), 4242), "/");
    }

    #[test]
    fn an_absolute_symlink_in_the_image_stays_inside_it() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "root:x:0:0::/from-the-host:/\n").unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        // Resolved in the rootfs, the link's target is <rootfs>/<host dir>/passwd: missing.
        std::os::unix::fs::symlink(host.path().join("passwd"), rootfs.path().join("etc/passwd"))
            .unwrap();
        assert_eq!(home_of(&plan_of(rootfs.path()), 0), "/");
    }

    #[test]
    fn a_fifo_is_not_waited_on() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        nix::unistd::mkfifo(&rootfs.path().join("etc/passwd"), Mode::S_IRWXU).unwrap();
        assert_eq!(home_of(&plan_of(rootfs.path()), 0), "/");
    }
}
