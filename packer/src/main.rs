//! `wasm-oci-pack`: packs a .wasm program (and optional extra files) into an OCI image
//! tarball that `ctr images import` and `docker load` accept.
//!
//! ```text
//! wasm-oci-pack --name hello:latest --output hello.tar app.wasm [SRC:DEST ...]
//!               [--platform wasi/wasm[/VARIANT]] [--os-version VERSION]
//!               [--entrypoint /app.wasm] [--cmd ARG]... [--env K=V]... [--layer-per-file]
//! ```
//!
//! WASI 0.2 components are packed with `--os-version wasip2`: see [`image::Platform`] for why
//! that, and not a variant or another OS, marks them.

mod image;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use image::{normalize_reference, ImageSpec, LayerFile, Platform};

const USAGE: &str =
    "usage: wasm-oci-pack --name NAME[:TAG] --output OUT.tar PROGRAM.wasm [SRC:DEST ...]
       [--platform OS/ARCH[/VARIANT] (default wasi/wasm)] [--os-version VERSION (wasip2 for components)]
       [--entrypoint PATH (default /<program file name>)]
       [--cmd ARG]... [--env KEY=VALUE]... [--workdir DIR]
       [--layer-per-file (each file a layer of its own, the program's lowest)]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(name) => {
            println!("{name}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wasm-oci-pack: {e:#}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<String> {
    let mut name = None;
    let mut output = None;
    let mut platform = "wasi/wasm".to_string();
    let mut os_version = None;
    let mut entrypoint = None;
    let mut cmd = Vec::new();
    let mut env = Vec::new();
    let mut workdir = "/".to_string();
    let mut layer_per_file = false;
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--name" | "-n" => name = Some(value(&arg)?),
            "--output" | "-o" => output = Some(PathBuf::from(value(&arg)?)),
            "--platform" => platform = value(&arg)?,
            "--os-version" => os_version = Some(value(&arg)?),
            "--entrypoint" => entrypoint = Some(value(&arg)?),
            "--cmd" => cmd.push(value(&arg)?),
            "--env" => env.push(value(&arg)?),
            "--workdir" => workdir = value(&arg)?,
            "--layer-per-file" => layer_per_file = true,
            "--help" | "-h" => bail!("help requested"),
            flag if flag.starts_with('-') => bail!("unknown flag {flag}"),
            _ => positional.push(arg),
        }
    }
    let name = normalize_reference(&name.context("--name is required")?)?;
    let output = output.context("--output is required")?;
    let mut positional = positional.into_iter();
    let program = PathBuf::from(positional.next().context("no program given")?);
    let program_name = program
        .file_name()
        .and_then(|n| n.to_str())
        .context("the program path has no file name")?
        .to_string();
    let mut files = vec![LayerFile {
        source: program.clone(),
        destination: format!("/{program_name}"),
        mode: 0o755,
    }];
    for extra in positional {
        let (src, dst) = extra
            .split_once(':')
            .with_context(|| format!("extra file {extra:?} is not SRC:DEST"))?;
        if !dst.starts_with('/') {
            bail!("destination {dst:?} must be absolute");
        }
        // The source's permission bits, so an executable (a native helper, a script) stays
        // executable inside the image.
        let mode = std::fs::metadata(src)
            .with_context(|| format!("extra file {src}"))?
            .permissions()
            .mode()
            & 0o7777;
        files.push(LayerFile {
            source: PathBuf::from(src),
            destination: dst.to_string(),
            mode,
        });
    }
    let mut platform = Platform::parse(&platform)?;
    platform.os_version = os_version;
    let spec = ImageSpec {
        name: name.clone(),
        platform,
        entrypoint: vec![entrypoint.unwrap_or_else(|| format!("/{program_name}"))],
        cmd,
        env,
        workdir,
        files,
        layer_per_file,
    };
    let file =
        std::fs::File::create(&output).with_context(|| format!("creating {}", output.display()))?;
    image::write_archive(&spec, file).with_context(|| format!("writing {}", output.display()))?;
    Ok(name)
}
