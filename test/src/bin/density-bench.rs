//! `make bench-density`: how many wasm services one node holds. Starts `DENSITY_COUNT`
//! (1000) http-hello component containers, each with a shim of its own (`ctr run -d
//! --net-host`, plain containers, no pod grouping) and its own `WASI_HTTP_ADDR` port, on a
//! private containerd; checks that every one answers `GET /` with "hello from wasm"; reports
//! the time to start them and the total and per-container PSS; then removes everything and
//! checks that no task, container or shim is left. JSON goes to `target/bench/density.json`.
//!
//! Knobs: `DENSITY_WORKERS` (2) concurrent `ctr` workers, `DENSITY_BASE_PORT` (20000) first
//! port tried (below Linux's ephemeral range, so client connections never take one),
//! `DENSITY_SETTLE_MS` (2000) wait before reading PSS.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use integration::bench::{fleet, pss};
use integration::http::request;
use integration::{Containerd, RUNTIME};

use fleet::{env_or, expect_running, parallel, wait_for_no_shims, Fleet, Launch};
use pss::PssSample;

/// What the environment asks for.
struct Settings {
    count: usize,
    workers: usize,
    base_port: u16,
    settle: Duration,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let settings = Settings {
            count: env_or("DENSITY_COUNT", 1000),
            workers: env_or("DENSITY_WORKERS", 2),
            base_port: u16::try_from(env_or("DENSITY_BASE_PORT", 20000))?,
            settle: Duration::from_millis(env_or("DENSITY_SETTLE_MS", 2000) as u64),
        };
        if settings.count == 0 {
            bail!("DENSITY_COUNT must be > 0");
        }
        Ok(settings)
    }
}

/// `count` ports from `base` up that nothing listens on now, so every container gets its
/// own without two ever racing for one (asking the kernel for port 0 each time could hand
/// out the same port twice once it is released).
fn free_ports(base: u16, count: usize) -> Result<Vec<u16>> {
    let ports: Vec<u16> = (base..=u16::MAX)
        .filter(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .take(count)
        .collect();
    if ports.len() < count {
        bail!("only {} free ports from {base} up", ports.len());
    }
    Ok(ports)
}

/// Threads one idle http-hello shim has (tokio workers, ttrpc, the program's thread, ...),
/// with some room for request-time threads.
const THREADS_PER_SHIM: usize = 20;

/// Warns when `count` shims may not fit under `kernel.pid_max` (every thread takes a pid; the
/// default 32768 holds about 1500 shims beside an idle system), so a failure to start one
/// is explained before it happens rather than after.
fn warn_if_pids_are_short(count: usize) {
    let read =
        |path: &str| -> Option<usize> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let Some(pid_max) = read("/proc/sys/kernel/pid_max") else {
        return;
    };
    let in_use = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .map(|tasks| tasks.count())
        .sum::<usize>();
    let needed = count * THREADS_PER_SHIM;
    if in_use + needed > pid_max {
        eprintln!(
            "warning: {count} shims need about {needed} pids, {in_use} are in use and \
             kernel.pid_max is {pid_max}: raise it (sysctl kernel.pid_max=4194304) if starts fail"
        );
    }
}

/// `ctr run -d` of http-hello on the host network, listening on `port`, output discarded
/// (nothing would read a detached container's FIFOs, and its per-request log line would
/// fill them).
fn launch(rootfs: &Path, id: String, port: u16) -> Launch {
    let listen = format!("WASI_HTTP_ADDR=127.0.0.1:{port}");
    let root = rootfs.display().to_string();
    let args = [
        "--runtime",
        RUNTIME,
        "--net-host",
        "--null-io",
        "--env",
        &listen,
        "--rootfs",
        &root,
        &id,
        "/http-hello.wasm",
    ];
    Launch {
        args: args.iter().map(|s| s.to_string()).collect(),
        id,
    }
}

/// Waits until every port answers `GET /` with 200 "hello from wasm\n"; one try per port
/// at a time, retried until `deadline`. A component starts listening just after its task
/// started, so the first tries may be refused.
fn wait_all_answer(ports: &[u16], workers: usize, deadline: Instant) -> Result<()> {
    parallel(ports.len(), workers, |i| {
        let addr = format!("127.0.0.1:{}", ports[i]);
        loop {
            match request(&addr, "GET", "/", b"") {
                Ok(r) if r.status == 200 && r.body == b"hello from wasm\n" => return Ok(()),
                Ok(r) => bail!("{addr} answered {} {:?}", r.status, r.text()),
                Err(e) if Instant::now() > deadline => bail!("{addr} never answered: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

/// Fails unless every container is RUNNING in a shim of its own: as many wasmtime shims as
/// containers, and each task's process started by a different one.
fn check_one_shim_each(containerd: &Containerd, ids: &[String]) -> Result<usize> {
    let running = expect_running(containerd, ids)?;
    let shims = containerd.shim_pids();
    let groups: BTreeSet<Option<u32>> = ids
        .iter()
        .filter_map(|id| running.get(id))
        .map(|pid| integration::parent_of(*pid))
        .collect();
    if shims.len() != ids.len() || groups.len() != ids.len() || groups.contains(&None) {
        bail!(
            "{} containers but {} shims and {} distinct task parents",
            ids.len(),
            shims.len(),
            groups.len()
        );
    }
    Ok(shims.len())
}

/// The pid of this benchmark's containerd (its command line names its private config), so
/// its own PSS can be shown beside the shims'.
fn containerd_pid(containerd: &Containerd) -> Option<u32> {
    let config = containerd.dir().join("config.toml").display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"containerd"))
                    && args.contains(&config.as_bytes())
            })
        })
}

/// Fails if containerd still knows a task or container after the cleanup.
fn check_nothing_left(containerd: &Containerd) -> Result<()> {
    let tasks = containerd.ctr(&["task", "ls", "-q"]);
    let containers = containerd.ctr(&["containers", "ls", "-q"]);
    if !tasks.stdout.trim().is_empty() || !containers.stdout.trim().is_empty() {
        bail!(
            "left behind: tasks {:?}, containers {:?}",
            tasks.stdout,
            containers.stdout
        );
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> Result<()> {
    let s = Settings::from_env()?;
    let containerd = Containerd::start()?;
    let rootfs = integration::rootfs_with(&["http-hello"])?;
    warn_if_pids_are_short(s.count);
    let ports = free_ports(s.base_port, s.count)?;
    let launches: Vec<Launch> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| launch(rootfs.path(), format!("dens-{i}"), *port))
        .collect();
    let ids: Vec<String> = launches.iter().map(|l| l.id.clone()).collect();
    let load_before = load_average();

    let fleet = Fleet::new(&containerd, s.workers);
    let started = Instant::now();
    let start_time = fleet.start(&launches)?;
    // Answering is checked with more clients than ctr workers: each check is a single
    // request, mostly waiting on the network.
    wait_all_answer(&ports, 8, started + start_time + Duration::from_secs(120))?;
    let answer_time = started.elapsed();
    std::thread::sleep(s.settle);
    let shims = check_one_shim_each(&containerd, &ids)?;
    let sample: PssSample = pss::containerd_children(&containerd);
    if sample.wasm_shims != shims {
        bail!(
            "{shims} shims when checked, {} when measured",
            sample.wasm_shims
        );
    }
    let containerd_kib = containerd_pid(&containerd)
        .and_then(pss::rollup)
        .and_then(|r| pss::rollup_field(&r, "Pss"));
    let load_at_peak = load_average();

    let removing = Instant::now();
    fleet.remove_all()?;
    wait_for_no_shims(&containerd, Duration::from_secs(300))?;
    let remove_time = removing.elapsed();
    check_nothing_left(&containerd)?;

    let per_container = sample.mib() / s.count as f64;
    println!(
        "density: {} http-hello containers, one shim each (ctr run -d --net-host), {} ctr workers",
        s.count, s.workers
    );
    println!("load average {load_before} -> {load_at_peak} (with all running)");
    println!(
        "started (every ctr run -d returned)    {:>9.1} s  ({:.1} containers/s)",
        start_time.as_secs_f64(),
        s.count as f64 / start_time.as_secs_f64()
    );
    println!(
        "all {} answered GET / 'hello from wasm' {:>6.1} s after the first start",
        s.count,
        answer_time.as_secs_f64()
    );
    println!(
        "PSS, {} shims + descendants ({} processes): {:.1} MiB total, {per_container:.1} MiB per container",
        sample.wasm_shims,
        sample.processes,
        sample.mib()
    );
    if let Some(kib) = containerd_kib {
        println!("containerd itself (not counted above): {:.1} MiB", mib(kib));
    }
    println!(
        "removed all in {:.1} s; no task, container or shim left (runc shims seen: {})",
        remove_time.as_secs_f64(),
        sample.runc_shims
    );

    let json = serde_json::json!({
        "count": s.count,
        "workers": s.workers,
        "layout": "one shim per container (ctr run -d --net-host), no pod grouping",
        "load_average": { "before": load_before, "all_running": load_at_peak },
        "start_seconds": start_time.as_secs_f64(),
        "all_answering_seconds": answer_time.as_secs_f64(),
        "remove_seconds": remove_time.as_secs_f64(),
        "wasm_shims": shims,
        "processes": sample.processes,
        "pss_total_mib": sample.mib(),
        "pss_per_container_mib": per_container,
        "pss_anon_total_mib": sample.anon_mib(),
        "containerd_pss_mib": containerd_kib.map(mib),
    });
    let dir = integration::bin_dir().join("../bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("density.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
