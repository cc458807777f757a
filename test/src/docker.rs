//! A private dockerd on a private containerd, the way a Docker user's host runs this shim:
//! dockerd with the containerd image store, talking to the test's [`Containerd`] (which has
//! the freshly built shim first on its PATH), with every directory, socket and cgroup of its
//! own.
//!
//! The Docker binaries come from `TEST_DOCKER_DIR` (a directory holding `dockerd`, `docker`,
//! `docker-proxy` and `docker-init`, as `scripts/fetch-clients.sh` lays out Debian sid's),
//! else `target/clients/docker/bin`. The daemon settings are the ones this host needs, with
//! their reasons in [`daemon_json`]; docs/docker.md repeats them for users.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{bin_dir, cgroup, mounts_under, run_to_output, stop_daemon, unmount_all};
use crate::{Containerd, ContainerdBinaries, CtrOutput};

/// Where the Docker binaries are: `TEST_DOCKER_DIR`, else what `make clients` fetched.
pub fn docker_dir() -> PathBuf {
    std::env::var_os("TEST_DOCKER_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/clients/docker/bin")
        })
}

/// The settings this host needs, in daemon.json form (`root` is the daemon's private
/// directory, `cgroup_parent` its own cgroup parent):
/// - `bridge: none`, `iptables`/`ip6tables`/`ip-forward`/`ip-masq: false`: no docker0, no
///   firewall rule, no forwarding. Containers on the default network still get a network
///   namespace of their own with only loopback, and no test traffic can leave the host.
/// - `userland-proxy: false`: no docker-proxy processes (nothing is published).
/// - `features.containerd-snapshotter`: images live in containerd, where `wasi/wasm` images
///   can be stored and run (the classic graph drivers take Linux images only).
/// - `exec-opts: native.cgroupdriver=cgroupfs`: no systemd here.
/// - `cgroup-parent`: the containers' cgroups under a parent of this daemon's own, removed
///   when it stops.
/// - `init-path`: `docker run --init` finds docker-init whatever dockerd's PATH.
///
/// Docker 28 puts no `time` namespace into its specs, so bookworm's runc 1.1.5 (which has no
/// time namespaces) runs its native containers as is. Docker 29 does; this shim accepts
/// namespaces it has no use for either way.
pub fn daemon_json(init_path: &Path, cgroup_parent: &str) -> serde_json::Value {
    json!({
        "bridge": "none",
        "iptables": false,
        "ip6tables": false,
        "ip-forward": false,
        "ip-masq": false,
        "userland-proxy": false,
        "features": { "containerd-snapshotter": true },
        "exec-opts": ["native.cgroupdriver=cgroupfs"],
        "cgroup-parent": cgroup_parent,
        "init-path": init_path,
    })
}

/// A private dockerd on a private containerd; stopped, with everything it made, on drop.
pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    socket: PathBuf,
    cgroup_parent: String,
    docker_dir: PathBuf,
    /// Dropped after dockerd has stopped (fields drop in order, after `Drop::drop`).
    containerd: Containerd,
}

impl Dockerd {
    /// Starts a containerd 2 of our own (the one under test if it is 2.x, else the one
    /// `make clients` fetched: dockerd 28 ships with containerd 2), then dockerd on it, and
    /// waits until dockerd answers.
    pub fn start() -> Result<Dockerd> {
        let under_test = ContainerdBinaries::under_test();
        let binaries = if under_test.major >= 2 {
            under_test.clone()
        } else {
            ContainerdBinaries::in_dir(Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/clients/containerd-2/bin"),
            ))
        };
        if binaries.major < 2 {
            bail!(
                "dockerd runs on containerd 2: run `make clients` (or set TEST_CONTAINERD_DIR \
                 to a containerd 2); found {:?}",
                binaries.version
            );
        }
        let docker_dir = docker_dir();
        for binary in ["dockerd", "docker", "docker-init"] {
            if !docker_dir.join(binary).exists() {
                bail!(
                    "{} is missing: run `make clients` (or set TEST_DOCKER_DIR)",
                    docker_dir.join(binary).display()
                );
            }
        }
        let containerd = Containerd::start_from(&binaries, &[])?;
        // Short prefix: the socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new().prefix("wsd").tempdir_in("/tmp")?;
        let suffix = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cgroup_parent = format!("/wasmtime-test-{suffix}");
        std::fs::create_dir(dir.path().join("cli"))?;
        std::fs::write(
            dir.path().join("daemon.json"),
            serde_json::to_vec_pretty(&daemon_json(
                &docker_dir.join("docker-init"),
                &cgroup_parent,
            ))?,
        )?;
        let socket = dir.path().join("d.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        // Its PATH: docker-proxy and docker-init beside dockerd, then the system's (runc).
        let path = format!(
            "{}:{}",
            docker_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(docker_dir.join("dockerd"))
            .arg("--config-file")
            .arg(dir.path().join("daemon.json"))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            // Without it, dockerd starts a containerd of its own, whichever is on PATH.
            .arg("--containerd")
            .arg(containerd.address())
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let dockerd = Dockerd {
            dir,
            child,
            socket,
            cgroup_parent,
            docker_dir,
            containerd,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if dockerd.docker(&["version"]).code == 0 {
                return Ok(dockerd);
            }
            if Instant::now() > deadline {
                bail!("dockerd did not start:\n{}", dockerd.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The containerd under this dockerd (its log holds the shim's).
    pub fn containerd(&self) -> &Containerd {
        &self.containerd
    }

    /// dockerd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A `docker` command aimed at this dockerd, with a client config of its own.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.docker_dir.join("docker"));
        command
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.path().join("cli"));
        command
    }

    /// Runs `docker` with no stdin and collects its output.
    pub fn docker(&self, args: &[&str]) -> CtrOutput {
        run_to_output(self.docker_command(args))
    }

    /// Packs `wasm` with the project's packer as image `name` (a component with
    /// `--os-version wasip2`) and `docker load`s it, as a user would; returns the name.
    pub fn load_program(&self, wasm: &Path, name: &str, component: bool) -> Result<String> {
        let tar = self
            .dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        let mut pack = Command::new(bin_dir().join("wasm-oci-pack"));
        pack.args(["--name", name, "--output"]).arg(&tar);
        if component {
            pack.args(["--os-version", "wasip2"]);
        }
        let packed = pack.arg(wasm).output().context("running wasm-oci-pack")?;
        if !packed.status.success() {
            bail!(
                "packing failed: {}",
                String::from_utf8_lossy(&packed.stderr)
            );
        }
        let tar = tar.display().to_string();
        let load = self.docker(&["load", "-i", &tar]);
        if load.code != 0 {
            bail!("docker load failed: {load:?}");
        }
        Ok(String::from_utf8_lossy(&packed.stdout).trim().to_string())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // dockerd stops the containers still running when it is stopped; no client call
        // here, which a wedged dockerd could leave hanging. What is left after that (shims,
        // mounts) goes with the containerd below it.
        stop_daemon(&mut self.child, Duration::from_secs(15));
        // dockerd leaves its network namespace bind mount (exec/netns/default) behind.
        unmount_all(mounts_under(self.dir.path()));
        cgroup::remove(&self.cgroup_parent, Duration::from_secs(5));
    }
}
