use std::error::Error;

use containerd_shim_protos::ttrpc;
use thiserror::Error;

/// The cause underneath a [`ShimError`]: any error, kept whole so the log and the status
/// message can walk its chain (see [`render`]).
pub type Cause = Box<dyn Error + Send + Sync>;

/// Every way a task request can fail, each mapped to exactly one ttrpc code in
/// [`ShimError::code`] so handlers only ever use `?`.
///
/// A variant with a cause keeps it as its `source` and does not repeat it in its own message
/// (thiserror's convention): [`render`] puts the two together where an error is finally shown.
#[derive(Debug, Error)]
pub enum ShimError {
    /// No task or process with that id.
    #[error("{0}")]
    NotFound(String),
    /// The request or the bundle it names is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The task is in the wrong state for the request (deleting a running task...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A task with that id already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but this shim does not do it.
    #[error("{0}")]
    Unimplemented(String),
    /// The host failed underneath the shim, found by the shim itself (no error beneath it),
    /// or a failure that crossed from a container's process as its rendered message.
    #[error("{0}")]
    Internal(String),
    /// The host failed underneath the shim while doing `what`: INTERNAL, like `Internal`,
    /// with the failure itself kept. Made by [`ShimError::internal`].
    #[error("{what}")]
    Host {
        /// What the shim was doing, as a log line says it.
        what: String,
        /// Why it failed.
        #[source]
        source: Cause,
    },
    /// An OCI hook of a phase that fails the request failed: FAILED_PRECONDITION, as the
    /// container is not in the state its own hook requires. Made by
    /// [`ShimError::failed_precondition`].
    #[error("{what}")]
    Precondition {
        /// Which check failed, as a log line says it.
        what: String,
        /// Why it failed.
        #[source]
        source: Cause,
    },
    /// The runtime could not prepare the program. Whose fault that is (the request's, a
    /// missing feature, or the host's) decides the code; the message is the runtime's.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
}

impl ShimError {
    /// A host failure while doing `what`, keeping `cause` as the source.
    pub fn internal(what: impl std::fmt::Display, cause: impl Into<Cause>) -> Self {
        ShimError::Host {
            what: what.to_string(),
            source: cause.into(),
        }
    }

    /// A failed check that leaves the task in the wrong state for the request (a fatal
    /// hook), keeping `cause` as the source.
    pub fn failed_precondition(what: impl std::fmt::Display, cause: impl Into<Cause>) -> Self {
        ShimError::Precondition {
            what: what.to_string(),
            source: cause.into(),
        }
    }

    /// The ttrpc code a client gets for this error: the one place codes are chosen.
    pub fn code(&self) -> ttrpc::Code {
        use runtime::RuntimeError as R;
        match self {
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) | ShimError::Precondition { .. } => {
                ttrpc::Code::FAILED_PRECONDITION
            }
            ShimError::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::Unimplemented(_) => ttrpc::Code::UNIMPLEMENTED,
            ShimError::Internal(_) | ShimError::Host { .. } => ttrpc::Code::INTERNAL,
            // A missing program is a bad request, not a missing task: NOT_FOUND from Create
            // reads to clients (docker) as "no such container".
            ShimError::Runtime(
                R::InvalidSpec(_)
                | R::InvalidMount(_)
                | R::InvalidProgram(_)
                | R::EntrypointNotFound(_),
            ) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::Runtime(R::Unsupported(_)) => ttrpc::Code::UNIMPLEMENTED,
            ShimError::Runtime(R::Engine(_) | R::Io { .. }) => ttrpc::Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(err: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), render(&err)))
    }
}

/// `err` and every cause beneath it, "a: b: c", for wherever an error is finally shown (a
/// status message, a log line, stderr). A cause whose text its parent's message already
/// holds is not repeated: some errors (the runtime's, `io::Error` wrappers of other crates)
/// print their source in their own message as well as returning it.
pub fn render(err: &dyn Error) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = source.source();
    }
    message
}

/// Result of a task operation.
pub type ShimResult<T> = Result<T, ShimError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(err: ShimError) -> ttrpc::proto::Status {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => status,
            other => panic!("not a status: {other:?}"),
        }
    }

    fn code_of(err: runtime::RuntimeError) -> ttrpc::Code {
        status_of(ShimError::from(err)).code()
    }

    #[test]
    fn runtime_errors_map_to_who_is_at_fault() {
        use runtime::RuntimeError as R;
        assert_eq!(
            code_of(R::EntrypointNotFound("/x.wasm".into())),
            ttrpc::Code::INVALID_ARGUMENT
        );
        assert_eq!(
            code_of(R::Unsupported("threads".into())),
            ttrpc::Code::UNIMPLEMENTED
        );
        // A fault of the engine is the host's failure, not a missing feature.
        assert_eq!(
            code_of(R::Engine(runtime::EngineError::LostCode {
                guest_path: "/x.wasm".into()
            })),
            ttrpc::Code::INTERNAL
        );
    }

    /// What a client reads is the whole chain, however deep the cause sits.
    #[test]
    fn a_host_failure_shows_its_cause_chain_in_the_status() {
        #[derive(Debug, Error)]
        #[error("opening stdio /run/x/stdout")]
        struct Opening(#[source] std::io::Error);

        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = ShimError::internal("starting the container", Opening(io));
        assert_eq!(err.to_string(), "starting the container");
        let status = status_of(err);
        assert_eq!(status.code(), ttrpc::Code::INTERNAL);
        assert_eq!(
            status.message,
            "starting the container: opening stdio /run/x/stdout: \
             No such file or directory (os error 2)"
        );
    }

    /// The runtime's messages already name their cause: it is not said twice, and the
    /// client's message is the runtime's own (which file is missing, say).
    #[test]
    fn a_runtime_error_keeps_its_message_and_its_source() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let err = ShimError::from(runtime::RuntimeError::Io {
            context: "reading /app.wasm".into(),
            source: io,
        });
        assert!(err.source().is_some());
        assert_eq!(
            status_of(err).message,
            "reading /app.wasm: No such file or directory (os error 2)"
        );
        assert_eq!(
            status_of(runtime::RuntimeError::EntrypointNotFound("/x.wasm".into()).into()).message,
            "entrypoint not found: /x.wasm"
        );
    }
}
