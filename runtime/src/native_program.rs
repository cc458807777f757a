//! Telling a container whose entrypoint is a Linux program from a wasm one.
//!
//! A host that runs wasm beside ordinary containers (a Kubernetes pod's pause container, a
//! log-shipping sidecar) must hand the Linux ones to a Linux runtime. The decision is made
//! from the entrypoint's first bytes, never from its name or the image's platform: images
//! in the field name their wasm `/app.wasm`, `/hello` or `/bin/server` alike, and the
//! platform is not part of the OCI runtime spec.

use std::io::Read;
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::{Entrypoint, PreopenPlan};

/// Why a container's entrypoint is a Linux program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeProgram {
    /// Where the program was found, inside the container.
    pub guest_path: String,
    /// What it is: "an ELF executable" or "a script".
    pub kind: &'static str,
}

/// Finds the entrypoint of `spec` in `rootfs` (and the spec's mounts) the way
/// [`crate::Program::load`] would, and says whether it is an ELF executable or a `#!`
/// script. Everything else — wasm, WebAssembly text, a missing or unreadable file, a spec
/// too broken to say — is `None`: the wasm path then reports the problem in its own words.
pub fn native_entrypoint(spec: &Spec, rootfs: &Path) -> Option<NativeProgram> {
    let process = spec.process().as_ref()?;
    let arg0 = crate::plan::past_init(process.args().as_deref()?).first()?;
    let entrypoint = Entrypoint::parse(arg0).ok()?;
    let env = process.env().clone().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|entry| entry.strip_prefix("PATH="))
        .map(str::to_string);
    let cwd = process.cwd().to_str().unwrap_or("/");
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    let mounts = spec.mounts().clone().unwrap_or_default();
    // A spec whose mounts the wasm path would refuse can still name a program in the rootfs.
    let preopens = PreopenPlan::from_mounts(rootfs, false, &mounts)
        .or_else(|_| PreopenPlan::from_mounts(rootfs, false, &[]))
        .ok()?;
    let (guest_path, mut file, _) = entrypoint.open(&preopens, cwd, path_var.as_deref()).ok()?;
    let mut head = [0u8; 4];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    let head = &head[..filled];
    let kind = if head.starts_with(b"\x7fELF") {
        "an ELF executable"
    } else if head.starts_with(b"#!") {
        "a script"
    } else {
        return None;
    };
    Some(NativeProgram { guest_path, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder};

    fn spec(args: &[&str], env: &[&str]) -> Spec {
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .cwd("/")
                    .build()
                    .unwrap(),
            )
            .mounts(vec![])
            .build()
            .unwrap()
    }

    #[test]
    fn elf_and_scripts_are_native_wasm_and_missing_files_are_not() {
        let rootfs = tempfile::tempdir().unwrap();
        let bin = rootfs.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("sh"), b"\x7fELF\x02\x01\x01").unwrap();
        std::fs::write(rootfs.path().join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(rootfs.path().join("app"), b"\0asm\x01\0\0\0").unwrap();
        std::fs::write(rootfs.path().join("tiny"), b"\x7f").unwrap();

        let found = native_entrypoint(&spec(&["sh", "-c", "x"], &["PATH=/bin"]), rootfs.path());
        assert_eq!(
            found,
            Some(NativeProgram {
                guest_path: "/bin/sh".into(),
                kind: "an ELF executable"
            })
        );
        let script = native_entrypoint(&spec(&["/run.sh"], &[]), rootfs.path()).unwrap();
        assert_eq!(script.kind, "a script");
        assert_eq!(
            native_entrypoint(&spec(&["/app"], &[]), rootfs.path()),
            None
        );
        assert_eq!(
            native_entrypoint(&spec(&["/tiny"], &[]), rootfs.path()),
            None
        );
        assert_eq!(
            native_entrypoint(&spec(&["/gone"], &[]), rootfs.path()),
            None
        );
        assert_eq!(native_entrypoint(&spec(&["sh"], &[]), rootfs.path()), None);
    }
}
