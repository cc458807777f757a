//! The large program (issue item 4b): first versus second start of a real program of many
//! megabytes, CPython as a WASI 0.2 command component (`make bench` builds it from
//! examples/python-hello with componentize-py).
//!
//! A first start compiles the component and writes the shim's compile cache; a second start
//! of the same bytes loads the compiled artifact. Each first start gets bytes the cache has
//! never seen (the component plus a custom section naming the round), so it measures a real
//! compile each time, not a leftover entry of an earlier round or an earlier `make bench`.
//!
//! First starts run twice over: tiered (the default: Winch code, Cranelift's in the
//! background) and optimized-first, in a second containerd whose shims have
//! `WASMTIME_SHIM_TIERING=off`. The second starts wait for the background compiles, so
//! they run optimized code as before tiering.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use integration::{with_custom_section, Containerd, RUNTIME};

/// What the program prints first; the Python version follows.
pub const GREETING: &str = "hello from python ";

/// Samples of the large program, warm-up excluded.
#[derive(Debug, Clone)]
pub struct LargeStart {
    /// Size of the component as built, in bytes.
    pub wasm_bytes: u64,
    /// One start per never-seen variant: compile and cache write included (tiered).
    pub first: Vec<Duration>,
    /// The same with tiering off: Cranelift compiles before the program starts.
    pub first_optimized: Vec<Duration>,
    /// How long after the last tiered first start every variant's optimized code was in
    /// the cache.
    pub optimized_ready: Duration,
    /// Starts of variants already in the cache.
    pub second: Vec<Duration>,
    /// The hello image's starts, interleaved with `second` so the ratio sees one load.
    pub hello: Vec<Duration>,
}

/// One `ctr run --rm` of `image`, checked by `ok` on its stdout.
fn run_once(
    containerd: &Containerd,
    image: &str,
    id: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<Duration> {
    let started = Instant::now();
    let out = containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, image, id]);
    let elapsed = started.elapsed();
    if out.code != 0 || !ok(&out.stdout) {
        bail!(
            "ctr run {image} failed: {out:?}\ncontainerd log:\n{}",
            containerd.log_tail(20)
        );
    }
    Ok(elapsed)
}

/// `firsts` variants, each started once cold with tiering off, then `firsts` more with
/// tiering on; then `runs` rounds of one cached variant (round-robin, optimized by then)
/// beside one hello (`hello_image`, printing `hello_expect`).
pub fn measure(
    containerd: &Containerd,
    optimized_first: &Containerd,
    component: &Path,
    hello_image: &str,
    hello_expect: &str,
    firsts: usize,
    runs: usize,
) -> Result<LargeStart> {
    let wasm = std::fs::read(component)
        .with_context(|| format!("{} is missing: `make bench` builds it", component.display()))?;
    let dir = tempfile::tempdir()?;
    let mut images = Vec::new();
    let greets = |out: &str| out.starts_with(GREETING);
    // Optimized-first starts before any tiered one: no background compile of a tiered
    // shim runs beside them (even at idle priority it takes a core when one is idle, and
    // shares the caches and memory bandwidth).
    let mut first_optimized = Vec::new();
    for round in 0..firsts.max(1) {
        let path = dir.path().join(format!("python-optimized-{round}.wasm"));
        std::fs::write(&path, with_custom_section(&wasm, "bench-optimized", round))?;
        let image =
            optimized_first.import_program(&path, &format!("bench-python-opt-{round}:latest"))?;
        first_optimized.push(run_once(
            optimized_first,
            &image,
            &format!("po{round}"),
            greets,
        )?);
    }
    let before = cache_entries(containerd);
    let mut baseline = HashSet::new();
    let mut first = Vec::new();
    for round in 0..firsts.max(1) {
        // Each on a machine as quiet as the optimized-first starts had: the previous
        // variants' background compiles done (their helpers run at idle priority, but still
        // share the caches and memory bandwidth of these two vCPUs).
        wait_for_optimized(containerd, &before, &baseline, round)?;
        let known = cache_entries(containerd);
        let path = dir.path().join(format!("python-{round}.wasm"));
        std::fs::write(&path, with_custom_section(&wasm, "bench", round))?;
        let image = containerd.import_program(&path, &format!("bench-python-{round}:latest"))?;
        first.push(run_once(containerd, &image, &format!("pf{round}"), greets)?);
        images.push(image);
        // What this start stored: its baseline entry (or, should the background compile
        // have finished already, nothing new to wait for).
        baseline.extend(cache_entries(containerd).difference(&known).cloned());
    }
    let optimized_ready = wait_for_optimized(containerd, &before, &baseline, images.len())?;
    let mut second = Vec::new();
    let mut hello = Vec::new();
    for round in 0..runs {
        let image = &images[round % images.len()];
        second.push(run_once(containerd, image, &format!("ps{round}"), greets)?);
        let says_hello = |out: &str| out == hello_expect;
        hello.push(run_once(
            containerd,
            hello_image,
            &format!("ph{round}"),
            says_hello,
        )?);
    }
    Ok(LargeStart {
        wasm_bytes: wasm.len() as u64,
        first,
        first_optimized,
        optimized_ready,
        second,
        hello,
    })
}

/// The compile cache entries of `containerd`'s shims.
fn cache_entries(containerd: &Containerd) -> HashSet<PathBuf> {
    containerd.compiled_entries().into_iter().collect()
}

/// Waits until the tiered containerd's cache holds, beside the entries of `before`, the
/// optimized entries of `programs` programs, which replace their baseline entries (those of
/// `baseline`), at most 15 minutes; returns how long that took.
fn wait_for_optimized(
    containerd: &Containerd,
    before: &HashSet<PathBuf>,
    baseline: &HashSet<PathBuf>,
    programs: usize,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let now = cache_entries(containerd);
        let optimized = now
            .difference(before)
            .filter(|e| !baseline.contains(*e))
            .count();
        let baseline_left = now.intersection(baseline).count();
        if optimized >= programs && baseline_left == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!(
                "the large program's optimized code never reached the cache ({optimized} entries)"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
