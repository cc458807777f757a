//! The OCI image layout, written as one tar stream: `oci-layout`, `index.json`, the blobs,
//! and a Docker `manifest.json` so `docker load` on older engines takes it too.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A file to put in the image's single layer.
pub struct LayerFile {
    /// Where it is on this machine.
    pub source: PathBuf,
    /// Absolute path inside the image.
    pub destination: String,
    /// Permission bits.
    pub mode: u32,
}

/// Everything that describes the image to write.
pub struct ImageSpec {
    /// Full reference (`docker.io/library/hello:latest`).
    pub name: String,
    /// Platform OS (`wasi`, or `linux` for images that claim linux/amd64).
    pub os: String,
    /// Platform architecture (`wasm`).
    pub architecture: String,
    /// Image entrypoint.
    pub entrypoint: Vec<String>,
    /// Image cmd (arguments after the entrypoint).
    pub cmd: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// The layer's files.
    pub files: Vec<LayerFile>,
}

/// Expands a short name the way docker does (`hello` → `docker.io/library/hello:latest`), so
/// `ctr` users can type the same name docker users see.
pub fn normalize_reference(name: &str) -> Result<String> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        bail!("invalid image name {name:?}");
    }
    let (first, _) = name.split_once('/').unwrap_or(("", name));
    let has_domain = first.contains('.') || first.contains(':') || first == "localhost";
    let mut full = if has_domain {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    Ok(full)
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The layer tar: parent directories, then the files, every timestamp zero so the same
/// inputs always give the same digests.
fn layer(files: &[LayerFile]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        let path = file.destination.trim_start_matches('/');
        let mut prefix = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            prefix.push_str(part);
            prefix.push('/');
            dirs.insert(prefix.clone());
        }
    }
    for dir in &dirs {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_size(0);
        builder.append_data(&mut header, dir, std::io::empty())?;
    }
    for file in files {
        let data = std::fs::read(&file.source)
            .with_context(|| format!("reading {}", file.source.display()))?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(file.mode);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        builder.append_data(
            &mut header,
            file.destination.trim_start_matches('/'),
            &data[..],
        )?;
    }
    Ok(builder.into_inner()?)
}

fn append(builder: &mut tar::Builder<impl Write>, path: &str, data: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, path, data)?;
    Ok(())
}

/// Writes the image archive to `out`.
pub fn write_archive(spec: &ImageSpec, out: impl Write) -> Result<()> {
    let layer = layer(&spec.files)?;
    let layer_digest = digest(&layer);
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/".to_string());
    }
    let config = serde_json::to_vec(&json!({
        "architecture": spec.architecture,
        "os": spec.os,
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": if spec.cmd.is_empty() { serde_json::Value::Null } else { json!(spec.cmd) },
            "Env": env,
            "WorkingDir": spec.workdir,
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created_by": "wasm-oci-pack", "comment": "wasm program" }],
    }))?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let manifest_digest = digest(&manifest);
    let tag = spec
        .name
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": { "architecture": spec.architecture, "os": spec.os },
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": blob(&config_digest),
        "RepoTags": [spec.name.trim_start_matches("docker.io/library/").trim_start_matches("docker.io/")],
        "Layers": [blob(&layer_digest)],
    }]))?;

    let mut builder = tar::Builder::new(out);
    append(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append(&mut builder, &blob(&layer_digest), &layer)?;
    append(&mut builder, &blob(&config_digest), &config)?;
    append(&mut builder, &blob(&manifest_digest), &manifest)?;
    append(&mut builder, "index.json", &index)?;
    append(&mut builder, "manifest.json", &docker_manifest)?;
    builder.into_inner()?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_expand_like_docker() {
        assert_eq!(
            normalize_reference("hello").unwrap(),
            "docker.io/library/hello:latest"
        );
        assert_eq!(
            normalize_reference("me/app:v1").unwrap(),
            "docker.io/me/app:v1"
        );
        assert_eq!(
            normalize_reference("localhost/app").unwrap(),
            "localhost/app:latest"
        );
        assert_eq!(
            normalize_reference("registry.local:5000/a/b:2").unwrap(),
            "registry.local:5000/a/b:2"
        );
        assert!(normalize_reference("").is_err());
    }

    #[test]
    fn archive_is_reproducible_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("app.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let spec = ImageSpec {
            name: "docker.io/library/app:latest".into(),
            os: "wasi".into(),
            architecture: "wasm".into(),
            entrypoint: vec!["/app.wasm".into()],
            cmd: vec![],
            env: vec![],
            workdir: "/".into(),
            files: vec![LayerFile {
                source: wasm,
                destination: "/app.wasm".into(),
                mode: 0o755,
            }],
        };
        let mut first = Vec::new();
        write_archive(&spec, &mut first).unwrap();
        let mut second = Vec::new();
        write_archive(&spec, &mut second).unwrap();
        assert_eq!(first, second);
        let mut archive = tar::Archive::new(&first[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        for needed in ["oci-layout", "index.json", "manifest.json"] {
            assert!(names.iter().any(|n| n == needed), "{names:?}");
        }
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("blobs/sha256/"))
                .count(),
            3
        );
    }
}
