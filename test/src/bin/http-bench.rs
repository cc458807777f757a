//! `make bench`, HTTP part: requests per second and latency of the http-hello component served
//! by this shim (`ctr run --net-host`), beside the floor: the same component served in-process
//! by the `runtime` crate, no containerd. With `wasmtime serve` 48 installed (`make
//! bench-tools`, or `WASMTIME_CLI=/path/to/wasmtime`), the same component under it is a third
//! column. Rounds alternate between the servers so all see the same machine load; medians of the
//! rounds and percentiles over all requests are printed, and JSON goes to
//! `target/bench/http.json`. The shim's server is measured once it serves optimized code
//! (its first start serves baseline code until the optimized code is compiled).
//!
//! Then a large HTTP component never seen before (js-http: JavaScript built by componentize-js
//! at bench time, `make bench`): the time to its first HTTP 200 with tiered compilation and
//! with `WASMTIME_SHIM_TIERING=off`, in two containerds of this run, and its requests per
//! second on baseline code (before the switch) and on optimized code (after it).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::http::{free_port, wait_until_listening, Connection};
use integration::{program, Containerd};
use runtime::{Controls, Program, StdioFiles, WasiPlan};

struct Settings {
    rounds: usize,
    round: Duration,
    connections: usize,
}

impl Settings {
    /// Half a second of the same load: first instantiations and connections, not measured.
    fn warm_up(&self) -> Settings {
        Settings {
            rounds: 1,
            round: Duration::from_millis(500),
            connections: self.connections,
        }
    }

    /// One measured round of the same load.
    fn one_round(&self) -> Settings {
        Settings { rounds: 1, ..*self }
    }
}

#[derive(Default)]
struct Samples {
    rps: Vec<f64>,
    latencies: Vec<Duration>,
    errors: usize,
}

impl Samples {
    fn median_rps(&self) -> f64 {
        let mut rps = self.rps.clone();
        rps.sort_by(f64::total_cmp);
        rps.get(rps.len() / 2).copied().unwrap_or(0.0)
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut all = self.latencies.clone();
        all.sort();
        let index = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(index).copied().unwrap_or_default()
    }
}

/// Keeps `connections` keep-alive clients busy with `GET /` for `round`.
fn load(addr: &str, settings: &Settings, samples: &mut Samples) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..settings.connections)
        .map(|_| {
            let (addr, stop) = (addr.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut connection = Connection::open(&addr);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(conn) = connection.as_mut() else {
                        errors += 1;
                        connection = Connection::open(&addr);
                        continue;
                    };
                    let started = Instant::now();
                    match conn.get("/") {
                        Ok(r) if r.status == 200 && r.body == b"hello from wasm\n" => {
                            latencies.push(started.elapsed())
                        }
                        other => {
                            if errors == 0 {
                                eprintln!("{addr}: first failed request: {other:?}");
                            }
                            errors += 1;
                            connection = Connection::open(&addr);
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(settings.round);
    stop.store(true, Ordering::Relaxed);
    let mut count = 0;
    for client in clients {
        let (latencies, errors) = client
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))?;
        count += latencies.len();
        samples.latencies.extend(latencies);
        samples.errors += errors;
    }
    samples
        .rps
        .push(count as f64 / started.elapsed().as_secs_f64());
    Ok(())
}

fn floor_server(rootfs: &Path, addr: &str) -> Result<(Controls, std::thread::JoinHandle<()>)> {
    let json = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": rootfs },
        "process": {
            "args": ["/http-hello.wasm"], "cwd": "/",
            "env": ["PATH=/", format!("WASI_HTTP_ADDR={addr}")],
            "user": { "uid": 0, "gid": 0 }
        },
        "mounts": []
    });
    let spec: oci_spec::runtime::Spec = serde_json::from_value(json)?;
    let program = Program::load(WasiPlan::from_spec(&spec, rootfs)?)?;
    let controls = Controls::default();
    let thread_controls = controls.clone();
    let thread = std::thread::spawn(move || {
        let stdio = StdioFiles {
            stdin: None,
            stdout: std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .ok(),
            stderr: None,
            terminal: false,
        };
        let status = program.run_blocking(stdio, &thread_controls);
        eprintln!("floor server ended: {status}");
    });
    wait_until_listening(addr, Duration::from_secs(20))?;
    Ok((controls, thread))
}

/// `wasmtime serve` from `WASMTIME_CLI`, else from `make bench-tools`, if there is one.
fn wasmtime_cli() -> Option<std::path::PathBuf> {
    std::env::var_os("WASMTIME_CLI")
        .map(Into::into)
        .or_else(|| {
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tools/bin/wasmtime"))
        })
        .filter(|path: &std::path::PathBuf| path.exists())
}

/// Kills the `wasmtime serve` child when the benchmark ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The line a server's process logs when it switches to optimized code.
const SWITCHED: &str = "serving optimized (Cranelift) code from now on";

/// Waits until task `id` serves optimized code: it switched, or its process loaded
/// optimized code in the first place. `None` if neither within `timeout`.
fn wait_for_optimized(containerd: &Containerd, id: &str, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    let task = format!("id={id} ");
    while started.elapsed() < timeout {
        let optimized = containerd.shim_log().lines().any(|l| {
            l.contains(&task)
                && l.contains(" pid=")
                && (l.contains(SWITCHED) || l.contains(": optimized (Cranelift) code"))
        });
        if optimized {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Whether task `id`'s process switched to optimized code.
fn switched(containerd: &Containerd, id: &str) -> bool {
    let task = format!("id={id} ");
    containerd
        .shim_log()
        .lines()
        .any(|l| l.contains(&task) && l.contains(SWITCHED))
}

/// Starts the HTTP component `program` of `rootfs` as task `id` (`ctr run -d --net-host`) on
/// a free port, and returns its address. Its output goes where the floor's goes: nothing
/// reads a detached ctr's FIFOs, and a full pipe would stall the per-request log line.
fn run_server(containerd: &Containerd, rootfs: &Path, id: &str, program: &str) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    let listen = format!("WASI_HTTP_ADDR={addr}");
    containerd.run_detached(
        &[
            "--net-host",
            "--log-uri",
            "file:///dev/null",
            "--env",
            &listen,
        ],
        rootfs,
        id,
        &[program],
    );
    addr
}

/// A server `first_200` started, and the rootfs it runs in: the directory must outlive the
/// server (its tmpfs at /run, which each request preopens, is mounted on a directory of it).
struct Started {
    addr: String,
    started: Instant,
    first_200: Duration,
    _rootfs: tempfile::TempDir,
}

/// Starts `wasm` (as /app.wasm) under `containerd` as task `id` and returns its address,
/// when `ctr run -d` began, and the time from then to its first HTTP 200.
fn first_200(containerd: &Containerd, wasm: &Path, id: &str) -> Result<Started> {
    let rootfs = tempfile::tempdir()?;
    std::fs::copy(wasm, rootfs.path().join("app.wasm"))?;
    let started = Instant::now();
    let addr = run_server(containerd, rootfs.path(), id, "/app.wasm");
    loop {
        if let Ok(response) = integration::http::request(&addr, "GET", "/", b"") {
            if response.status == 200 {
                return Ok(Started {
                    addr,
                    started,
                    first_200: started.elapsed(),
                    _rootfs: rootfs,
                });
            }
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "{id} gave no 200 within 300 s:\n{}",
                containerd.log_tail(30)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the large component's section measured.
struct Large {
    size: u64,
    tiered_first: Duration,
    untiered_first: Duration,
    baseline: Samples,
    /// The baseline round ended before the switch (else it mixed both codes).
    baseline_clean: bool,
    optimized_after: Option<Duration>,
    optimized: Samples,
    /// The server started with tiering off: optimized code from its first request, loaded
    /// as every later start loads it (the reference for the switched server).
    untiered: Samples,
}

/// The large component's first starts and its throughput on each tier (see the module
/// comment). `None` without the component.
fn large_component(settings: &Settings) -> Result<Option<Large>> {
    let wasm = program("js-http");
    let Ok(meta) = std::fs::metadata(&wasm) else {
        eprintln!(
            "no {} (make bench builds it): the large component is left out",
            wasm.display()
        );
        return Ok(None);
    };
    let round = settings.one_round();
    let tiered = Containerd::start()?;
    let tiered_server = first_200(&tiered, &wasm, "js-tiered")?;
    let (addr, started, tiered_first) = (
        tiered_server.addr.clone(),
        tiered_server.started,
        tiered_server.first_200,
    );
    let mut baseline = Samples::default();
    load(&addr, &round, &mut baseline)?;
    let baseline_clean = !switched(&tiered, "js-tiered");
    // Its background compile must be over before the next start is timed.
    let optimized_after = wait_for_optimized(&tiered, "js-tiered", Duration::from_secs(300))
        .map(|_| started.elapsed());
    let untiered = Containerd::start_with_env(&[("WASMTIME_SHIM_TIERING", "off")])?;
    let untiered_server = first_200(&untiered, &wasm, "js-untiered")?;
    let (reference_addr, untiered_first) =
        (untiered_server.addr.clone(), untiered_server.first_200);
    // Both serve optimized code now: warmed, then measured in interleaved rounds, as the
    // table above.
    let warm = settings.warm_up();
    load(&addr, &warm, &mut Samples::default())?;
    load(&reference_addr, &warm, &mut Samples::default())?;
    let (mut optimized, mut reference) = (Samples::default(), Samples::default());
    for _ in 0..settings.rounds {
        load(&addr, &round, &mut optimized)?;
        load(&reference_addr, &round, &mut reference)?;
    }
    tiered.kill_and_remove("js-tiered", "SIGKILL");
    untiered.kill_and_remove("js-untiered", "SIGKILL");
    Ok(Some(Large {
        size: meta.len(),
        tiered_first,
        untiered_first,
        baseline,
        baseline_clean,
        optimized_after,
        optimized,
        untiered: reference,
    }))
}

fn print_large(large: &Large) {
    println!();
    println!(
        "Large HTTP component never seen before: js-http (componentize-js, {:.1} MB)",
        large.size as f64 / 1e6
    );
    println!("| {:<40} | {:>14} |", "first start", "first 200, s");
    println!("|{:-<42}|{:->16}|", "", "");
    println!(
        "| {:<40} | {:>14.2} |",
        "tiered (baseline code first)",
        large.tiered_first.as_secs_f64()
    );
    println!(
        "| {:<40} | {:>14.2} |",
        "WASMTIME_SHIM_TIERING=off",
        large.untiered_first.as_secs_f64()
    );
    println!(
        "tiered/off: {:.2}x; target: first 200 <= 2 s",
        large.tiered_first.as_secs_f64() / large.untiered_first.as_secs_f64()
    );
    let after = large
        .optimized_after
        .map(|d| format!("optimized (served {:.1} s after start)", d.as_secs_f64()))
        .unwrap_or_else(|| "optimized (never switched!)".into());
    let before = if large.baseline_clean {
        "baseline (before the switch)".to_string()
    } else {
        "baseline (switched during the round!)".to_string()
    };
    let rows = [
        (before, &large.baseline),
        (after, &large.optimized),
        (
            "optimized from the start (tiering off)".to_string(),
            &large.untiered,
        ),
    ];
    print_table(
        "code served (baseline: one round; then interleaved rounds)",
        &rows,
    );
    println!(
        "after the switch / started optimized: {:.2}x (target >= 0.95x)",
        large.optimized.median_rps() / large.untiered.median_rps()
    );
}

/// A table of servers' throughput and latency, one row per `(name, samples)`.
fn print_table<N: AsRef<str>>(first_column: &str, rows: &[(N, &Samples)]) {
    let width = rows
        .iter()
        .map(|(name, _)| name.as_ref().len())
        .chain([first_column.len()])
        .max()
        .unwrap_or(0);
    println!(
        "| {:<width$} | {:>10} | {:>8} | {:>8} | {:>6} |",
        first_column, "req/s", "p50 ms", "p99 ms", "errors"
    );
    println!(
        "|{:-<w$}|{:->12}|{:->10}|{:->10}|{:->8}|",
        "",
        "",
        "",
        "",
        "",
        w = width + 2
    );
    for (name, samples) in rows {
        println!(
            "| {:<width$} | {:>10.0} | {:>8.3} | {:>8.3} | {:>6} |",
            name.as_ref(),
            samples.median_rps(),
            ms(samples.percentile(0.5)),
            ms(samples.percentile(0.99)),
            samples.errors
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let settings = Settings {
        rounds: env_or("BENCH_HTTP_ROUNDS", 5),
        round: Duration::from_millis(env_or("BENCH_HTTP_ROUND_MS", 3000) as u64),
        connections: env_or("BENCH_HTTP_CONNECTIONS", 16),
    };
    let rootfs = tempfile::tempdir()?;
    std::fs::copy(program("http-hello"), rootfs.path().join("http-hello.wasm"))
        .context("examples/build/http-hello.wasm (make examples)")?;

    let floor_addr = format!("127.0.0.1:{}", free_port());
    let (floor_controls, floor_thread) = floor_server(rootfs.path(), &floor_addr)?;

    let containerd = Containerd::start()?;
    let shim_addr = run_server(&containerd, rootfs.path(), "http-bench", "/http-hello.wasm");
    wait_until_listening(&shim_addr, Duration::from_secs(20))?;
    // Its first start serves baseline code: measured here is the code it serves for good.
    if wait_for_optimized(&containerd, "http-bench", Duration::from_secs(120)).is_none() {
        bail!("the shim's server never served optimized code");
    }

    let cli = match wasmtime_cli() {
        Some(path) => {
            let addr = format!("127.0.0.1:{}", free_port());
            let child = std::process::Command::new(&path)
                .args(["serve", "--addr", &addr])
                .arg(rootfs.path().join("http-hello.wasm"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", path.display()))?;
            let guard = ChildGuard(child);
            wait_until_listening(&addr, Duration::from_secs(30))?;
            Some((addr, guard))
        }
        None => {
            eprintln!("no wasmtime CLI (make bench-tools): its column is left out");
            None
        }
    };

    // Warm all (first instantiations, connection setup) before measuring.
    let warm = settings.warm_up();
    load(&floor_addr, &warm, &mut Samples::default())?;
    load(&shim_addr, &warm, &mut Samples::default())?;
    if let Some((addr, _)) = &cli {
        load(addr, &warm, &mut Samples::default())?;
    }

    let (mut shim, mut floor, mut serve) =
        (Samples::default(), Samples::default(), Samples::default());
    for _ in 0..settings.rounds {
        load(&shim_addr, &settings, &mut shim)?;
        load(&floor_addr, &settings, &mut floor)?;
        if let Some((addr, _)) = &cli {
            load(addr, &settings, &mut serve)?;
        }
    }
    drop(cli);
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    containerd.kill_and_remove("http-bench", "SIGKILL");
    floor_controls.stopper.stop(libc::SIGKILL);
    let _ = floor_thread.join();

    println!(
        "HTTP GET / of http-hello: {} keep-alive connections, {} rounds of {:?}, interleaved",
        settings.connections, settings.rounds, settings.round
    );
    let mut rows = vec![
        ("wasmtime shim (ctr run)", &shim),
        ("floor (runtime in-process)", &floor),
    ];
    if !serve.rps.is_empty() {
        rows.push(("wasmtime serve 48 (CLI)", &serve));
    }
    print_table("server", &rows);
    let ratio = shim.median_rps() / floor.median_rps();
    println!("shim/floor throughput: {ratio:.2}x (target >= 0.8x); load average: {load_avg}");
    if !serve.rps.is_empty() {
        println!(
            "shim/wasmtime-serve throughput: {:.2}x",
            shim.median_rps() / serve.median_rps()
        );
    }

    let json = serde_json::json!({
        "benchmark": "http-hello GET /",
        "connections": settings.connections,
        "rounds": settings.rounds,
        "round_ms": settings.round.as_millis() as u64,
        "load_average": load_avg.trim(),
        "shim": { "rps_median": shim.median_rps(), "rps_rounds": shim.rps,
                  "p50_ms": ms(shim.percentile(0.5)), "p99_ms": ms(shim.percentile(0.99)),
                  "errors": shim.errors },
        "floor": { "rps_median": floor.median_rps(), "rps_rounds": floor.rps,
                   "p50_ms": ms(floor.percentile(0.5)), "p99_ms": ms(floor.percentile(0.99)),
                   "errors": floor.errors },
        "wasmtime_serve": (!serve.rps.is_empty()).then(|| serde_json::json!({
            "rps_median": serve.median_rps(), "rps_rounds": serve.rps,
            "p50_ms": ms(serve.percentile(0.5)), "p99_ms": ms(serve.percentile(0.99)),
            "errors": serve.errors })),
        "shim_over_floor_rps": ratio,
    });
    drop(containerd);
    let large = large_component(&settings)?;
    let mut json = json;
    if let Some(large) = &large {
        print_large(large);
        let samples = |s: &Samples| {
            serde_json::json!({ "rps": s.median_rps(), "p50_ms": ms(s.percentile(0.5)),
                                "p99_ms": ms(s.percentile(0.99)), "errors": s.errors })
        };
        json["large_component"] = serde_json::json!({
            "program": "js-http (componentize-js)",
            "bytes": large.size,
            "first_200_tiered_s": large.tiered_first.as_secs_f64(),
            "first_200_tiering_off_s": large.untiered_first.as_secs_f64(),
            "baseline": samples(&large.baseline),
            "baseline_before_switch": large.baseline_clean,
            "optimized": samples(&large.optimized),
            "optimized_served_after_s": large.optimized_after.map(|d| d.as_secs_f64()),
            "tiering_off": samples(&large.untiered),
        });
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("http.json"), serde_json::to_string_pretty(&json)?)?;
    let large_errors = large.as_ref().map_or(0, |l| {
        l.baseline.errors + l.optimized.errors + l.untiered.errors
    });
    let errors = shim.errors + floor.errors + serve.errors + large_errors;
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
