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
    Engine(String),
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
