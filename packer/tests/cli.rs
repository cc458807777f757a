//! The packer as users run it.

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
fn missing_arguments_are_usage_errors() {
    let out = Command::new(PACK).args(["--name", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}
