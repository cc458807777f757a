//! The binary's own command line, as containerd and people invoke it.

use std::io::Write;
use std::process::{Command, Stdio};

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::RuntimeInfo;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-wasmtime-v1");

#[test]
fn dash_v_prints_name_and_version() {
    let out = Command::new(SHIM).arg("-v").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("containerd-shim-wasmtime-v1:"), "{text}");
    assert!(
        text.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[test]
fn dash_info_answers_a_runtime_info() {
    let mut child = Command::new(SHIM)
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(info.name, "io.containerd.wasmtime.v1");
}

#[test]
fn unknown_flags_and_actions_are_refused() {
    let out = Command::new(SHIM).arg("-bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(SHIM)
        .args(["-namespace", "n", "-id", "i", "frobnicate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown action"));
}

#[test]
fn start_without_containerd_fails_with_a_reason() {
    let bundle = tempfile::tempdir().unwrap();
    let out = Command::new(SHIM)
        .args([
            "-namespace",
            "n",
            "-id",
            "i",
            "-address",
            "/nonexistent.sock",
            "start",
        ])
        .current_dir(bundle.path())
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TTRPC_ADDRESS"));
}

/// A container's process whose shim is gone (its parent is no longer the pid its role
/// names) ends at once: its program's arguments, here `delete` and `-v`, are never taken
/// for the shim's own command line.
#[test]
fn an_orphaned_container_process_ends_without_acting_on_its_arguments() {
    let not_our_parent = "1";
    for args in [
        &["-v"][..],
        &["-id", "x", "-bundle", "/nonexistent", "delete"],
    ] {
        let out = Command::new(SHIM)
            .args(args)
            .env("CONTAINERD_WASMTIME_CHILD_OF", not_our_parent)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{args:?}: {out:?}"
        );
    }
}
