use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use crate::RuntimeError;

/// One host directory the program can reach, and where it appears inside the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// Directory on the host.
    pub host: PathBuf,
    /// Absolute path under which the program sees it.
    pub guest: String,
    /// Whether writes through this preopen are refused.
    pub read_only: bool,
}

/// The complete list of what a program may touch on the host.
///
/// This is the whole of the program's filesystem view: the rootfs as `/`, each directory
/// bind mount at its destination and, for a host that mounts them (see [`TmpfsMount`]), each
/// tmpfs of its own. Kernel filesystems (proc, sysfs, cgroup, devpts, mqueue, and the tmpfs
/// at `/dev`) and file bind mounts have no WASI equivalent and are left out, recorded in
/// `skipped` so the host can log why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreopenPlan {
    /// What the program gets, the rootfs first.
    pub preopens: Vec<Preopen>,
    /// The spec's tmpfs mounts outside the kernel's directories, which become preopens once
    /// a host has mounted them (see [`PreopenPlan::relocated`]).
    pub tmpfs: Vec<TmpfsMount>,
    /// Spec mounts left out, with the reason, for the host's debug log.
    pub skipped: Vec<(String, String)>,
    /// The rootfs (the first preopen) is where the program is looked up, but the program
    /// itself does not see it: an operator narrowed its view to the listed mounts.
    pub rootfs_hidden: bool,
    /// An operator listed the mounts the program sees (see `access`): only those.
    pub mounts_listed: bool,
}

/// A tmpfs the spec mounts at `guest` (docker's `--tmpfs` and `--mount type=tmpfs`, a
/// scratch directory often paired with a read-only rootfs): an empty, writable directory
/// with nothing on the host behind it. Only a host that gives the program a mount namespace
/// of its own can make one, at its destination inside the rootfs; such a host mounts it and
/// then uses [`PreopenPlan::relocated`], where it is a preopen like a bind mount. Other hosts
/// leave it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    /// Absolute path under which the program sees it.
    pub guest: String,
    /// The spec's mount options (`size=`, `mode=`, `nosuid`, `ro`...), as the kernel takes
    /// them.
    pub options: Vec<String>,
}

/// Directories where the kernel's own filesystems go (`/dev` is a tmpfs in every spec, with
/// device nodes in it): a tmpfs there is not the program's scratch space.
const KERNEL_DIRECTORIES: [&str; 3] = ["/dev", "/proc", "/sys"];

/// Whether `destination` (normalized) is one of [`KERNEL_DIRECTORIES`] or below one.
fn in_kernel_directory(destination: &str) -> bool {
    KERNEL_DIRECTORIES.iter().any(|dir| {
        destination
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// A directory preopened under a name of its own, after the plan's preopens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedDirectory {
    /// The preopen's name as the program sees it.
    pub name: String,
    /// What a WASI context opens (as [`PinnedPreopens::paths`]).
    pub path: PathBuf,
    /// Whether writes through it are refused.
    pub read_only: bool,
}

/// The preopened directories, held open from load to the program's end. A host that gives
/// the program a mount namespace of its own re-pins them there by path
/// ([`PreopenPlan::pin_in_own_root`]); otherwise they are reached as below.
///
/// The program's WASI contexts are built on its own thread, which by then acts with the
/// container's uid and no capabilities (HTTP handlers build one per request). Reaching the
/// directories by their host path would make the bundle's permissions apply, which a Linux
/// container never walks. Each directory is opened once here, with `O_PATH` (no access
/// check on the directory itself, as a mount point has none), and reached later through
/// `/proc/self/fd/N`: the program sees the directories that were there at load, and from
/// there on only their own permissions apply.
#[derive(Debug, Default)]
pub struct PinnedPreopens {
    /// One entry per visible preopen, in the plan's order: the path a WASI context opens.
    pub(crate) paths: Vec<PathBuf>,
    /// The descriptors behind `paths`, one each (none without `/proc`).
    pub(crate) fds: Vec<OwnedFd>,
    /// What the working directory adds after them; see [`PreopenPlan::pin`].
    pub(crate) working_directory: Vec<NamedDirectory>,
    /// The descriptors behind `working_directory`.
    pub(crate) fds_after: Vec<OwnedFd>,
    /// The process's root is the container's rootfs (see [`PreopenPlan::pin_in_own_root`]):
    /// paths are the container's own, and no `/proc` is needed.
    pub(crate) own_root: bool,
}

impl PinnedPreopens {
    /// The path a WASI context opens for each visible preopen, in order.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The preopens that make the spec's cwd the program's working directory, to register
    /// after every visible preopen, in this order.
    pub fn working_directory(&self) -> &[NamedDirectory] {
        &self.working_directory
    }

    /// The path a WASI context opens for `fd`, the directory `rest` below visible preopen
    /// `holder`.
    pub(crate) fn path_of(&self, holder: usize, rest: &str, fd: &OwnedFd) -> PathBuf {
        if self.own_root {
            self.paths[holder].join(rest)
        } else {
            fd_path(fd)
        }
    }
}

impl PreopenPlan {
    /// Maps the rootfs and the spec's mounts to preopens; fails on mounts no runtime could
    /// honour (relative or duplicate destinations, missing sources).
    pub fn from_mounts(
        rootfs: &Path,
        rootfs_read_only: bool,
        mounts: &[Mount],
    ) -> Result<Self, RuntimeError> {
        let mut plan = PreopenPlan {
            preopens: vec![Preopen {
                host: rootfs.to_path_buf(),
                guest: "/".to_string(),
                read_only: rootfs_read_only,
            }],
            tmpfs: Vec::new(),
            skipped: Vec::new(),
            rootfs_hidden: false,
            mounts_listed: false,
        };
        for mount in mounts {
            let destination = normalize_destination(mount.destination())?;
            let options = mount.options().clone().unwrap_or_default();
            let is_bind = mount.typ().as_deref() == Some("bind")
                || options.iter().any(|o| o == "bind" || o == "rbind");
            if !is_bind
                && mount.typ().as_deref() == Some("tmpfs")
                && !in_kernel_directory(&destination)
            {
                // Mounted later, on top of what the spec listed before at the same place (ctr
                // adds `--mount`s after its default `/run`): that is what the program sees,
                // as under runc.
                plan.replace_at(&destination);
                plan.tmpfs.push(TmpfsMount {
                    guest: destination,
                    options,
                });
                continue;
            }
            if !is_bind {
                let kind = mount.typ().clone().unwrap_or_else(|| "untyped".into());
                plan.skipped
                    .push((destination, format!("{kind} mount has no WASI equivalent")));
                continue;
            }
            let source = mount.source().clone().ok_or_else(|| {
                RuntimeError::InvalidMount(format!("bind mount {destination} has no source"))
            })?;
            if !source.is_absolute() {
                return Err(RuntimeError::InvalidMount(format!(
                    "bind mount {destination}: source {} is not an absolute path",
                    source.display()
                )));
            }
            let metadata = std::fs::metadata(&source).map_err(|e| {
                RuntimeError::InvalidMount(format!(
                    "bind mount {destination}: source {}: {e}",
                    source.display()
                ))
            })?;
            if !metadata.is_dir() {
                plan.skipped.push((
                    destination,
                    format!(
                        "source {} is a file; WASI preopens only directories",
                        source.display()
                    ),
                ));
                continue;
            }
            // A bind over an earlier tmpfs replaces it (see above); two binds at one place
            // are a mistake worth refusing.
            plan.tmpfs.retain(|t| t.guest != destination);
            if plan.preopens.iter().any(|p| p.guest == destination) {
                return Err(RuntimeError::InvalidMount(format!(
                    "two mounts have the destination {destination}"
                )));
            }
            plan.preopens.push(Preopen {
                host: source,
                guest: destination,
                read_only: options.iter().any(|o| o == "ro"),
            });
        }
        Ok(plan)
    }

    /// Forgets what an earlier mount put at `destination` (not the rootfs), for a later one
    /// that goes on top of it.
    fn replace_at(&mut self, destination: &str) {
        let mut index = 0;
        self.preopens.retain(|p| {
            index += 1;
            index == 1 || p.guest != destination
        });
        self.tmpfs.retain(|t| t.guest != destination);
    }

    /// Leaves out the tmpfs at `guest`, which a host could not mount (no mount point in a
    /// read-only rootfs): the program sees what is there instead, if anything.
    pub fn leave_out_tmpfs(&mut self, guest: &str, why: String) {
        let before = self.tmpfs.len();
        self.tmpfs.retain(|t| t.guest != guest);
        if self.tmpfs.len() < before {
            self.skipped.push((guest.to_string(), why));
        }
    }

    /// Adds a tmpfs the host mounted at `guest` of its own accord (a container's `/dev`,
    /// which holds its device nodes): a writable preopen once relocated, as the spec's
    /// tmpfs mounts are, so that writes to `/dev/null` reach it even under a read-only `/`.
    /// Not where an operator narrowed the program's view with annotations (see `access`):
    /// such a mount is not one they could list.
    pub fn add_host_tmpfs(&mut self, guest: &str) {
        if self.rootfs_hidden || self.mounts_listed {
            return;
        }
        let taken = self.tmpfs.iter().any(|t| t.guest == guest)
            || self.preopens.iter().any(|p| p.guest == guest);
        if !taken {
            self.tmpfs.push(TmpfsMount {
                guest: guest.to_string(),
                options: Vec::new(),
            });
        }
    }

    /// What the program itself sees: every preopen, less the rootfs when it is hidden.
    pub fn visible(&self) -> impl Iterator<Item = &Preopen> {
        let skip = usize::from(self.rootfs_hidden);
        self.preopens.iter().skip(skip)
    }

    /// Opens every visible preopen's directory (see [`PreopenPlan::pin`], which adds the
    /// working directory's). Without a `/proc` (a host outside Linux containers' usual
    /// setup) the host paths are used as they are.
    pub(crate) fn pin_visible(&self) -> Result<PinnedPreopens, RuntimeError> {
        let mut pinned = PinnedPreopens::default();
        let proc_fds = Path::new("/proc/self/fd").is_dir();
        for preopen in self.visible() {
            if !proc_fds {
                pinned.paths.push(preopen.host.clone());
                continue;
            }
            let fd = open_directory(preopen)?;
            pinned.paths.push(fd_path(&fd));
            pinned.fds.push(fd);
        }
        Ok(pinned)
    }

    /// [`PreopenPlan::pin_visible`] for a process whose root is the container's rootfs (see
    /// [`PreopenPlan::pin_in_own_root`]): opened by their paths there.
    pub(crate) fn pin_visible_in_own_root(&self) -> Result<PinnedPreopens, RuntimeError> {
        let mut pinned = PinnedPreopens {
            own_root: true,
            ..Default::default()
        };
        for preopen in self.visible() {
            pinned.fds.push(open_directory(preopen)?);
            pinned.paths.push(preopen.host.clone());
        }
        Ok(pinned)
    }

    /// The same plan as seen from inside the container's own mount namespace, whose root is
    /// `rootfs` and where every mount is at its destination: the rootfs's directories by
    /// their path below it, mounts by their destination, and each tmpfs, which the host has
    /// mounted there, a preopen of its own (read-only if mounted `ro`).
    pub fn relocated(&self, rootfs: &Path) -> PreopenPlan {
        let mut plan = self.clone();
        for preopen in &mut plan.preopens {
            preopen.host = match preopen.host.strip_prefix(rootfs) {
                Ok(below) => Path::new("/").join(below),
                Err(_) => PathBuf::from(&preopen.guest),
            };
        }
        for tmpfs in plan.tmpfs.drain(..) {
            plan.preopens.push(Preopen {
                host: PathBuf::from(&tmpfs.guest),
                read_only: tmpfs.options.iter().any(|o| o == "ro"),
                guest: tmpfs.guest,
            });
        }
        plan
    }

    /// The preopens whose directories are outside `rootfs`: what a mount namespace rooted
    /// at `rootfs` must bind at their destinations for [`PreopenPlan::relocated`] to hold.
    pub fn outside<'a>(&'a self, rootfs: &'a Path) -> impl Iterator<Item = &'a Preopen> + 'a {
        self.visible()
            .filter(move |p| p.guest != "/" && !p.host.starts_with(rootfs))
    }

    /// Which visible preopen holds `guest_path` (its index among [`PreopenPlan::visible`]),
    /// and the rest of the path below it.
    pub(crate) fn visible_index_of<'a>(&self, guest_path: &'a str) -> Option<(usize, &'a str)> {
        let (holder, rest) = self.locate(guest_path)?;
        let index = self.visible().position(|p| std::ptr::eq(p, holder))?;
        Some((index, rest))
    }

    /// The preopen whose guest path is the longest prefix of `guest_path` (as wasi-libc picks
    /// them), and the rest of the path below it.
    pub fn locate<'a>(&self, guest_path: &'a str) -> Option<(&Preopen, &'a str)> {
        self.preopens
            .iter()
            .filter_map(|p| {
                let rest = if p.guest == "/" {
                    guest_path.strip_prefix('/')?
                } else {
                    let rest = guest_path.strip_prefix(p.guest.as_str())?;
                    if !(rest.is_empty() || rest.starts_with('/')) {
                        return None;
                    }
                    rest.trim_start_matches('/')
                };
                Some((p, rest))
            })
            .max_by_key(|(p, _)| p.guest.len())
    }
}

/// Opens a preopen's directory with `O_PATH`: no access check on the directory itself, as
/// a mount point has none.
fn open_directory(preopen: &Preopen) -> Result<OwnedFd, RuntimeError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&preopen.host)
        .map(OwnedFd::from)
        .map_err(|e| {
            RuntimeError::InvalidMount(format!(
                "{} (for {}): {e}",
                preopen.host.display(),
                preopen.guest
            ))
        })
}

/// The path through which a WASI context opens the directory `fd` holds.
pub(crate) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Destinations must be absolute and free of `..`, so no two spellings name the same place.
fn normalize_destination(destination: &Path) -> Result<String, RuntimeError> {
    if !destination.is_absolute() {
        return Err(RuntimeError::InvalidMount(format!(
            "destination {} is not an absolute path",
            destination.display()
        )));
    }
    let mut parts = Vec::new();
    for component in destination.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(|| {
                RuntimeError::InvalidMount(format!(
                    "destination {} is not valid UTF-8",
                    destination.display()
                ))
            })?),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RuntimeError::InvalidMount(format!(
                    "destination {} contains '..'",
                    destination.display()
                )))
            }
        }
    }
    if parts.is_empty() {
        return Err(RuntimeError::InvalidMount(
            "a mount over / would hide the rootfs".to_string(),
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A bind mount of `src` at `dst` with `options`, as specs hold them, for tests.
#[cfg(test)]
pub(crate) fn bind(dst: &str, src: &Path, options: &[&str]) -> Mount {
    oci_spec::runtime::MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    #[test]
    fn rootfs_and_directory_binds_become_preopens() {
        let dir = tempfile::tempdir().unwrap();
        let plan = PreopenPlan::from_mounts(
            Path::new("/rootfs"),
            false,
            &[bind("/data/", dir.path(), &["rbind", "ro"])],
        )
        .unwrap();
        assert_eq!(plan.preopens.len(), 2);
        assert_eq!(plan.preopens[1].guest, "/data");
        assert!(plan.preopens[1].read_only);
        assert!(!plan.preopens[0].read_only);
    }

    #[test]
    fn a_relocated_plan_names_each_directory_by_its_container_path() {
        let rootfs = tempfile::tempdir().unwrap();
        let volume = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("inside")).unwrap();
        let plan = PreopenPlan::from_mounts(
            rootfs.path(),
            false,
            &[
                bind("/data", volume.path(), &["rbind"]),
                bind("/again", &rootfs.path().join("inside"), &["rbind"]),
            ],
        )
        .unwrap();
        // Only what lies outside the rootfs must be bound into the new root.
        let outside: Vec<&str> = plan
            .outside(rootfs.path())
            .map(|p| p.guest.as_str())
            .collect();
        assert_eq!(outside, ["/data"]);
        let relocated = plan.relocated(rootfs.path());
        let hosts: Vec<&Path> = relocated
            .preopens
            .iter()
            .map(|p| p.host.as_path())
            .collect();
        assert_eq!(
            hosts,
            [Path::new("/"), Path::new("/data"), Path::new("/inside")]
        );
    }

    #[test]
    fn kernel_filesystems_and_file_binds_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "127.0.0.1 localhost\n").unwrap();
        let proc_mount = MountBuilder::default()
            .destination("/proc")
            .typ("proc")
            .source("proc")
            .build()
            .unwrap();
        let plan = PreopenPlan::from_mounts(
            Path::new("/rootfs"),
            true,
            &[
                proc_mount,
                bind("/etc/hosts", &file, &["rbind", "rprivate"]),
            ],
        )
        .unwrap();
        assert_eq!(plan.preopens.len(), 1);
        assert_eq!(plan.skipped.len(), 2);
    }

    #[test]
    fn a_tmpfs_outside_the_kernels_directories_is_a_preopen_once_mounted() {
        let tmpfs = |destination: &str, options: &[&str]| {
            MountBuilder::default()
                .destination(destination)
                .typ("tmpfs")
                .source("tmpfs")
                .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()
                .unwrap()
        };
        let plan = PreopenPlan::from_mounts(
            Path::new("/rootfs"),
            true,
            &[
                tmpfs("/dev", &["nosuid", "mode=755"]),
                tmpfs("/dev/shm", &[]),
                tmpfs("/scratch", &["nosuid", "size=1m"]),
                tmpfs("/cache/", &["ro"]),
                tmpfs("/devices", &[]),
            ],
        )
        .unwrap();
        assert_eq!(plan.preopens.len(), 1, "{plan:?}");
        assert_eq!(
            plan.skipped
                .iter()
                .map(|(d, _)| d.as_str())
                .collect::<Vec<_>>(),
            ["/dev", "/dev/shm"]
        );
        let guests: Vec<&str> = plan.tmpfs.iter().map(|t| t.guest.as_str()).collect();
        assert_eq!(guests, ["/scratch", "/cache", "/devices"]);
        assert_eq!(plan.tmpfs[0].options, ["nosuid", "size=1m"]);
        let relocated = plan.relocated(Path::new("/rootfs"));
        assert!(relocated.tmpfs.is_empty());
        let (scratch, rest) = relocated.locate("/scratch/a/b").unwrap();
        assert_eq!(
            (scratch.host.as_path(), rest, scratch.read_only),
            (Path::new("/scratch"), "a/b", false)
        );
        assert!(relocated.locate("/cache/x").unwrap().0.read_only);
        // The host's own /dev tmpfs (the shim's device nodes), once: a writable preopen of
        // its own, under a read-only rootfs.
        let mut with_dev = plan.clone();
        with_dev.add_host_tmpfs("/dev");
        with_dev.add_host_tmpfs("/dev");
        let relocated = with_dev.relocated(Path::new("/rootfs"));
        let (dev, rest) = relocated.locate("/dev/null").unwrap();
        assert_eq!(
            (dev.host.as_path(), dev.guest.as_str(), rest, dev.read_only),
            (Path::new("/dev"), "/dev", "null", false)
        );
        assert!(relocated.locate("/x").unwrap().0.read_only);
        assert_eq!(
            relocated
                .preopens
                .iter()
                .filter(|p| p.guest == "/dev")
                .count(),
            1
        );
        // At one destination the later mount wins, as it is mounted on top (ctr adds its
        // `--mount`s after the default `/run`).
        let dir = tempfile::tempdir().unwrap();
        let tmpfs_last = PreopenPlan::from_mounts(
            Path::new("/r"),
            false,
            &[bind("/d", dir.path(), &[]), tmpfs("/d", &[])],
        )
        .unwrap();
        assert_eq!((tmpfs_last.preopens.len(), tmpfs_last.tmpfs.len()), (1, 1));
        let bind_last = PreopenPlan::from_mounts(
            Path::new("/r"),
            false,
            &[tmpfs("/run", &[]), bind("/run", dir.path(), &[])],
        )
        .unwrap();
        assert_eq!((bind_last.preopens.len(), bind_last.tmpfs.len()), (2, 0));
        let mut left_out = plan.clone();
        left_out.leave_out_tmpfs("/scratch", "read-only rootfs".into());
        assert_eq!(left_out.tmpfs.len(), 2);
        assert!(left_out.skipped.iter().any(|(d, _)| d == "/scratch"));
    }

    #[test]
    fn bad_mounts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let relative =
            PreopenPlan::from_mounts(Path::new("/r"), false, &[bind("data", dir.path(), &[])]);
        assert!(matches!(relative, Err(RuntimeError::InvalidMount(_))));
        let missing = PreopenPlan::from_mounts(
            Path::new("/r"),
            false,
            &[bind("/data", &dir.path().join("nope"), &[])],
        );
        assert!(matches!(missing, Err(RuntimeError::InvalidMount(_))));
        let duplicate = PreopenPlan::from_mounts(
            Path::new("/r"),
            false,
            &[bind("/d", dir.path(), &[]), bind("/d/", dir.path(), &[])],
        );
        assert!(matches!(duplicate, Err(RuntimeError::InvalidMount(_))));
    }

    #[test]
    fn locate_picks_the_longest_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let plan = PreopenPlan::from_mounts(
            Path::new("/rootfs"),
            false,
            &[bind("/data", dir.path(), &[])],
        )
        .unwrap();
        let (p, rest) = plan.locate("/data/x/y.wasm").unwrap();
        assert_eq!((p.guest.as_str(), rest), ("/data", "x/y.wasm"));
        let (p, rest) = plan.locate("/database/y.wasm").unwrap();
        assert_eq!((p.guest.as_str(), rest), ("/", "database/y.wasm"));
    }
}
