//! `HOME` for a spec that does not set it (or sets it empty), as runc sets it: the home
//! directory of the spec's uid in the container's own `/etc/passwd`, or `/` when the file or
//! the entry is missing. Neither docker nor CRI nor ctr put `HOME` in the spec; under runc
//! every container process has it all the same, and programs rely on it (a home-relative
//! config or cache path, Python's `expanduser`, Rust's `home_dir`).
//!
//! The file is read where runc reads it: in the container's own root, once the process is
//! there, so a client's bind mount of `/etc/passwd` (`docker run -v /etc/passwd:...`) or a
//! tmpfs at `/etc` counts, as they do for runc.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// What runc falls back to: the root of the container.
const DEFAULT_HOME: &str = "/";

/// How much of `/etc/passwd` is read: far more than any real one, and a bound on what an
/// image can make a start read.
const PASSWD_LIMIT: u64 = 1 << 20;

/// The home directory of `uid` in the `/etc/passwd` under `root` (the process's own root
/// once it is the container's; a directory in tests): what `HOME` defaults to.
pub(crate) fn home_of(root: &Path, uid: u32) -> String {
    read_passwd(root)
        .and_then(|passwd| home_in(&passwd, uid))
        .unwrap_or_else(|| DEFAULT_HOME.to_string())
}

/// `etc/passwd` under `root`, resolved as if `root` were `/` (an image's symlink cannot lead
/// out of it). `None` when there is none, it is not a regular file, or it cannot be read.
fn read_passwd(root: &Path) -> Option<String> {
    let root = std::fs::File::open(root).ok()?;
    let open = |flags: OFlag| -> Option<std::fs::File> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::empty())
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = nix::fcntl::openat2(root.as_raw_fd(), "etc/passwd", how).ok()?;
        // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
        Some(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
    };
    // Looked at (O_PATH) before it is opened for reading: the process is still privileged,
    // and opening a device node an image put there (a watchdog, say) would act on it. The
    // second open must find the same regular file (O_NONBLOCK: never waiting on a FIFO
    // swapped in meanwhile).
    let seen = open(OFlag::O_PATH)?.metadata().ok()?;
    if !seen.is_file() {
        return None;
    }
    let file = open(OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)?;
    let opened = file.metadata().ok()?;
    if !opened.is_file() || (opened.dev(), opened.ino()) != (seen.dev(), seen.ino()) {
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

    #[test]
    fn the_passwd_of_the_rootfs_is_read_and_a_missing_one_gives_the_root() {
        let rootfs = tempfile::tempdir().unwrap();
        assert_eq!(home_of(rootfs.path(), 0), "/");
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(rootfs.path().join("etc/passwd"), PASSWD).unwrap();
        assert_eq!(home_of(rootfs.path(), 1000), "/home/app");
        assert_eq!(home_of(rootfs.path(), 4242), "/");
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
        assert_eq!(home_of(rootfs.path(), 0), "/");
    }

    /// How many times `path` was opened for reading or writing (an inotify `IN_OPEN` watch)
    /// while `f` ran.
    fn opens_during(path: &std::path::Path, f: impl FnOnce()) -> usize {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain libc calls on a descriptor this test owns and a valid C string.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            assert!(libc::inotify_add_watch(fd, name.as_ptr(), libc::IN_OPEN) >= 0);
            f();
            let mut buf = [0u8; 4096];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            let event = std::mem::size_of::<libc::inotify_event>() as isize;
            if n < 0 {
                0
            } else {
                (n / event) as usize
            }
        }
    }

    #[test]
    fn a_regular_passwd_is_opened_once_and_a_fifo_never() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        let passwd = rootfs.path().join("etc/passwd");
        std::fs::write(&passwd, PASSWD).unwrap();
        let opens = opens_during(&passwd, || assert_eq!(home_of(rootfs.path(), 0), "/root"));
        assert_eq!(opens, 1, "the O_PATH look is not an open");
        std::fs::remove_file(&passwd).unwrap();
        nix::unistd::mkfifo(&passwd, Mode::S_IRWXU).unwrap();
        let opens = opens_during(&passwd, || assert_eq!(home_of(rootfs.path(), 0), "/"));
        assert_eq!(opens, 0);
    }

    #[test]
    fn a_fifo_or_a_device_is_not_opened() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        nix::unistd::mkfifo(&rootfs.path().join("etc/passwd"), Mode::S_IRWXU).unwrap();
        assert_eq!(home_of(rootfs.path(), 0), "/");
        // /dev/null stands for any device: looked at, never opened for reading.
        std::fs::remove_file(rootfs.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/dev/null", rootfs.path().join("etc/passwd")).unwrap();
        let dev = rootfs.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        nix::sys::stat::mknod(
            &dev.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let opens = opens_during(&dev.join("null"), || {
            assert_eq!(home_of(rootfs.path(), 0), "/")
        });
        assert_eq!(opens, 0);
    }
}
