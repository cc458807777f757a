//! What a program file holds, from its bytes alone: read whole (up to a cap), told apart
//! (module, component, or a common mistake) and, for a component, whether it is an HTTP
//! handler. The bottom of the loading path: it knows no engine, cache or host.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use crate::RuntimeError;

/// The largest program read: the biggest real ones (CPython, .NET) are tens of MB, and a
/// bundle pointing at a huge file must not make the shim allocate all of it.
const MAX_PROGRAM_BYTES: u64 = 1 << 30;

/// What kind of wasm a file holds, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// A core module (WASI preview 1), binary or text.
    Module,
    /// A component (WASI preview 2).
    Component,
}

/// Tells modules, components and common mistakes apart from a file's first bytes.
pub(crate) fn classify(guest_path: &str, bytes: &[u8]) -> Result<ProgramKind, RuntimeError> {
    if let Some(rest) = bytes.strip_prefix(b"\0asm") {
        return match rest.get(..4) {
            Some([1, 0, 0, 0]) => Ok(ProgramKind::Module),
            Some([_, _, 1, 0]) => Ok(ProgramKind::Component),
            _ => Err(RuntimeError::InvalidProgram(format!(
                "{guest_path} has the WebAssembly magic but an unknown version; the file is \
                 truncated or corrupt"
            ))),
        };
    }
    if bytes.starts_with(b"\x7fELF") {
        return Err(RuntimeError::InvalidProgram(format!(
            "{guest_path} is a native ELF executable, not a WebAssembly program"
        )));
    }
    if bytes.starts_with(b"#!") {
        return Err(RuntimeError::InvalidProgram(format!(
            "{guest_path} is a script (starts with #!), not a WebAssembly program"
        )));
    }
    let looks_like_text = std::str::from_utf8(bytes)
        .map(|text| {
            let text = text.trim_start();
            text.starts_with('(') || text.starts_with(";;")
        })
        .unwrap_or(false);
    if looks_like_text || guest_path.ends_with(".wat") {
        return Ok(ProgramKind::Module);
    }
    Err(RuntimeError::InvalidProgram(format!(
        "{guest_path} is not a WebAssembly program: it neither starts with the \\0asm magic nor \
         is WebAssembly text"
    )))
}

/// Whether a component is an HTTP handler: it exports `wasi:http/incoming-handler` and no
/// `wasi:cli/run` (a component exporting both is run as a command, as `wasmtime run` would).
///
/// Read from the export section rather than from the compiled component because HTTP
/// components are compiled for a different engine (the serving engine's pool).
pub(crate) fn is_http_handler(bytes: &[u8]) -> bool {
    let mut depth = 0usize;
    let (mut handler, mut command) = (false, false);
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        // A malformed component is reported by the compiler with a better message.
        let Ok(payload) = payload else { return false };
        match payload {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports.into_iter().flatten() {
                    let name = export.name.name;
                    handler |= name.starts_with("wasi:http/incoming-handler@");
                    command |= name.starts_with("wasi:cli/run@");
                }
            }
            _ => {}
        }
    }
    handler && !command
}

/// The whole of `file`, refusing one larger than [`MAX_PROGRAM_BYTES`].
pub(crate) fn read_capped(file: &File, guest_path: &str) -> Result<Vec<u8>, RuntimeError> {
    let too_large = || {
        RuntimeError::InvalidProgram(format!(
            "{guest_path} is larger than {MAX_PROGRAM_BYTES} bytes, the largest program the \
             shim reads"
        ))
    };
    let size = file.metadata().map_or(0, |m| m.len());
    if size > MAX_PROGRAM_BYTES {
        return Err(too_large());
    }
    // From the start, whatever earlier reads of this descriptor consumed.
    let mut file = file;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| RuntimeError::io(format!("reading {guest_path}"), e))?;
    let mut bytes = Vec::with_capacity(size as usize);
    // The cap holds even for a file that grows while it is read.
    file.take(MAX_PROGRAM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RuntimeError::io(format!("reading {guest_path}"), e))?;
    if bytes.len() as u64 > MAX_PROGRAM_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_tells_common_inputs_apart() {
        assert_eq!(
            classify("/a", b"\0asm\x01\0\0\0").unwrap(),
            ProgramKind::Module
        );
        assert_eq!(
            classify("/a", b"\0asm\x0d\0\x01\0").unwrap(),
            ProgramKind::Component
        );
        assert_eq!(
            classify("/a.wat", b"(module)").unwrap(),
            ProgramKind::Module
        );
        assert_eq!(
            classify("/a", b"  ;; hi\n(module)").unwrap(),
            ProgramKind::Module
        );
        for (bytes, needle) in [
            (&b"\x7fELF\x02\x01"[..], "ELF"),
            (b"#!/bin/sh\n", "script"),
            (b"hello world", "not a WebAssembly program"),
            (b"\0as", "not a WebAssembly program"),
            (b"\0asm\x01", "corrupt"),
        ] {
            let err = classify("/a", bytes).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn http_handlers_are_told_from_commands_by_their_exports() {
        let handler = wat::parse_str(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $h (export "handle" (func $f)))
                (export "wasi:http/incoming-handler@0.2.12" (instance $h)))"#,
        )
        .unwrap();
        assert!(is_http_handler(&handler));
        let command = wat::parse_str(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $h (export "run" (func $f)))
                (export "wasi:cli/run@0.2.12" (instance $h)))"#,
        )
        .unwrap();
        assert!(!is_http_handler(&command));
        assert!(!is_http_handler(b"\0asm\x0d\0\x01\0garbage"));
    }
}
