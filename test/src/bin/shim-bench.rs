//! `make bench`: this shim beside runc and beside the in-process floor, in one run.
//!
//! - Start-up: `ctr run --rm` hello under this shim, runc running a native busybox `echo`, and
//!   the floor (the same module loaded from a compile cache and run in-process by the
//!   `runtime` crate, no containerd); interleaved runs, medians and ratios. Hello runs twice
//!   a round: from its image (as users run it) and, like runc's row, from a `--rootfs`
//!   directory, which spares containerd the snapshot. busybox too runs twice a round, from
//!   `--rootfs` and from an image of its own (Debian's static busybox, packed by
//!   wasm-oci-pack), so each way has a like-for-like ratio: image against image, rootfs
//!   against rootfs. A container started from an image pays containerd's snapshot (about
//!   11 ms here) whatever its runtime.
//! - File I/O: 4 KiB reads and stats timed inside one C program (test/programs/fileio.c),
//!   as wasm under this shim and in the floor, and natively under runc; `BENCH_RUNS` rounds.
//! - Throughput (item 4d): `BENCH_TASKS` (200) `ctr run --rm` of each at `BENCH_WORKERS` (2)
//!   at a time; tasks per second and the ratio.
//! - Large program (item 4b): first (compile) and second (cached) start of CPython as a
//!   component, `BENCH_LARGE_FIRSTS` (3) never-seen variants, then `BENCH_RUNS` cached starts
//!   interleaved with hello.
//! - Memory (item 4c): PSS of one long-running container and the marginal PSS per container
//!   at `BENCH_MEMORY_COUNT` (100): wasm with a shim each, wasm in one pod's shim, runc.
//!
//! JSON goes to `target/bench/startup.json`, a bar chart of the medians to
//! `target/bench/startup.svg`.

#[path = "bench/file_io.rs"]
mod file_io;
#[path = "bench/large.rs"]
mod large;
#[path = "bench/large_module.rs"]
mod large_module;
#[path = "bench/memory.rs"]
mod memory;
#[path = "bench/throughput.rs"]
mod throughput;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::bench::{chart, fleet, pss};
use integration::{example_file, program, Containerd, RUNTIME};
use runtime::{Controls, Program, StdioFiles, WasiPlan};

use chart::{Bar, Kind, Panel};
use file_io::FileIo;
use fleet::env_or;
use large::LargeStart;
use large_module::ModuleFirsts;
use memory::Scenario;
use throughput::Throughput;

/// What the environment asks for; the defaults are the full `make bench`.
struct Settings {
    /// Start-up runs of each (`BENCH_RUNS`).
    runs: usize,
    /// Throughput tasks of each runtime (`BENCH_TASKS`).
    tasks: usize,
    /// Concurrent ctr workers for throughput and for starting many containers
    /// (`BENCH_WORKERS`).
    workers: usize,
    /// Containers per memory scenario (`BENCH_MEMORY_COUNT`).
    memory_count: usize,
    /// Wait before reading PSS (`BENCH_SETTLE_MS`).
    settle: Duration,
    /// First starts of the large program, each of bytes the cache has not seen
    /// (`BENCH_LARGE_FIRSTS`).
    large_firsts: usize,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let settings = Settings {
            runs: env_or("BENCH_RUNS", 20),
            tasks: env_or("BENCH_TASKS", 200),
            workers: env_or("BENCH_WORKERS", 2),
            memory_count: env_or("BENCH_MEMORY_COUNT", 100),
            settle: Duration::from_millis(env_or("BENCH_SETTLE_MS", 2000) as u64),
            large_firsts: env_or("BENCH_LARGE_FIRSTS", 3),
        };
        if settings.runs == 0 || settings.tasks == 0 || settings.memory_count < 2 {
            bail!("BENCH_RUNS and BENCH_TASKS must be > 0, BENCH_MEMORY_COUNT >= 2");
        }
        Ok(settings)
    }
}

/// Root filesystems for `ctr run --rootfs`, shared by all containers of a kind, as an image
/// layer would be (so the binary's page-cache pages are shared, as on a real node).
struct Roots {
    busybox: tempfile::TempDir,
    hello: tempfile::TempDir,
    ticker: tempfile::TempDir,
    pause: tempfile::TempDir,
}

impl Roots {
    fn new() -> Result<Roots> {
        let busybox = tempfile::tempdir()?;
        std::fs::create_dir(busybox.path().join("bin"))?;
        std::fs::copy("/bin/busybox", busybox.path().join("bin/busybox"))
            .context("copying /bin/busybox (apt-get install busybox-static)")?;
        let pause = tempfile::tempdir()?;
        std::fs::copy(example_file("pause"), pause.path().join("pause"))?;
        Ok(Roots {
            busybox,
            hello: integration::rootfs_with(&["hello"])?,
            ticker: integration::rootfs_with(&["ticker"])?,
            pause,
        })
    }
}

/// The images of the start-up rounds, as ctr names them.
struct Images {
    /// wasm hello.
    hello: String,
    /// Debian's static busybox, a native image for runc.
    busybox: String,
}

/// Start-up samples, warm-up excluded.
struct Startup {
    /// Hello from its image.
    shim: Vec<Duration>,
    /// Hello from a `--rootfs` directory, as runc's busybox runs.
    shim_rootfs: Vec<Duration>,
    /// busybox echo under runc, from a `--rootfs` directory.
    runc: Vec<Duration>,
    /// busybox echo under runc, from its image, as hello's first row runs.
    runc_image: Vec<Duration>,
    floor: Vec<Duration>,
}

impl Startup {
    fn medians(&self) -> (Duration, Duration, Duration) {
        (median(&self.shim), median(&self.runc), median(&self.floor))
    }
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
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
        bail!(
            "{args:?} failed: {out:?}\ncontainerd log:\n{}",
            containerd.log_tail(20)
        );
    }
    Ok(elapsed)
}

/// `ctr run --rm` arguments (after `--rm`) of the wasm hello image as container `id`.
fn shim_hello(image: &str, id: &str) -> Vec<String> {
    ["--runtime", RUNTIME, image, id]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `ctr run --rm` arguments (after `--rm`) of hello from the directory `root`, as runc's
/// busybox runs, as container `id`.
fn shim_hello_rootfs(root: &Path, id: &str) -> Vec<String> {
    let root = root.display().to_string();
    ["--runtime", RUNTIME, "--rootfs", &root, id, "/hello.wasm"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `ctr run --rm` arguments (after `--rm`) of runc's busybox echo from `image` (busybox at
/// `/busybox`, as wasm-oci-pack places a program) as container `id`.
fn runc_echo_image(image: &str, id: &str) -> Vec<String> {
    [image, id, "/busybox", "echo", "hello from wasm"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `ctr run --rm` arguments (after `--rm`) of runc's busybox echo as container `id`.
fn runc_echo(busybox_root: &Path, id: &str) -> Vec<String> {
    let root = busybox_root.display().to_string();
    [
        "--rootfs",
        &root,
        id,
        "/bin/busybox",
        "echo",
        "hello from wasm",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Start-up: one warm-up of each (page cache, containerd's first snapshot), then `runs`
/// interleaved rounds of shim, runc and floor, so all see the same machine load.
fn startup(
    containerd: &Containerd,
    images: &Images,
    roots: &Roots,
    runs: usize,
) -> Result<Startup> {
    // The floor loads its module from a compile cache, as the shim does: the warm-up round
    // compiles and stores it, the measured rounds load it (compiling each time would make
    // the floor a compile benchmark, several times slower than the shim's own load).
    let floor_cache = tempfile::tempdir()?;
    if !runtime::set_compile_cache(Some(runtime::CompileCache::new(
        floor_cache.path(),
        1 << 30,
    ))) {
        bail!("the floor's compile cache must be set before its first load");
    }
    let mut samples = Startup {
        shim: Vec::new(),
        shim_rootfs: Vec::new(),
        runc: Vec::new(),
        runc_image: Vec::new(),
        floor: Vec::new(),
    };
    for i in 0..=runs {
        let shim_args = shim_hello(&images.hello, &format!("wb{i}"));
        let shim_rootfs_args = shim_hello_rootfs(roots.hello.path(), &format!("wr{i}"));
        let runc_args = runc_echo(roots.busybox.path(), &format!("rb{i}"));
        let runc_image_args = runc_echo_image(&images.busybox, &format!("ri{i}"));
        let run = |args: &[String]| {
            let mut argv = vec!["run", "--rm"];
            argv.extend(args.iter().map(String::as_str));
            timed(containerd, &argv, "hello from wasm\n")
        };
        let s = run(&shim_args)?;
        let r = run(&runc_args)?;
        let sr = run(&shim_rootfs_args)?;
        let ri = run(&runc_image_args)?;
        let f = floor_once(roots.hello.path())?;
        if i > 0 {
            samples.shim.push(s);
            samples.shim_rootfs.push(sr);
            samples.runc.push(r);
            samples.runc_image.push(ri);
            samples.floor.push(f);
        }
    }
    Ok(samples)
}

/// Throughput of the shim, then of runc, with the same task count and workers.
fn throughput_pair(
    containerd: &Containerd,
    image: &str,
    roots: &Roots,
    settings: &Settings,
) -> Result<(Throughput, Throughput)> {
    let expect = "hello from wasm\n";
    let shim = throughput::run(
        containerd,
        settings.tasks,
        settings.workers,
        |i| shim_hello(image, &format!("wt{i}")),
        expect,
    )?;
    let runc = throughput::run(
        containerd,
        settings.tasks,
        settings.workers,
        |i| runc_echo(roots.busybox.path(), &format!("rt{i}")),
        expect,
    )?;
    Ok((shim, runc))
}

/// Everything one run measured.
struct Report {
    settings: Settings,
    load_before: String,
    load_after: String,
    startup: Startup,
    file_io: FileIo,
    large: LargeStart,
    module: Option<ModuleFirsts>,
    shim_tasks: Throughput,
    runc_tasks: Throughput,
    memory: Vec<Scenario>,
}

fn main() -> Result<()> {
    let settings = Settings::from_env()?;
    let containerd = Containerd::start()?;
    let image = containerd.import_program(&program("hello"), "bench-hello:latest")?;
    let images = Images {
        hello: image.clone(),
        busybox: containerd
            .import_program_as(
                Path::new("/bin/busybox"),
                "bench-busybox:latest",
                "linux/amd64",
            )
            .context("the busybox image (apt-get install busybox-static)")?,
    };
    let roots = Roots::new()?;
    let load_before = load_average();
    let startup = startup(&containerd, &images, &roots, settings.runs)?;
    let file_io = file_io::measure(&containerd, settings.runs)?;
    // Shims of this one compile every program optimized before it starts (no tiering).
    let optimized_first = Containerd::start_with_env(&[("WASMTIME_SHIM_TIERING", "off")])?;
    let large = large::measure(
        &containerd,
        &optimized_first,
        &integration::examples_dir().join("python-hello.wasm"),
        &image,
        "hello from wasm\n",
        settings.large_firsts,
        settings.runs,
    )?;
    let module = large_module::measure(
        &containerd,
        &optimized_first,
        &integration::examples_dir().join("yosys.wasm"),
    )?;
    let (shim_tasks, runc_tasks) = throughput_pair(&containerd, &image, &roots, &settings)?;
    let memory = memory::measure_all(
        &containerd,
        &memory::Setup {
            ticker_root: roots.ticker.path(),
            pause_root: roots.pause.path(),
            busybox_root: roots.busybox.path(),
            count: settings.memory_count,
            workers: settings.workers,
            settle: settings.settle,
        },
    )?;
    let report = Report {
        settings,
        load_before,
        load_after: load_average(),
        startup,
        file_io,
        large,
        module,
        shim_tasks,
        runc_tasks,
        memory,
    };
    print_table(&report);
    let out_dir = integration::bin_dir().join("../bench");
    std::fs::create_dir_all(&out_dir)?;
    let json_path = out_dir.join("startup.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json(&report))?)?;
    let svg_path = out_dir.join("startup.svg");
    std::fs::write(&svg_path, svg(&report))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}

/// The table, all sections, with the load average before and after.
fn print_table(report: &Report) {
    println!(
        "shim-bench (load average {} -> {})",
        report.load_before, report.load_after
    );
    print_startup(report);
    print_file_io(report);
    print_large(report);
    print_throughput(report);
    print_memory(report);
}

/// Start-up medians, each against runc's, and the shim against the floor.
fn print_startup(report: &Report) {
    let (shim_m, runc_m, floor_m) = report.startup.medians();
    let heading = format!(
        "start-up: ctr run --rm hello, {} runs, interleaved",
        report.settings.runs
    );
    println!();
    println!("{heading:<52} {:>12} {:>10}", "median ms", "vs runc");
    let rootfs_m = median(&report.startup.shim_rootfs);
    let runc_image_m = median(&report.startup.runc_image);
    for (name, m) in [
        ("wasmtime shim: ctr run --rm wasm-hello (image)", shim_m),
        ("wasmtime shim: ctr run --rm --rootfs hello", rootfs_m),
        ("runc: ctr run --rm --rootfs busybox echo", runc_m),
        ("runc: ctr run --rm busybox echo (image)", runc_image_m),
        ("floor: runtime crate in-process (no ctr)", floor_m),
    ] {
        println!(
            "{name:<52} {:>12.2} {:>9.2}x",
            ms(m),
            m.as_secs_f64() / runc_m.as_secs_f64()
        );
    }
    println!(
        "like for like: image / image {:.2}x, rootfs / rootfs {:.2}x",
        shim_m.as_secs_f64() / runc_image_m.as_secs_f64(),
        rootfs_m.as_secs_f64() / runc_m.as_secs_f64()
    );
    println!(
        "shim / floor: {:.1}x",
        shim_m.as_secs_f64() / floor_m.as_secs_f64()
    );
}

/// Per-call medians of the file I/O rounds, against the native program under runc and
/// against the floor.
fn print_file_io(report: &Report) {
    let [shim, runc, floor] = report.file_io.medians();
    println!();
    println!(
        "{:<52} {:>12} {:>10}",
        format!(
            "file I/O: fileio, 16 MiB in 4 KiB reads, 20000 stats, {} runs",
            report.settings.runs
        ),
        "read us",
        "stat us"
    );
    for (name, (read, stat)) in [
        ("wasmtime shim: fileio.wasm", shim),
        ("runc: the same C, native", runc),
        ("floor: runtime crate in-process", floor),
    ] {
        println!("{name:<52} {read:>12.2} {stat:>10.2}");
    }
    println!(
        "shim / runc: read {:.1}x, stat {:.1}x; shim / floor: read {:.2}x, stat {:.2}x",
        shim.0 / runc.0,
        shim.1 / runc.1,
        shim.0 / floor.0,
        shim.1 / floor.1
    );
}

/// The large program's first and second start, each against hello's in the same rounds.
fn print_large(report: &Report) {
    let large = &report.large;
    let hello = median(&large.hello);
    println!();
    println!(
        "{:<52} {:>12} {:>10}",
        format!(
            "large program: CPython component, {:.1} MB of wasm",
            large.wasm_bytes as f64 / 1e6
        ),
        "median ms",
        "vs hello"
    );
    for (name, samples) in [
        (
            format!(
                "first start, tiered (Winch first), {} runs",
                large.first.len()
            ),
            &large.first,
        ),
        (
            format!(
                "first start, optimized first (tiering off), {} runs",
                large.first_optimized.len()
            ),
            &large.first_optimized,
        ),
        (
            format!(
                "second start (cached, optimized), {} runs",
                large.second.len()
            ),
            &large.second,
        ),
        (
            format!("hello, interleaved, {} runs", large.hello.len()),
            &large.hello,
        ),
    ] {
        let m = median(samples);
        println!(
            "{name:<52} {:>12.2} {:>9.2}x",
            ms(m),
            m.as_secs_f64() / hello.as_secs_f64()
        );
    }
    println!(
        "tiered first start / optimized-first: {:.2}x; optimized code in the cache {:.1} s \
         after the last first start",
        median(&large.first).as_secs_f64() / median(&large.first_optimized).as_secs_f64(),
        large.optimized_ready.as_secs_f64()
    );
    if let Some(module) = &report.module {
        println!(
            "large C/C++ module: yosys (YoWASP), {:.1} MB of wasm     first start ms",
            module.wasm_bytes as f64 / 1e6
        );
        println!("{:<52} {:>12.2}", "tiered", ms(module.tiered));
        println!(
            "{:<52} {:>12.2}",
            "optimized first (tiering off)",
            ms(module.optimized_first)
        );
        println!(
            "tiered / optimized-first: {:.2}x (target <= 0.2x); {}",
            module.tiered.as_secs_f64() / module.optimized_first.as_secs_f64(),
            if module.baseline_refused {
                "Winch refused it (wasm exceptions): optimized code first"
            } else {
                "started on baseline code"
            }
        );
    }
}

/// Tasks per second of each runtime, against runc's.
fn print_throughput(report: &Report) {
    let heading = format!(
        "throughput: {} x ctr run --rm, {} at a time",
        report.settings.tasks, report.settings.workers
    );
    println!();
    println!("{heading:<52} {:>12} {:>10}", "tasks/s", "vs runc");
    let runc_rate = report.runc_tasks.per_second();
    for (name, t) in [
        ("wasmtime shim: wasm-hello", &report.shim_tasks),
        ("runc: busybox echo", &report.runc_tasks),
    ] {
        println!(
            "{name:<52} {:>12.1} {:>9.2}x",
            t.per_second(),
            t.per_second() / runc_rate
        );
    }
}

/// PSS with one container, per further container, and with N, and the shims counted at N
/// (which the layout check has already verified).
fn print_memory(report: &Report) {
    println!();
    println!(
        "memory: PSS of shims + container processes, N = {}",
        report.settings.memory_count
    );
    println!(
        "{:<40} {:>10} {:>14} {:>12} {:>6} {:>6}",
        "", "1 ctr MiB", "marginal MiB", "N ctrs MiB", "shims", "runc"
    );
    for row in &report.memory {
        println!(
            "{:<40} {:>10.1} {:>14.1} {:>12.1} {:>6} {:>6}",
            row.label,
            row.one.mib(),
            row.marginal_mib(),
            row.at_count.mib(),
            row.at_count.wasm_shims,
            row.at_count.runc_shims
        );
    }
}

/// startup.json: the original start-up fields, plus throughput and memory.
fn json(report: &Report) -> serde_json::Value {
    let (shim_m, runc_m, floor_m) = report.startup.medians();
    let rootfs_m = median(&report.startup.shim_rootfs);
    let runc_image_m = median(&report.startup.runc_image);
    let file_io = report.file_io.medians();
    let samples = |d: &[Duration]| d.iter().map(|d| ms(*d)).collect::<Vec<_>>();
    let memory: serde_json::Map<String, serde_json::Value> = report
        .memory
        .iter()
        .map(|row| (row.key.to_string(), row.json()))
        .collect();
    serde_json::json!({
        "runs": report.settings.runs,
        "load_average": { "before": report.load_before, "after": report.load_after },
        "median_ms": { "shim": ms(shim_m), "shim_rootfs": ms(rootfs_m),
                       "runc_busybox": ms(runc_m), "runc_busybox_image": ms(runc_image_m),
                       "floor": ms(floor_m) },
        "ratio": { "shim_vs_runc": shim_m.as_secs_f64() / runc_m.as_secs_f64(),
                   "shim_rootfs_vs_runc": rootfs_m.as_secs_f64() / runc_m.as_secs_f64(),
                   "shim_vs_runc_image": shim_m.as_secs_f64() / runc_image_m.as_secs_f64(),
                   "shim_vs_floor": shim_m.as_secs_f64() / floor_m.as_secs_f64() },
        "samples_ms": {
            "shim": samples(&report.startup.shim),
            "shim_rootfs": samples(&report.startup.shim_rootfs),
            "runc_busybox": samples(&report.startup.runc),
            "runc_busybox_image": samples(&report.startup.runc_image),
            "floor": samples(&report.startup.floor),
        },
        "file_io": {
            "median_us_per_call": {
                "shim": { "read": file_io[0].0, "stat": file_io[0].1 },
                "runc_native": { "read": file_io[1].0, "stat": file_io[1].1 },
                "floor": { "read": file_io[2].0, "stat": file_io[2].1 },
            },
        },
        "large_module": report.module.as_ref().map(|m| serde_json::json!({
            "program": "yosys (YoWASP)",
            "wasm_bytes": m.wasm_bytes,
            "first_start_tiered_ms": ms(m.tiered),
            "first_start_optimized_first_ms": ms(m.optimized_first),
            "baseline_refused": m.baseline_refused,
        })),
        "large_program": {
            "wasm_bytes": report.large.wasm_bytes,
            "median_ms": {
                "first_start": ms(median(&report.large.first)),
                "first_start_optimized_first": ms(median(&report.large.first_optimized)),
                "second_start": ms(median(&report.large.second)),
                "hello_interleaved": ms(median(&report.large.hello)),
            },
            "second_vs_hello": median(&report.large.second).as_secs_f64()
                / median(&report.large.hello).as_secs_f64(),
            "tiered_vs_optimized_first": median(&report.large.first).as_secs_f64()
                / median(&report.large.first_optimized).as_secs_f64(),
            "optimized_ready_s": report.large.optimized_ready.as_secs_f64(),
            "samples_ms": {
                "first_start": samples(&report.large.first),
                "first_start_optimized_first": samples(&report.large.first_optimized),
                "second_start": samples(&report.large.second),
                "hello_interleaved": samples(&report.large.hello),
            },
        },
        "throughput": {
            "shim": report.shim_tasks.json(),
            "runc_busybox": report.runc_tasks.json(),
            "shim_vs_runc": report.shim_tasks.per_second() / report.runc_tasks.per_second(),
        },
        "memory": {
            "count": report.settings.memory_count,
            "settle_ms": report.settings.settle.as_millis() as u64,
            "pss_of": "shim daemons and all their descendant processes",
            "scenarios": memory,
        },
    })
}

/// startup.svg: start-up medians, throughput, PSS of one container and marginal PSS.
fn svg(report: &Report) -> String {
    let (shim_m, runc_m, floor_m) = report.startup.medians();
    let bar = |label: &str, value: f64, kind: Kind| Bar {
        label: label.to_string(),
        value,
        kind,
    };
    let memory_bars = |value: fn(&Scenario) -> f64| {
        report
            .memory
            .iter()
            .map(|row| match row.layout {
                memory::Layout::WasmSeparate => bar("wasm", value(row), Kind::Wasm),
                memory::Layout::WasmPod => bar("wasm pod", value(row), Kind::Wasm),
                memory::Layout::Runc => bar("runc", value(row), Kind::Runc),
            })
            .collect()
    };
    let s = &report.settings;
    let panels = [
        Panel {
            title: "hello start-up, median".into(),
            note: format!("ms, {} runs (lower is better)", s.runs),
            decimals: 1,
            bars: vec![
                bar("shim", ms(shim_m), Kind::Wasm),
                bar(
                    "shim rootfs",
                    ms(median(&report.startup.shim_rootfs)),
                    Kind::Wasm,
                ),
                bar("runc", ms(runc_m), Kind::Runc),
                bar(
                    "runc image",
                    ms(median(&report.startup.runc_image)),
                    Kind::Runc,
                ),
                bar("floor", ms(floor_m), Kind::Floor),
            ],
        },
        Panel {
            title: "large program start, median".into(),
            note: format!(
                "ms, CPython component, {:.0} MB",
                report.large.wasm_bytes as f64 / 1e6
            ),
            decimals: 0,
            bars: vec![
                bar("first", ms(median(&report.large.first)), Kind::Wasm),
                bar("second", ms(median(&report.large.second)), Kind::Wasm),
                bar("hello", ms(median(&report.large.hello)), Kind::Wasm),
            ],
        },
        Panel {
            title: "ctr run --rm throughput".into(),
            note: format!("tasks/s, {} at {} (higher is better)", s.tasks, s.workers),
            decimals: 1,
            bars: vec![
                bar("shim", report.shim_tasks.per_second(), Kind::Wasm),
                bar("runc", report.runc_tasks.per_second(), Kind::Runc),
            ],
        },
        Panel {
            title: "PSS of one container".into(),
            note: "MiB, pod includes its sandbox".into(),
            decimals: 1,
            bars: memory_bars(|row| row.one.mib()),
        },
        Panel {
            title: "marginal PSS per container".into(),
            note: format!("MiB, 1 -> {} containers", s.memory_count),
            decimals: 1,
            bars: memory_bars(Scenario::marginal_mib),
        },
    ];
    chart::render(
        "containerd-shim-wasmtime vs runc",
        &format!(
            "load average {} -> {}; PSS = shims + container processes",
            report.load_before, report.load_after
        ),
        &panels,
    )
}
