//! File I/O inside a container: the calls programs make most (4 KiB reads of a file, stats),
//! timed by the program itself, so start-up is not in the figure. The same C program
//! (test/programs/fileio.c) as wasm under this shim and in-process (the floor), and built
//! natively under runc, from one rootfs holding the 16 MiB file all three read.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use integration::{example_file, program, Containerd, RUNTIME};
use runtime::{Controls, Program, StdioFiles, WasiPlan};

/// Size of the file each run reads, in 4 KiB reads.
const FILE_BYTES: usize = 16 << 20;
/// Stats each run makes.
const STATS: &str = "20000";

/// Per-call microseconds of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub read_us: f64,
    pub stat_us: f64,
}

/// Samples of each row, warm-up excluded.
#[derive(Debug, Clone)]
pub struct FileIo {
    pub shim: Vec<Sample>,
    pub runc: Vec<Sample>,
    pub floor: Vec<Sample>,
}

/// `read_us=R stat_us=S bytes=B`, checking B.
fn parse(out: &str) -> Result<Sample> {
    let field = |key: &str| -> Result<f64> {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .with_context(|| format!("no {key} in {out:?}"))?
            .parse::<f64>()
            .with_context(|| format!("{key} in {out:?}"))
    };
    if field("bytes=")? as usize != FILE_BYTES {
        bail!("fileio read a file of another size: {out:?}");
    }
    Ok(Sample {
        read_us: field("read_us=")?,
        stat_us: field("stat_us=")?,
    })
}

fn ctr_once(containerd: &Containerd, root: &Path, id: &str, args: &[&str]) -> Result<Sample> {
    let root = root.display().to_string();
    let mut argv = vec!["run", "--rm"];
    let runtime = ["--runtime", RUNTIME];
    if args[0].ends_with(".wasm") {
        argv.extend(runtime);
    }
    argv.extend(["--rootfs", &root, id]);
    argv.extend(args);
    let out = containerd.ctr(&argv);
    if out.code != 0 {
        bail!("{argv:?}: {out:?}");
    }
    parse(&out.stdout)
}

fn floor_once(root: &Path) -> Result<Sample> {
    let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": root },
        "process": { "args": ["/fileio.wasm", "/data.bin", STATS], "cwd": "/",
                     "env": ["PATH=/"], "user": { "uid": 0, "gid": 0 } },
        "mounts": []
    }))?;
    let out = tempfile::NamedTempFile::new()?;
    let plan = WasiPlan::from_spec(&spec, root)?;
    let program = Program::load(plan)?;
    let stdio = StdioFiles {
        stdin: None,
        stdout: Some(out.reopen()?),
        stderr: None,
        terminal: false,
    };
    let status = program.run_blocking(stdio, &Controls::default());
    if status.code() != 0 {
        bail!("floor run of fileio failed: {status}");
    }
    parse(&std::fs::read_to_string(out.path())?)
}

/// One warm-up of each (page cache, compile cache), then `runs` interleaved rounds.
pub fn measure(containerd: &Containerd, runs: usize) -> Result<FileIo> {
    let root = tempfile::tempdir()?;
    std::fs::copy(program("fileio"), root.path().join("fileio.wasm"))?;
    std::fs::copy(
        example_file("fileio-native"),
        root.path().join("fileio-native"),
    )?;
    let mut data = std::fs::File::create(root.path().join("data.bin"))?;
    let block: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    for _ in 0..FILE_BYTES / block.len() {
        data.write_all(&block)?;
    }
    drop(data);
    let mut io = FileIo {
        shim: Vec::new(),
        runc: Vec::new(),
        floor: Vec::new(),
    };
    for i in 0..=runs {
        let s = ctr_once(
            containerd,
            root.path(),
            &format!("fio-w{i}"),
            &["/fileio.wasm", "/data.bin", STATS],
        )?;
        let r = ctr_once(
            containerd,
            root.path(),
            &format!("fio-r{i}"),
            &["/fileio-native", "/data.bin", STATS],
        )?;
        let f = floor_once(root.path())?;
        if i > 0 {
            io.shim.push(s);
            io.runc.push(r);
            io.floor.push(f);
        }
    }
    Ok(io)
}

/// The median of `values` (not empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl FileIo {
    /// Median microseconds per read and per stat of each row: shim, runc, floor.
    pub fn medians(&self) -> [(f64, f64); 3] {
        [&self.shim, &self.runc, &self.floor].map(|rows| {
            (
                median(rows.iter().map(|s| s.read_us).collect()),
                median(rows.iter().map(|s| s.stat_us).collect()),
            )
        })
    }
}
