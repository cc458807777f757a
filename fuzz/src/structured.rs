//! A spec built from `arbitrary` parts (args, cwd, env, mounts, annotations) over a real
//! captured spec, so the fuzzer spends its time in the mapping rather than in JSON syntax.
//! Paths are assembled from words that mean something to the mapping and to the fuzz tree.

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use oci_spec::runtime::{Mount, Spec};

use crate::spec::{MOUNTS_ANNOTATION, ROOTFS_ANNOTATION};
use crate::tree::tree;

/// Specs captured from ctr, docker (with --init) and CRI; see ../seeds/spec_to_wasi.
const BASES: [&str; 4] = [
    include_str!("../seeds/spec_to_wasi/ctr-plain.json"),
    include_str!("../seeds/spec_to_wasi/docker-init.json"),
    include_str!("../seeds/spec_to_wasi/cri-container.json"),
    include_str!("../seeds/spec_to_wasi/ctr-bind-ro.json"),
];

/// Path components and values the mapping or the fuzz tree gives a meaning to.
const WORDS: &[&str] = &[
    "",
    ".",
    "..",
    "app.wasm",
    "bin",
    "tool.wasm",
    "native",
    "script.sh",
    "dir",
    "empty",
    "abs",
    "rel",
    "up",
    "up.wasm",
    "loop",
    "fifo",
    "data",
    "data.wasm",
    "nested",
    "deep.wasm",
    "escape",
    "file.txt",
    "outside",
    "secret.wasm",
    "rootfs",
    "tmp",
    "containerd-wasmtime-fuzz",
    "sbin",
    "docker-init",
    "tini",
    "--",
    "#",
    "app.wasm#run",
    "tool.wasm#_start",
    "PATH",
    "PWD",
    "bind",
    "rbind",
    "ro",
    "rw",
    "none",
    "tmpfs",
    "proc",
    "nosuid",
    "/",
    "//",
    "=",
    ":",
    ",",
];

/// A piece of text: a known word, a path of the fuzz tree, or anything.
#[derive(Debug, Arbitrary)]
pub enum Word {
    Known(u8),
    Tree(u8),
    Raw(String),
}

impl Word {
    fn render(&self) -> String {
        match self {
            Word::Known(i) => WORDS[usize::from(*i) % WORDS.len()].to_string(),
            Word::Tree(i) => {
                let t = tree();
                let paths = [&t.base, &t.rootfs, &t.data, &t.nested, &t.file, &t.outside];
                paths[usize::from(*i) % paths.len()].display().to_string()
            }
            Word::Raw(s) => s.clone(),
        }
    }
}

/// Words joined by `/`, with an optional leading and trailing slash.
#[derive(Debug, Arbitrary)]
pub struct PathText {
    absolute: bool,
    words: Vec<Word>,
    trailing_slash: bool,
}

impl PathText {
    fn render(&self) -> String {
        let mut out = self
            .words
            .iter()
            .map(Word::render)
            .collect::<Vec<_>>()
            .join("/");
        if self.absolute {
            out.insert(0, '/');
        }
        if self.trailing_slash {
            out.push('/');
        }
        out
    }
}

/// An env entry: `PATH=` a list of directories, `KEY=VALUE`, or anything.
#[derive(Debug, Arbitrary)]
pub enum EnvEntry {
    Path(Vec<PathText>),
    Pair(Word, PathText),
    Raw(Word),
}

impl EnvEntry {
    fn render(&self) -> String {
        match self {
            EnvEntry::Path(dirs) => format!(
                "PATH={}",
                dirs.iter()
                    .map(PathText::render)
                    .collect::<Vec<_>>()
                    .join(":")
            ),
            EnvEntry::Pair(key, value) => format!("{}={}", key.render(), value.render()),
            EnvEntry::Raw(entry) => entry.render(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub struct MountInput {
    destination: PathText,
    typ: Option<Word>,
    source: Option<PathText>,
    options: Option<Vec<Word>>,
}

#[derive(Debug, Arbitrary)]
pub struct SpecInput {
    base: u8,
    /// None keeps the base spec's.
    args: Option<Vec<PathText>>,
    cwd: Option<PathText>,
    env: Option<Vec<EnvEntry>>,
    root_readonly: Option<bool>,
    /// Added after the base spec's mounts, or in their place.
    mounts: Vec<MountInput>,
    replace_mounts: bool,
    rootfs_annotation: Option<Word>,
    /// Joined with commas.
    mounts_annotation: Option<Vec<PathText>>,
}

impl SpecInput {
    /// The base spec with this input's parts put in.
    pub fn build(&self) -> Spec {
        static PARSED: OnceLock<Vec<Spec>> = OnceLock::new();
        // Without their `linux` part (namespaces, cgroups, seccomp), which the mapping
        // ignores and which would be most of the cost of each input's copy.
        let bases = PARSED.get_or_init(|| {
            BASES
                .iter()
                .map(|json| {
                    let mut spec: Spec = serde_json::from_str(json).expect("a base spec");
                    spec.set_linux(None);
                    spec
                })
                .collect()
        });
        let mut spec = bases[usize::from(self.base) % bases.len()].clone();
        let process = spec.process_mut().get_or_insert_with(Default::default);
        if let Some(args) = &self.args {
            process.set_args(Some(args.iter().map(PathText::render).collect()));
        }
        if let Some(cwd) = &self.cwd {
            process.set_cwd(cwd.render().into());
        }
        if let Some(env) = &self.env {
            process.set_env(Some(env.iter().map(EnvEntry::render).collect()));
        }
        if let Some(readonly) = self.root_readonly {
            let root = spec.root_mut().get_or_insert_with(Default::default);
            root.set_readonly(Some(readonly));
        }
        let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
        if self.replace_mounts {
            mounts.clear();
        }
        for input in &self.mounts {
            let mut mount = Mount::default();
            mount.set_destination(input.destination.render().into());
            mount.set_typ(input.typ.as_ref().map(Word::render));
            mount.set_source(input.source.as_ref().map(|s| s.render().into()));
            mount.set_options(
                input
                    .options
                    .as_ref()
                    .map(|o| o.iter().map(Word::render).collect()),
            );
            mounts.push(mount);
        }
        if self.rootfs_annotation.is_some() || self.mounts_annotation.is_some() {
            let annotations = spec.annotations_mut().get_or_insert_with(Default::default);
            if let Some(value) = &self.rootfs_annotation {
                annotations.insert(ROOTFS_ANNOTATION.into(), value.render());
            }
            if let Some(list) = &self.mounts_annotation {
                let list = list.iter().map(PathText::render).collect::<Vec<_>>();
                annotations.insert(MOUNTS_ANNOTATION.into(), list.join(","));
            }
        }
        spec
    }
}
