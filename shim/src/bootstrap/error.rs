//! Why an action of the binary failed (`start`, `delete`, the daemon, `-info`): the message
//! on its stderr and in its log, with every cause beneath it (see [`crate::error::render`]).

use std::io;

use containerd_shim_protos::protobuf;
use containerd_shim_protos::ttrpc;
use thiserror::Error;

/// Every way an action of the binary can fail before or outside the task API. Each variant
/// with a cause keeps it as its source and does not repeat it in its own message.
#[derive(Debug, Error)]
pub enum BootstrapError {
    /// The action is neither `start`, `delete` nor the daemon's (none).
    #[error("unknown action {0:?} (expected start or delete)")]
    UnknownAction(String),
    /// `start` without the flags that name the task.
    #[error("start needs -namespace and -id")]
    MissingTaskFlags,
    /// The daemon was run without the socket `start` made for it.
    #[error("the daemon needs -socket")]
    MissingSocket,
    /// A legacy `start` (or the daemon) without containerd's ttrpc address: not started by
    /// containerd, which always sets it.
    #[error("TTRPC_ADDRESS is not set; the shim must be started by containerd")]
    MissingTtrpcAddress,
    /// containerd 2.3+'s `BootstrapParams` without the address events go to.
    #[error("bootstrap params carry no containerd ttrpc address")]
    BootstrapWithoutTtrpcAddress,
    /// The daemon's `-bootstrap` flag is not what `start` writes.
    #[error(transparent)]
    BootstrapFlag(#[from] BootstrapFlagError),
    /// An I/O step of an action failed: `what` it was doing, and why.
    #[error("{what}")]
    Io {
        /// What was being done, as the message says it.
        what: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A reply could not be encoded as protobuf.
    #[error("encoding {message}")]
    Encode {
        /// The protobuf message's type name.
        message: String,
        /// protobuf's reason.
        #[source]
        source: protobuf::Error,
    },
    /// The daemon's ttrpc server could not start.
    #[error("{what}")]
    Server {
        /// The step that failed.
        what: &'static str,
        /// ttrpc's reason.
        #[source]
        source: ttrpc::Error,
    },
}

impl BootstrapError {
    /// An I/O failure while doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        BootstrapError::Io {
            what: what.into(),
            source,
        }
    }
}

/// What is wrong with the daemon's `-bootstrap` flag.
#[derive(Debug, Error)]
pub enum BootstrapFlagError {
    /// Hex comes in pairs of digits.
    #[error("the -bootstrap flag has an odd number of hex digits")]
    OddLength,
    /// A pair is not two hex digits.
    #[error("the -bootstrap flag is not hex")]
    NotHex,
    /// The bytes are not a `BootstrapParams`.
    #[error("the -bootstrap flag is not BootstrapParams")]
    NotParams(#[source] protobuf::Error),
}
