//! The large C/C++ module: the first start of yosys (YoWASP's build: C++, WASI preview 1,
//! about 69 MB of wasm; `make bench` fetches it from PyPI), tiered and with tiering off, one
//! start of each. It uses wasm exceptions, which Winch does not compile, so its tiered
//! start falls back to optimized code first: the row shows what that costs, and the shim
//! log line that says so is looked for.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use integration::Containerd;

/// One first start of the module under each containerd.
#[derive(Debug, Clone)]
pub struct ModuleFirsts {
    /// Size of the module, in bytes.
    pub wasm_bytes: u64,
    /// The first start in the tiered containerd.
    pub tiered: Duration,
    /// The first start with tiering off.
    pub optimized_first: Duration,
    /// The tiered start's shim said the baseline compiler refused the module.
    pub baseline_refused: bool,
}

/// What `yosys -V` prints first.
const VERSION_LINE: &str = "Yosys ";

/// The first starts of `module` (absent: `None`, it is left out), optimized-first before
/// tiered, as the large program's are.
pub fn measure(
    containerd: &Containerd,
    optimized_first: &Containerd,
    module: &Path,
) -> Result<Option<ModuleFirsts>> {
    let Ok(meta) = std::fs::metadata(module) else {
        eprintln!(
            "no {} (make bench fetches it): the large C/C++ module is left out",
            module.display()
        );
        return Ok(None);
    };
    let rootfs = tempfile::tempdir()?;
    std::fs::copy(module, rootfs.path().join("yosys.wasm"))?;
    let optimized = first_start(optimized_first, rootfs.path(), "yosys-optimized")?;
    let tiered = first_start(containerd, rootfs.path(), "yosys-tiered")?;
    let baseline_refused = containerd
        .shim_log()
        .lines()
        .any(|l| l.contains("id=yosys-tiered ") && l.contains("not for the baseline compiler"));
    Ok(Some(ModuleFirsts {
        wasm_bytes: meta.len(),
        tiered,
        optimized_first: optimized,
        baseline_refused,
    }))
}

fn first_start(containerd: &Containerd, rootfs: &Path, id: &str) -> Result<Duration> {
    let started = Instant::now();
    let out = containerd.run_rootfs(&[], rootfs, id, &["/yosys.wasm", "-V"]);
    let elapsed = started.elapsed();
    if out.code != 0 || !out.stdout.starts_with(VERSION_LINE) {
        bail!("yosys -V failed: {out:?}\n{}", containerd.log_tail(20));
    }
    Ok(elapsed)
}
