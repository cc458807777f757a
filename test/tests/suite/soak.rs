//! Soak: many sequential `ctr run --rm` leave nothing behind and nothing growing: no shim,
//! no mount, containerd's open descriptors flat, and the compile cache within its bound
//! although every run brings a module it has not seen.
//!
//! `SOAK_RUNS` sets the number of runs: 200 here, 5,000 in `make bench-soak`.

use std::time::{Duration, Instant};

use integration::{program, with_custom_section, Containerd};

/// The cache's bound for this test: small, so eviction is exercised many times.
const CACHE_MAX_BYTES: u64 = 4 << 20;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The sizes of the files in `dir`.
fn entry_sizes(containerd: &Containerd) -> Vec<u64> {
    containerd
        .compiled_entries()
        .iter()
        .filter_map(|entry| std::fs::metadata(entry).ok())
        .map(|m| m.len())
        .collect()
}

#[test]
fn sequential_runs_leave_no_shim_no_mount_and_bounded_descriptors_and_cache() {
    let runs: usize = std::env::var("SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // Shims inherit containerd's environment.
    let containerd = Containerd::start_with_env(&[(
        "WASMTIME_SHIM_CACHE_MAX_BYTES",
        &CACHE_MAX_BYTES.to_string(),
    )])
    .unwrap();
    let hello = std::fs::read(program("hello")).unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let cache = containerd.compile_cache_dir();
    let warmup = 10.min(runs);
    let mut baseline = None;
    let mut largest_cache = 0;
    let started = Instant::now();
    for run in 0..runs {
        std::fs::write(
            rootfs.path().join("hello.wasm"),
            with_custom_section(&hello, "soak", run),
        )
        .unwrap();
        let id = format!("soak{run}");
        let out = containerd.run_rootfs(&[], rootfs.path(), &id, &["/hello.wasm"]);
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (0, "hello from wasm\n"),
            "run {run}: {out:?}"
        );
        largest_cache = largest_cache.max(entry_sizes(&containerd).iter().sum());
        if run + 1 == warmup {
            baseline = Some((open_fds(containerd.pid()), containerd.mounts().len()));
        }
    }
    let elapsed = started.elapsed();
    let (fds_before, mounts_before) = baseline.unwrap();
    let shims = containerd.wait_for_no_shims(Duration::from_secs(10));
    let fds_after = open_fds(containerd.pid());
    let mounts_after = containerd.mounts();
    eprintln!(
        "{runs} runs in {:.1} s ({:.1} ms each); containerd fds {fds_before} -> {fds_after}; \
         largest cache {largest_cache} bytes (bound {CACHE_MAX_BYTES})",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / runs as f64
    );
    assert!(shims.is_empty(), "shims left: {shims:?}");
    assert_eq!(mounts_after.len(), mounts_before, "{mounts_after:?}");
    assert!(
        fds_after <= fds_before + 8,
        "containerd's descriptors grew from {fds_before} to {fds_after}"
    );
    assert!(largest_cache > 0, "the cache was never written");
    // The bound covers the compiled entries (not a write in flight, which is a temporary
    // file until it is complete) and is enforced by each writer after its write: a program
    // has two, the shim storing its baseline code and the background optimizer its
    // optimized code, so at any moment each may be one entry over.
    let entry = entry_sizes(&containerd).into_iter().max().unwrap_or(0);
    assert!(
        largest_cache <= CACHE_MAX_BYTES + 2 * entry,
        "the cache grew to {largest_cache} bytes (bound {CACHE_MAX_BYTES})"
    );
    // With every shim gone (each waits for its optimizer), no write is in flight: a
    // temporary file left now would be a leak.
    let temporary: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tmp-"))
        .collect();
    assert!(temporary.is_empty(), "left in the cache: {temporary:?}");
    let entries = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert!(
        runs < 50 || entries < runs - 10,
        "{entries} cache entries after {runs} distinct modules: nothing was evicted"
    );
}
