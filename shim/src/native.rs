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
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use containerd_shim_protos::protobuf::{Message, MessageFull};
use containerd_shim_protos::ttrpc::{self, context::Context, TtrpcContext};

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

/// Files the runc shim's `start` writes into the bundle it runs in. They are ours (the
/// bundle's `address` is what containerd reconnects to after a restart), so they are put
/// back after it ran.
const BUNDLE_FILES: [&str; 2] = ["address", "shim.pid"];

/// Runs `containerd-shim-runc-v2 start` in `bundle`, as containerd would for `id`, and
/// connects to the daemon it names.
fn start_runc_shim(endpoint: &ContainerdEndpoint, id: &str, bundle: &Path) -> ShimResult<RuncShim> {
    let saved: Vec<(&str, Option<Vec<u8>>)> = BUNDLE_FILES
        .iter()
        .map(|name| (*name, std::fs::read(bundle.join(name)).ok()))
        .collect();
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
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", &endpoint.ttrpc_address)
        .env("GRPC_ADDRESS", &endpoint.grpc_address)
        .env("NAMESPACE", &endpoint.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = command.output().map_err(|e| {
        ShimError::Internal(format!(
            "running {RUNC_SHIM} for the native container {id} ({e}); is containerd's runc \
             shim installed and on containerd's PATH?"
        ))
    })?;
    for (name, content) in saved {
        let path = bundle.join(name);
        let _ = match content {
            Some(bytes) => std::fs::write(&path, bytes),
            None => std::fs::remove_file(&path),
        };
    }
    if !output.status.success() {
        return Err(ShimError::Internal(format!(
            "{RUNC_SHIM} start for {id} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let (address, version) = parse_start_reply(&output.stdout)?;
    let client = ttrpc::Client::connect(&address)
        .map_err(|e| ShimError::Internal(format!("connecting to {RUNC_SHIM} at {address}: {e}")))?;
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

/// A runc shim's `start` reply: the plain address (containerd 1.x) or a JSON bootstrap
/// record with a task API version (2.x).
fn parse_start_reply(stdout: &[u8]) -> ShimResult<(String, u32)> {
    let text = String::from_utf8_lossy(stdout).trim().to_string();
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            ShimError::Internal(format!("{RUNC_SHIM} replied {text:?} to start: {e}"))
        })?;
        let address = value["address"].as_str().unwrap_or_default().to_string();
        let version = value["version"].as_u64().unwrap_or(2) as u32;
        if address.is_empty() {
            return Err(ShimError::Internal(format!(
                "{RUNC_SHIM} replied {text:?} to start, with no address"
            )));
        }
        return Ok((address, version));
    }
    if text.is_empty() {
        return Err(ShimError::Internal(format!(
            "{RUNC_SHIM} start printed no address"
        )));
    }
    Ok((text, 2))
}

/// Runs the runc shim's own `delete` for a bundle it owned, passing on its reply. Used by
/// our `delete` when the shim serving a native container died.
pub fn delete_native(
    endpoint: &ContainerdEndpoint,
    id: &str,
    bundle: &Path,
) -> Result<Vec<u8>, String> {
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
    let output = command
        .output()
        .map_err(|e| format!("running {RUNC_SHIM} delete: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{RUNC_SHIM} delete failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_replies_of_every_containerd_are_understood() {
        assert_eq!(
            parse_start_reply(b"unix:///run/containerd/s/abc\n").unwrap(),
            ("unix:///run/containerd/s/abc".to_string(), 2)
        );
        assert_eq!(
            parse_start_reply(br#"{"version":3,"address":"unix:///s/x","protocol":"ttrpc"}"#)
                .unwrap(),
            ("unix:///s/x".to_string(), 3)
        );
        assert!(parse_start_reply(b"").is_err());
        assert!(parse_start_reply(br#"{"version":3}"#).is_err());
    }
}
