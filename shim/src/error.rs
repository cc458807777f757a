use containerd_shim_protos::ttrpc;
use thiserror::Error;

/// Every way a task request can fail, each mapped to exactly one ttrpc code in
/// [`From<ShimError> for ttrpc::Error`] so handlers only ever use `?`.
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
    /// The host failed underneath the shim.
    #[error("{0}")]
    Internal(String),
}

impl From<runtime::RuntimeError> for ShimError {
    fn from(err: runtime::RuntimeError) -> Self {
        use runtime::RuntimeError as R;
        match &err {
            // A missing program is a bad request, not a missing task: NOT_FOUND from Create
            // reads to clients (docker) as "no such container".
            R::InvalidSpec(_)
            | R::InvalidMount(_)
            | R::InvalidProgram(_)
            | R::EntrypointNotFound(_) => ShimError::InvalidArgument(err.to_string()),
            R::Unsupported(_) => ShimError::Unimplemented(err.to_string()),
            R::Engine(_) | R::Io { .. } => ShimError::Internal(err.to_string()),
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(err: ShimError) -> Self {
        let code = match &err {
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
            ShimError::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::Unimplemented(_) => ttrpc::Code::UNIMPLEMENTED,
            ShimError::Internal(_) => ttrpc::Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, err.to_string()))
    }
}

impl ShimError {
    /// A host failure while doing `what`, with its cause in the message.
    pub fn internal(what: impl std::fmt::Display, cause: impl std::fmt::Display) -> Self {
        ShimError::Internal(format!("{what}: {cause}"))
    }
}

/// Result of a task operation.
pub type ShimResult<T> = Result<T, ShimError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(err: runtime::RuntimeError) -> ttrpc::Code {
        match ttrpc::Error::from(ShimError::from(err)) {
            ttrpc::Error::RpcStatus(status) => status.code(),
            other => panic!("not a status: {other:?}"),
        }
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
}
