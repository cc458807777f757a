//! What a kubelet prepares around a CRI pod: its directories (logs, an emptyDir), its cgroup
//! parent, the configs it sends, and the cleanup it does when a pod is gone, so a failing
//! pod test leaves no process, mount or cgroup behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};

use crate::cri::Cri;
use crate::{cgroup, Containerd};

/// The cgroup (cgroupfs driver) every test pod's cgroup parent lives under.
pub const CGROUP_ROOT: &str = "/wasmtime-test";

/// Where the shared directory is mounted in every container of a test pod.
pub const DATA_MOUNT: &str = "/data";

/// One test pod's host side; `id` is set while CRI knows the pod.
pub struct Pod<'a> {
    containerd: &'a Containerd,
    /// The pod sandbox id, from RunPodSandbox until RemovePodSandbox succeeded.
    pub id: Option<String>,
    name: String,
    dir: tempfile::TempDir,
}

impl<'a> Pod<'a> {
    /// A pod with a unique name, its log directory and its shared data directory.
    pub fn new(containerd: &'a Containerd) -> Result<Pod<'a>> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let name = format!("pod-{}-{nanos:x}", std::process::id());
        let dir = tempfile::Builder::new().prefix("wasmpod").tempdir()?;
        std::fs::create_dir(dir.path().join("logs"))?;
        std::fs::create_dir(dir.path().join("data"))?;
        Ok(Pod {
            containerd,
            id: None,
            name,
            dir,
        })
    }

    /// The pod's unique name (also its UID and the last part of its cgroup parent).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's log directory (`PodSandboxConfig.log_directory`).
    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// The host directory every container mounts at [`DATA_MOUNT`], like an emptyDir.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The pod's cgroup parent, as the kubelet's cgroupfs driver names one.
    pub fn cgroup_parent(&self) -> String {
        format!("{CGROUP_ROOT}/{}", self.name)
    }

    /// Pids in the pod's cgroup, in any hierarchy.
    pub fn cgroup_pids(&self) -> Vec<u32> {
        cgroup::pids(&self.cgroup_parent())
    }

    /// Removes what a kubelet removes once a pod is gone: the pod through CRI if it is still
    /// known (a test failed midway), any process left in its cgroup, and its cgroups.
    /// Returns what it had to clean, empty when the pod had already gone cleanly.
    pub fn clean_up(&mut self) -> String {
        let mut report = String::new();
        if let Some(id) = self.id.take() {
            report.push_str(&format!("pod {id} was still known to CRI\n"));
            match Cri::connect(self.containerd.address()) {
                Ok(mut cri) => {
                    if let Err(e) = cri.stop_pod_sandbox(&id) {
                        report.push_str(&format!("{e:#}\n"));
                    }
                    if let Err(e) = cri.remove_pod_sandbox(&id) {
                        report.push_str(&format!("{e:#}\n"));
                    }
                }
                Err(e) => report.push_str(&format!("{e:#}\n")),
            }
        }
        // The pod's shim is in the pod's cgroup and exits a moment after answering
        // Shutdown (it flushes its last events first), so RemovePodSandbox can return while
        // it is still there. What is still there after this grace time is left behind.
        let grace = Instant::now() + Duration::from_secs(3);
        let mut pids = self.cgroup_pids();
        while !pids.is_empty() && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(50));
            pids = self.cgroup_pids();
        }
        if !pids.is_empty() {
            let names: Vec<String> = pids
                .iter()
                .map(|pid| {
                    let comm =
                        std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                    format!("{pid} ({})", comm.trim())
                })
                .collect();
            report.push_str(&format!("killed pids {names:?} left in the pod's cgroup\n"));
            for pid in pids {
                // SAFETY: plain kill(2) on a process of this test's pod.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        cgroup::remove(&self.cgroup_parent(), Duration::from_secs(5));
        // The shared root goes too when no other test is using it: only the root itself (in
        // each hierarchy), which rmdir refuses while anything is below it. Not every empty
        // directory below: another test's container cgroup is empty between its making
        // and its process's arrival.
        let root = CGROUP_ROOT.trim_start_matches('/');
        for dir in cgroup::dirs(CGROUP_ROOT)
            .into_iter()
            .filter(|d| d.ends_with(root))
        {
            let _ = std::fs::remove_dir(dir);
        }
        report
    }
}

/// Namespaces as the kubelet asks for them in a host-network pod without
/// `shareProcessNamespace`: the node's network, a pid namespace per container, the pod's IPC.
fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Makes a pod's sandbox config and its containers' configs ask for a network namespace of
/// the pod's own, as the kubelet does for a pod without `hostNetwork`: the test containerd's
/// CNI network (loopback, and an `eth0` inside the namespace) sets it up, and the pod gets a
/// hostname of its own.
pub fn use_pod_network(sandbox: &mut PodSandboxConfig, containers: &mut [&mut ContainerConfig]) {
    sandbox.hostname = "wasm-pod".into();
    let sandbox_namespaces = sandbox
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|c| c.namespace_options.as_mut());
    let container_namespaces = containers.iter_mut().filter_map(|c| {
        c.linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|c| c.namespace_options.as_mut())
    });
    for options in sandbox_namespaces.into_iter().chain(container_namespaces) {
        options.network = NamespaceMode::Pod as i32;
    }
}

/// The sandbox config of `pod`: host network (see [`use_pod_network`] for a network of its
/// own), its log directory, its cgroup parent.
pub fn pod_config(pod: &Pod) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "wasm-pod".into(),
            uid: pod.name().into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // As the kubelet does for host-network pods: the pod has the node's UTS namespace,
        // and a hostname without one of its own is an error for runc.
        hostname: String::new(),
        log_directory: pod.logs().display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: pod.cgroup_parent(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container `name` of `image` running `command` (empty: the image's entrypoint) with
/// `args`, logging to `log_path` in the pod's log directory, with `data` at [`DATA_MOUNT`].
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    args: &[&str],
    log_path: &str,
    data: &Path,
) -> ContainerConfig {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: strings(command),
        args: strings(args),
        log_path: log_path.into(),
        mounts: vec![Mount {
            container_path: DATA_MOUNT.into(),
            host_path: data.display().to_string(),
            readonly: false,
            ..Default::default()
        }],
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs one pod test as a kubelet would see it through: a containerd of its own, a pod, the
/// test's steps, then the kubelet's cleanup. Fails with the error, the shim's log, the tail
/// of containerd's and what the cleanup found; and fails too when the steps passed but the
/// pod left something behind.
pub fn run_pod_test(steps: impl FnOnce(&Containerd, &mut Pod) -> Result<()>) {
    let containerd = match Containerd::start() {
        Ok(containerd) => containerd,
        Err(e) => panic!("containerd: {e:#}"),
    };
    let mut pod = match Pod::new(&containerd) {
        Ok(pod) => pod,
        Err(e) => panic!("the pod's directories: {e:#}"),
    };
    let result = steps(&containerd, &mut pod);
    let leftovers = pod.clean_up();
    if let Err(e) = result {
        panic!(
            "{e:#}\n\n--- shim log ---\n{}\n--- containerd log (tail) ---\n{}\n\
             --- cleanup after the failure ---\n{leftovers}",
            containerd.shim_log(),
            containerd.log_tail(150),
        );
    }
    assert!(
        leftovers.is_empty(),
        "the pod left things behind:\n{leftovers}"
    );
}

/// Polls `check` every 100 ms until it is true, for at most `seconds`.
pub fn poll(what: &str, seconds: u64, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {seconds} s waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the CRI log file `path` holds `line` as one complete stdout line
/// (`<timestamp> stdout F <line>`).
pub fn log_has_line(path: &Path, line: &str) -> bool {
    read_log(path).lines().any(|l| {
        let fields: Vec<&str> = l.splitn(4, ' ').collect();
        fields.len() == 4 && fields[1] == "stdout" && fields[2] == "F" && fields[3] == line
    })
}

/// The CRI log file `path`, or a note that there is none yet.
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}
