//! Many containers on one private containerd: started by a few `ctr` workers at once, listed,
//! and removed again, so a benchmark never leaves a task, a shim or a container process
//! behind, even when it fails half-way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Containerd;
use anyhow::{anyhow, bail, Result};

/// How many ids one `ctr task rm` / `ctr containers rm` call takes: ctr accepts several, and
/// one ctr process per chunk instead of per container makes removing a thousand quick.
const REMOVE_CHUNK: usize = 25;

/// Runs `job(0..count)` on `workers` threads that each take the next index when done with
/// the last, like `workers` users running commands one after the other. Stops handing out
/// work at the first error and returns it.
pub fn parallel(
    count: usize,
    workers: usize,
    job: impl Fn(usize) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || failed.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(e) = job(i) {
                    failed.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(e);
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One container to start: its id and the `ctr run -d` arguments (everything after `-d`,
/// including the id).
#[derive(Debug, Clone)]
pub struct Launch {
    /// The container id.
    pub id: String,
    /// Arguments after `ctr run -d`.
    pub args: Vec<String>,
}

/// Containers this benchmark started, removed on [`Fleet::remove_all`] or, best effort, on
/// drop: killing the shims (what dropping [`Containerd`] does) would orphan runc's
/// container processes, so tasks are deleted properly first.
pub struct Fleet<'a> {
    containerd: &'a Containerd,
    workers: usize,
    ids: Mutex<Vec<String>>,
}

impl<'a> Fleet<'a> {
    /// An empty fleet whose starts and removals use `workers` concurrent ctr processes.
    pub fn new(containerd: &'a Containerd, workers: usize) -> Fleet<'a> {
        Fleet {
            containerd,
            workers,
            ids: Mutex::new(Vec::new()),
        }
    }

    /// Starts every launch with `ctr run -d`, `workers` at a time; returns the wall time.
    pub fn start(&self, launches: &[Launch]) -> Result<Duration> {
        let started = Instant::now();
        parallel(launches.len(), self.workers, |i| {
            self.start_one(&launches[i])
        })?;
        Ok(started.elapsed())
    }

    /// `ctr run -d` of one launch, remembered for removal as soon as ctr may have created it.
    fn start_one(&self, launch: &Launch) -> Result<()> {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(launch.id.clone());
        let mut args = vec!["run", "-d"];
        args.extend(launch.args.iter().map(String::as_str));
        let out = self.containerd.ctr(&args);
        if out.code != 0 {
            bail!("ctr run -d {}: {}", launch.id, out.stderr.trim());
        }
        Ok(())
    }

    /// How many containers this fleet has started (or tried to) and not removed yet.
    fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Kills and deletes every task (`ctr task rm -f`) and container, in chunks.
    pub fn remove_all(&self) -> Result<()> {
        let ids = std::mem::take(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()));
        let chunks: Vec<&[String]> = ids.chunks(REMOVE_CHUNK).collect();
        parallel(chunks.len(), self.workers, |i| {
            remove_chunk(self.containerd, chunks[i])
        })
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        if self.len() > 0 {
            if let Err(e) = self.remove_all() {
                eprintln!("cleaning up after a failure: {e:#}");
            }
        }
    }
}

/// Removes the tasks and then the containers of one chunk. A task that never got created
/// (its `ctr run` failed early) makes `task rm` complain, so its answer is not checked; the
/// container removal, which must succeed for every id ctr created, is.
fn remove_chunk(containerd: &Containerd, ids: &[String]) -> Result<()> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut task_rm = vec!["task", "rm", "-f"];
    task_rm.extend(&ids);
    containerd.ctr(&task_rm);
    let mut container_rm = vec!["containers", "rm"];
    container_rm.extend(&ids);
    let out = containerd.ctr(&container_rm);
    let known = containerd.ctr(&["containers", "ls", "-q"]);
    let left: Vec<&&str> = ids
        .iter()
        .filter(|id| known.stdout.lines().any(|l| l.trim() == **id))
        .collect();
    if !left.is_empty() {
        bail!(
            "containers {left:?} could not be removed: {}",
            out.stderr.trim()
        );
    }
    Ok(())
}

/// Task id to pid of every RUNNING task (`ctr task ls`).
pub fn running_tasks(containerd: &Containerd) -> Result<HashMap<String, u32>> {
    let ls = containerd.ctr(&["task", "ls"]);
    if ls.code != 0 {
        bail!("ctr task ls: {}", ls.stderr.trim());
    }
    Ok(ls
        .stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [id, pid, "RUNNING"] => Some((id.to_string(), pid.parse().ok()?)),
                _ => None,
            }
        })
        .collect())
}

/// Fails unless every id in `ids` is a RUNNING task; returns their pids.
pub fn expect_running(containerd: &Containerd, ids: &[String]) -> Result<HashMap<String, u32>> {
    let running = running_tasks(containerd)?;
    let missing: Vec<&String> = ids.iter().filter(|id| !running.contains_key(*id)).collect();
    if !missing.is_empty() {
        bail!("{} tasks are not running: {missing:?}", missing.len());
    }
    Ok(running)
}

/// Waits until neither our shims nor runc shims serve `containerd` any more (each exits
/// after its last task is deleted); fails naming the ones still there.
pub fn wait_for_no_shims(containerd: &Containerd, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let wasm = containerd.shim_pids();
        let runc = containerd.runc_shim_pids();
        if wasm.is_empty() && runc.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "shims still running after {timeout:?}: wasmtime {wasm:?}, runc {runc:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An env var as a number, else `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_runs_every_index_once_and_reports_an_error() {
        let seen = Mutex::new(Vec::new());
        parallel(50, 3, |i| {
            seen.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        let err = parallel(10, 2, |i| if i == 3 { bail!("boom") } else { Ok(()) });
        assert_eq!(err.unwrap_err().to_string(), "boom");
    }
}
