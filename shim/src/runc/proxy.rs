//! Native containers (a pod's pause container, sidecars, anything whose entrypoint is a Linux
//! program) handed to containerd's own runc shim.
//!
//! Isolating a Linux process is runc's job, and containerd's runc shim already does it with
//! full fidelity (exec, tty, signals, cgroup stats, OOM events). So instead of re-creating it,
//! this shim starts `containerd-shim-runc-v2` the way containerd would, once per group of
//! containers (a pod), and forwards every task request for a native container to it. The
//! runc shim publishes its own events to containerd; containerd keeps talking to one address
//! per pod: ours.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::{Message, MessageFull};
use containerd_shim_protos::ttrpc::{self, context::Context, TtrpcContext};
use thiserror::Error;

use crate::error::{ShimError, ShimResult};

/// The runc shim binary, looked up on containerd's PATH like any shim.
pub const RUNC_SHIM: &str = "containerd-shim-runc-v2";

/// File in a native container's bundle: tells `delete` after a crash that the runc shim
/// owns this bundle.
pub const NATIVE_MARKER: &str = "wasmtime-native";

/// What the runc shim needs to reach containerd, from our own command line and environment.
#[derive(Debug, Clone, Default)]
pub struct ContainerdEndpoint {
    /// containerd namespace.
    pub namespace: String,
    /// containerd's gRPC socket.
    pub grpc_address: String,
    /// containerd's ttrpc socket, where the runc shim publishes events.
    pub ttrpc_address: String,
    /// containerd's binary (`-publish-binary`), passed on unchanged.
    pub publish_binary: String,
    /// Log at debug level.
    pub debug: bool,
    /// containerd 2.3+'s `BootstrapParams` from our own `start`, if it used that handshake.
    /// containerd hands every shim it starts the same, so the runc shim gets a copy too.
    pub bootstrap: Option<BootstrapParams>,
}

/// The type of containerd's runc shim options (`runtime_type = "io.containerd.runc.v2"`'s
/// `options` table). The only runtime options a runc shim can read; those of our own
/// runtime (CRI sends `runtimeoptions.v1.Options` for it) are not for it.
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// What containerd would write to the runc shim's `start` stdin for container `id`: nothing
/// after a legacy handshake (containerd would send the runc handler's options, and there is
/// none), else our `BootstrapParams` for `id`, keeping only options a runc shim reads.
fn runc_start_input(endpoint: &ContainerdEndpoint, id: &str) -> ShimResult<Vec<u8>> {
    let Some(ours) = &endpoint.bootstrap else {
        return Ok(Vec::new());
    };
    let mut params = ours.clone();
    params.instance_id = id.to_string();
    params.extensions.retain(|extension| {
        let type_url = extension
            .value
            .as_ref()
            .map(|any| any.type_url.as_str())
            .unwrap_or_default();
        // containerd 2.3 writes the type URL without the `type.googleapis.com/` prefix.
        let keep = type_url.rsplit('/').next() == Some(RUNC_OPTIONS_TYPE);
        if !keep {
            log::debug!("not passing runtime options of type {type_url:?} to {RUNC_SHIM}");
        }
        keep
    });
    params
        .write_to_bytes()
        .map_err(|e| ShimError::internal(format!("encoding {RUNC_SHIM}'s bootstrap params"), e))
}

/// A connection to one running runc shim.
pub struct RuncShim {
    client: ttrpc::Client,
    /// `containerd.task.v2.Task` for containerd 1.x shims, `...v3...` for 2.x.
    service: &'static str,
    /// The runc shim's socket.
    pub address: String,
    /// The runc shim daemon's pid, when it told us.
    pub pid: Option<i32>,
}

impl RuncShim {
    /// Sends one task request and returns the reply, keeping containerd's deadline and
    /// metadata so the runc shim sees the request as containerd sent it.
    pub fn call<Req: MessageFull, Resp: Message + Default>(
        &self,
        ctx: &TtrpcContext,
        method: &str,
        req: &Req,
    ) -> ttrpc::Result<Resp> {
        let ctx = Context {
            metadata: ctx.metadata.clone(),
            timeout_nano: ctx.timeout_nano,
        };
        self.call_with(ctx, method, req)
    }

    fn call_with<Req: MessageFull, Resp: Message + Default>(
        &self,
        ctx: Context,
        method: &str,
        req: &Req,
    ) -> ttrpc::Result<Resp> {
        let client = &self.client;
        let mut reply = Resp::default();
        let payload = req
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encoding {method}: {e}")))?;
        let mut request = ttrpc::proto::Request::new();
        request.service = self.service.to_string();
        request.method = method.to_string();
        request.timeout_nano = ctx.timeout_nano;
        request.metadata = ttrpc::context::to_pb(ctx.metadata);
        request.payload = payload;
        let response = client.request(request)?;
        reply
            .merge_from_bytes(&response.payload)
            .map_err(|e| ttrpc::Error::Others(format!("decoding the {method} reply: {e}")))?;
        Ok(reply)
    }
}

/// The runc shims this shim started, one per group of containers.
pub struct RuncShims {
    endpoint: ContainerdEndpoint,
    groups: Mutex<HashMap<String, Arc<RuncShim>>>,
}

impl RuncShims {
    /// No runc shim yet: the first native container of a group starts one.
    pub fn new(endpoint: ContainerdEndpoint) -> Self {
        RuncShims {
            endpoint,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// The runc shim serving `group`, started for container `id` of `bundle` if there is
    /// none. The lock is held while starting so two containers of a pod cannot start two.
    pub fn get_or_start(&self, group: &str, id: &str, bundle: &Path) -> ShimResult<Arc<RuncShim>> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shim) = groups.get(group) {
            return Ok(shim.clone());
        }
        let shim = Arc::new(start_runc_shim(&self.endpoint, id, bundle)?);
        log::info!(
            "started {RUNC_SHIM} at {} (pid {:?}) for group {group}",
            shim.address,
            shim.pid
        );
        groups.insert(group.to_string(), shim.clone());
        Ok(shim)
    }

    /// Pids of the runc shim daemons, to move them with us into a pod's cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|shim| shim.pid)
            .collect()
    }

    /// Asks the runc shim of `group` to exit (it does so only once it serves no container)
    /// and forgets it.
    pub fn release(&self, group: &str, last_id: &str) {
        let shim = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
        if let Some(shim) = shim {
            shutdown(&shim, last_id);
        }
    }

    /// Releases every runc shim: this shim is exiting.
    pub fn release_all(&self) {
        let all: Vec<Arc<RuncShim>> = self
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, shim)| shim)
            .collect();
        for shim in all {
            shutdown(&shim, "");
        }
    }
}

fn shutdown(shim: &RuncShim, id: &str) {
    let request = containerd_shim_protos::api::ShutdownRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let ctx = ttrpc::context::with_timeout(5_000_000_000);
    // The runc shim exits while answering, so a closed connection is success too.
    match shim.call_with::<_, containerd_shim_protos::api::Empty>(ctx, "Shutdown", &request) {
        Ok(_) => log::info!("asked {RUNC_SHIM} at {} to exit", shim.address),
        Err(e) => log::debug!("{RUNC_SHIM} at {} on Shutdown: {e}", shim.address),
    }
}

/// The directory, inside the bundle of the first native container of a group, where that
/// group's runc shim runs.
///
/// A shim works in its bundle directory: its `start` writes `address` and `shim.pid` there,
/// and when its daemon exits it removes the socket that `address` names. Run in the bundle
/// itself, the runc shim would overwrite our own `address` (what containerd reconnects to
/// after a restart), and, with ours put back, remove *our* socket when it exits while we
/// still serve the group's wasm containers: containerd could then no longer reach us, and
/// the group's next container would get a second shim. In a directory of its own (holding
/// links to the bundle's `config.json`, which `start` reads for the group, and its `log`
/// FIFO, which the daemon writes to) it writes and removes only its own; it gets the
/// bundle's path in every Create.
const RUNC_SHIM_DIR: &str = "runc-shim";

/// Makes [`RUNC_SHIM_DIR`] in `bundle`, with links back to what the runc shim reads there.
fn runc_shim_dir(bundle: &Path) -> std::io::Result<std::path::PathBuf> {
    let dir = bundle.join(RUNC_SHIM_DIR);
    std::fs::create_dir_all(&dir)?;
    for name in ["config.json", "log"] {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(Path::new("..").join(name), &link)?;
        }
    }
    Ok(dir)
}

/// Runs `containerd-shim-runc-v2 start` for container `id` of `bundle`, as containerd would
/// (but in [`RUNC_SHIM_DIR`]), and connects to the daemon it names.
fn start_runc_shim(endpoint: &ContainerdEndpoint, id: &str, bundle: &Path) -> ShimResult<RuncShim> {
    let workdir = runc_shim_dir(bundle).map_err(|e| {
        ShimError::internal(
            format!(
                "preparing {} for {RUNC_SHIM}",
                bundle.join(RUNC_SHIM_DIR).display()
            ),
            e,
        )
    })?;
    let mut command = Command::new(RUNC_SHIM);
    command
        .args(["-namespace", &endpoint.namespace, "-id", id])
        .args(["-address", &endpoint.grpc_address]);
    if !endpoint.publish_binary.is_empty() {
        command.args(["-publish-binary", &endpoint.publish_binary]);
    }
    if endpoint.debug {
        command.arg("-debug");
    }
    command
        .arg("start")
        .current_dir(&workdir)
        .env("TTRPC_ADDRESS", &endpoint.ttrpc_address)
        .env("GRPC_ADDRESS", &endpoint.grpc_address)
        .env("NAMESPACE", &endpoint.namespace)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = runc_start_input(endpoint, id)?;
    let output = command
        .spawn()
        .map(|child| feed_and_wait(child, &input))
        .map_err(|e| {
            ShimError::internal(
                format!(
                    "running {RUNC_SHIM} for the native container {id} (is containerd's runc \
                     shim installed and on containerd's PATH?)"
                ),
                e,
            )
        })?
        .map_err(|e| ShimError::internal(format!("waiting for {RUNC_SHIM} start for {id}"), e))?;
    if !output.status.success() {
        return Err(ShimError::Internal(format!(
            "{RUNC_SHIM} start for {id} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let (address, version) = parse_start_reply(&output.stdout)?;
    // What containerd does for every shim it starts: the address goes into the shim's
    // directory (containerd 2's runc shim leaves that to the caller), where the shim finds
    // its socket again to remove it when it exits.
    std::fs::write(workdir.join("address"), &address).map_err(|e| {
        ShimError::internal(
            format!("writing {RUNC_SHIM}'s address into {}", workdir.display()),
            e,
        )
    })?;
    let client = ttrpc::Client::connect(&address)
        .map_err(|e| ShimError::internal(format!("connecting to {RUNC_SHIM} at {address}"), e))?;
    let mut shim = RuncShim {
        client,
        service: if version >= 3 {
            "containerd.task.v3.Task"
        } else {
            "containerd.task.v2.Task"
        },
        address,
        pid: None,
    };
    // Its pid comes from the shim itself: not every version writes `shim.pid` in `start`
    // (containerd 1.6's leaves that to containerd), so the file may still hold ours.
    let connect = containerd_shim_protos::api::ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    match shim.call_with::<_, containerd_shim_protos::api::ConnectResponse>(
        ttrpc::context::with_timeout(5_000_000_000),
        "Connect",
        &connect,
    ) {
        Ok(reply) if reply.shim_pid > 0 => shim.pid = Some(reply.shim_pid as i32),
        Ok(_) => log::debug!("{RUNC_SHIM} at {} did not tell its pid", shim.address),
        Err(e) => log::debug!("{RUNC_SHIM} at {} on Connect: {e}", shim.address),
    }
    Ok(shim)
}

/// Writes `input` to the runc shim's stdin, closes it, and waits for the shim's output. The
/// params are a few hundred bytes, far below a pipe's buffer, so writing them before reading
/// cannot deadlock. A shim that exits without reading them closes the pipe: that is its
/// business, and its status and stderr tell what happened, so the write's error is not ours
/// to report. The child is always waited for.
fn feed_and_wait(mut child: Child, input: &[u8]) -> std::io::Result<Output> {
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(input) {
            log::debug!("writing {RUNC_SHIM}'s start params: {e}");
        }
    }
    child.wait_with_output()
}

/// A runc shim's `start` reply, in whichever form its containerd line speaks: the plain
/// address (1.x), a JSON bootstrap record with a task API version (2.0–2.2), or a protobuf
/// `BootstrapResult` (2.3+). Returns the address and the task API version.
fn parse_start_reply(stdout: &[u8]) -> ShimResult<(String, u32)> {
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    let reply_error = |why: StartReplyError| {
        ShimError::internal(format!("{RUNC_SHIM} replied {trimmed:?} to start"), why)
    };
    if trimmed.is_empty() {
        return Err(reply_error(StartReplyError::NoAddress));
    }
    if trimmed.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(trimmed).map_err(|e| reply_error(StartReplyError::NotJson(e)))?;
        let address = value["address"].as_str().unwrap_or_default().to_string();
        let version = value["version"].as_u64().unwrap_or(2) as u32;
        let protocol = value["protocol"].as_str().unwrap_or_default();
        return checked_reply(address, version, protocol).map_err(reply_error);
    }
    // An address is printable text; a protobuf reply starts with a field tag, never a
    // printable character: field 1 (version, varint) is 0x08, field 2 (address) 0x12.
    if looks_like_address(trimmed) {
        return Ok((trimmed.to_string(), 2));
    }
    let result = BootstrapResult::parse_from_bytes(stdout)
        .map_err(|e| reply_error(StartReplyError::Unreadable(e)))?;
    let version = u32::try_from(result.version).unwrap_or(0);
    checked_reply(result.address, version, &result.protocol).map_err(reply_error)
}

/// What is wrong with a runc shim's `start` reply, after "replied ... to start".
#[derive(Debug, Error)]
enum StartReplyError {
    /// Nothing, or a record without an address: nowhere to connect.
    #[error("with no address")]
    NoAddress,
    /// It looked like containerd 2.0-2.2's JSON record but is not JSON.
    #[error("which is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// Neither text nor a `BootstrapResult`.
    #[error("which is neither an address nor protobuf")]
    Unreadable(#[source] containerd_shim_protos::protobuf::Error),
    /// A protocol this shim cannot speak to it in.
    #[error("asking for protocol {0:?}; only ttrpc is spoken here")]
    Protocol(String),
}

/// Whether a `start` reply is an address printed as text: `scheme://...` or a socket path,
/// all printable.
fn looks_like_address(text: &str) -> bool {
    (text.contains("://") || text.starts_with('/')) && !text.chars().any(char::is_control)
}

/// The address and version of a structured reply, which must name an address and a
/// protocol this shim speaks (empty means ttrpc).
fn checked_reply(
    address: String,
    version: u32,
    protocol: &str,
) -> Result<(String, u32), StartReplyError> {
    if address.is_empty() {
        return Err(StartReplyError::NoAddress);
    }
    if !protocol.is_empty() && protocol != "ttrpc" {
        return Err(StartReplyError::Protocol(protocol.to_string()));
    }
    Ok((address, version.max(2)))
}

/// Why the runc shim's own `delete` gave no reply to pass on; our `delete` then cleans up
/// what it can itself.
#[derive(Debug, Error)]
pub enum NativeDeleteError {
    /// The runc shim could not be run.
    #[error("running {RUNC_SHIM} delete")]
    Spawn(#[source] std::io::Error),
    /// It ran and failed, saying why on its stderr.
    #[error("{RUNC_SHIM} delete failed ({status}): {stderr}")]
    Failed {
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
}

/// Runs the runc shim's own `delete` for a bundle it owned, passing on its reply. Used by
/// our `delete` when the shim serving a native container died.
pub fn delete_native(
    endpoint: &ContainerdEndpoint,
    id: &str,
    bundle: &Path,
) -> Result<Vec<u8>, NativeDeleteError> {
    let mut command = Command::new(RUNC_SHIM);
    command
        .args(["-namespace", &endpoint.namespace, "-id", id])
        .args(["-address", &endpoint.grpc_address]);
    if !endpoint.publish_binary.is_empty() {
        command.args(["-publish-binary", &endpoint.publish_binary]);
    }
    command
        .arg("-bundle")
        .arg(bundle)
        .arg("delete")
        .current_dir(bundle)
        .stdin(Stdio::null());
    let output = command.output().map_err(NativeDeleteError::Spawn)?;
    if !output.status.success() {
        return Err(NativeDeleteError::Failed {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// containerd 2.3.4's runc shim's `start` reply, as captured in the CRI bug report of
    /// issue 16: version 3 and the address, protocol left at its default.
    const RUNC_2_3_REPLY: &[u8] = b"\x08\x03\x12\x59unix:///run/containerd/s/\
        1ac7a380763014e1fd8fbd437a205c7393f95e716f737fba51853bbce5973331";
    const RUNC_2_3_ADDRESS: &str =
        "unix:///run/containerd/s/1ac7a380763014e1fd8fbd437a205c7393f95e716f737fba51853bbce5973331";

    #[test]
    fn start_replies_of_every_containerd_are_understood() {
        // 1.x: the plain address and a newline.
        assert_eq!(
            parse_start_reply(b"unix:///run/containerd/s/abc\n").unwrap(),
            ("unix:///run/containerd/s/abc".to_string(), 2)
        );
        // 2.0-2.2: JSON.
        assert_eq!(
            parse_start_reply(br#"{"version":3,"address":"unix:///s/x","protocol":"ttrpc"}"#)
                .unwrap(),
            ("unix:///s/x".to_string(), 3)
        );
        // 2.3: protobuf, as captured.
        assert_eq!(
            parse_start_reply(RUNC_2_3_REPLY).unwrap(),
            (RUNC_2_3_ADDRESS.to_string(), 3)
        );
        // 2.3 with every field set, as our own start encodes it.
        let full = BootstrapResult {
            version: 3,
            address: "unix:///s/y".into(),
            protocol: "ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        assert_eq!(
            parse_start_reply(&full).unwrap(),
            ("unix:///s/y".to_string(), 3)
        );
    }

    #[test]
    fn start_replies_without_a_usable_address_are_refused() {
        assert!(parse_start_reply(b"").is_err());
        assert!(parse_start_reply(b"\n").is_err());
        assert!(parse_start_reply(br#"{"version":3}"#).is_err());
        assert!(
            parse_start_reply(br#"{"version":3,"address":"unix:///s/x","protocol":"grpc"}"#)
                .is_err()
        );
        let grpc = BootstrapResult {
            version: 3,
            address: "unix:///s/y".into(),
            protocol: "grpc".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        assert!(parse_start_reply(&grpc).is_err());
        // Version only: a protobuf reply with no address.
        assert!(parse_start_reply(b"\x08\x03").is_err());
        // Neither text nor protobuf (a truncated length-delimited field).
        assert!(parse_start_reply(b"\x12\x59unix").is_err());
        // The reason reaches the message, after what was replied.
        let err = parse_start_reply(br#"{"address":"#).unwrap_err();
        assert_eq!(err.code(), ttrpc::Code::INTERNAL);
        assert!(
            crate::error::render(&err).starts_with(&format!(
                r#"{RUNC_SHIM} replied "{{\"address\":" to start: which is not JSON: EOF"#
            )),
            "{}",
            crate::error::render(&err)
        );
    }

    #[test]
    fn the_runc_shim_gets_what_containerd_gave_us_for_its_own_container() {
        use containerd_shim_protos::bootstrap_api::Extension;
        use containerd_shim_protos::protobuf::well_known_types::any::Any;

        let extension = |type_url: &str| Extension {
            value: Some(Any {
                type_url: type_url.into(),
                value: vec![0x0a, 0x01, 0x78],
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let ours = BootstrapParams {
            instance_id: "wasm-app".into(),
            namespace: "k8s.io".into(),
            containerd_version: "v2.3.4".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            socket_dir: Some("/run/containerd/s".into()),
            extensions: vec![
                extension("runtimeoptions.v1.Options"),
                extension("containerd.runc.v1.Options"),
                extension("type.googleapis.com/containerd.runc.v1.Options"),
            ],
            ..Default::default()
        };
        let endpoint = ContainerdEndpoint {
            bootstrap: Some(ours.clone()),
            ..Default::default()
        };
        let sent =
            BootstrapParams::parse_from_bytes(&runc_start_input(&endpoint, "pause").unwrap())
                .unwrap();
        assert_eq!(sent.instance_id, "pause");
        assert_eq!(
            (
                sent.namespace.as_str(),
                sent.containerd_version.as_str(),
                sent.containerd_ttrpc_address.as_str(),
                sent.containerd_grpc_address.as_str(),
                sent.containerd_binary.as_str(),
                sent.socket_dir.as_deref(),
            ),
            (
                "k8s.io",
                "v2.3.4",
                "/run/containerd/containerd.sock.ttrpc",
                "/run/containerd/containerd.sock",
                "/usr/bin/containerd",
                Some("/run/containerd/s"),
            )
        );
        let types: Vec<String> = sent
            .extensions
            .iter()
            .map(|e| e.value.type_url.clone())
            .collect();
        assert_eq!(
            types,
            [
                "containerd.runc.v1.Options",
                "type.googleapis.com/containerd.runc.v1.Options"
            ]
        );
        // After a legacy handshake the runc shim reads an empty stdin, as from containerd
        // with no options for it.
        assert!(runc_start_input(&ContainerdEndpoint::default(), "pause")
            .unwrap()
            .is_empty());
    }
}
