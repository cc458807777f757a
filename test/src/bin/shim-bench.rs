//! `make bench`: start-up time of `ctr run --rm` hello under this shim, beside runc running a
//! native busybox `echo`, and beside the floor (the same module loaded and run in-process by
//! the `runtime` crate, no containerd). One run, interleaved, medians and ratios; JSON goes to
//! `target/bench/startup.json`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::{program, Containerd, RUNTIME};
use runtime::{Controls, Program, StdioFiles, WasiPlan};

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn floor_once(rootfs: &Path) -> Result<Duration> {
    let spec = oci_spec_for(rootfs)?;
    let started = Instant::now();
    let plan = WasiPlan::from_spec(&spec, rootfs)?;
    let program = Program::load(plan)?;
    let stdio = StdioFiles {
        stdin: None,
        stdout: Some(std::fs::OpenOptions::new().write(true).open("/dev/null")?),
        stderr: None,
        terminal: false,
    };
    let status = program.run_blocking(stdio, &Controls::default());
    let elapsed = started.elapsed();
    if status.code() != 0 {
        bail!("floor run failed: {status}");
    }
    Ok(elapsed)
}

fn oci_spec_for(rootfs: &Path) -> Result<oci_spec::runtime::Spec> {
    let json = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": rootfs },
        "process": { "args": ["/hello.wasm"], "cwd": "/", "env": ["PATH=/"], "user": { "uid": 0, "gid": 0 } },
        "mounts": []
    });
    Ok(serde_json::from_value(json)?)
}

fn timed(containerd: &Containerd, args: &[&str], expect: &str) -> Result<Duration> {
    let started = Instant::now();
    let out = containerd.ctr(args);
    let elapsed = started.elapsed();
    if out.code != 0 || out.stdout != expect {
        bail!("{args:?} failed: {out:?}");
    }
    Ok(elapsed)
}

fn main() -> Result<()> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let containerd = Containerd::start()?;
    let image = containerd.import_program(&program("hello"), "bench-hello:latest")?;
    let busybox = tempfile::tempdir()?;
    std::fs::create_dir(busybox.path().join("bin"))?;
    std::fs::copy("/bin/busybox", busybox.path().join("bin/busybox"))
        .context("copying /bin/busybox (apt-get install busybox-static)")?;
    let busybox_root = busybox.path().display().to_string();
    let wasm_root = tempfile::tempdir()?;
    std::fs::copy(program("hello"), wasm_root.path().join("hello.wasm"))?;

    let load_before = load_average();
    // One warm-up of each, not counted: page cache, containerd's first snapshot.
    let (mut shim, mut runc, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=runs {
        let id = format!("b{i}");
        let s = timed(
            &containerd,
            &[
                "run",
                "--rm",
                "--runtime",
                RUNTIME,
                &image,
                &format!("w{id}"),
            ],
            "hello from wasm\n",
        )?;
        let r = timed(
            &containerd,
            &[
                "run",
                "--rm",
                "--rootfs",
                &busybox_root,
                &format!("r{id}"),
                "/bin/busybox",
                "echo",
                "hello from wasm",
            ],
            "hello from wasm\n",
        )?;
        let f = floor_once(wasm_root.path())?;
        if i > 0 {
            shim.push(s);
            runc.push(r);
            floor.push(f);
        }
    }
    let load_after = load_average();
    let (shim_m, runc_m, floor_m) = (median(&mut shim), median(&mut runc), median(&mut floor));

    println!("ctr run --rm hello, {runs} runs each, interleaved (load average {load_before} -> {load_after})");
    println!("{:<44} {:>12} {:>12}", "", "median ms", "vs runc");
    for (name, m) in [
        ("wasmtime shim: ctr run --rm wasm-hello", shim_m),
        ("runc: ctr run --rm busybox echo", runc_m),
        ("floor: runtime crate in-process (no ctr)", floor_m),
    ] {
        println!(
            "{name:<44} {:>12.2} {:>11.2}x",
            ms(m),
            m.as_secs_f64() / runc_m.as_secs_f64()
        );
    }
    println!(
        "shim / floor: {:.1}x",
        shim_m.as_secs_f64() / floor_m.as_secs_f64()
    );

    let out_dir = integration::bin_dir().join("../bench");
    std::fs::create_dir_all(&out_dir)?;
    let json = serde_json::json!({
        "runs": runs,
        "load_average": { "before": load_before, "after": load_after },
        "median_ms": { "shim": ms(shim_m), "runc_busybox": ms(runc_m), "floor": ms(floor_m) },
        "ratio": { "shim_vs_runc": shim_m.as_secs_f64() / runc_m.as_secs_f64(),
                   "shim_vs_floor": shim_m.as_secs_f64() / floor_m.as_secs_f64() },
        "samples_ms": {
            "shim": shim.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "runc_busybox": runc.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "floor": floor.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        },
    });
    let path = out_dir.join("startup.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
