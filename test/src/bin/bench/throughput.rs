//! Throughput (issue item 4d): how many short `ctr run --rm` tasks a node gets through when
//! a few clients start them back to back, which is what a job or FaaS workload looks like.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use integration::Containerd;

use crate::fleet::parallel;

/// One runtime's batch.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Tasks run (all succeeded).
    pub tasks: usize,
    /// Concurrent ctr workers.
    pub workers: usize,
    /// Wall time of the whole batch.
    pub elapsed: Duration,
}

impl Throughput {
    /// Tasks completed per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64()
    }

    /// The JSON object of this batch.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "tasks": self.tasks,
            "workers": self.workers,
            "seconds": self.elapsed.as_secs_f64(),
            "tasks_per_second": self.per_second(),
        })
    }
}

/// Runs `tasks` × `ctr run --rm ARGS(i)` on `workers` threads (each takes the next task when
/// its last one ended, so each runs about tasks/workers in sequence), checking that every
/// one printed `expect`. `args(i)` must give task `i` a unique container id.
pub fn run(
    containerd: &Containerd,
    tasks: usize,
    workers: usize,
    args: impl Fn(usize) -> Vec<String> + Sync,
    expect: &str,
) -> Result<Throughput> {
    let started = Instant::now();
    parallel(tasks, workers, |i| {
        let args = args(i);
        let mut argv = vec!["run", "--rm"];
        argv.extend(args.iter().map(String::as_str));
        let out = containerd.ctr(&argv);
        if out.code != 0 || out.stdout != expect {
            bail!("ctr {argv:?}: {out:?}");
        }
        Ok(())
    })?;
    Ok(Throughput {
        tasks,
        workers,
        elapsed: started.elapsed(),
    })
}
