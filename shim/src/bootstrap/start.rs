//! The `start` action: read containerd's handshake, make sure a shim daemon serves this task,
//! and answer with its address.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use sha2::{Digest, Sha256};

use crate::bootstrap::error::{BootstrapError, BootstrapFlagError};
use crate::bootstrap::flags::Flags;
use crate::bootstrap::reply;
use crate::runc::pod::PodMembership;

/// Where containerd's own shims put their sockets; short enough for the 108-byte limit.
const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";

/// Mixed into our socket names, which otherwise would equal the runc shim's.
const SOCKET_SALT: &str = "wasmtime";

/// Which handshake containerd used, which decides the shape of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// containerd 1.6–2.2: options `Any` on stdin, the address as text on stdout.
    Legacy,
    /// containerd 2.3+: `BootstrapParams` on stdin, `BootstrapResult` on stdout.
    Bootstrap,
}

/// What the daemon needs to know, from whichever handshake was used.
#[derive(Debug, Clone, PartialEq)]
pub struct StartParams {
    /// The handshake to answer in.
    pub handshake: Handshake,
    /// containerd's ttrpc socket, where events go.
    pub ttrpc_address: String,
    /// containerd's gRPC socket, which names our socket.
    pub grpc_address: String,
    /// Directory for our socket.
    pub socket_dir: PathBuf,
    /// Log at debug level.
    pub debug: bool,
    /// The params of a bootstrap handshake as containerd sent them: the runc shims the
    /// daemon starts for native containers get the same, with their own container's id.
    pub bootstrap: Option<BootstrapParams>,
}

/// Interprets `start`'s stdin. A legacy options `Any` can decode as `BootstrapParams` by
/// accident (both start with a string field), so the new form is taken only when its id and
/// namespace match the flags.
pub fn read_params(
    flags: &Flags,
    stdin: &[u8],
    env: impl Fn(&str) -> Option<String>,
) -> Result<StartParams, BootstrapError> {
    if !stdin.is_empty() {
        if let Ok(params) = BootstrapParams::parse_from_bytes(stdin) {
            if !params.instance_id.is_empty()
                && params.instance_id == flags.id
                && params.namespace == flags.namespace
            {
                if params.containerd_ttrpc_address.is_empty() {
                    return Err(BootstrapError::BootstrapWithoutTtrpcAddress);
                }
                return Ok(StartParams {
                    handshake: Handshake::Bootstrap,
                    ttrpc_address: params.containerd_ttrpc_address.clone(),
                    grpc_address: if params.containerd_grpc_address.is_empty() {
                        flags.address.clone()
                    } else {
                        params.containerd_grpc_address.clone()
                    },
                    socket_dir: params
                        .socket_dir
                        .clone()
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR)),
                    // DEBUG is -4 and TRACE -8 in containerd's open enum.
                    debug: flags.debug || params.log_level.value() <= -4,
                    bootstrap: Some(params),
                });
            }
        }
    }
    let ttrpc_address = env("TTRPC_ADDRESS")
        .filter(|a| !a.is_empty())
        .ok_or(BootstrapError::MissingTtrpcAddress)?;
    Ok(StartParams {
        handshake: Handshake::Legacy,
        ttrpc_address,
        grpc_address: env("GRPC_ADDRESS").unwrap_or_else(|| flags.address.clone()),
        socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
        debug: flags.debug,
        bootstrap: None,
    })
}

/// `params` as the daemon's `-bootstrap` flag: hex of its protobuf, so it survives a command
/// line when the daemon is executed rather than forked.
pub fn bootstrap_flag(params: &BootstrapParams) -> Result<String, BootstrapError> {
    Ok(hex(&reply::encode(params)?))
}

/// Lower-case hex of `bytes` (socket names, the `-bootstrap` flag).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The daemon's `-bootstrap` flag read back; `None` when empty (a legacy handshake).
pub fn parse_bootstrap_flag(flag: &str) -> Result<Option<BootstrapParams>, BootstrapFlagError> {
    if flag.is_empty() {
        return Ok(None);
    }
    let digits = flag.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(BootstrapFlagError::OddLength);
    }
    let bytes = digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or(BootstrapFlagError::NotHex)
        })
        .collect::<Result<Vec<u8>, _>>()?;
    BootstrapParams::parse_from_bytes(&bytes)
        .map(Some)
        .map_err(BootstrapFlagError::NotParams)
}

/// The socket address for a group of tasks: a hash of containerd's address, the namespace
/// and the group id, so two containerds or namespaces never collide and `start` for the
/// same group finds the same socket. The hash also covers this shim's name: containerd's
/// runc shim hashes the same three values into the same directory, and the runc shim we
/// start for a pod's native containers must not find our socket as its own (nor we its).
pub fn socket_address(
    socket_dir: &Path,
    containerd_address: &str,
    namespace: &str,
    group: &str,
) -> String {
    let digest = Sha256::digest(
        format!("{containerd_address}/{namespace}/{group}/{SOCKET_SALT}").as_bytes(),
    );
    format!("unix://{}/{}", socket_dir.display(), hex(&digest))
}

/// The reply `start` prints.
pub fn encode_reply(handshake: Handshake, address: &str) -> Result<Vec<u8>, BootstrapError> {
    match handshake {
        // Plain text is the one form every containerd from 1.6 on accepts (1.6 has no JSON).
        Handshake::Legacy => Ok(address.as_bytes().to_vec()),
        Handshake::Bootstrap => reply::encode(&BootstrapResult {
            version: 3,
            address: address.to_string(),
            protocol: "ttrpc".to_string(),
            ..Default::default()
        }),
    }
}

/// Launches the daemon that will serve the socket: how is the caller's business (tests
/// pass a stand-in).
pub trait Launcher {
    /// Starts a daemon listening on `listener`, reachable at `address`.
    fn launch(
        &self,
        flags: &Flags,
        params: &StartParams,
        listener: UnixListener,
        address: &str,
    ) -> Result<(), BootstrapError>;
}

/// The `start` action, from stdin to stdout.
pub fn start(
    flags: &Flags,
    bundle: &Path,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    env: impl Fn(&str) -> Option<String>,
    launcher: &dyn Launcher,
) -> Result<(), BootstrapError> {
    if flags.namespace.is_empty() || flags.id.is_empty() {
        return Err(BootstrapError::MissingTaskFlags);
    }
    let mut input = Vec::new();
    stdin
        .read_to_end(&mut input)
        .map_err(|e| BootstrapError::io("reading start parameters", e))?;
    let params = read_params(flags, &input, env)?;
    // One shim per pod: every container of a pod names the same group, so all but the
    // first find the running shim's socket below.
    let pod = PodMembership::from_bundle(bundle);
    let address = socket_address(
        &params.socket_dir,
        &params.grpc_address,
        &flags.namespace,
        pod.group(&flags.id),
    );
    let path = address.trim_start_matches("unix://");
    if UnixStream::connect(path).is_ok() {
        // A daemon already serves this group: share it.
        log::info!("{}: reusing the shim at {address}", flags.id);
    } else {
        let _ = std::fs::remove_file(path);
        std::fs::create_dir_all(&params.socket_dir).map_err(|e| {
            BootstrapError::io(format!("creating {}", params.socket_dir.display()), e)
        })?;
        let listener = UnixListener::bind(path)
            .map_err(|e| BootstrapError::io(format!("listening on {path}"), e))?;
        launcher.launch(flags, &params, listener, &address)?;
    }
    // containerd reads the address back from the bundle when it reconnects after a restart.
    std::fs::write(bundle.join("address"), &address)
        .map_err(|e| BootstrapError::io("writing the address file", e))?;
    reply::write(
        stdout,
        &encode_reply(params.handshake, &address)?,
        "the start reply",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::bootstrap_api::LogLevel;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use std::cell::RefCell;

    struct RecordingLauncher(RefCell<Vec<String>>);

    impl Launcher for RecordingLauncher {
        fn launch(
            &self,
            _f: &Flags,
            p: &StartParams,
            _l: UnixListener,
            address: &str,
        ) -> Result<(), BootstrapError> {
            self.0
                .borrow_mut()
                .push(format!("{:?} {} {address}", p.handshake, p.ttrpc_address));
            Ok(())
        }
    }

    fn flags() -> Flags {
        Flags {
            namespace: "ns1".into(),
            id: "task1".into(),
            address: "/run/containerd/containerd.sock".into(),
            action: "start".into(),
            ..Default::default()
        }
    }

    /// Runs `start` in a scratch bundle directory with a socket directory of its own.
    fn run_start(
        stdin: &[u8],
        env: &[(&str, &str)],
    ) -> (Result<Vec<u8>, BootstrapError>, Vec<String>) {
        let bundle = tempfile::tempdir().unwrap();
        let launcher = RecordingLauncher(RefCell::new(vec![]));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut out = Vec::new();
        let result = start(
            &flags(),
            bundle.path(),
            &mut &stdin[..],
            &mut out,
            |k| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()),
            &launcher,
        );
        let address_file = std::fs::read_to_string(bundle.path().join("address")).ok();
        if let Ok(()) = &result {
            assert_eq!(
                address_file.as_deref().map(|a| a.starts_with("unix://")),
                Some(true)
            );
        }
        (result.map(|()| out), launcher.0.into_inner())
    }

    #[test]
    fn legacy_handshake_answers_the_plain_address() {
        let sockets = tempfile::tempdir().unwrap();
        let options = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        // The legacy socket directory is fixed, so point it at a temp dir through params.
        let flags = flags();
        let params = read_params(&flags, &options, |k| {
            (k == "TTRPC_ADDRESS").then(|| "/run/containerd/containerd.sock.ttrpc".to_string())
        })
        .unwrap();
        assert_eq!(params.handshake, Handshake::Legacy);
        assert_eq!(
            params.ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        let address = socket_address(sockets.path(), &params.grpc_address, "ns1", "task1");
        assert_eq!(
            encode_reply(params.handshake, &address).unwrap(),
            address.as_bytes()
        );
        // Without TTRPC_ADDRESS the legacy form cannot work.
        assert!(read_params(&flags, &options, |_| None).is_err());
    }

    #[test]
    fn legacy_start_launches_and_prints_the_address() {
        let (out, launched) = run_start(b"", &[("TTRPC_ADDRESS", "/tmp/x.ttrpc")]);
        let out = String::from_utf8(out.unwrap()).unwrap();
        assert!(out.starts_with("unix:///run/containerd/s/"), "{out}");
        assert_eq!(launched.len(), 1);
        assert!(launched[0].starts_with("Legacy /tmp/x.ttrpc"));
        let _ = std::fs::remove_file(out.trim_start_matches("unix://"));
    }

    #[test]
    fn bootstrap_handshake_answers_a_bootstrap_result() {
        let sockets = tempfile::tempdir().unwrap();
        let params = BootstrapParams {
            instance_id: "task1".into(),
            namespace: "ns1".into(),
            log_level: LogLevel::LOG_LEVEL_DEBUG.into(),
            containerd_ttrpc_address: "unix:///run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "unix:///run/containerd/containerd.sock".into(),
            socket_dir: Some(sockets.path().display().to_string()),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        let (out, launched) = run_start(&params, &[]);
        let reply = BootstrapResult::parse_from_bytes(&out.unwrap()).unwrap();
        assert_eq!(reply.protocol, "ttrpc");
        assert_eq!(reply.version, 3);
        assert!(reply
            .address
            .starts_with(&format!("unix://{}/", sockets.path().display())));
        assert_eq!(launched.len(), 1);
        assert!(launched[0].starts_with("Bootstrap unix:///run/containerd/containerd.sock.ttrpc"));
    }

    /// `BootstrapParams` in the wire form containerd 2.3 writes (Go's encoder: fields in
    /// number order, the DEBUG log level as a ten-byte negative varint, the options as an
    /// extension whose type URL has no `type.googleapis.com/` prefix), assembled field by
    /// field: 2.3 is not in Debian, so there is no capture to replay.
    fn bootstrap_wire_bytes(id: &str, socket_dir: &str) -> Vec<u8> {
        fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
            let mut out = vec![(number << 3) | 2, bytes.len() as u8];
            out.extend_from_slice(bytes);
            out
        }
        let options = [
            field(1, b"runtimeoptions.v1.Options"),
            field(2, &field(2, b"/etc/wasmtime.toml")),
        ]
        .concat();
        [
            field(1, id.as_bytes()),
            field(2, b"ns1"),
            // Field 3, varint -4 (LOG_LEVEL_DEBUG) as an int32 enum: ten bytes.
            vec![
                0x18, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            field(4, b"v2.3.4"),
            field(5, b"/run/containerd/containerd.sock.ttrpc"),
            field(6, b"/run/containerd/containerd.sock"),
            field(7, b"/usr/bin/containerd"),
            field(8, &field(1, &options)),
            field(9, socket_dir.as_bytes()),
        ]
        .concat()
    }

    #[test]
    fn bootstrap_params_in_containerd_2_3_wire_form_are_taken() {
        let sockets = tempfile::tempdir().unwrap();
        let bytes = bootstrap_wire_bytes("task1", &sockets.path().display().to_string());
        let params = read_params(&flags(), &bytes, |_| None).unwrap();
        assert_eq!(params.handshake, Handshake::Bootstrap);
        assert!(params.debug, "LOG_LEVEL_DEBUG asks for debug logs");
        assert_eq!(
            params.ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        assert_eq!(params.socket_dir, sockets.path());
        let bootstrap = params.bootstrap.unwrap();
        assert_eq!(bootstrap.containerd_binary, "/usr/bin/containerd");
        assert_eq!(
            bootstrap.extensions[0].value.type_url,
            "runtimeoptions.v1.Options"
        );
        // The same bytes for another task are a legacy options blob that happens to parse.
        let other = bootstrap_wire_bytes("other", "/run/containerd/s");
        let legacy = read_params(&flags(), &other, |k| {
            (k == "TTRPC_ADDRESS").then(|| "/legacy".to_string())
        })
        .unwrap();
        assert_eq!(legacy.handshake, Handshake::Legacy);
    }

    #[test]
    fn bootstrap_params_reach_the_daemon_through_its_flag() {
        let params = BootstrapParams {
            instance_id: "task1".into(),
            namespace: "ns1".into(),
            containerd_ttrpc_address: "unix:///c.ttrpc".into(),
            socket_dir: Some("/run/containerd/s".into()),
            ..Default::default()
        };
        let parsed = read_params(&flags(), &params.write_to_bytes().unwrap(), |_| None).unwrap();
        assert_eq!(parsed.bootstrap.as_ref(), Some(&params));
        let flag = bootstrap_flag(&params).unwrap();
        assert_eq!(parse_bootstrap_flag(&flag).unwrap(), Some(params));
        assert_eq!(parse_bootstrap_flag("").unwrap(), None);
        assert!(parse_bootstrap_flag("0").is_err());
        assert!(parse_bootstrap_flag("zz").is_err());
    }

    /// What containerd logs for a failed `start` (the binary's stderr) names the step and
    /// the system's reason.
    #[test]
    fn a_failed_start_says_which_step_failed_and_why() {
        let scratch = tempfile::tempdir().unwrap();
        let file = scratch.path().join("file");
        std::fs::write(&file, "").unwrap();
        let socket_dir = file.join("s");
        let params = BootstrapParams {
            instance_id: "task1".into(),
            namespace: "ns1".into(),
            containerd_ttrpc_address: "unix:///c.ttrpc".into(),
            socket_dir: Some(socket_dir.display().to_string()),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        let (result, launched) = run_start(&params, &[]);
        assert!(launched.is_empty());
        assert_eq!(
            crate::error::render(&result.unwrap_err()),
            format!(
                "creating {}: Not a directory (os error 20)",
                socket_dir.display()
            )
        );
    }

    #[test]
    fn bootstrap_for_another_task_is_not_taken() {
        let params = BootstrapParams {
            instance_id: "other".into(),
            namespace: "ns1".into(),
            containerd_ttrpc_address: "unix:///x".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        let parsed = read_params(&flags(), &params, |k| {
            (k == "TTRPC_ADDRESS").then(|| "/legacy".to_string())
        })
        .unwrap();
        assert_eq!(parsed.handshake, Handshake::Legacy);
        assert_eq!(parsed.ttrpc_address, "/legacy");
    }

    #[test]
    fn containers_of_one_pod_share_a_socket_and_others_do_not() {
        let sockets = tempfile::tempdir().unwrap();
        let start_in = |id: &str, sandbox: Option<&str>| -> String {
            let bundle = tempfile::tempdir().unwrap();
            let annotations = sandbox
                .map(|s| format!(r#","annotations":{{"io.kubernetes.cri.sandbox-id":"{s}"}}"#))
                .unwrap_or_default();
            std::fs::write(
                bundle.path().join("config.json"),
                format!(r#"{{"ociVersion":"1.0.2"{annotations}}}"#),
            )
            .unwrap();
            let params = BootstrapParams {
                instance_id: id.into(),
                namespace: "ns1".into(),
                containerd_ttrpc_address: "unix:///c.ttrpc".into(),
                socket_dir: Some(sockets.path().display().to_string()),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap();
            let launcher = RecordingLauncher(RefCell::new(vec![]));
            let flags = Flags {
                id: id.into(),
                ..flags()
            };
            let mut out = Vec::new();
            start(
                &flags,
                bundle.path(),
                &mut &params[..],
                &mut out,
                |_| None,
                &launcher,
            )
            .unwrap();
            BootstrapResult::parse_from_bytes(&out).unwrap().address
        };
        let pause = start_in("pod1", Some("pod1"));
        let app = start_in("app", Some("pod1"));
        let alone = start_in("app", None);
        assert_eq!(pause, app);
        assert_ne!(app, alone);
        // Never the socket containerd's runc shim would use for the same pod.
        let digest = Sha256::digest(b"/run/containerd/containerd.sock/ns1/pod1");
        assert!(!pause.ends_with(&hex(&digest)));
    }

    #[test]
    fn socket_address_depends_on_namespace_and_group() {
        let dir = Path::new("/run/containerd/s");
        let a = socket_address(dir, "/c.sock", "ns", "a");
        assert_ne!(a, socket_address(dir, "/c.sock", "ns", "b"));
        assert_ne!(a, socket_address(dir, "/c.sock", "ns2", "a"));
        assert_eq!(a, socket_address(dir, "/c.sock", "ns", "a"));
        assert!(a.len() < 108);
    }
}
