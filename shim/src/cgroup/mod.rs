//! A container's cgroup, made from the OCI spec's `linux.cgroupsPath` and `linux.resources`
//! the way runc's cgroupfs driver makes it, on cgroup v1, v2 and the hybrid layout.
//!
//! Each wasm container is a Linux process of its own, so the shim (as root) puts it in a
//! cgroup and uses that cgroup for the task API: moving pids in, pause (freezer), kill-all
//! (pids), stats (metrics), OOM counting, update and removal.
//!
//! Layout: [`Hierarchies`] finds what is mounted, `path` turns a `cgroupsPath` into a
//! relative path, `v1` and `v2` write resources and drive the freezer, `metrics` reads the
//! statistics into containerd's `Metrics` messages.
//!
//! Why hand-written rather than the `cgroups-rs` crate: its v1 hierarchy reads only the
//! host's `/proc/self/mountinfo` and its v2 one hard-codes `/sys/fs/cgroup`, so it cannot be
//! pointed at a fake tree in a temp dir, and the v1 and v2 code paths could only be tested on
//! hosts of each kind. What the shim needs is a handful of files per version, and this keeps
//! its dependency tree out of a binary that runs once per container.

mod metrics;
mod oom;
mod path;
mod v1;
mod v2;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::LinuxResources;

pub use oom::OomNotifier;

pub use path::{expand_slice, relative_path};

/// The spec's `linux.cgroupsPath`, if it names one (an empty one names none).
pub fn cgroups_path(spec: &oci_spec::runtime::Spec) -> Option<&str> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
}

/// Why a cgroup operation failed; every variant names the file or path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` could not be read, so no hierarchy can be found.
    #[error("reading /proc/self/mountinfo")]
    Mountinfo(#[source] std::io::Error),
    /// No cgroup hierarchy is mounted: there is nowhere to create a cgroup.
    #[error("no cgroup hierarchy is mounted")]
    NoHierarchy,
    /// The spec's `cgroupsPath` cannot name a container cgroup.
    #[error("invalid cgroupsPath {path:?}: {reason}")]
    InvalidPath {
        /// The `cgroupsPath` as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A resource value the kernel would refuse (caught here for a clearer message).
    #[error("invalid value {value} for {file}: {reason}")]
    InvalidValue {
        /// The control file it was meant for.
        file: &'static str,
        /// The value from the spec.
        value: String,
        /// The accepted range or rule.
        reason: &'static str,
    },
    /// A cgroup directory could not be made.
    #[error("creating cgroup directory {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A control file could not be read.
    #[error("reading {path}")]
    Read {
        /// The control file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A control file refused a value (EINVAL for out-of-range limits, ENOSPC for a pid
    /// moved into a cpuset without cpus, ...).
    #[error("writing {value:?} to {path}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A memory limit was asked for, the memory controller exists, but it is not enabled
    /// for this cgroup: ignoring the limit silently would let the container use the host's
    /// memory.
    #[error("the memory controller is not enabled for {path}")]
    MemoryControllerDisabled {
        /// The cgroup directory.
        path: PathBuf,
    },
    /// Pause was asked for but neither a v1 freezer hierarchy nor a v2 `cgroup.freeze` exists.
    #[error("no cgroup freezer is available")]
    NoFreezer,
    /// The freezer did not reach the state in time (a task stuck in an uninterruptible
    /// sleep, typically); the cgroup was thawed again.
    #[error("{path} did not become {wanted} in time")]
    FreezeTimeout {
        /// The file polled.
        path: PathBuf,
        /// The state waited for.
        wanted: &'static str,
    },
    /// The metrics message could not be encoded.
    #[error("encoding cgroup metrics")]
    Encode(#[source] containerd_shim_protos::protobuf::Error),
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted; a cgroup's directory is this joined with its relative path.
    pub mount: PathBuf,
    /// Which version, and for v1 which controllers it carries.
    pub kind: HierarchyKind,
}

/// The version of a hierarchy, which decides the file names to use in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HierarchyKind {
    /// A v1 hierarchy with its controllers, e.g. `["cpu"]`, `["cpu", "cpuacct"]` or a
    /// named one without controllers, `["name=systemd"]`.
    V1 {
        /// Controller names from the mount's super options.
        controllers: Vec<String>,
    },
    /// The v2 unified hierarchy.
    V2,
}

/// The v1 controllers the kernel knows. Mount super options also carry flags (`rw`,
/// `noprefix`, `clone_children`, `release_agent=...`) that must not be taken for one.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// All hierarchies of the host (or of a fake tree).
#[derive(Debug, Clone, Default)]
pub struct Hierarchies {
    list: Vec<Hierarchy>,
}

impl Hierarchies {
    /// The hierarchies mounted in this mount namespace, from `/proc/self/mountinfo`.
    pub fn discover() -> Result<Hierarchies, CgroupError> {
        let text =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        Ok(Self::from_mountinfo(&text))
    }

    /// The hierarchies described by a mountinfo text: lines whose filesystem type (after
    /// ` - `) is `cgroup` or `cgroup2`. A hierarchy mounted twice (a bind mount) is kept
    /// once, at its first mount point. Tests point the mount points into a temp dir.
    pub fn from_mountinfo(text: &str) -> Hierarchies {
        let mut list: Vec<Hierarchy> = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split_whitespace();
            let (Some(fstype), Some(_source), Some(super_options)) =
                (right.next(), right.next(), right.next())
            else {
                continue;
            };
            let Some(mount) = left.split_whitespace().nth(4) else {
                continue;
            };
            let kind = match fstype {
                "cgroup2" => HierarchyKind::V2,
                "cgroup" => HierarchyKind::V1 {
                    controllers: super_options
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect(),
                },
                _ => continue,
            };
            if list.iter().any(|h| h.kind == kind) {
                continue;
            }
            list.push(Hierarchy {
                mount: PathBuf::from(unescape(mount)),
                kind,
            });
        }
        Hierarchies { list }
    }

    /// Pure v2: a unified hierarchy and no v1 one. Resources then go to the v2 files, and
    /// metrics are v2 `Metrics`.
    pub fn is_unified(&self) -> bool {
        self.list.iter().all(|h| h.kind == HierarchyKind::V2) && !self.list.is_empty()
    }

    /// Every hierarchy found, in mountinfo order.
    pub fn list(&self) -> &[Hierarchy] {
        &self.list
    }
}

/// mountinfo escapes space, tab, newline and backslash in paths as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A container's cgroup directories, split by how a process starting in it gets in: the
/// v1 ones it joins itself, single-threaded, through their `tasks` files, and the v2 one it
/// is born into (`CLONE_INTO_CGROUP`). Neither takes the kernel's cgroup-wide lock that a
/// write of another process's pid to `cgroup.procs` takes, and that lock first waits for an
/// RCU grace period: 4 to 16 ms per start on this project's test machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Each v1 hierarchy's directory (controllers and named ones like `name=systemd`).
    pub v1: Vec<PathBuf>,
    /// The v2 directory: the unified hierarchy, pure or beside v1 ones (hybrid).
    pub v2: Option<PathBuf>,
}

/// The container's directory in one hierarchy.
#[derive(Debug, Clone)]
struct CgroupDir {
    /// The hierarchy's mount point, where the cpuset copy and v2 controller enabling start.
    mount: PathBuf,
    /// `mount` joined with the relative path.
    dir: PathBuf,
    kind: HierarchyKind,
}

/// A container's cgroup in every hierarchy.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    path: PathBuf,
    dirs: Vec<CgroupDir>,
    /// Pure v2: resources, freezer and stats use the v2 directory. Otherwise (v1 or hybrid)
    /// they use the v1 directories and a v2 one, if any, only holds the membership.
    unified: bool,
}

impl ContainerCgroup {
    /// Makes the cgroup (`mkdir -p`) in every hierarchy and applies `resources`.
    ///
    /// v1: every mounted hierarchy, `name=systemd` included, with each new cpuset level given
    /// its parent's cpus and mems (the kernel leaves them empty). Pure v2: the unified
    /// hierarchy, with the controllers the resources need enabled from the root down. Hybrid:
    /// the v1 ones plus the unified one for membership only; resources go to v1.
    ///
    /// A failure to apply resources removes the cgroup again (the leaf only: the parents may
    /// be shared, like `/system.slice`). An existing directory is reused, as runc does.
    pub fn create(
        h: &Hierarchies,
        cgroups_path: &str,
        resources: Option<&LinuxResources>,
    ) -> Result<ContainerCgroup, CgroupError> {
        let cgroup = Self::open(h, cgroups_path)?;
        let made = cgroup.make_dirs().and_then(|()| match resources {
            Some(resources) => cgroup.update(resources),
            None => Ok(()),
        });
        if let Err(e) = made {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// The cgroup of `cgroups_path` without creating or changing anything: for a process
    /// other than the one that created it (the `delete` cleanup after a shim crash, say)
    /// to freeze, stat or [`remove`](Self::remove) it.
    pub fn open(h: &Hierarchies, cgroups_path: &str) -> Result<ContainerCgroup, CgroupError> {
        let path = relative_path(cgroups_path)?;
        if h.list.is_empty() {
            return Err(CgroupError::NoHierarchy);
        }
        let below_root = path.strip_prefix("/").unwrap_or(&path);
        Ok(ContainerCgroup {
            dirs: h
                .list
                .iter()
                .map(|hierarchy| CgroupDir {
                    mount: hierarchy.mount.clone(),
                    dir: hierarchy.mount.join(below_root),
                    kind: hierarchy.kind.clone(),
                })
                .collect(),
            path,
            unified: h.is_unified(),
        })
    }

    /// Creates every level of the cgroup's directory in each hierarchy.
    fn make_dirs(&self) -> Result<(), CgroupError> {
        for cgroup_dir in &self.dirs {
            let below_root = self.path.strip_prefix("/").unwrap_or(&self.path);
            let mut dir = cgroup_dir.mount.clone();
            for part in below_root.components() {
                let parent = dir.clone();
                // v2 controllers must be enabled in the parent before a child can use them.
                if self.unified && cgroup_dir.kind == HierarchyKind::V2 {
                    v2::enable_controllers(&cgroup_dir.mount, &parent);
                }
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(source) => return Err(CgroupError::Create { path: dir, source }),
                }
                if let HierarchyKind::V1 { controllers } = &cgroup_dir.kind {
                    if controllers.iter().any(|c| c == "cpuset") {
                        v1::copy_cpuset_from_parent(&parent, &dir)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The relative path (e.g. `/default/hello` or `/system.slice/docker-abc.scope`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a new process of the container goes, by how it gets there (see [`Placement`]).
    pub fn placement(&self) -> Placement {
        Placement {
            v1: self
                .dirs
                .iter()
                .filter(|d| matches!(d.kind, HierarchyKind::V1 { .. }))
                .map(|d| d.dir.clone())
                .collect(),
            v2: self
                .dirs
                .iter()
                .find(|d| d.kind == HierarchyKind::V2)
                .map(|d| d.dir.clone()),
        }
    }

    /// Moves process `pid` (with all its threads) into the cgroup in every hierarchy.
    #[cfg(test)]
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for cgroup_dir in &self.dirs {
            write_file(&cgroup_dir.dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Writes `resources` (the spec's, or an update's) into the cgroup's control files.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        if self.unified {
            match self.dirs.iter().find(|d| d.kind == HierarchyKind::V2) {
                Some(d) => v2::apply(&d.mount, &d.dir, resources),
                None => Ok(()),
            }
        } else {
            v1::apply(self, resources)
        }
    }

    /// Freezes every process of the cgroup and waits until the kernel says it is frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        if let Some(dir) = self.v1_dir("freezer") {
            return v1::set_frozen(dir, true);
        }
        match self.v2_dir() {
            Some(dir) if v2::has_freezer(dir) => v2::set_frozen(dir, true),
            _ => Err(CgroupError::NoFreezer),
        }
    }

    /// Lets a frozen cgroup run again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        if let Some(dir) = self.v1_dir("freezer") {
            return v1::set_frozen(dir, false);
        }
        match self.v2_dir() {
            Some(dir) if v2::has_freezer(dir) => v2::set_frozen(dir, false),
            _ => Err(CgroupError::NoFreezer),
        }
    }

    /// Whether [`freeze`](Self::freeze) can work: a v1 freezer hierarchy, or a v2 cgroup
    /// with `cgroup.freeze` (Linux 5.2 and later). Without one, pause must be refused.
    pub fn has_freezer(&self) -> bool {
        self.v1_dir("freezer").is_some() || self.v2_dir().is_some_and(v2::has_freezer)
    }

    /// The processes in the cgroup (for kill-all), from one hierarchy: the pids one or the
    /// v2 one, which every process is in, else any. Empty if it cannot be read.
    pub fn pids(&self) -> Vec<u32> {
        let Some(dir) = self
            .v1_dir("pids")
            .or_else(|| self.v2_dir())
            .or_else(|| self.dirs.first().map(|d| d.dir.as_path()))
        else {
            return Vec::new();
        };
        match read_file(dir, "cgroup.procs") {
            Ok(text) => text.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            Err(e) => {
                log::debug!("listing pids: {e}");
                Vec::new()
            }
        }
    }

    /// A notifier of the kernel's OOM notices for this cgroup: v1's memory hierarchy where
    /// there is one, else the unified one on pure v2; `None` with neither.
    pub fn oom_notifier(&self) -> Option<Result<OomNotifier, CgroupError>> {
        match (self.v1_dir("memory"), self.v2_dir()) {
            (Some(dir), _) => Some(OomNotifier::v1(dir)),
            (None, Some(dir)) if self.unified => Some(OomNotifier::v2(dir)),
            _ => None,
        }
    }

    /// The cgroup's statistics as containerd's `Metrics`: type URL
    /// `io.containerd.cgroups.v1.Metrics` on v1 and hybrid hosts, `io.containerd.cgroups.v2.Metrics`
    /// on pure v2, matching what runc's shim reports on the same host.
    pub fn metrics(&self) -> Result<Any, CgroupError> {
        if self.unified {
            match self.v2_dir() {
                Some(dir) => metrics::v2(dir),
                None => Err(CgroupError::NoHierarchy),
            }
        } else {
            metrics::v1(self)
        }
    }

    /// Removes the cgroup's directory in every hierarchy (the leaf only). Processes that
    /// just exited can keep a cgroup busy for a moment, so EBUSY is retried for about a
    /// second; what still fails is logged, since removal happens on delete, which must not
    /// fail for a leftover directory. A directory already gone is fine.
    pub fn remove(&self) {
        for cgroup_dir in &self.dirs {
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                match remove_dir(&cgroup_dir.dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        log::debug!("removing cgroup {}: {e}", cgroup_dir.dir.display());
                        break;
                    }
                }
            }
        }
    }

    /// The directory in the v1 hierarchy carrying `controller`, if one is mounted.
    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find_map(|d| match &d.kind {
            HierarchyKind::V1 { controllers } if controllers.iter().any(|c| c == controller) => {
                Some(d.dir.as_path())
            }
            _ => None,
        })
    }

    /// The directory in the v2 hierarchy, if one is mounted (membership only on hybrid).
    fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.kind == HierarchyKind::V2)
            .map(|d| d.dir.as_path())
    }
}

/// `rmdir`. A real cgroupfs removes a cgroup with its control files in it; a fake tree in a
/// test is a plain directory holding the files the code wrote, so tests empty it first.
fn remove_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    std::fs::remove_dir(dir)
}

/// Writes `value` to control file `file` in `dir` in one `write(2)`, as the kernel expects.
/// Creating the file is harmless on a cgroupfs (which refuses to) and lets tests use a fake
/// tree of plain directories.
fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    written.map_err(|source| CgroupError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

/// The contents of control file `file` in `dir`.
fn read_file(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

/// A single-number control file; `None` if absent or not a number (`max`, say).
fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    std::fs::read_to_string(dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A flat keyed file (`key value` per line: `memory.stat`, `cpu.stat`, `memory.events`,
/// ...); empty if absent, since statistics are best effort.
fn read_keyed(dir: &Path, file: &str) -> HashMap<String, u64> {
    let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines from this development host (cgroup v1 hybrid), with a non-cgroup line around.
    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn v1(mount: &str, controllers: &[&str]) -> Hierarchy {
        Hierarchy {
            mount: PathBuf::from(mount),
            kind: HierarchyKind::V1 {
                controllers: controllers.iter().map(|c| c.to_string()).collect(),
            },
        }
    }

    #[test]
    fn mountinfo_of_a_hybrid_host_lists_v1_and_unified() {
        let h = Hierarchies::from_mountinfo(HYBRID);
        assert!(!h.is_unified());
        assert_eq!(
            h.list(),
            &[
                v1("/sys/fs/cgroup/cpu", &["cpu"]),
                v1("/sys/fs/cgroup/cpuacct", &["cpuacct"]),
                v1("/sys/fs/cgroup/cpuset", &["cpuset"]),
                v1("/sys/fs/cgroup/memory", &["memory"]),
                v1("/sys/fs/cgroup/freezer", &["freezer"]),
                v1("/sys/fs/cgroup/pids", &["pids"]),
                v1("/sys/fs/cgroup/systemd", &["name=systemd"]),
                Hierarchy {
                    mount: PathBuf::from("/sys/fs/cgroup/unified"),
                    kind: HierarchyKind::V2
                },
            ]
        );
    }

    #[test]
    fn mountinfo_keeps_controllers_not_flags_and_skips_bind_mounts() {
        let text = "\
29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
30 26 0:27 / /sys/fs/cgroup/systemd rw shared:9 - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
99 26 0:26 / /mnt/my\\040dir rw - cgroup cgroup rw,cpu,cpuacct
";
        let h = Hierarchies::from_mountinfo(text);
        assert_eq!(
            h.list(),
            &[
                v1("/sys/fs/cgroup/cpu,cpuacct", &["cpu", "cpuacct"]),
                v1("/sys/fs/cgroup/systemd", &["name=systemd"]),
            ]
        );
    }

    #[test]
    fn mountinfo_of_a_pure_v2_host_is_unified() {
        let text = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_mountinfo(text);
        assert!(h.is_unified());
        assert_eq!(h.list()[0].mount, Path::new("/sys/fs/cgroup"));
        assert!(!Hierarchies::from_mountinfo("").is_unified());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape("/mnt/my\\040dir\\134x"), "/mnt/my dir\\x");
        assert_eq!(unescape("/plain\\"), "/plain\\");
    }

    #[test]
    fn create_refuses_an_empty_path_and_no_hierarchy() {
        let h = Hierarchies::from_mountinfo(HYBRID);
        assert!(matches!(
            ContainerCgroup::create(&h, "", None),
            Err(CgroupError::InvalidPath { .. })
        ));
        assert!(matches!(
            ContainerCgroup::create(&Hierarchies::default(), "/a", None),
            Err(CgroupError::NoHierarchy)
        ));
    }

    #[test]
    fn hybrid_resources_go_to_v1_and_unified_gets_membership_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (memory, unified) = (tmp.path().join("memory"), tmp.path().join("unified"));
        for dir in [&memory, &unified] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        std::fs::write(unified.join("cgroup.controllers"), "").expect("w");
        let text = format!(
            "1 1 0:1 / {} rw - cgroup cgroup rw,memory\n2 1 0:2 / {} rw - cgroup2 cgroup2 rw\n",
            memory.display(),
            unified.display()
        );
        let h = Hierarchies::from_mountinfo(&text);
        let r: LinuxResources =
            serde_json::from_str(r#"{"memory": {"limit": 1048576}}"#).expect("json");
        let cgroup = ContainerCgroup::create(&h, "/h/c", Some(&r)).expect("create");
        assert!(memory.join("h/c/memory.limit_in_bytes").exists());
        assert!(unified.join("h/c").is_dir());
        assert!(!unified.join("h/c/memory.max").exists());
        assert!(!unified.join("cgroup.subtree_control").exists());
        // Hybrid: the v1 directory is joined through `tasks`, the unified one at birth.
        assert_eq!(
            cgroup.placement(),
            Placement {
                v1: vec![memory.join("h/c")],
                v2: Some(unified.join("h/c")),
            }
        );
        // Another process finds the same cgroup without recreating it.
        let opened = ContainerCgroup::open(&h, "/h/c").expect("open");
        assert_eq!(opened.placement(), cgroup.placement());
        opened.remove();
        assert!(!unified.join("h/c").exists());
        assert!(!memory.join("h/c").exists());
    }

    /// The real thing, on this host's cgroup v1 hierarchies: needs root.
    #[test]
    fn a_real_v1_cgroup_limits_freezes_and_goes_away() {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the effective uid.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root || !Path::new("/sys/fs/cgroup/memory").is_dir() {
            eprintln!("skipped: needs root and cgroup v1 memory at /sys/fs/cgroup/memory");
            return;
        }
        let h = Hierarchies::discover().expect("discover");
        let path = format!("/wasmtime-shim-unit-{}", std::process::id());
        let r: LinuxResources =
            serde_json::from_str(r#"{"memory": {"limit": 67108864}, "pids": {"limit": 10}}"#)
                .expect("json");
        let cgroup = ContainerCgroup::create(&h, &path, Some(&r)).expect("create");
        let memory_dir = Path::new("/sys/fs/cgroup/memory").join(&path[1..]);
        let limit = std::fs::read_to_string(memory_dir.join("memory.limit_in_bytes"));
        assert_eq!(limit.expect("limit").trim(), "67108864");

        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let added = cgroup.add(child.id());
        let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id()));
        let frozen = cgroup.freeze();
        let state = std::fs::read_to_string(
            Path::new("/sys/fs/cgroup/freezer")
                .join(&path[1..])
                .join("freezer.state"),
        );
        let thawed = cgroup.thaw();
        let pids = cgroup.pids();
        let metrics = cgroup.metrics();
        let _ = child.kill();
        let _ = child.wait();
        cgroup.remove();
        let leftovers: Vec<_> = h
            .list()
            .iter()
            .map(|hierarchy| hierarchy.mount.join(&path[1..]))
            .filter(|dir| dir.exists())
            .collect();

        added.expect("add");
        let membership = membership.expect("/proc/pid/cgroup");
        assert!(
            membership
                .lines()
                .any(|l| l.ends_with(&format!(":memory:{path}"))),
            "{membership}"
        );
        frozen.expect("freeze");
        assert_eq!(state.expect("freezer.state").trim(), "FROZEN");
        thawed.expect("thaw");
        assert_eq!(pids, vec![child.id()]);
        let any = metrics.expect("metrics");
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }
}
