//! Which image-layer file a descriptor reads, as far as the kernel vouches for it: enough to
//! know that a program file read and hashed before is byte for byte the same file now,
//! without reading it again.
//!
//! Only files of a container's overlay rootfs that come unchanged from its image layers have
//! an identity. Those layers are containerd's committed snapshots, which nothing writes once
//! unpacked, and the identity also proves it: the layers' filesystem, the inode, size,
//! modification time and change time (ctime). Only the kernel sets the ctime, to the current
//! time, on any change to the content or the inode (git and ccache detect changed files the
//! same way), so a layer file changed in place anyway has another identity. The overlay's own
//! device number is new for each mount and says nothing; its files report the inode and times
//! of the layer file behind them, so the same layer file has the same identity in every
//! container made from the image.
//!
//! A file the container wrote or copied up (its upper layer) is refused: it changed after the
//! container's upper directory was created, which is how it is told apart (a copy-up keeps the
//! layer file's inode number). So are layers on filesystems that do not keep ctime themselves
//! (network and FUSE filesystems, whose attributes can lag the content), layers spread over
//! several filesystems (where the overlay's inode numbers are no longer the layer files'),
//! and files not on an overlay at all: plain directories are written in place by whoever owns
//! them, sometimes through shared mappings that leave the ctime behind.
//!
//! What the ctime cannot show is a write still in progress: the kernel stamps it when a
//! write begins, so a single write into a layer file lasting longer than the settling margin,
//! or writes through a shared mapping, could be read half done without a later ctime. That
//! needs someone writing into containerd's committed snapshots, which nothing does; the
//! identity guards against layers being changed between starts, not during one.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

/// Filesystem magic numbers (statfs `f_type`).
const EXT4: i64 = 0xEF53;
const XFS: i64 = 0x5846_5342;
const BTRFS: i64 = 0x9123_683E;
const TMPFS: i64 = 0x0102_1994;
const OVERLAY: i64 = 0x794C_7630;

/// Filesystems that set ctime on every change and never take it from anywhere else.
const TRUSTED: [i64; 4] = [EXT4, XFS, BTRFS, TMPFS];

/// How old a file's last change must be before its identity may stand for its content.
/// Timestamps come from the kernel's coarse clock, so a write in the same tick as the last
/// change could leave the ctime as it was: a file untouched for a few ticks (at most 10 ms
/// each) is past that.
const SETTLED: Duration = Duration::from_millis(50);
/// [`SETTLED`] for a filesystem that keeps whole seconds (ext4 with small inodes), told by
/// a ctime without nanoseconds.
const SETTLED_WHOLE_SECONDS: Duration = Duration::from_secs(2);

/// A file's identity; equal identities mean the same, unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

/// The identity's length as bytes.
pub(crate) const IDENTITY_LEN: usize = 7 * 8;

impl FileIdentity {
    /// The identity of the open `file`, or `None` unless it is an unchanged image-layer
    /// file of an overlay rootfs whose layers vouch for it.
    pub(crate) fn of(file: &File) -> Option<FileIdentity> {
        let meta = file.metadata().ok()?;
        if !meta.is_file() || filesystem_type(file)? != OVERLAY {
            return None;
        }
        let layers = overlay_layers_of(file)?;
        let identity = FileIdentity {
            device: layers.device,
            inode: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        };
        // Changed since the container's upper layer was made: written or copied up by the
        // container, not the layer's file. Both times come from the same kernel clock, so a
        // change in the very tick the directory was made has an equal time and is refused.
        if let Some(upper_born) = layers.upper_born {
            if identity.changed_since(upper_born) != Some(false) {
                return None;
            }
        }
        Some(identity)
    }

    /// When the file last changed, as a time.
    pub(crate) fn changed_at(&self) -> Option<SystemTime> {
        let (secs, nanos) = self.changed;
        let secs = u64::try_from(secs).ok()?;
        let nanos = u32::try_from(nanos).ok().filter(|&n| n < 1_000_000_000)?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
    }

    /// Whether the file last changed at or after `time` (`None` if its ctime is no time).
    fn changed_since(&self, time: SystemTime) -> Option<bool> {
        Some(self.changed_at()? >= time)
    }

    /// Whether `file` still has this identity's inode, size and times (the device cannot
    /// change under an open descriptor).
    pub(crate) fn still_matches(&self, file: &File) -> bool {
        file.metadata().is_ok_and(|meta| {
            meta.ino() == self.inode
                && meta.size() == self.size
                && (meta.mtime(), meta.mtime_nsec()) == self.modified
                && (meta.ctime(), meta.ctime_nsec()) == self.changed
        })
    }

    /// Whether the file's last change was long enough before `read_at` that any later one
    /// is bound to show in its ctime.
    pub(crate) fn settled_before(&self, read_at: SystemTime) -> bool {
        let margin = if self.changed.1 == 0 {
            SETTLED_WHOLE_SECONDS
        } else {
            SETTLED
        };
        self.changed_at()
            .and_then(|changed| changed.checked_add(margin))
            .is_some_and(|settled| settled < read_at)
    }

    /// An identity made up for tests: `inode` and the change time, the rest fixed.
    #[cfg(test)]
    pub(crate) fn for_test(inode: u64, changed: (i64, i64)) -> FileIdentity {
        FileIdentity {
            device: 1,
            inode,
            size: 3,
            modified: (0, 0),
            changed,
        }
    }

    /// The identity as bytes, for storing and naming.
    pub(crate) fn to_bytes(self) -> [u8; IDENTITY_LEN] {
        let words = [
            self.device,
            self.inode,
            self.size,
            self.modified.0 as u64,
            self.modified.1 as u64,
            self.changed.0 as u64,
            self.changed.1 as u64,
        ];
        let mut bytes = [0u8; IDENTITY_LEN];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        bytes
    }
}

/// The filesystem magic of the one holding `file` (statfs `f_type`).
fn filesystem_type(file: &File) -> Option<i64> {
    // SAFETY: statfs is plain old data, filled in by fstatfs before it is read.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to a statfs that outlives the call.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) };
    (rc == 0).then_some(stat.f_type as i64)
}

/// What an overlay's layers vouch for.
struct OverlayLayers {
    /// The device of the one trusted filesystem all layers are on, mixed with this boot's id
    /// for a device numbered at mount time (tmpfs, btrfs), whose number a later mount may
    /// give to another filesystem.
    device: u64,
    /// When the upper (writable) directory was created, if the overlay has one.
    upper_born: Option<SystemTime>,
}

/// The layers of the overlay mount holding `file`, or `None` if they are on several
/// filesystems, on an untrusted one, or cannot be found.
fn overlay_layers_of(file: &File) -> Option<OverlayLayers> {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd())).ok()?;
    let mount_id = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("mnt_id:"))?
        .trim();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = mountinfo
        .lines()
        .find(|line| line.split(' ').next() == Some(mount_id))?;
    let (layers, upper) = overlay_layers(line)?;
    let mut device = None;
    for layer in layers.iter().chain(&upper) {
        let dir = File::open(layer).ok()?;
        if !TRUSTED.contains(&filesystem_type(&dir)?) {
            return None;
        }
        let dev = dir.metadata().ok()?.dev();
        if *device.get_or_insert(dev) != dev {
            return None;
        }
    }
    let mut device = device?;
    if libc::major(device) == 0 {
        let boot = std::fs::read("/proc/sys/kernel/random/boot_id").ok()?;
        device ^= xxhash_rust::xxh3::xxh3_64(&boot);
    }
    let upper_born = match &upper {
        Some(upper) => Some(birth_time(upper)?),
        None => None,
    };
    Some(OverlayLayers { device, upper_born })
}

/// When `path` was created (statx's birth time), if its filesystem records it.
fn birth_time(path: &str) -> Option<SystemTime> {
    let path = std::ffi::CString::new(path).ok()?;
    // SAFETY: statx is plain old data, filled in by the call before it is read.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statx that outlive the call.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            libc::STATX_BTIME,
            &mut stat,
        )
    };
    if rc != 0 || stat.stx_mask & libc::STATX_BTIME == 0 {
        return None;
    }
    let secs = u64::try_from(stat.stx_btime.tv_sec).ok()?;
    let nanos = stat.stx_btime.tv_nsec.min(999_999_999);
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// The lower layer directories and the upper one of the overlay mount described by one line
/// of /proc/self/mountinfo; `None` if the line is not an overlay, names no layer, names one
/// by a relative path (containerd's mount helper uses those for images with many layers,
/// relative to a directory this process cannot know), or has data-only layers or metacopy.
fn overlay_layers(mountinfo_line: &str) -> Option<(Vec<String>, Option<String>)> {
    let (_, after) = mountinfo_line.split_once(" - ")?;
    let mut fields = after.split(' ');
    if fields.next()? != "overlay" {
        return None;
    }
    let options = fields.nth(1)?;
    let (mut layers, mut upper) = (Vec::new(), None);
    for option in options.split(',') {
        let Some((key, value)) = option.split_once('=') else {
            continue;
        };
        match key.trim_end_matches('+') {
            // Data-only layers and metadata-only copy-ups serve a file's bytes from another
            // inode than the one it reports: its identity would not cover its content.
            "datadir" => return None,
            "metacopy" if value == "on" => return None,
            "lowerdir" if value.contains("::") => return None,
            "lowerdir" => layers.extend(value.split(':').map(unescape_octal)),
            "upperdir" => upper = Some(unescape_octal(value)),
            _ => {}
        }
    }
    let absolute = layers.iter().chain(&upper).all(|dir| dir.starts_with('/'));
    (!layers.is_empty() && absolute).then_some((layers, upper))
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash, comma, colon): how
/// the kernel writes a mount point or an option with those characters. Public for a host
/// that reads mount points from the same table (the shim's `nodev` pass).
pub fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Overlay mounts over test layers, as containerd's snapshotter makes them, for the tests
/// of this module and of [`crate::source`]. Mounting needs root; without it, or where the
/// temp dir cannot hold overlay layers, tests that need one return early.
#[cfg(test)]
pub(crate) mod test_overlay {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// A directory of files standing for an image layer.
    pub(crate) struct TestLayer(pub(crate) tempfile::TempDir);

    impl TestLayer {
        /// A layer holding `files`, settled: the overlays made over it come later than the
        /// margin an identity needs.
        pub(crate) fn with(files: &[(&str, &[u8])]) -> TestLayer {
            let dir = tempfile::tempdir().unwrap();
            for (name, content) in files {
                std::fs::write(dir.path().join(name), content).unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
            TestLayer(dir)
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }
    }

    /// An overlay with a fresh upper directory over one layer; unmounted on drop.
    pub(crate) struct TestOverlay {
        dir: tempfile::TempDir,
    }

    impl TestOverlay {
        pub(crate) fn over(layer: &TestLayer) -> Option<TestOverlay> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: mounting an overlay needs root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            if super::birth_time(&dir.path().display().to_string()).is_none() {
                eprintln!("skipped: the temp dir's filesystem records no birth times");
                return None;
            }
            for sub in ["upper", "work", "merged"] {
                std::fs::create_dir(dir.path().join(sub)).unwrap();
            }
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                layer.0.path().display(),
                dir.path().join("upper").display(),
                dir.path().join("work").display()
            );
            let mounted = nix::mount::mount(
                Some("overlay"),
                &dir.path().join("merged"),
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(options.as_str()),
            );
            if let Err(e) = mounted {
                eprintln!("skipped: mounting an overlay: {e}");
                return None;
            }
            Some(TestOverlay { dir })
        }

        pub(crate) fn merged(&self) -> PathBuf {
            self.dir.path().join("merged")
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.merged().join(name)
        }
    }

    impl Drop for TestOverlay {
        fn drop(&mut self) {
            let _ =
                nix::mount::umount2(Path::new(&self.merged()), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_overlay::{TestLayer, TestOverlay};
    use super::*;
    use std::io::Write;

    fn identity(path: &std::path::Path) -> Option<FileIdentity> {
        FileIdentity::of(&File::open(path).unwrap())
    }

    #[test]
    fn a_layer_file_has_one_identity_in_every_container_until_it_changes() {
        let layer = TestLayer::with(&[("app.wasm", b"first"), ("other.wasm", b"first")]);
        let (Some(one), Some(two)) = (TestOverlay::over(&layer), TestOverlay::over(&layer)) else {
            return;
        };
        let known = identity(&one.path("app.wasm")).expect("a layer file has an identity");
        assert_eq!(identity(&two.path("app.wasm")), Some(known));
        assert_ne!(identity(&one.path("other.wasm")), Some(known));
        let open = File::open(one.path("app.wasm")).unwrap();
        assert!(known.still_matches(&open));
        // Files outside an overlay have none: their owners write them in place.
        assert_eq!(identity(&layer.path("app.wasm")), None);
        assert_eq!(identity(std::path::Path::new("/proc/self/status")), None);

        // Copied up by a write in one container: its own file now, with no identity; the
        // other container still reads the layer's.
        std::fs::OpenOptions::new()
            .append(true)
            .open(one.path("other.wasm"))
            .unwrap()
            .write_all(b"!")
            .unwrap();
        assert_eq!(identity(&one.path("other.wasm")), None);
        assert!(identity(&two.path("other.wasm")).is_some());

        // The layer file rewritten in place, same size and modification time: the ctime
        // tells. Containers made before the change refuse it; later ones see a new identity.
        let modified = std::fs::metadata(layer.path("app.wasm"))
            .unwrap()
            .modified()
            .unwrap();
        let mut writer = File::options()
            .write(true)
            .open(layer.path("app.wasm"))
            .unwrap();
        writer.write_all(b"other").unwrap();
        writer.set_modified(modified).unwrap();
        assert!(!known.still_matches(&open));
        assert_eq!(identity(&two.path("app.wasm")), None);
        std::thread::sleep(Duration::from_millis(200));
        let Some(three) = TestOverlay::over(&layer) else {
            return;
        };
        let changed = identity(&three.path("app.wasm")).expect("a settled layer file");
        assert_ne!(changed, known);
    }

    #[test]
    fn a_change_is_settled_after_a_few_ticks_or_two_seconds_for_whole_second_clocks() {
        let identity = FileIdentity::for_test(2, (1_700_000_000, 500_000_000));
        let changed_at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000);
        assert!(!identity.settled_before(changed_at));
        assert!(!identity.settled_before(changed_at + Duration::from_millis(40)));
        assert!(identity.settled_before(changed_at + Duration::from_millis(60)));
        assert!(!identity.settled_before(SystemTime::UNIX_EPOCH));
        assert_eq!(identity.changed_since(changed_at), Some(true));
        assert_eq!(
            identity.changed_since(changed_at + Duration::from_nanos(1)),
            Some(false)
        );
        assert_eq!(
            FileIdentity::for_test(2, (-1, 0)).changed_since(changed_at),
            None
        );
        let whole_seconds = FileIdentity::for_test(2, (1_700_000_000, 0));
        let second = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(!whole_seconds.settled_before(second + Duration::from_secs(1)));
        assert!(whole_seconds.settled_before(second + Duration::from_secs(3)));
    }

    #[test]
    fn overlay_layers_come_from_the_super_options() {
        let line = "46 27 0:39 / /run/c/rootfs rw,relatime - overlay overlay \
                    rw,lowerdir=/s/2/fs:/s/1/fs,upperdir=/s/3/fs,workdir=/s/3/work,uuid=on";
        assert_eq!(
            overlay_layers(line).unwrap(),
            (
                vec!["/s/2/fs".to_string(), "/s/1/fs".to_string()],
                Some("/s/3/fs".to_string())
            )
        );
        let escaped = "1 2 0:3 / /m rw - overlay overlay rw,lowerdir=/a\\040b:/c,uuid=on";
        assert_eq!(
            overlay_layers(escaped).unwrap(),
            (vec!["/a b".to_string(), "/c".to_string()], None)
        );
        for data_elsewhere in [
            "1 2 0:3 / /m rw - overlay overlay rw,lowerdir=/a::/data,upperdir=/u",
            "1 2 0:3 / /m rw - overlay overlay rw,lowerdir=/a,datadir+=/data",
            "1 2 0:3 / /m rw - overlay overlay rw,lowerdir=/a,upperdir=/u,metacopy=on",
        ] {
            assert_eq!(overlay_layers(data_elsewhere), None, "{data_elsewhere}");
        }
        let relative = "1 2 0:3 / /m rw - overlay overlay rw,lowerdir=5/fs:4/fs,upperdir=/u";
        assert_eq!(overlay_layers(relative), None);
        assert_eq!(overlay_layers("1 2 8:1 / / rw - ext4 /dev/sda1 rw"), None);
        assert_eq!(unescape_octal("\\134x\\9"), "\\x\\9");
    }
}
