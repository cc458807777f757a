//! `make bench`, HTTP part: requests per second and latency of the http-hello component served
//! by this shim (`ctr run --net-host`), beside the floor: the same component served in-process
//! by the `runtime` crate, no containerd. With `wasmtime serve` 48 installed (`make
//! bench-tools`, or `WASMTIME_CLI=/path/to/wasmtime`), the same component under it is a third
//! column. Rounds alternate between the servers so all see the same machine load; medians of the
//! rounds and percentiles over all requests are printed, and JSON goes to
//! `target/bench/http.json`.

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
    let shim_addr = format!("127.0.0.1:{}", free_port());
    let listen = format!("WASI_HTTP_ADDR={shim_addr}");
    containerd.run_detached(
        // Its output goes where the floor's goes: nothing reads a detached ctr's FIFOs, and a
        // full pipe would stall the component's per-request log line.
        &[
            "--net-host",
            "--log-uri",
            "file:///dev/null",
            "--env",
            &listen,
        ],
        rootfs.path(),
        "http-bench",
        &["/http-hello.wasm"],
    );
    wait_until_listening(&shim_addr, Duration::from_secs(20))?;

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
    let warm = Settings {
        rounds: 1,
        round: Duration::from_millis(500),
        connections: settings.connections,
    };
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
    println!(
        "| {:<28} | {:>10} | {:>8} | {:>8} | {:>6} |",
        "server", "req/s", "p50 ms", "p99 ms", "errors"
    );
    println!(
        "|{:-<30}|{:->12}|{:->10}|{:->10}|{:->8}|",
        "", "", "", "", ""
    );
    let mut rows = vec![
        ("wasmtime shim (ctr run)", &shim),
        ("floor (runtime in-process)", &floor),
    ];
    if !serve.rps.is_empty() {
        rows.push(("wasmtime serve 48 (CLI)", &serve));
    }
    for (name, samples) in rows {
        println!(
            "| {:<28} | {:>10.0} | {:>8.3} | {:>8.3} | {:>6} |",
            name,
            samples.median_rps(),
            ms(samples.percentile(0.5)),
            ms(samples.percentile(0.99)),
            samples.errors
        );
    }
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("http.json"), serde_json::to_string_pretty(&json)?)?;
    let errors = shim.errors + floor.errors + serve.errors;
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
