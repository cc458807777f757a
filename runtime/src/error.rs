use std::sync::Arc;

use thiserror::Error;

/// Everything that can stop a program from being prepared, split by who is at fault so the
/// host can map each kind to the right status (bad request versus missing thing versus
/// something this runtime does not do).
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The OCI spec itself is unusable (no args, relative cwd, bad mount list...).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A mount in the spec cannot become a preopen (missing source, relative destination...).
    #[error("invalid mount: {0}")]
    InvalidMount(String),
    /// The program named by `process.args[0]` does not exist inside the rootfs.
    #[error("entrypoint not found: {0}")]
    EntrypointNotFound(String),
    /// The entrypoint exists but is not a runnable WebAssembly program.
    #[error("{0}")]
    InvalidProgram(String),
    /// A valid program that needs a feature this runtime does not offer yet.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// wasmtime's engine could not be made, or code compiled for it not loaded: a fault of
    /// the host, not of the program or the request.
    #[error("wasmtime: {0}")]
    Engine(#[from] EngineError),
    /// The host failed underneath us (I/O, thread creation).
    #[error("{context}: {source}")]
    Io {
        /// What was being attempted.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Wraps an I/O error with what was being attempted, so logs say more than "ENOENT".
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A fault of this host's wasmtime side, never of the program or the request: the host maps
/// it to an internal error, where a bad program is the caller's.
#[derive(Debug, Clone, Error)]
pub enum EngineError {
    /// wasmtime could not make one of this process's engines or its linkers. The failure is
    /// kept for the life of the process, shared (hence the `Arc`, and `Clone`), so every
    /// later use of that engine reports the same cause rather than paying to try again.
    #[error("creating {what}: {source:#}")]
    Creation {
        /// Which engine, as a log line names it.
        what: &'static str,
        /// wasmtime's reason.
        #[source]
        source: Arc<wasmtime::Error>,
    },
    /// A program compiled from its bytes came out with no code: the runtime's own bug,
    /// reported as a failed load rather than a panic in the middle of a request.
    #[error("{guest_path}: compiled from its bytes, yet not compiled")]
    LostCode {
        /// The program, as its container names it.
        guest_path: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message alone says it all (the host's status carries only the message), and the
    /// cause is there for whoever walks the chain.
    #[test]
    fn an_engine_that_cannot_be_made_keeps_its_cause() {
        let err = RuntimeError::from(EngineError::Creation {
            what: "the wasmtime engine",
            source: Arc::new(wasmtime::Error::msg("no memory")),
        });
        assert_eq!(
            err.to_string(),
            "wasmtime: creating the wasmtime engine: no memory"
        );
        let cause = std::error::Error::source(&err).and_then(std::error::Error::source);
        assert_eq!(cause.map(ToString::to_string).as_deref(), Some("no memory"));
    }
}
