//! Writing the one reply an action prints for containerd (start, delete, -info).

use std::io::Write;

use containerd_shim_protos::protobuf::MessageFull;

use crate::bootstrap::error::BootstrapError;

/// Encodes `message` as protobuf, naming its type in any error.
pub fn encode<M: MessageFull>(message: &M) -> Result<Vec<u8>, BootstrapError> {
    message
        .write_to_bytes()
        .map_err(|source| BootstrapError::Encode {
            message: M::descriptor().name().to_string(),
            source,
        })
}

/// Writes `bytes` and flushes: containerd reads the reply when the action exits.
pub fn write(out: &mut dyn Write, bytes: &[u8], what: &str) -> Result<(), BootstrapError> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| BootstrapError::io(format!("writing {what}"), e))
}
