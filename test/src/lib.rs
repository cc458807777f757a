//! Harness for tests that drive a real containerd against the built shim.
//!
//! [`Containerd::start`] runs a `containerd` with a private config (root, state and sockets
//! in a temp dir) and the freshly built shim first on its PATH; dropping it stops that
//! containerd and removes everything it left. Tests talk to it through `ctr`, as a user
//! would, through its CRI plugin, as a kubelet would ([`cri`]), or through a private dockerd
//! ([`docker`]).
//!
//! Which containerd: the one in `TEST_CONTAINERD_DIR` (a directory holding `containerd`,
//! `ctr` and `containerd-shim-runc-v2`, as `scripts/fetch-clients.sh` lays out newer lines
//! from Debian's archive), else Debian bookworm's on `PATH`.

pub mod bench;
pub mod cgroup;
pub mod cri;
pub mod docker;
pub mod http;
pub mod netns;
pub mod pod;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The runtime name users pass to `ctr run --runtime`.
pub const RUNTIME: &str = "io.containerd.wasmtime.v1";

/// Directory of the built binaries (`SHIM_BIN_DIR`, else the profile dir of this test).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SHIM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A wasm program built by `make examples` (`WASM_EXAMPLES_DIR`, else examples/build).
pub fn program(name: &str) -> PathBuf {
    example_file(&format!("{name}.wasm"))
}

/// Where `make examples` puts what it builds: `WASM_EXAMPLES_DIR`, else examples/build.
pub fn examples_dir() -> PathBuf {
    std::env::var("WASM_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/build"))
}

/// `wasm` (a module or a component: a custom section may follow any section of either) plus
/// a custom section `name` holding `round`: the same program under a new sha256, so the
/// compile cache meets bytes it has never seen.
pub fn with_custom_section(wasm: &[u8], name: &str, round: usize) -> Vec<u8> {
    with_custom_payload(wasm, name, &round.to_le_bytes())
}

/// `wasm` with a custom section `name` holding `payload` appended: the same program, other
/// bytes (and, with a large payload, a large program).
pub fn with_custom_payload(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut value: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut name_field = Vec::new();
    leb128(name.len(), &mut name_field);
    name_field.extend_from_slice(name.as_bytes());
    let mut bytes = wasm.to_vec();
    bytes.push(0);
    leb128(name_field.len() + payload.len(), &mut bytes);
    bytes.extend_from_slice(&name_field);
    bytes.extend_from_slice(payload);
    bytes
}

/// A file `make examples` builds (`WASM_EXAMPLES_DIR`, else examples/build), such as the
/// native `pause`.
pub fn example_file(file: &str) -> PathBuf {
    let path = examples_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run `make examples` (or `make test`)",
        path.display()
    );
    path
}

/// The image CRI runs as each pod's sandbox container (`sandbox_image`):
/// [`cri::import_pause_image`] packs and imports it. Named so it can never be pulled from a
/// registry by mistake.
pub const PAUSE_IMAGE: &str = "localhost/wasmtime-test/pause:1";

/// The CRI runtime handler (`RuntimeClass.handler`) that selects this shim.
pub const RUNTIME_HANDLER: &str = "wasmtime";

/// The containerd under test: the binaries in `TEST_CONTAINERD_DIR`, else the system's.
#[derive(Debug, Clone)]
pub struct ContainerdBinaries {
    /// Directory holding `containerd`, `ctr` and `containerd-shim-runc-v2`; `None` for the
    /// ones on `PATH`.
    pub dir: Option<PathBuf>,
    /// Major version: 1 reads config version 2, 2 reads version 3 (its CRI plugin split
    /// into `io.containerd.cri.v1.*`).
    pub major: u32,
    /// What `containerd --version` printed, for messages.
    pub version: String,
}

impl ContainerdBinaries {
    /// The containerd this process tests (asked once: every test of a run uses the same).
    pub fn under_test() -> &'static ContainerdBinaries {
        static UNDER_TEST: std::sync::OnceLock<ContainerdBinaries> = std::sync::OnceLock::new();
        UNDER_TEST.get_or_init(|| {
            ContainerdBinaries::in_dir(
                std::env::var_os("TEST_CONTAINERD_DIR")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from),
            )
        })
    }

    /// The binaries in `dir` (`None`: on `PATH`), their version asked of `containerd`.
    pub fn in_dir(dir: Option<PathBuf>) -> ContainerdBinaries {
        let mut binaries = ContainerdBinaries {
            dir,
            major: 1,
            version: String::new(),
        };
        let version = Command::new(binaries.path("containerd"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        // "containerd github.com/containerd/containerd/v2 2.1.9~ds1 ...": the first word
        // that starts with a digit.
        binaries.major = version
            .split_whitespace()
            .find_map(|word| word.split('.').next()?.parse().ok())
            .unwrap_or(1);
        binaries.version = version;
        binaries
    }

    /// The path of one of the binaries (`containerd`, `ctr`, `containerd-shim-runc-v2`).
    pub fn path(&self, binary: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(binary),
            None => PathBuf::from(binary),
        }
    }
}

/// The private containerd's config: everything under `root`, a debug log (the shim's log
/// reaches containerd's only at debug level), and CRI set up as a kubelet would see it on
/// this machine: the `wasmtime` runtime handler, our pause image as sandbox image (no
/// registry is reachable), a CNI network that stays inside each pod (see [`write_cni`]), and OOM score
/// adjustments that never go below containerd's own. containerd 2 takes the same settings
/// in its own layout (config version 3), as its users write them; its NRI plugin, on by
/// default, gets a socket of its own instead of the node-wide one.
fn config(root: &str, major: u32) -> String {
    let common = format!(
        r#"root = "{root}/root"
state = "{root}/state"

[grpc]
  address = "{root}/c.sock"

[ttrpc]
  address = "{root}/c.sock.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#
    );
    if major >= 2 {
        return format!(
            r#"version = 3
{common}
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{root}/cni/bin"]
  conf_dir = "{root}/cni/net.d"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{RUNTIME_HANDLER}]
  runtime_type = "{RUNTIME}"

[plugins."io.containerd.nri.v1.nri"]
  socket_path = "{root}/nri.sock"
"#
        );
    }
    format!(
        r#"version = 2
{common}
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  restrict_oom_score_adj = true
  sandbox_image = "{PAUSE_IMAGE}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{root}/cni/bin"
  conf_dir = "{root}/cni/net.d"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNTIME_HANDLER}]
  runtime_type = "{RUNTIME}"
"#
    )
}

/// Where Debian's `containernetworking-plugins` puts the CNI plugins.
const SYSTEM_CNI_BIN: &str = "/usr/lib/cni";

/// The tests' own CNI plugin (`test/cni/wasmtime-test-eth0`): an `eth0` inside the pod's
/// namespace, which containerd's CRI requires of every pod network.
const TEST_CNI_PLUGIN: &str = "wasmtime-test-eth0";

/// A CNI setup of the test's own under `root/cni`: a bin dir holding only Debian's
/// `loopback` plugin and the tests' `eth0` plugin, and one network list chaining them. A pod
/// that is not host-network then gets a network namespace of its own with loopback up, and
/// an `eth0` whose address (TEST-NET-1) and veth peer stay inside that namespace: nothing is
/// created on the host, and no test traffic can leave the namespaces the test made.
///
/// Loopback alone is not enough: containerd's CRI fails RunPodSandbox ("failed to find
/// network info for sandbox") unless the network's result names an `eth0` with an address.
/// The loopback plugin comes second: it passes the first plugin's result on.
fn write_cni(root: &Path) -> Result<()> {
    let bin = root.join("cni/bin");
    let conf = root.join("cni/net.d");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&conf)?;
    let loopback = Path::new(SYSTEM_CNI_BIN).join("loopback");
    if !loopback.exists() {
        bail!(
            "{} is missing: apt-get install containernetworking-plugins",
            loopback.display()
        );
    }
    std::os::unix::fs::symlink(&loopback, bin.join("loopback"))?;
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("cni")
            .join(TEST_CNI_PLUGIN),
        bin.join(TEST_CNI_PLUGIN),
    )?;
    std::fs::write(
        conf.join("10-pod.conflist"),
        format!(
            r#"{{
  "cniVersion": "1.0.0",
  "name": "wasmtime-test-pod",
  "plugins": [
    {{ "type": "{TEST_CNI_PLUGIN}", "address": "192.0.2.1/32" }},
    {{ "type": "loopback" }}
  ]
}}
"#
        ),
    )?;
    Ok(())
}

/// A private containerd, stopped and cleaned up on drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    socket: PathBuf,
    /// Extra environment containerd (and so every shim it starts) runs with.
    env: Vec<(String, String)>,
    /// Which containerd this is.
    binaries: ContainerdBinaries,
}

/// What a `ctr` invocation printed and how it ended.
#[derive(Debug)]
pub struct CtrOutput {
    /// Exit code of ctr (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for CtrOutput {
    fn from(o: Output) -> Self {
        CtrOutput {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Containerd {
    /// Starts a containerd of our own and waits until it answers.
    pub fn start() -> Result<Containerd> {
        Containerd::start_with_env(&[])
    }

    /// [`Containerd::start`] with extra environment variables for containerd, which its
    /// shims inherit (how an operator sets the shim's cache settings).
    pub fn start_with_env(env: &[(&str, &str)]) -> Result<Containerd> {
        Containerd::start_from(ContainerdBinaries::under_test(), env)
    }

    /// A containerd of our own from `binaries` rather than the one under test (dockerd's
    /// tests run on containerd 2 whichever line the rest of the suite tests).
    pub fn start_from(binaries: &ContainerdBinaries, env: &[(&str, &str)]) -> Result<Containerd> {
        let shim = bin_dir().join("containerd-shim-wasmtime-v1");
        if !shim.exists() {
            bail!("{} is missing: run `make build`", shim.display());
        }
        // Short prefix: the socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new().prefix("wsc").tempdir_in("/tmp")?;
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin)?;
        std::os::unix::fs::symlink(&shim, bin.join("containerd-shim-wasmtime-v1"))?;
        let socket = dir.path().join("c.sock");
        let root = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("config.toml"),
            config(&root, binaries.major),
        )?;
        write_cni(dir.path())?;
        // The shim first, then the runc shim of the containerd under test (a pod's native
        // containers go to the runc shim of the containerd that serves it).
        let mut path = bin.display().to_string();
        if let Some(clients) = &binaries.dir {
            path = format!("{path}:{}", clients.display());
        }
        path = format!("{path}:{}", std::env::var("PATH").unwrap_or_default());
        std::fs::write(dir.path().join("path"), path)?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Last before containerd starts: from here the drop below unmounts it.
        mount_state(dir.path())?;
        let child = spawn_containerd(dir.path(), binaries, &env)
            .inspect_err(|_| unmount_all(mounts_under(dir.path())))?;
        let containerd = Containerd {
            dir,
            child,
            socket,
            env,
            binaries: binaries.clone(),
        };
        containerd.wait_until_answering()?;
        Ok(containerd)
    }

    fn wait_until_answering(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ctr(&["version"]).code == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd did not start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd (SIGTERM, as a service manager does) and starts it again with the
    /// same root and state, leaving its shims running, as an upgrade or a crash-restart does.
    pub fn restart(&mut self) -> Result<()> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait()?;
        self.child = spawn_containerd(self.dir.path(), &self.binaries, &self.env)?;
        self.wait_until_answering()
    }

    /// Which containerd this is.
    pub fn binaries(&self) -> &ContainerdBinaries {
        &self.binaries
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The containerd daemon's pid, to watch its resources.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The private directory (root, state, sockets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The shims' default compile cache directory, under this containerd's state.
    pub fn compile_cache_dir(&self) -> PathBuf {
        self.dir().join("state/io.containerd.wasmtime.v1/cache")
    }

    /// The compiled programs in [`Containerd::compile_cache_dir`] (its `.cwasm` entries, not
    /// the digest memo, lock or temporary files), sorted.
    pub fn compiled_entries(&self) -> Vec<PathBuf> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(self.compile_cache_dir())
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                    .collect()
            })
            .unwrap_or_default();
        entries.sort();
        entries
    }

    /// A `ctr` command aimed at this containerd.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.binaries.path("ctr"));
        command.arg("-a").arg(&self.socket).args(args);
        command
    }

    /// Runs `ctr` with no stdin and collects its output.
    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        run_to_output(self.ctr_command(args))
    }

    /// `ctr run MODE --runtime wasmtime [FLAGS] --rootfs DIR ID ARGS...`.
    fn run_command(
        &self,
        mode: &str,
        flags: &[&str],
        rootfs: &Path,
        id: &str,
        args: &[&str],
    ) -> Command {
        let mut command = self.ctr_command(&["run", mode, "--runtime", RUNTIME]);
        command
            .args(flags)
            .arg("--rootfs")
            .arg(rootfs)
            .arg(id)
            .args(args);
        command
    }

    /// `ctr run --rm --runtime wasmtime [FLAGS] --rootfs DIR ID ARGS...`, for a test that
    /// wires stdio itself.
    pub fn run_rootfs_command(
        &self,
        flags: &[&str],
        rootfs: &Path,
        id: &str,
        args: &[&str],
    ) -> Command {
        self.run_command("--rm", flags, rootfs, id, args)
    }

    /// [`Containerd::run_rootfs_command`] with no stdin, collecting its output.
    pub fn run_rootfs(&self, flags: &[&str], rootfs: &Path, id: &str, args: &[&str]) -> CtrOutput {
        run_to_output(self.run_rootfs_command(flags, rootfs, id, args))
    }

    /// `ctr run -d --runtime wasmtime [FLAGS] --rootfs DIR ID ARGS...`; asserts it started.
    pub fn run_detached(&self, flags: &[&str], rootfs: &Path, id: &str, args: &[&str]) {
        let out = run_to_output(self.run_command("-d", flags, rootfs, id, args));
        assert_eq!(out.code, 0, "ctr run -d {id}: {out:?}");
    }

    /// The pid `ctr task ls` shows for task `id` (for a wasm task: its own process).
    pub fn task_pid(&self, id: &str) -> u32 {
        let ls = self.ctr(&["task", "ls"]);
        ls.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("no pid for {id} in {ls:?}"))
    }

    /// Kills task `id` with `signal`, waits for STOPPED and removes the task, asserting each
    /// step.
    pub fn kill_and_remove(&self, id: &str, signal: &str) {
        let kill = self.ctr(&["task", "kill", "-s", signal, id]);
        assert_eq!(kill.code, 0, "kill {id}: {kill:?}");
        if let Err(e) = self.wait_for_status(id, "STOPPED", Duration::from_secs(5)) {
            panic!("{e}");
        }
        let rm = self.ctr(&["task", "rm", id]);
        assert_eq!(rm.code, 0, "task rm {id}: {rm:?}");
    }

    /// Packs `wasm` into an image named `name` with the project's packer and imports it.
    pub fn import_program(&self, wasm: &Path, name: &str) -> Result<String> {
        self.import_program_as(wasm, name, "wasi/wasm")
    }

    /// Like [`Containerd::import_program`], for an image claiming `platform`.
    pub fn import_program_as(&self, wasm: &Path, name: &str, platform: &str) -> Result<String> {
        let tar = self
            .dir
            .path()
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        let pack = Command::new(bin_dir().join("wasm-oci-pack"))
            .args(["--platform", platform, "--name", name, "--output"])
            .arg(&tar)
            .arg(wasm)
            .output()?;
        if !pack.status.success() {
            bail!("packing failed: {}", String::from_utf8_lossy(&pack.stderr));
        }
        let full_name = String::from_utf8_lossy(&pack.stdout).trim().to_string();
        let tar = tar.display().to_string();
        let import = self.ctr(&["images", "import", "--platform", platform, &tar]);
        if import.code != 0 {
            bail!("import failed: {}", import.stderr);
        }
        Ok(full_name)
    }

    /// Pids of shim processes serving this containerd.
    pub fn shim_pids(&self) -> Vec<u32> {
        self.pids_of("containerd-shim-wasmtime-v1")
    }

    /// Pids of containerd's own runc shims serving this containerd (the shim hands pod
    /// sandboxes and native containers to one).
    pub fn runc_shim_pids(&self) -> Vec<u32> {
        self.pids_of("containerd-shim-runc-v2")
    }

    /// Pids of processes running `binary` with this containerd's address among their
    /// arguments: shims are told `-address` and keep it in their command line. A child of
    /// such a process is not counted: between fork and exec (a shim starting its compile
    /// helper, runc's shim starting runc) a child shows its parent's command line, and a
    /// scan that caught one in that instant would see a second shim.
    fn pids_of(&self, binary: &str) -> Vec<u32> {
        let address = self.socket.display().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let args: Vec<&str> = cmdline.split('\0').collect();
            let runs_binary = args[0].rsplit('/').next() == Some(binary)
                || std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                    exe.file_name().is_some_and(|n| {
                        n.to_string_lossy().trim_end_matches(" (deleted)") == binary
                    })
                });
            if runs_binary && args.contains(&address.as_str()) {
                found.push((pid, parent_of(pid)));
            }
        }
        let all: Vec<u32> = found.iter().map(|(pid, _)| *pid).collect();
        found
            .into_iter()
            .filter(|(_, parent)| !parent.is_some_and(|parent| all.contains(&parent)))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The shim's own lines in containerd's log (tagged with the runtime name).
    pub fn shim_log(&self) -> String {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("runtime={RUNTIME}")))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// The last `lines` lines of containerd's log, for failure messages of long tests.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// containerd's gRPC socket, where its CRI plugin is served too.
    pub fn address(&self) -> &Path {
        &self.socket
    }

    /// Mount points under the private directory (rootfs mounts that were not undone).
    pub fn mounts(&self) -> Vec<String> {
        let state = self.dir.path().join("state").display().to_string();
        mounts_under(self.dir.path())
            .into_iter()
            .filter(|m| *m != state)
            .collect()
    }

    /// Waits until no shim serves this containerd (they exit after the last Delete).
    pub fn wait_for_no_shims(&self, timeout: Duration) -> Vec<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let pids = self.shim_pids();
            if pids.is_empty() || Instant::now() > deadline {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `ctr task ls` until task `id` has `status`, returning the last listing.
    pub fn wait_for_status(&self, id: &str, status: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ls = self.ctr(&["task", "ls"]);
            let found = ls
                .stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains(status));
            if found {
                return Ok(ls.stdout);
            }
            if Instant::now() > deadline {
                bail!(
                    "task {id} never reached {status}; last listing:\n{}",
                    ls.stdout
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts containerd with the config and PATH written in `dir` and the extra `env`,
/// appending to its log.
fn spawn_containerd(
    dir: &Path,
    binaries: &ContainerdBinaries,
    env: &[(String, String)],
) -> Result<Child> {
    let path = std::fs::read_to_string(dir.join("path"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))?;
    Command::new(binaries.path("containerd"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (apt-get install containerd, or scripts/fetch-clients.sh for \
                 TEST_CONTAINERD_DIR)",
                binaries.path("containerd").display()
            )
        })
}

/// Runs a `ctr` command with no stdin and collects its output.
pub(crate) fn run_to_output(mut command: Command) -> CtrOutput {
    match command.stdin(Stdio::null()).output() {
        Ok(output) => output.into(),
        Err(e) => CtrOutput {
            code: -1,
            stdout: String::new(),
            stderr: format!("running ctr: {e}"),
        },
    }
}

impl Containerd {
    /// Force-deletes the tasks a failed test left, in every namespace, through containerd:
    /// a native task's processes would otherwise outlive the test, and runc keeps its state
    /// outside the private directory (`/run/containerd/runc/NAMESPACE/ID`), where the same
    /// id in the next containerd of the matrix would find it. Returns what it deleted.
    fn delete_leftover_tasks(&self) -> Vec<String> {
        let mut deleted = Vec::new();
        // Bounded: a wedged shim must not hang the test run in a destructor.
        let namespaces = self.ctr(&["--timeout", "10s", "namespaces", "ls", "-q"]);
        for namespace in namespaces.stdout.split_whitespace() {
            let tasks = self.ctr(&["--timeout", "10s", "-n", namespace, "tasks", "ls", "-q"]);
            for task in tasks.stdout.split_whitespace() {
                self.ctr(&[
                    "--timeout",
                    "10s",
                    "-n",
                    namespace,
                    "tasks",
                    "rm",
                    "-f",
                    task,
                ]);
                deleted.push(format!("{namespace}/{task}"));
            }
        }
        deleted
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let leftovers = self.delete_leftover_tasks();
        if !leftovers.is_empty() {
            eprintln!("deleted tasks a test left: {leftovers:?}");
        }
        stop_daemon(&mut self.child, Duration::from_secs(10));
        for pid in self.shim_pids().into_iter().chain(self.runc_shim_pids()) {
            // SAFETY: plain kill(2) on a shim of this test's containerd.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // The state's tmpfs too (see `mount_state`), after what is mounted in it.
        unmount_all(mounts_under(self.dir.path()));
    }
}

/// A tmpfs for containerd's state directory, as `/run/containerd` is on a systemd host:
/// the bundles, the runtimes' state and the shim's default compile cache live there for
/// every user who does not move them, so tests and benchmarks see what they see (a
/// compiled program written to disk instead costs a first start a write-back that a node
/// does not pay). [`Containerd::mounts`] leaves it out: it is not a container's.
fn mount_state(dir: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let state = dir.join("state");
    std::fs::create_dir(&state)?;
    let target = std::ffi::CString::new(state.as_os_str().as_bytes())?;
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0711".as_ptr().cast(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting a tmpfs on {} (containerd's state, as /run is): {}",
            state.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Stops a daemon the test started as a service manager does: SIGTERM, up to `grace` to
/// exit, then SIGKILL; reaped either way.
pub(crate) fn stop_daemon(child: &mut Child, grace: Duration) {
    // SAFETY: plain kill(2) on our own child, not yet reaped (so its pid is still ours).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Mount points under `dir` (what a test's daemons mounted there), as `/proc/self/mounts`
/// lists them.
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// Unmounts `mounts` (lazily, so a busy one goes once it is free), deepest first.
pub(crate) fn unmount_all(mut mounts: Vec<String>) {
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        let _ = Command::new("umount").arg("-l").arg(&mount).status();
    }
}

/// The specs real clients (ctr, dockerd, CRI) handed to a shim, captured in
/// ../shared/fixtures/specs (or `SPEC_FIXTURES_DIR`).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("SPEC_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/specs")
        })
}

/// A rootfs directory holding the named programs at `/NAME.wasm`.
pub fn rootfs_with(programs: &[&str]) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for name in programs {
        std::fs::copy(program(name), dir.path().join(format!("{name}.wasm")))?;
    }
    Ok(dir)
}

/// Runs `command_line` (one shell command line) on a terminal of its own, as a user at a
/// terminal runs `ctr run -t` or `docker run -it`: `script` (bsdutils) gives it a pty, and
/// `input` is typed after `delay` (a pty keeps early input too, but the program should be
/// waiting for it). `envs` are added to the command's environment.
pub fn run_on_a_terminal(
    command_line: &str,
    envs: &[(&std::ffi::OsStr, &std::ffi::OsStr)],
    input: &[u8],
    delay: Duration,
) -> std::io::Result<Output> {
    use std::io::Write;
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", command_line, "/dev/null"])
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = script.stdin.take() {
        std::thread::sleep(delay);
        stdin.write_all(input)?;
        // Kept open a moment: closing it at once could end the session before the program
        // has read the line.
        std::thread::sleep(Duration::from_millis(500));
    }
    script.wait_with_output()
}

/// Checks what the `ttycheck` test program reports when run by [`run_on_a_terminal`] with
/// `line` typed: stdin and stdout are a terminal, it read the line, and it exited 3.
/// `context` goes into the failure message (a log).
pub fn assert_ttycheck_answered(out: &Output, line: &str, context: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stdin-tty=1 stdout-tty=1"),
        "{stdout}\n{}\n{context}",
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.contains(&format!("got [{line}]")), "{stdout}");
    assert_eq!(out.status.code(), Some(3), "{stdout}");
}

/// Reads everything from a child's stdout (used for `ctr events`).
pub fn read_all(mut reader: impl Read) -> String {
    let mut text = String::new();
    let _ = reader.read_to_string(&mut text);
    text
}

/// The test program `name` (a core module built by `make examples`) turned into a WASI
/// preview 2 command component, the way `wasm-tools component new --adapt` does it: the
/// module plus wasmtime's preview 1 command adapter (from the adapter crate on crates.io).
pub fn component_of(name: &str) -> Result<Vec<u8>> {
    let module = std::fs::read(program(name))?;
    wit_component::ComponentEncoder::default()
        .module(&module)?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        )?
        .validate(true)
        .encode()
}

/// `ctr events` of a private containerd, collected in the background from the moment it is
/// subscribed: [`EventWatch::start`] returns only once an event of its own has come through,
/// so no event of the test can be missed.
pub struct EventWatch {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl EventWatch {
    /// Starts `ctr events` and waits until it is subscribed.
    pub fn start(containerd: &Containerd) -> EventWatch {
        use std::io::BufRead;
        let mut child = containerd
            .ctr_command(&["events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events");
        let stdout = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let watch = EventWatch { child, lines };
        // The subscription is asynchronous: publish probes (namespace creations) until one
        // shows up.
        let deadline = Instant::now() + Duration::from_secs(30);
        for attempt in 0.. {
            let name = format!("event-probe-{attempt}");
            containerd.ctr(&["namespaces", "create", &name]);
            let seen_until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < seen_until {
                if watch
                    .lines()
                    .iter()
                    .any(|l| l.contains("/namespaces/create"))
                {
                    return watch;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(Instant::now() < deadline, "ctr events never subscribed");
        }
        watch
    }

    /// Every event line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until an event with `topic` mentioning every one of `needles` arrived.
    pub fn expect(&self, topic: &str, needles: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.lines().iter().any(|l| {
                l.split_whitespace().any(|w| w == topic) && needles.iter().all(|n| l.contains(n))
            });
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {topic} event with {needles:?}; events:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EventWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The parent of process `pid` (its `PPid` in `/proc/PID/status`); `None` once it is gone.
pub fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))?
        .trim()
        .parse()
        .ok()
}

/// CPU time in ns of process `pid`, all its threads (a container's process).
pub fn process_cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("no process {pid}: {e}"))
        .flatten()
        .filter_map(|task| {
            std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// Every hierarchy line of `/proc/PID/cgroup` (`ID:CONTROLLERS:PATH`) as (controllers, path);
/// the controllers are empty for cgroup v2's line.
pub fn cgroups_of(pid: u32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/cgroup: {e}"))
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _ = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}
