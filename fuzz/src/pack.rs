//! The packer's untrusted inputs (image name, platform, entrypoint, cmd, env, workdir, layer
//! destinations and contents) through `normalize_reference`, `Platform::parse` and
//! `write_archive`, and what must hold of the archive written.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::image::{normalize_reference, write_archive, ImageSpec, LayerFile, Platform};

/// Pieces that image names and platforms are made of.
const PIECES: &[&str] = &[
    "/",
    ":",
    "@",
    ".",
    "docker.io",
    "localhost",
    "library",
    "hello",
    "registry.local:5000",
    "latest",
    "sha256:",
    "wasi",
    "wasm",
    "linux",
    "amd64",
    "wasip2",
    "v1",
    " ",
    "..",
    "app.wasm",
    "PATH=",
    "PATH=/bin",
];

#[derive(Debug, Arbitrary)]
pub enum Piece {
    Known(u8),
    Raw(String),
}

/// Text made of pieces.
#[derive(Debug, Arbitrary)]
pub struct Text(Vec<Piece>);

impl Text {
    fn render(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Known(i) => PIECES[usize::from(*i) % PIECES.len()],
                Piece::Raw(s) => s.as_str(),
            })
            .collect()
    }
}

#[derive(Debug, Arbitrary)]
pub struct FileInput {
    destination: Text,
    mode: u32,
    content: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
pub struct ImageInput {
    name: Text,
    platform: Text,
    os_version: Option<Text>,
    entrypoint: Vec<Text>,
    cmd: Vec<Text>,
    env: Vec<Text>,
    workdir: Text,
    files: Vec<FileInput>,
}

/// At most this many layer files, of at most this many bytes, per input.
const MAX_FILES: usize = 8;
const MAX_CONTENT: usize = 4096;

/// A directory for the layer files' sources, one per process.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a scratch directory"))
        .path()
}

/// Runs the packer's parsing and writing on `input` and checks the results.
pub fn check(input: &ImageInput) {
    let raw_name = input.name.render();
    let name = match normalize_reference(&raw_name) {
        Ok(name) => {
            check_reference(&raw_name, &name);
            name
        }
        // The writer takes any name; the CLI only ever gives it a normalized one.
        Err(_) => raw_name,
    };
    let raw_platform = input.platform.render();
    let mut platform = match Platform::parse(&raw_platform) {
        Ok(platform) => {
            check_platform(&raw_platform, &platform);
            platform
        }
        Err(_) => Platform {
            os: raw_platform,
            architecture: "wasm".into(),
            variant: None,
            os_version: None,
        },
    };
    platform.os_version = input.os_version.as_ref().map(Text::render);

    let mut files = Vec::new();
    let mut contents = Vec::new();
    for (i, file) in input.files.iter().take(MAX_FILES).enumerate() {
        let content = &file.content[..file.content.len().min(MAX_CONTENT)];
        let source = scratch().join(i.to_string());
        std::fs::write(&source, content).expect("writing a layer file's source");
        files.push(LayerFile {
            source,
            destination: file.destination.render(),
            mode: file.mode,
        });
        contents.push(content.to_vec());
    }
    let render = |texts: &[Text]| texts.iter().map(Text::render).collect::<Vec<_>>();
    let spec = ImageSpec {
        name,
        platform,
        entrypoint: render(&input.entrypoint),
        cmd: render(&input.cmd),
        env: render(&input.env),
        workdir: input.workdir.render(),
        files,
        // One layer, which `check_archive` reads back; the layer-per-file form (the packer's
        // `--layer-per-file`, for tests of many-layer images) is not fuzzed.
        layer_per_file: false,
    };
    let mut archive = Vec::new();
    match write_archive(&spec, &mut archive) {
        Ok(()) => check_archive(&spec, &contents, &archive),
        Err(e) => assert!(
            !spec.files.iter().all(|f| sane_destination(&f.destination)),
            "write_archive refused an image whose destinations are all plain paths: {e:#}"
        ),
    }
}

/// Normalization is idempotent and always ends in a tag or a digest.
fn check_reference(raw: &str, name: &str) {
    assert_eq!(
        normalize_reference(name).ok().as_deref(),
        Some(name),
        "normalizing {raw:?} twice differs"
    );
    assert!(!name.contains(char::is_whitespace), "{name:?}");
    assert!(name.contains(raw), "{raw:?} became {name:?}");
    let last = name.rsplit('/').next().unwrap_or_default();
    assert!(
        last.contains(':') || last.contains('@'),
        "{name:?} has no tag"
    );
}

/// A parsed platform prints back as it was written.
fn check_platform(raw: &str, platform: &Platform) {
    for part in [&platform.os, &platform.architecture] {
        assert!(
            !part.is_empty() && !part.contains('/'),
            "{raw:?}: {platform:?}"
        );
    }
    let mut printed = format!("{}/{}", platform.os, platform.architecture);
    if let Some(variant) = &platform.variant {
        assert!(
            !variant.is_empty() && !variant.contains('/'),
            "{platform:?}"
        );
        printed = format!("{printed}/{variant}");
    }
    assert_eq!(printed, raw);
    assert_eq!(platform.os_version, None);
}

/// The normal components of a layer destination: what a tar entry's path is compared by.
fn components(destination: &str) -> Vec<String> {
    Path::new(destination.trim_start_matches('/'))
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// A destination the packer must take: at least one component, no `..`, no NUL, not
/// ending in `/` (a directory).
fn sane_destination(destination: &str) -> bool {
    !destination.contains('\0')
        && !destination.ends_with('/')
        && !components(destination).is_empty()
        && Path::new(destination)
            .components()
            .all(|c| !matches!(c, Component::ParentDir))
}

fn entries(tar_bytes: &[u8]) -> Vec<(PathBuf, tar::EntryType, u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries().expect("the archive's entries") {
        let mut entry = entry.expect("an entry of the written archive");
        let path = entry.path().expect("an entry path").into_owned();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().expect("an entry mode");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("an entry's bytes");
        out.push((path, kind, mode, bytes));
    }
    out
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn check_archive(spec: &ImageSpec, contents: &[Vec<u8>], archive: &[u8]) {
    let outer = entries(archive);
    let mut by_path: HashMap<String, &[u8]> = HashMap::new();
    for (path, _, _, bytes) in &outer {
        let path = path.to_str().expect("a UTF-8 path").to_string();
        assert!(
            by_path.insert(path.clone(), bytes).is_none(),
            "{path} twice"
        );
    }
    for needed in ["oci-layout", "index.json", "manifest.json"] {
        assert!(by_path.contains_key(needed), "no {needed}");
    }
    for (path, bytes) in &by_path {
        if let Some(hex) = path.strip_prefix("blobs/sha256/") {
            assert_eq!(
                sha256(bytes),
                format!("sha256:{hex}"),
                "{path}: wrong digest"
            );
        }
    }
    let json = |path: &str| -> Value { serde_json::from_slice(by_path[path]).expect(path) };
    let blob = |descriptor: &Value| -> &[u8] {
        let digest = descriptor["digest"].as_str().expect("a digest");
        let path = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
        let bytes = by_path
            .get(&path)
            .unwrap_or_else(|| panic!("no blob {digest}"));
        assert_eq!(
            descriptor["size"],
            json!(bytes.len()),
            "{digest}: wrong size"
        );
        bytes
    };

    let index = json("index.json");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["io.containerd.image.name"],
        json!(spec.name)
    );
    let manifest: Value = serde_json::from_slice(blob(entry)).expect("the manifest");
    let config: Value = serde_json::from_slice(blob(&manifest["config"])).expect("the config");
    let layer = blob(&manifest["layers"][0]);

    let p = &spec.platform;
    for platform in [&entry["platform"], &config] {
        assert_eq!(platform["os"], json!(p.os));
        assert_eq!(platform["architecture"], json!(p.architecture));
        assert_eq!(
            platform.get("os.version"),
            p.os_version.as_ref().map(|v| json!(v)).as_ref()
        );
        assert_eq!(
            platform.get("variant"),
            p.variant.as_ref().map(|v| json!(v)).as_ref()
        );
    }
    assert_eq!(
        config["rootfs"]["diff_ids"][0], manifest["layers"][0]["digest"],
        "the diff id is not the layer's digest"
    );
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], json!(spec.entrypoint));
    let cmd = if spec.cmd.is_empty() {
        Value::Null
    } else {
        json!(spec.cmd)
    };
    assert_eq!(c["Cmd"], cmd);
    assert_eq!(c["WorkingDir"], json!(spec.workdir));
    let env = c["Env"].as_array().expect("Env");
    assert!(
        env.iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("PATH="))),
        "no PATH in {env:?}"
    );
    for e in &spec.env {
        assert!(env.contains(&json!(e)), "{e:?} lost");
    }

    let layer = entries(layer);
    for (path, _, _, _) in outer.iter().chain(&layer) {
        assert!(
            path.components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
            "entry {path:?} is absolute or climbs out with .."
        );
    }
    for (file, content) in spec.files.iter().zip(contents) {
        if !sane_destination(&file.destination) {
            continue;
        }
        let wanted = components(&file.destination);
        let last_with_that_path = spec
            .files
            .iter()
            .rposition(|f| components(&f.destination) == wanted)
            .expect("itself");
        // Compared by normal components: the tar crate drops `.` and a trailing `/` from a
        // short path but keeps a long one (written as a GNU long name) as it was given.
        let found = layer.iter().rev().find(|(path, kind, _, _)| {
            *kind == tar::EntryType::Regular && components(&path.to_string_lossy()) == wanted
        });
        let (_, _, mode, bytes) =
            found.unwrap_or_else(|| panic!("{:?} is not in the layer", file.destination));
        if std::ptr::eq(file, &spec.files[last_with_that_path]) {
            assert_eq!(bytes, content, "{:?}: wrong content", file.destination);
            assert_eq!(
                mode & 0o7777,
                file.mode & 0o7777,
                "{:?}: wrong mode",
                file.destination
            );
        }
    }

    let mut again = Vec::new();
    write_archive(spec, &mut again).expect("the same image a second time");
    assert!(
        again == archive,
        "writing the same image twice gave different archives"
    );
}
