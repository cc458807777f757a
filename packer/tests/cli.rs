//! The packer as users run it.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const PACK: &str = env!("CARGO_BIN_EXE_wasm-oci-pack");

#[test]
fn packs_a_program_and_prints_the_full_name() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("app.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let extra = dir.path().join("config.txt");
    std::fs::write(&extra, "x=1\n").unwrap();
    let tar = dir.path().join("out.tar");
    let out = Command::new(PACK)
        .args(["--name", "demo/app:v2", "--output"])
        .arg(&tar)
        .arg(&wasm)
        .arg(format!("{}:/etc/app/config.txt", extra.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "docker.io/demo/app:v2"
    );
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    let mut index = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("index.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            index = Some(text);
        }
    }
    let index: serde_json::Value = serde_json::from_str(&index.unwrap()).unwrap();
    let manifest = &index["manifests"][0];
    assert_eq!(manifest["platform"]["os"], "wasi");
    assert_eq!(manifest["platform"]["architecture"], "wasm");
    assert_eq!(
        manifest["annotations"]["io.containerd.image.name"],
        "docker.io/demo/app:v2"
    );
}

#[test]
fn os_version_marks_a_component_image_without_changing_its_platform() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("component.wasm");
    std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap();
    let tar = dir.path().join("out.tar");
    let out = Command::new(PACK)
        .args(["--os-version", "wasip2", "--name", "component", "--output"])
        .arg(&tar)
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = archive_entries(&std::fs::read(&tar).unwrap());
    let index: serde_json::Value = serde_json::from_slice(&entries["index.json"].1).unwrap();
    assert_eq!(
        index["manifests"][0]["platform"],
        serde_json::json!({ "os": "wasi", "architecture": "wasm", "os.version": "wasip2" })
    );
}

/// The entries of an image archive, by path.
fn archive_entries(bytes: &[u8]) -> HashMap<String, (u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut entries = HashMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mode = entry.header().mode().unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        entries.insert(path, (mode, data));
    }
    entries
}

/// The single layer of the image in `tar`, followed from index.json through the manifest.
fn layer_entries(tar: &Path) -> HashMap<String, (u32, Vec<u8>)> {
    let image = archive_entries(&std::fs::read(tar).unwrap());
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().unwrap().trim_start_matches("sha256:");
        image[&format!("blobs/sha256/{digest}")].1.clone()
    };
    let index: serde_json::Value = serde_json::from_slice(&image["index.json"].1).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).unwrap();
    archive_entries(&blob(&manifest["layers"][0]["digest"]))
}

#[test]
fn extra_files_keep_their_permission_bits() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("pause");
    std::fs::write(&program, b"\x7fELF").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tool = dir.path().join("tool");
    std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, b"x").unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o640)).unwrap();
    let tar = dir.path().join("out.tar");
    let out = Command::new(PACK)
        .args(["--platform", "linux/amd64", "--name", "modes", "--output"])
        .arg(&tar)
        .arg(&program)
        .arg(format!("{}:/bin/tool", tool.display()))
        .arg(format!("{}:/etc/data.txt", data.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer = layer_entries(&tar);
    let mode = |path: &str| {
        layer
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from {:?}", layer.keys()))
            .0
    };
    // The program is always executable; extra files are as they are on disk.
    assert_eq!(mode("pause"), 0o755);
    assert_eq!(mode("bin/tool"), 0o755);
    assert_eq!(mode("etc/data.txt"), 0o640);
    assert_eq!(layer["bin/tool"].1, b"#!/bin/sh\n");
}

#[test]
fn a_missing_extra_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("app.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let out = Command::new(PACK)
        .args(["--name", "x", "--output"])
        .arg(dir.path().join("out.tar"))
        .arg(&wasm)
        .arg("/nonexistent/file:/file")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_arguments_are_usage_errors() {
    let out = Command::new(PACK).args(["--name", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}
