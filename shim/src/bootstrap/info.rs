//! `-v` and `-info`: what this shim is, for people and for containerd 2.x.

use std::io::{Read, Write};

use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::bootstrap::error::BootstrapError;
use crate::bootstrap::reply;

/// The runtime name containerd users type.
pub const RUNTIME_NAME: &str = "io.containerd.wasmtime.v1";

/// Text for `-v`.
pub fn version_text() -> String {
    format!(
        "containerd-shim-wasmtime-v1:\n  Runtime: {RUNTIME_NAME}\n  Version: {}\n  Wasmtime: 48.0.8\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Answers `-info`: reads (and ignores) the options on stdin, writes a `RuntimeInfo`.
pub fn runtime_info(stdin: &mut dyn Read, stdout: &mut dyn Write) -> Result<(), BootstrapError> {
    let mut options = Vec::new();
    let _ = stdin.read_to_end(&mut options);
    let info = RuntimeInfo {
        name: RUNTIME_NAME.to_string(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: String::new(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    reply::write(stdout, &reply::encode(&info)?, "RuntimeInfo")
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn info_names_the_runtime() {
        let mut out = Vec::new();
        runtime_info(&mut &b""[..], &mut out).unwrap();
        let info = RuntimeInfo::parse_from_bytes(&out).unwrap();
        assert_eq!(info.name, RUNTIME_NAME);
        assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    }
}
