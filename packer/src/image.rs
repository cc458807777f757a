//! The OCI image layout, written as one tar stream: `oci-layout`, `index.json`, the blobs,
//! and a Docker `manifest.json` so `docker load` on older engines takes it too.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A file to put in the image (in its single layer, or in a layer of its own).
pub struct LayerFile {
    /// Where it is on this machine.
    pub source: PathBuf,
    /// Absolute path inside the image.
    pub destination: String,
    /// Permission bits.
    pub mode: u32,
}

/// The platform an image claims, written both in the index entry (which `ctr` and docker
/// match against `--platform`) and in the image config.
///
/// WASI 0.2 components keep `wasi/wasm`, the OS/architecture the OCI image spec names for
/// WebAssembly (image-spec #964) and the one docker, containerd and every wasm shim use for
/// runnable images, modules and components alike: there is no established docker or
/// containerd spelling for "WASI 0.2". The WASI version goes in `os.version` (`wasip2`, the
/// name the wasm toolchains and the CNCF Wasm OCI artifact layout use for it, there as the OS
/// itself). `os.version` is the field that can say it without cost: containerd's platform
/// matcher ignores `os.version` for every OS but Windows, so such an image still imports and
/// runs with `--platform wasi/wasm`. A `variant` would not: the matcher compares variants
/// exactly, so `ctr images import --platform wasi/wasm` would skip an image whose variant is
/// `wasip2` (and `os.features` would be the same, as the image's features must be a subset
/// of the requested ones). A variant can still be given, for images meant only for
/// `--platform wasi/wasm/VARIANT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// OS (`wasi`, or `linux` for images that claim linux/amd64).
    pub os: String,
    /// Architecture (`wasm`).
    pub architecture: String,
    /// Architecture variant; must then be asked for by name (`wasi/wasm/VARIANT`).
    pub variant: Option<String>,
    /// OS version (`wasip2` for WASI 0.2 components); ignored by the matcher.
    pub os_version: Option<String>,
}

impl Platform {
    /// Parses `OS/ARCH` or `OS/ARCH/VARIANT`, the syntax of `ctr --platform`.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] => (os, arch, None),
            [os, arch, variant] => (os, arch, Some(variant.to_string())),
            _ => bail!("platform {text:?} is not OS/ARCH or OS/ARCH/VARIANT"),
        };
        if os.is_empty() || architecture.is_empty() || variant.as_deref() == Some("") {
            bail!("platform {text:?} has an empty component");
        }
        Ok(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant,
            os_version: None,
        })
    }

    /// The OCI `platform` object of an index entry. The optional fields are left out when
    /// unset, so images without them keep the digests they always had.
    fn to_json(&self) -> serde_json::Value {
        let mut platform = json!({ "architecture": self.architecture, "os": self.os });
        self.add_optional_fields(&mut platform);
        platform
    }

    /// Adds `os.version` and `variant`, which the image config and the index entry spell
    /// the same way.
    fn add_optional_fields(&self, object: &mut serde_json::Value) {
        if let Some(version) = &self.os_version {
            object["os.version"] = json!(version);
        }
        if let Some(variant) = &self.variant {
            object["variant"] = json!(variant);
        }
    }
}

/// Everything that describes the image to write.
pub struct ImageSpec {
    /// Full reference (`docker.io/library/hello:latest`).
    pub name: String,
    /// The platform the image claims.
    pub platform: Platform,
    /// Image entrypoint.
    pub entrypoint: Vec<String>,
    /// Image cmd (arguments after the entrypoint).
    pub cmd: Vec<String>,
    /// Environment.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// The image's files.
    pub files: Vec<LayerFile>,
    /// One layer per file, in order (the program's lowest), instead of one for all: images
    /// of many layers, as `docker build` makes one per instruction.
    pub layer_per_file: bool,
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
    let paths = files
        .iter()
        .map(|f| layer_path(&f.destination))
        .collect::<Result<Vec<_>>>()?;
    for path in &paths {
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
    for (file, path) in files.iter().zip(&paths) {
        let data = std::fs::read(&file.source)
            .with_context(|| format!("reading {}", file.source.display()))?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(file.mode);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, &data[..])?;
    }
    Ok(builder.into_inner()?)
}

/// The layer path of a file's destination: its plain components joined, so `/a//b` and
/// `/./a/b` name the same entry. A destination that names no file (empty, ending in `/`,
/// or climbing with `..`) is an error: written as given, tar readers would take it for a
/// directory or put it outside the image's root. (Found by the image_pack fuzz target.)
fn layer_path(destination: &str) -> Result<String> {
    use std::path::Component;
    if destination.ends_with('/') {
        anyhow::bail!("destination {destination:?} names a directory, not a file");
    }
    let mut parts = Vec::new();
    for component in std::path::Path::new(destination).components() {
        match component {
            Component::Normal(part) => parts.push(
                part.to_str()
                    .ok_or_else(|| anyhow::anyhow!("destination {destination:?} is not UTF-8"))?,
            ),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                anyhow::bail!("destination {destination:?} leaves the image's root")
            }
        }
    }
    if parts.is_empty() {
        anyhow::bail!("destination {destination:?} names no file");
    }
    Ok(parts.join("/"))
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
    let groups: Vec<&[LayerFile]> = if spec.layer_per_file {
        spec.files.chunks(1).collect()
    } else {
        vec![&spec.files[..]]
    };
    let layers = groups
        .into_iter()
        .map(|files| {
            let tar = layer(files)?;
            let digest = digest(&tar);
            Ok((tar, digest))
        })
        .collect::<Result<Vec<_>>>()?;
    let diff_ids: Vec<&str> = layers.iter().map(|(_, d)| d.as_str()).collect();
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/".to_string());
    }
    let mut config = json!({
        "architecture": spec.platform.architecture,
        "os": spec.platform.os,
        "config": {
            "Entrypoint": spec.entrypoint,
            "Cmd": if spec.cmd.is_empty() { serde_json::Value::Null } else { json!(spec.cmd) },
            "Env": env,
            "WorkingDir": spec.workdir,
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers
            .iter()
            .map(|_| json!({ "created_by": "wasm-oci-pack", "comment": "wasm program" }))
            .collect::<Vec<_>>(),
    });
    spec.platform.add_optional_fields(&mut config);
    let config = serde_json::to_vec(&config)?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers
            .iter()
            .map(|(tar, digest)| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": tar.len(),
            }))
            .collect::<Vec<_>>(),
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
            "platform": spec.platform.to_json(),
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
        "Layers": layers.iter().map(|(_, d)| blob(d)).collect::<Vec<_>>(),
    }]))?;

    let mut builder = tar::Builder::new(out);
    append(
        &mut builder,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    // Layers with the same content are one blob.
    let mut written = std::collections::HashSet::new();
    for (tar, digest) in &layers {
        if written.insert(digest) {
            append(&mut builder, &blob(digest), tar)?;
        }
    }
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
    fn destinations_are_normalised_and_non_files_refused() {
        assert_eq!(layer_path("/a//./b.wasm").unwrap(), "a/b.wasm");
        for bad in ["/", "", "/dir/", "/../x", "/a/../../x"] {
            assert!(layer_path(bad).is_err(), "{bad:?}");
        }
    }

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
    fn platforms_parse_with_and_without_a_variant() {
        let plain = Platform::parse("wasi/wasm").unwrap();
        assert_eq!(
            (plain.os.as_str(), plain.architecture.as_str()),
            ("wasi", "wasm")
        );
        assert_eq!(plain.variant, None);
        let variant = Platform::parse("wasi/wasm/wasip2").unwrap();
        assert_eq!(variant.variant.as_deref(), Some("wasip2"));
        for bad in ["wasi", "wasi/", "/wasm", "wasi/wasm/", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    /// The JSON documents of an archive, by path.
    fn json_entries(archive: &[u8]) -> std::collections::HashMap<String, serde_json::Value> {
        let mut archive = tar::Archive::new(archive);
        let mut documents = std::collections::HashMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            if let Ok(value) = serde_json::from_slice(&bytes) {
                documents.insert(path, value);
            }
        }
        documents
    }

    /// An image of one program, `/app.wasm` from `wasm`.
    fn app_spec(wasm: std::path::PathBuf, platform: Platform) -> ImageSpec {
        ImageSpec {
            name: "docker.io/library/app:latest".into(),
            platform,
            entrypoint: vec!["/app.wasm".into()],
            cmd: vec![],
            env: vec![],
            workdir: "/".into(),
            files: vec![LayerFile {
                source: wasm,
                destination: "/app.wasm".into(),
                mode: 0o755,
            }],
            layer_per_file: false,
        }
    }

    fn archive_of(platform: Platform) -> std::collections::HashMap<String, serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("app.wasm");
        std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap();
        let spec = app_spec(wasm, platform);
        let mut archive = Vec::new();
        write_archive(&spec, &mut archive).unwrap();
        json_entries(&archive)
    }

    /// The image config: the blob the manifest's `config` descriptor names.
    fn config_of(
        documents: &std::collections::HashMap<String, serde_json::Value>,
    ) -> &serde_json::Value {
        documents
            .values()
            .find(|d| d.get("rootfs").is_some())
            .expect("an image config")
    }

    #[test]
    fn a_component_image_says_wasip2_in_os_version_of_index_and_config() {
        let mut platform = Platform::parse("wasi/wasm").unwrap();
        platform.os_version = Some("wasip2".into());
        let documents = archive_of(platform);
        let index_platform = &documents["index.json"]["manifests"][0]["platform"];
        assert_eq!(
            index_platform,
            &json!({ "os": "wasi", "architecture": "wasm", "os.version": "wasip2" })
        );
        let config = config_of(&documents);
        assert_eq!(config["os.version"], "wasip2");
        assert_eq!(config["os"], "wasi");
        assert!(config.get("variant").is_none());
    }

    #[test]
    fn a_plain_image_has_no_optional_platform_fields() {
        let documents = archive_of(Platform::parse("wasi/wasm").unwrap());
        let index_platform = &documents["index.json"]["manifests"][0]["platform"];
        assert_eq!(
            index_platform,
            &json!({ "os": "wasi", "architecture": "wasm" })
        );
        let config = config_of(&documents);
        assert!(config.get("os.version").is_none() && config.get("variant").is_none());
    }

    #[test]
    fn a_variant_goes_in_index_and_config() {
        let documents = archive_of(Platform::parse("wasi/wasm/wasip2").unwrap());
        assert_eq!(
            documents["index.json"]["manifests"][0]["platform"]["variant"],
            "wasip2"
        );
        assert_eq!(config_of(&documents)["variant"], "wasip2");
    }

    #[test]
    fn archive_is_reproducible_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("app.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let spec = app_spec(wasm, Platform::parse("wasi/wasm").unwrap());
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

    #[test]
    fn each_file_can_be_a_layer_of_its_own_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("app.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let mut spec = app_spec(wasm, Platform::parse("wasi/wasm").unwrap());
        for n in 0..3 {
            let file = dir.path().join(format!("{n}.txt"));
            // Two files alike: one blob for both layers.
            std::fs::write(&file, ["0", "1", "0"][n]).unwrap();
            spec.files.push(LayerFile {
                source: file,
                destination: "/data/f.txt".into(),
                mode: 0o644,
            });
        }
        spec.layer_per_file = true;
        let mut archive = Vec::new();
        write_archive(&spec, &mut archive).unwrap();
        let entries = json_entries(&archive);
        let manifest_digest = entries["index.json"]["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let manifest = &entries[&format!("blobs/sha256/{manifest_digest}")];
        let layers: Vec<&str> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(layers.len(), 4);
        assert_eq!(layers[1], layers[3]);
        assert_ne!(layers[1], layers[2]);
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let config = &entries[&format!("blobs/sha256/{config_digest}")];
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        // Uncompressed layers: each diff id is its layer's digest.
        assert_eq!(diff_ids, layers);
        assert_eq!(config["history"].as_array().unwrap().len(), 4);
        let docker = &entries["manifest.json"][0]["Layers"];
        assert_eq!(docker.as_array().unwrap().len(), 4);
    }
}
