//! Bad programs fail Create with a clear message and leave nothing behind.

use std::time::Duration;

use integration::{Containerd, RUNTIME};

fn assert_fails_cleanly(
    containerd: &Containerd,
    rootfs: &std::path::Path,
    id: &str,
    entry: &str,
    needle: &str,
) {
    let out = containerd.run_rootfs(&[], rootfs, id, &[entry]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in: {}",
        out.stderr
    );
    assert!(
        containerd
            .wait_for_no_shims(Duration::from_secs(5))
            .is_empty(),
        "a shim outlived the failed create"
    );
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

#[test]
fn corrupt_wasm_fails_create_with_a_clear_error() {
    let containerd = Containerd::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&[0x01, 0x7f, 0x00, 0x13]);
    std::fs::write(rootfs.path().join("bad.wasm"), bytes).unwrap();
    assert_fails_cleanly(
        &containerd,
        rootfs.path(),
        "bad1",
        "/bad.wasm",
        "not a valid WebAssembly module",
    );
}

#[test]
fn missing_entrypoint_fails_create_with_a_clear_error() {
    let containerd = Containerd::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    assert_fails_cleanly(
        &containerd,
        rootfs.path(),
        "miss1",
        "/nothere.wasm",
        "nothere.wasm does not exist",
    );
}

#[test]
fn directory_entrypoint_fails_create_with_a_clear_error() {
    let containerd = Containerd::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::create_dir(rootfs.path().join("app.wasm")).unwrap();
    assert_fails_cleanly(
        &containerd,
        rootfs.path(),
        "dir1",
        "/app.wasm",
        "is a directory",
    );
}

#[test]
fn corrupt_image_fails_and_unmounts_its_rootfs() {
    let containerd = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("broken.wasm");
    std::fs::write(&wasm, b"this is not wasm").unwrap();
    let image = containerd.import_program(&wasm, "broken:test").unwrap();
    let out = containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, &image, "img-bad"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("not a WebAssembly program"),
        "{}",
        out.stderr
    );
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(5))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}
