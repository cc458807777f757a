//! A kubelet's view of the private containerd: a blocking CRI client over its gRPC socket
//! (containerd 1.6 serves its CRI plugin there), and the images a pod test needs, packed with
//! the project's packer and imported where CRI looks for them.
//!
//! No registry is reachable from the tests, so every image, the sandbox's pause included, is
//! built locally and imported with `ctr -n k8s.io images import`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerStats, ContainerStatsRequest, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, Image,
    LinuxContainerResources, ListImagesRequest, PodSandboxConfig, PodSandboxStatus,
    PodSandboxStatusRequest, PodSandboxStatusResponse, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    UpdateContainerResourcesRequest, VersionRequest, VersionResponse,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{bin_dir, example_file, program, Containerd, PAUSE_IMAGE};

/// The containerd namespace CRI keeps its images and containers in.
pub const NAMESPACE: &str = "k8s.io";

/// Longest any one CRI call may take (StopContainer waits out its own timeout inside).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A CRI client that blocks on each call, so tests read as a sequence of kubelet steps.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// Waits for one CRI call, turning a gRPC status into an error that names the call.
fn wait<T>(
    rt: &tokio::runtime::Runtime,
    call: &str,
    future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match rt.block_on(future) {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(anyhow!(
            "CRI {call} failed: {:?}: {}",
            status.code(),
            status.message()
        )),
    }
}

impl Cri {
    /// Connects to the CRI services on containerd's unix socket `socket`.
    pub fn connect(socket: &Path) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket = socket.to_path_buf();
        // The URI is required by tonic but unused: every connection goes to the socket.
        let connector = tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        });
        let channel = rt
            .block_on(
                Endpoint::from_static("http://localhost")
                    .timeout(CALL_TIMEOUT)
                    .connect_with_connector(connector),
            )
            .context("connecting to containerd's CRI socket")?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// `Version`: which runtime answers and which CRI version it speaks.
    pub fn version(&mut self) -> Result<VersionResponse> {
        let request = VersionRequest {
            version: "v1".into(),
        };
        wait(&self.rt, "Version", self.runtime.version(request))
    }

    /// `ListImages`: the images CRI can run.
    pub fn list_images(&mut self) -> Result<Vec<Image>> {
        let request = ListImagesRequest { filter: None };
        let response = wait(&self.rt, "ListImages", self.images.list_images(request))?;
        Ok(response.images)
    }

    /// `RunPodSandbox` with a runtime handler (a RuntimeClass's `handler`); returns the pod id.
    pub fn run_pod_sandbox(&mut self, config: &PodSandboxConfig, handler: &str) -> Result<String> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        };
        let response = wait(
            &self.rt,
            "RunPodSandbox",
            self.runtime.run_pod_sandbox(request),
        )?;
        Ok(response.pod_sandbox_id)
    }

    /// The whole `PodSandboxStatus` reply for pod `id`, with the runtime's info if `verbose`.
    fn pod_sandbox_status_reply(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<PodSandboxStatusResponse> {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose,
        };
        wait(
            &self.rt,
            "PodSandboxStatus",
            self.runtime.pod_sandbox_status(request),
        )
    }

    /// `PodSandboxStatus` of pod `id`.
    pub fn pod_sandbox_status(&mut self, id: &str) -> Result<PodSandboxStatus> {
        let response = self.pod_sandbox_status_reply(id, false)?;
        response.status.context("PodSandboxStatus without status")
    }

    /// The network namespace CRI made for pod `id` (one that is not host-network), as the
    /// sandbox's runtime spec names it in `PodSandboxStatus`'s verbose info.
    pub fn pod_network_namespace(&mut self, id: &str) -> Result<PathBuf> {
        let response = self.pod_sandbox_status_reply(id, true)?;
        let info = response
            .info
            .get("info")
            .context("PodSandboxStatus without verbose info")?;
        let info: serde_json::Value =
            serde_json::from_str(info).context("PodSandboxStatus's info is not JSON")?;
        info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|ns| ns["type"] == "network")
            .and_then(|ns| ns["path"].as_str())
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
            .with_context(|| format!("no network namespace path in the sandbox's spec: {info}"))
    }

    /// `StopPodSandbox`: stops every container of pod `id`, then its sandbox.
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        wait(
            &self.rt,
            "StopPodSandbox",
            self.runtime.stop_pod_sandbox(request),
        )?;
        Ok(())
    }

    /// `RemovePodSandbox`: removes pod `id` and its containers.
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        let call = self.runtime.remove_pod_sandbox(request);
        wait(&self.rt, "RemovePodSandbox", call)?;
        Ok(())
    }

    /// `CreateContainer` in pod `pod` (created from `pod_config`); returns the container id.
    pub fn create_container(
        &mut self,
        pod: &str,
        config: &ContainerConfig,
        pod_config: &PodSandboxConfig,
    ) -> Result<String> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        let response = wait(
            &self.rt,
            "CreateContainer",
            self.runtime.create_container(request),
        )?;
        Ok(response.container_id)
    }

    /// `StartContainer` of container `id`.
    pub fn start_container(&mut self, id: &str) -> Result<()> {
        let request = StartContainerRequest {
            container_id: id.into(),
        };
        wait(
            &self.rt,
            "StartContainer",
            self.runtime.start_container(request),
        )?;
        Ok(())
    }

    /// `StopContainer`: the stop signal, then SIGKILL after `timeout` seconds.
    pub fn stop_container(&mut self, id: &str, timeout: i64) -> Result<()> {
        let request = StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        wait(
            &self.rt,
            "StopContainer",
            self.runtime.stop_container(request),
        )?;
        Ok(())
    }

    /// `ContainerStatus` of container `id`.
    pub fn container_status(&mut self, id: &str) -> Result<ContainerStatus> {
        let request = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let response = wait(
            &self.rt,
            "ContainerStatus",
            self.runtime.container_status(request),
        )?;
        response.status.context("ContainerStatus without status")
    }

    /// `UpdateContainerResources` of container `id` with a new memory limit, as a kubelet
    /// resizing a pod in place sends it.
    pub fn update_memory_limit(&mut self, id: &str, bytes: i64) -> Result<()> {
        let request = UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: bytes,
                ..Default::default()
            }),
            ..Default::default()
        };
        wait(
            &self.rt,
            "UpdateContainerResources",
            self.runtime.update_container_resources(request),
        )?;
        Ok(())
    }

    /// `ExecSync` (what `kubectl exec` without a terminal and exec probes use).
    pub fn exec_sync(&mut self, id: &str, cmd: &[&str], timeout: i64) -> Result<ExecSyncResponse> {
        let request = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        wait(&self.rt, "ExecSync", self.runtime.exec_sync(request))
    }

    /// `ContainerStats` of container `id` (containerd asks the shim for its metrics).
    pub fn container_stats(&mut self, id: &str) -> Result<ContainerStats> {
        let request = ContainerStatsRequest {
            container_id: id.into(),
        };
        let response = wait(
            &self.rt,
            "ContainerStats",
            self.runtime.container_stats(request),
        )?;
        response.stats.context("ContainerStats without stats")
    }
}

/// What to put in an image: `program` at `/<its file name>` plus `extra` files, for
/// `platform`, with `entrypoint` (default: the program).
pub struct ImageRecipe<'a> {
    /// Image name, expanded as docker does.
    pub name: &'a str,
    /// `OS/ARCH` the image claims.
    pub platform: &'a str,
    /// The main program.
    pub program: PathBuf,
    /// The image entrypoint, if not the program itself.
    pub entrypoint: Option<&'a str>,
    /// Further files as (source, absolute destination), keeping their permission bits.
    pub extra: Vec<(PathBuf, &'a str)>,
}

/// Packs `recipe` with `wasm-oci-pack` and imports it into CRI's namespace; returns the
/// image's full name.
pub fn import_image(containerd: &Containerd, recipe: &ImageRecipe) -> Result<String> {
    let tar = containerd
        .dir()
        .join(format!("{}.tar", recipe.name.replace(['/', ':'], "_")));
    let mut pack = Command::new(bin_dir().join("wasm-oci-pack"));
    pack.args(["--platform", recipe.platform, "--name", recipe.name])
        .arg("--output")
        .arg(&tar);
    if let Some(entrypoint) = recipe.entrypoint {
        pack.args(["--entrypoint", entrypoint]);
    }
    pack.arg(&recipe.program);
    for (source, destination) in &recipe.extra {
        pack.arg(format!("{}:{destination}", source.display()));
    }
    let packed = pack.output().context("running wasm-oci-pack")?;
    if !packed.status.success() {
        bail!(
            "packing {} failed: {}",
            recipe.name,
            String::from_utf8_lossy(&packed.stderr)
        );
    }
    let name = String::from_utf8_lossy(&packed.stdout).trim().to_string();
    let tar = tar.display().to_string();
    let import = containerd.ctr(&[
        "-n",
        NAMESPACE,
        "images",
        "import",
        "--platform",
        recipe.platform,
        &tar,
    ]);
    if import.code != 0 {
        bail!("importing {name} failed: {import:?}");
    }
    // containerd 2's CRI learns of an imported image from containerd's events, a moment
    // after the import returns: wait until it lists the image, as a kubelet's image pull
    // returns only then.
    let mut cri = Cri::connect(containerd.address())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let images = cri.list_images()?;
        if images.iter().any(|i| i.repo_tags.contains(&name)) {
            return Ok(name);
        }
        if std::time::Instant::now() > deadline {
            bail!("CRI does not list {name} 10 s after its import: {images:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sandbox image CRI is configured with ([`PAUSE_IMAGE`]): the native `pause` built by
/// `make examples`, at `/pause`.
pub fn import_pause_image(containerd: &Containerd) -> Result<String> {
    import_image(
        containerd,
        &ImageRecipe {
            name: PAUSE_IMAGE,
            platform: "linux/amd64",
            program: example_file("pause"),
            entrypoint: None,
            extra: vec![],
        },
    )
}

/// A native sidecar image: Debian's static busybox (busybox-static) at `/bin/busybox`.
pub fn import_busybox_image(containerd: &Containerd, name: &str) -> Result<String> {
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing: apt-get install busybox-static");
    }
    import_image(
        containerd,
        &ImageRecipe {
            name,
            platform: "linux/amd64",
            program: busybox.clone(),
            entrypoint: Some("/bin/busybox"),
            extra: vec![(busybox, "/bin/busybox")],
        },
    )
}

/// A wasm image (`wasi/wasm`) of the test program `program_name`, at `/<name>.wasm`.
pub fn import_wasm_image(
    containerd: &Containerd,
    program_name: &str,
    name: &str,
) -> Result<String> {
    import_image(
        containerd,
        &ImageRecipe {
            name,
            platform: "wasi/wasm",
            program: program(program_name),
            entrypoint: None,
            extra: vec![],
        },
    )
}
