//! `wasm-component`: the three steps `make examples` needs to turn C into WASI preview-2
//! components, without installing `wit-bindgen-cli` and `wasm-tools` (minutes of `cargo
//! install` each) and pinned to the WIT parser and preview-1 adapter of the wasmtime the shim
//! embeds, so the components are built against exactly the interfaces the host provides.
//!
//! ```text
//! wasm-component bindings --wit DIR [--deps DIR]... --world WORLD --out DIR
//! wasm-component new --adapter command|reactor|proxy CORE.wasm -o OUT.wasm
//! wasm-component wit [--all] COMPONENT.wasm
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use wit_component::{ComponentEncoder, DecodedWasm, WitPrinter};
use wit_parser::{Resolve, SourceMap, UnresolvedPackageGroup};

const USAGE: &str = "usage:
  wasm-component bindings --wit DIR [--deps DIR]... --world WORLD --out DIR
      C bindings (WORLD.c, WORLD.h, WORLD_component_type.o) for a world of the WIT package in
      DIR; DIR/deps and every --deps DIR hold the packages it uses.
  wasm-component new --adapter command|reactor|proxy CORE.wasm -o OUT.wasm
      Wraps a wasm32-wasi core module into a component through the preview-1 adapter.
  wasm-component wit [--all] COMPONENT.wasm
      Prints the component's world (with --all, also every package it refers to).";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-component: {e:#}");
            if e.is::<UsageError>() {
                eprintln!("{USAGE}");
            }
            ExitCode::from(2)
        }
    }
}

/// A command line the tool cannot understand; the only error after which the usage text
/// helps, so it is told apart from failures of the work itself.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

fn run(args: Vec<String>) -> Result<()> {
    let mut args = args.into_iter();
    let command = args.next().ok_or_else(|| usage("no subcommand given"))?;
    let args = Args::parse(args)?;
    match command.as_str() {
        "bindings" => bindings(&args),
        "new" => new_component(&args),
        "wit" => print_wit(&args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(usage(format!("unknown subcommand {other:?}"))),
    }
}

/// The command line after the subcommand. Every subcommand shares one parser, and each then
/// rejects what it does not use, so a flag given to the wrong subcommand is an error rather
/// than silently ignored.
#[derive(Default)]
struct Args {
    wit: Option<PathBuf>,
    deps: Vec<PathBuf>,
    world: Option<String>,
    out: Option<PathBuf>,
    adapter: Option<String>,
    all: bool,
    positional: Vec<PathBuf>,
}

impl Args {
    fn parse(mut raw: impl Iterator<Item = String>) -> Result<Args> {
        let mut args = Args::default();
        while let Some(arg) = raw.next() {
            let mut value = |flag: &str| {
                raw.next()
                    .ok_or_else(|| usage(format!("{flag} needs a value")))
            };
            match arg.as_str() {
                "--wit" => args.wit = Some(value(&arg)?.into()),
                "--deps" => args.deps.push(value(&arg)?.into()),
                "--world" => args.world = Some(value(&arg)?),
                "--out" | "-o" => args.out = Some(value(&arg)?.into()),
                "--adapter" => args.adapter = Some(value(&arg)?),
                "--all" => args.all = true,
                flag if flag.starts_with('-') => return Err(usage(format!("unknown flag {flag}"))),
                _ => args.positional.push(arg.into()),
            }
        }
        Ok(args)
    }

    fn only(&self, allowed: &[&str]) -> Result<()> {
        let given = [
            ("--wit", self.wit.is_some()),
            ("--deps", !self.deps.is_empty()),
            ("--world", self.world.is_some()),
            ("--out", self.out.is_some()),
            ("--adapter", self.adapter.is_some()),
            ("--all", self.all),
        ];
        match given
            .iter()
            .find(|(flag, set)| *set && !allowed.contains(flag))
        {
            Some((flag, _)) => Err(usage(format!("{flag} does not apply here"))),
            None => Ok(()),
        }
    }

    fn single_input(&self) -> Result<&Path> {
        match self.positional.as_slice() {
            [input] => Ok(input),
            [] => Err(usage("no input file given")),
            _ => Err(usage("exactly one input file is expected")),
        }
    }
}

/// `bindings`: C bindings for one world, written the way `wit-bindgen c` writes them.
fn bindings(args: &Args) -> Result<()> {
    args.only(&["--wit", "--deps", "--world", "--out"])?;
    if !args.positional.is_empty() {
        return Err(usage("bindings takes no positional arguments"));
    }
    let wit = args
        .wit
        .as_deref()
        .ok_or_else(|| usage("--wit is required"))?;
    let world = args
        .world
        .as_deref()
        .ok_or_else(|| usage("--world is required"))?;
    let out = args
        .out
        .as_deref()
        .ok_or_else(|| usage("--out is required"))?;

    let mut resolve = Resolve::default();
    let main = UnresolvedPackageGroup::parse_dir(wit)
        .with_context(|| format!("parsing the WIT package in {}", wit.display()))?;
    let mut deps = Vec::new();
    let own_deps = wit.join("deps");
    if own_deps.is_dir() {
        deps.extend(parse_deps(&own_deps)?);
    }
    for dir in &args.deps {
        deps.extend(parse_deps(dir)?);
    }
    // `push_groups` orders the packages by their `use`s itself, so the deps directories may
    // list them in any order.
    let package = resolve
        .push_groups(main, deps)
        .with_context(|| format!("resolving the WIT package in {}", wit.display()))?;
    let world_id = resolve
        .select_world(&[package], Some(world))
        .with_context(|| format!("selecting world {world:?}"))?;

    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world_id, &mut files)
        .context("generating C bindings")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, contents) in files.iter() {
        let path = out.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Parses each package of a `deps` directory the way `Resolve::push_dir` treats its own
/// `deps/` (a subdirectory or a single `.wit` file per package), but leaves them unresolved:
/// packages from several directories can then be resolved together, whatever their order.
fn parse_deps(dir: &Path) -> Result<Vec<UnresolvedPackageGroup>> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        })
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort();
    let mut packages = Vec::new();
    for path in entries {
        if path.is_dir() {
            packages.push(
                UnresolvedPackageGroup::parse_dir(&path)
                    .with_context(|| format!("parsing {}", path.display()))?,
            );
        } else if path.extension().is_some_and(|ext| ext == "wit") {
            let mut map = SourceMap::new();
            map.push_file(&path)?;
            let group = map.parse().map_err(|(map, e)| {
                anyhow!("{}", e.render(&map)).context(format!("parsing {}", path.display()))
            })?;
            packages.push(group);
        }
    }
    Ok(packages)
}

/// `new`: a core module plus the preview-1 adapter that translates its `wasi_snapshot_preview1`
/// imports into WASI 0.2 ones. The three adapters differ in what the component exports:
/// `command` exports `wasi:cli/run` (calls `_start`), `reactor` exports nothing of its own,
/// and `proxy` is a reactor that imports only what the `wasi:http/proxy` world allows
/// (no filesystem, no sockets), which an HTTP host needs.
fn new_component(args: &Args) -> Result<()> {
    use wasi_preview1_component_adapter_provider as adapters;

    args.only(&["--adapter", "--out"])?;
    let input = args.single_input()?;
    let out = args.out.as_deref().ok_or_else(|| usage("-o is required"))?;
    let adapter = match args.adapter.as_deref() {
        Some("command") => adapters::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        Some("reactor") => adapters::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        Some("proxy") => adapters::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        Some(other) => return Err(usage(format!("unknown adapter {other:?}"))),
        None => return Err(usage("--adapter is required")),
    };
    let core = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let component = ComponentEncoder::default()
        .module(&core)
        .with_context(|| format!("reading the component type of {}", input.display()))?
        .adapter(adapters::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, adapter)
        .context("loading the preview-1 adapter")?
        .validate(true)
        .encode()
        .with_context(|| format!("encoding {} as a component", input.display()))?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))
}

/// `wit`: what a component imports and exports, as WIT, to check a build by eye (or by grep)
/// without `wasm-tools`.
fn print_wit(args: &Args) -> Result<()> {
    args.only(&["--all"])?;
    let input = args.single_input()?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    // The decoder reads a core module as a component with an empty world, which would hide a
    // slip (printing the core module instead of the component) behind plausible output.
    if bytes.get(..8) == Some(b"\0asm\x01\0\0\0") {
        bail!("{} is a core module, not a component", input.display());
    }
    let decoded =
        wit_component::decode(&bytes).with_context(|| format!("decoding {}", input.display()))?;
    if matches!(decoded, DecodedWasm::WitPackage(..)) {
        bail!("{} is a WIT package, not a component", input.display());
    }
    let main = decoded.package();
    let resolve = decoded.resolve();
    let nested: Vec<_> = if args.all {
        resolve
            .packages
            .iter()
            .map(|(id, _)| id)
            .filter(|id| *id != main)
            .collect()
    } else {
        Vec::new()
    };
    let mut printer = WitPrinter::default();
    printer.emit_docs(false);
    printer.print(resolve, main, &nested)?;
    println!("{}", String::from(printer.output));
    Ok(())
}
