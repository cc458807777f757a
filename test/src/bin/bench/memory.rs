//! Memory per container (issue item 4c): the PSS of one long-running container, and the
//! marginal PSS of each further one, for wasm containers with a shim each, wasm containers
//! sharing one pod's shim, and runc busybox containers with a runc shim each.
//!
//! The marginal cost is (PSS at N − PSS at 1) / (N − 1): the first container pays for
//! everything shared (binaries, caches, the pod's sandbox), the difference is what density
//! costs.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use integration::{Containerd, RUNTIME};

use crate::fleet::{expect_running, wait_for_no_shims, Fleet, Launch};
use crate::pss::{self, PssSample};

/// containerd's CRI annotations the shim groups a pod's containers by (shim/src/runc/pod.rs).
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// How the containers of a scenario must be spread over shims; checked before measuring so
/// a number is never reported for the wrong layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One wasmtime shim per container.
    WasmSeparate,
    /// Every wasm container in the one shim of its pod.
    WasmPod,
    /// One runc shim per container.
    Runc,
}

/// One row of the memory table.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Key in the JSON.
    pub key: &'static str,
    /// Row label.
    pub label: &'static str,
    /// The layout that was verified.
    pub layout: Layout,
    /// Containers at the second measurement.
    pub count: usize,
    /// With one container (plus the pod's sandbox for [`Layout::WasmPod`]).
    pub one: PssSample,
    /// With `count` containers.
    pub at_count: PssSample,
}

impl Scenario {
    /// (PSS at N − PSS at 1) / (N − 1), in MiB.
    pub fn marginal_mib(&self) -> f64 {
        (self.at_count.mib() - self.one.mib()) / self.count.saturating_sub(1).max(1) as f64
    }

    /// The JSON object of this row.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "label": self.label,
            "count": self.count,
            "one_mib": self.one.mib(),
            "at_count_mib": self.at_count.mib(),
            "marginal_mib_per_container": self.marginal_mib(),
            "anon_one_mib": self.one.anon_mib(),
            "anon_at_count_mib": self.at_count.anon_mib(),
            "anon_marginal_mib_per_container": (self.at_count.anon_mib() - self.one.anon_mib())
                / self.count.saturating_sub(1).max(1) as f64,
            "processes": { "one": self.one.processes, "at_count": self.at_count.processes },
            "wasm_shims": { "one": self.one.wasm_shims, "at_count": self.at_count.wasm_shims },
            "runc_shims": { "one": self.one.runc_shims, "at_count": self.at_count.runc_shims },
        })
    }
}

/// Root filesystems and knobs the scenarios share.
pub struct Setup<'a> {
    /// Holds `/ticker.wasm`.
    pub ticker_root: &'a Path,
    /// Holds `/pause` (the native sandbox stand-in).
    pub pause_root: &'a Path,
    /// Holds `/bin/busybox`.
    pub busybox_root: &'a Path,
    /// Containers per scenario at the second measurement.
    pub count: usize,
    /// Concurrent `ctr run -d` / removal workers.
    pub workers: usize,
    /// Wait after the last start before reading PSS, so lazy allocations have happened.
    pub settle: Duration,
}

/// All three scenarios, one after the other, each cleaned up before the next starts.
pub fn measure_all(containerd: &Containerd, setup: &Setup) -> Result<Vec<Scenario>> {
    warm_compile_cache(containerd, setup)?;
    Ok(vec![
        measure(containerd, setup, Layout::WasmSeparate)?,
        measure(containerd, setup, Layout::WasmPod)?,
        measure(containerd, setup, Layout::Runc)?,
    ])
}

/// Runs the ticker once to the end, so the shim's compile cache holds it before anything is
/// measured: otherwise the first scenario's first shim alone would carry the compiler's
/// memory, and its "one container" figure would not compare with the others'. A node that
/// has run a module before is in this state too.
fn warm_compile_cache(containerd: &Containerd, setup: &Setup) -> Result<()> {
    let root = setup.ticker_root.display().to_string();
    let args = [
        "run",
        "--rm",
        "--null-io",
        "--runtime",
        RUNTIME,
        "--rootfs",
        &root,
        "mem-warm-up",
        "/ticker.wasm",
        "1",
        "0",
    ];
    let out = containerd.ctr(&args);
    if out.code != 0 {
        bail!("warming the compile cache: {out:?}");
    }
    wait_for_no_shims(containerd, Duration::from_secs(30))
}

/// Starts one container (after the sandbox, for a pod), reads PSS, starts the rest, checks
/// the layout, reads PSS again, and removes everything, waiting until no shim is left.
fn measure(containerd: &Containerd, setup: &Setup, layout: Layout) -> Result<Scenario> {
    let (key, label, prefix) = match layout {
        Layout::WasmSeparate => ("wasm_separate", "wasm ticker, one shim each", "ms"),
        Layout::WasmPod => ("wasm_pod", "wasm ticker, one pod shim (+sandbox)", "mp"),
        Layout::Runc => ("runc", "runc busybox sleep, one shim each", "mr"),
    };
    let pod = format!("{prefix}-pod");
    let launches: Vec<Launch> = (0..setup.count)
        .map(|i| launch(setup, layout, &pod, &format!("{prefix}-{i}")))
        .collect();
    let ids: Vec<String> = launches.iter().map(|l| l.id.clone()).collect();
    // Declared first, dropped last: the pod's containers go before its sandbox.
    let sandbox = Fleet::new(containerd, setup.workers);
    let containers = Fleet::new(containerd, setup.workers);
    if layout == Layout::WasmPod {
        sandbox.start(&[sandbox_launch(setup, &pod)])?;
    }
    containers.start(&launches[..1])?;
    let one = settled_sample(containerd, setup, &ids[..1], layout)?;
    containers.start(&launches[1..])?;
    let at_count = settled_sample(containerd, setup, &ids, layout)?;
    containers.remove_all()?;
    sandbox.remove_all()?;
    wait_for_no_shims(containerd, Duration::from_secs(60))?;
    Ok(Scenario {
        key,
        label,
        layout,
        count: setup.count,
        one,
        at_count,
    })
}

/// Waits `settle`, checks every container runs in the expected layout, and reads PSS.
fn settled_sample(
    containerd: &Containerd,
    setup: &Setup,
    ids: &[String],
    layout: Layout,
) -> Result<PssSample> {
    std::thread::sleep(setup.settle);
    check_layout(containerd, ids, layout)?;
    Ok(pss::containerd_children(containerd))
}

/// Fails unless the running containers sit in the shims `layout` promises. A wasm task's
/// pid is its own process, started by the shim serving it, so its parent names the shim:
/// one distinct parent per container for separate shims, a single one (the only wasmtime
/// shim of this containerd) for the pod.
pub fn check_layout(containerd: &Containerd, ids: &[String], layout: Layout) -> Result<()> {
    let running = expect_running(containerd, ids)?;
    let shims = containerd.shim_pids();
    let runc = containerd.runc_shim_pids();
    let groups: BTreeSet<Option<u32>> = ids
        .iter()
        .filter_map(|id| running.get(id))
        .map(|pid| integration::parent_of(*pid))
        .collect();
    let ok = match layout {
        Layout::WasmSeparate => {
            shims.len() == ids.len()
                && groups.len() == ids.len()
                && groups.iter().all(|g| g.is_some_and(|g| shims.contains(&g)))
        }
        // The sandbox's runc shim is the only runc shim.
        Layout::WasmPod => {
            shims.len() == 1 && runc.len() == 1 && groups == BTreeSet::from([Some(shims[0])])
        }
        Layout::Runc => shims.is_empty() && runc.len() == ids.len(),
    };
    if !ok {
        bail!(
            "{layout:?} with {} containers: wasmtime shims {shims:?}, runc shims {runc:?}, \
             task parents {groups:?}",
            ids.len()
        );
    }
    Ok(())
}

/// `ctr run -d` arguments for container `id` of a scenario. All run on the host network and
/// with no stdio, so neither a network namespace nor an unread FIFO differs between them.
fn launch(setup: &Setup, layout: Layout, pod: &str, id: &str) -> Launch {
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    push(&["--net-host", "--null-io"]);
    match layout {
        Layout::Runc => {
            push(&["--rootfs", &setup.busybox_root.display().to_string(), id]);
            push(&["/bin/busybox", "sleep", "1000000"]);
        }
        Layout::WasmSeparate | Layout::WasmPod => {
            push(&["--runtime", RUNTIME]);
            if layout == Layout::WasmPod {
                let sandbox_id = format!("{SANDBOX_ID}={pod}");
                let container_type = format!("{CONTAINER_TYPE}=container");
                push(&["--annotation", &sandbox_id, "--annotation", &container_type]);
            }
            push(&["--rootfs", &setup.ticker_root.display().to_string(), id]);
            // One tick, then a 10 s sleep, forever: long-running and nearly idle.
            push(&["/ticker.wasm", "0", "10000"]);
        }
    }
    Launch {
        id: id.to_string(),
        args,
    }
}

/// The pod's sandbox: the native pause, marked as CRI marks a sandbox, through our runtime
/// (which hands it to a runc shim, as under Kubernetes). Its id is the pod's id.
fn sandbox_launch(setup: &Setup, pod: &str) -> Launch {
    let sandbox_id = format!("{SANDBOX_ID}={pod}");
    let container_type = format!("{CONTAINER_TYPE}=sandbox");
    let root = setup.pause_root.display().to_string();
    let args = [
        "--net-host",
        "--null-io",
        "--runtime",
        RUNTIME,
        "--annotation",
        &sandbox_id,
        "--annotation",
        &container_type,
        "--rootfs",
        &root,
        pod,
        "/pause",
    ];
    Launch {
        id: pod.to_string(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}
