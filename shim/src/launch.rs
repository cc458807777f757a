//! What the shim and a container's process say to each other over their control socket.
//!
//! A container's process is this same binary, executed afresh (see `spawn` and `child`), so
//! it starts single-threaded with nothing inherited but the descriptors the shim placed:
//! 0–2 the program's stdio, [`CONTROL_FD`] this socket, [`LOG_FD`] the shim's log. The
//! conversation is short and always in this order: the shim sends [`ToChild::Launch`],
//! validates the program meanwhile the child enters its namespaces, and sends
//! [`ToChild::Joined`]; the child loads its program, changes its root and answers
//! [`FromChild::Ready`] or
//! [`FromChild::Failed`]; the shim sends [`ToChild::Start`] when containerd starts the task;
//! the child's last word before it exits is [`FromChild::Exited`]. A closed socket means the
//! other side is gone. Any time after Ready the shim may send [`ToChild::MemoryLimit`] and,
//! to a server on baseline code, [`ToChild::OptimizedCode`].
//!
//! Messages are JSON behind a 4-byte length, on a stream socket: a spec can be larger than
//! one datagram may be.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use containerd_shim_protos::ttrpc;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::ShimError;

/// The variable that makes the shim binary a container's process, set to the shim's pid: the
/// binary takes the role only when its parent is that pid, so a copy of the variable that
/// reached another process of this binary is ignored. A variable rather than an argument, so
/// the process's command line is its program's (`ps`, `docker top`), as a native
/// container's is.
pub const CHILD_ENV: &str = "CONTAINERD_WASMTIME_CHILD_OF";

/// What this process was started as, by [`CHILD_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not a container's process: the shim's own commands.
    Shim,
    /// A container's process, its shim still its parent.
    Child,
    /// A container's process whose shim died before it looked: it must end at once, not
    /// take its program's arguments for the shim's.
    Orphan,
}

/// This process's role (see [`Role`]).
pub fn role() -> Role {
    match std::env::var_os(CHILD_ENV) {
        None => Role::Shim,
        // SAFETY: getppid cannot fail.
        Some(shim) if shim == unsafe { libc::getppid() }.to_string().as_str() => Role::Child,
        Some(_) => Role::Orphan,
    }
}
/// The control socket's descriptor in the child.
pub const CONTROL_FD: i32 = 3;
/// The shim log's descriptor in the child.
pub const LOG_FD: i32 = 4;
/// Messages larger than this are refused (a spec is kilobytes).
const MAX_MESSAGE: usize = 16 << 20;

/// Everything a container's process needs to become the container.
#[derive(Debug, Serialize, Deserialize)]
pub struct Launch {
    /// How logs name it: `task ID` or `task ID exec EXEC`.
    pub name: String,
    /// Which shim it belongs to, for its log lines.
    pub identity: ShimIdentity,
    /// The container's spec, with the process to run (an exec's in place of the main one).
    pub spec: Spec,
    /// The rootfs directory, as the shim sees it.
    pub rootfs: PathBuf,
    /// The bundle (where the compile cache is found by default).
    pub bundle: PathBuf,
    /// Which of descriptors 0, 1, 2 are the program's streams (the others are /dev/null
    /// and the program sees them closed).
    pub stdio: [bool; 3],
    /// The streams are a terminal, to become the process's controlling terminal.
    pub terminal: bool,
    /// For an exec: the main process, whose namespaces it joins.
    pub join: Option<u32>,
}

/// What a shim's log lines carry, which a container's process logs with too.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShimIdentity {
    /// containerd's namespace.
    pub namespace: String,
    /// The id the shim was started for.
    pub shim_id: String,
    /// Whether debug lines are logged.
    pub debug: bool,
}

/// From the shim to the child.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToChild {
    /// Become this container.
    Launch(Box<Launch>),
    /// The program is validated (the compile cache holds its code) and the process is in
    /// every directory of the container's cgroup (born there, or moved, see
    /// `task::fork_exec`). A server that will start on baseline code gets the directory its
    /// optimized code will come through, to hold before its root changes.
    Joined {
        /// The handover directory (see `runtime::HandoverDir`).
        handover: Option<PathBuf>,
    },
    /// Run the program.
    Start,
    /// The container's memory limit changed (an Update): the program's linear memory is held
    /// to this many bytes from now on.
    MemoryLimit(u64),
    /// The program's optimized code is in its handover directory, checked by the shim.
    OptimizedCode,
}

/// How a Create or Exec failed in the child, so the shim answers with the right code.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum FailureKind {
    /// The spec or the program is wrong.
    InvalidArgument,
    /// Something named does not exist.
    NotFound,
    /// Asked for something this shim does not do.
    Unimplemented,
    /// The host failed.
    Internal,
}

/// From the child to the shim.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromChild {
    /// Prepared: in its namespaces and cgroup, program loaded, root changed; waiting for
    /// Start.
    Ready,
    /// Could not prepare; the child exits.
    Failed {
        /// The code to answer with.
        kind: FailureKind,
        /// Why, for the client and the log.
        message: String,
    },
    /// The program ended; the process exits with `code` next.
    Exited {
        /// The status the process exits with.
        code: u32,
        /// The program outgrew its memory limit (a `/tasks/oom` event is due).
        oom: bool,
        /// How it ended, for the log.
        status: String,
    },
}

impl From<&ShimError> for FailureKind {
    fn from(e: &ShimError) -> Self {
        // From the code, which `ShimError` chooses in one place.
        match e.code() {
            ttrpc::Code::INVALID_ARGUMENT | ttrpc::Code::ALREADY_EXISTS => {
                FailureKind::InvalidArgument
            }
            ttrpc::Code::NOT_FOUND => FailureKind::NotFound,
            ttrpc::Code::UNIMPLEMENTED => FailureKind::Unimplemented,
            _ => FailureKind::Internal,
        }
    }
}

impl FailureKind {
    /// The task API error for a failure of this kind.
    pub fn error(self, message: String) -> ShimError {
        match self {
            FailureKind::InvalidArgument => ShimError::InvalidArgument(message),
            FailureKind::NotFound => ShimError::NotFound(message),
            FailureKind::Unimplemented => ShimError::Unimplemented(message),
            FailureKind::Internal => ShimError::Internal(message),
        }
    }
}

/// Writes one message.
pub fn send<M: Serialize>(socket: &UnixStream, message: &M) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    let mut writer = socket;
    writer.write_all(&frame)
}

/// Reads one message; `Ok(None)` when the other side closed the socket.
pub fn receive<M: for<'de> Deserialize<'de>>(socket: &UnixStream) -> std::io::Result<Option<M>> {
    let mut reader = socket;
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "a control message of {length} bytes"
        )));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_the_socket_in_order_and_eof_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &FromChild::Ready).unwrap();
        send(
            &a,
            &FromChild::Exited {
                code: 137,
                oom: true,
                status: "killed".into(),
            },
        )
        .unwrap();
        drop(a);
        assert!(matches!(receive(&b).unwrap(), Some(FromChild::Ready)));
        match receive(&b).unwrap() {
            Some(FromChild::Exited { code, oom, .. }) => assert_eq!((code, oom), (137, true)),
            other => panic!("{other:?}"),
        }
        assert!(receive::<FromChild>(&b).unwrap().is_none());
    }

    #[test]
    fn failures_keep_their_code() {
        let e = ShimError::NotFound("x".into());
        let kind = FailureKind::from(&e);
        assert!(matches!(kind.error("y".into()), ShimError::NotFound(m) if m == "y"));
    }
}
