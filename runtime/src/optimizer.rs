//! Background optimization: the optimized (Cranelift) code of programs that started on
//! baseline (Winch) code, compiled after the start and stored in the compile cache, so the
//! next start of the program runs optimized code.
//!
//! One thread per process takes one program at a time, so memory stays bounded by one
//! compile, and has it compiled at the lowest CPU priority, so the containers that run
//! meanwhile keep the cores: by a helper process at the kernel's idle priority when the host
//! set one ([`crate::compile_process`]), else on that thread at nice 19 (the optimizing
//! engine then does not spread the compile over a pool).
//! A process that confines itself ([`crate::set_single_threaded_compilation`]) never
//! starts it: the host that validated the program (the shim) optimizes it.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::Engine;

use crate::artifact::Artifact;
use crate::cache::{compile_cache, CompileCache};
use crate::compile_process::HelperFailure;
use crate::digest_memo::WasmDigest;
use crate::engine::{compatibility, optimizing_engine, EngineFamily, Tier};
use crate::error::EngineError;
use crate::handover::CheckedEntry;
#[cfg(doc)]
use crate::handover::HandoverDir;
use crate::settings::single_threaded;
use crate::source::ProgramSource;

/// One program to optimize.
struct Job {
    guest_path: String,
    /// The program's bytes, copied: holding its file open would keep the container's
    /// rootfs (or volume) mounted after its Delete for as long as the job waits and runs.
    wasm: Vec<u8>,
    digest: WasmDigest,
    /// The engines that run it: the optimized code is stored for that family's.
    family: EngineFamily,
    /// Compiles with the given engine to an artifact, for the program's kind.
    compile: fn(&Engine, &[u8]) -> wasmtime::Result<Vec<u8>>,
    /// That kind, for a compile helper (see [`crate::compile_process`]).
    what: &'static str,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Every digest asked for in this process: each program is optimized once.
    asked: HashSet<WasmDigest>,
    /// A job is being compiled.
    busy: bool,
    thread_started: bool,
}

struct Queue {
    state: Mutex<State>,
    changed: Condvar,
}

fn queue() -> &'static Queue {
    static QUEUE: OnceLock<Queue> = OnceLock::new();
    QUEUE.get_or_init(|| Queue {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    })
}

fn lock(queue: &Queue) -> MutexGuard<'_, State> {
    queue.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asks for the optimized code of the program `source` (whose sha256 is `digest`), which
/// runs on baseline code of `family`'s engines. Does nothing in a confining process or
/// without a cache.
pub(crate) fn request<T: Artifact>(
    source: &mut ProgramSource,
    digest: WasmDigest,
    family: EngineFamily,
) {
    if single_threaded() || compile_cache().is_none() {
        return;
    }
    if lock(queue()).asked.contains(&digest) {
        return;
    }
    // A remembered program was not read: read now (once per program and shim).
    let wasm = match source.bytes() {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => {
            log::debug!("{}: not optimized: {e}", source.guest_path());
            return;
        }
    };
    let queue = queue();
    let mut state = lock(queue);
    if !state.asked.insert(digest) {
        return;
    }
    state.jobs.push_back(Job {
        guest_path: source.guest_path().to_string(),
        wasm,
        digest,
        family,
        compile: T::precompile,
        what: T::WHAT,
    });
    if !state.thread_started {
        match std::thread::Builder::new()
            .name("wasm-optimize".into())
            .spawn(work)
        {
            Ok(_) => state.thread_started = true,
            Err(e) => {
                log::warn!("no background optimization: starting its thread: {e}");
                state.jobs.clear();
                return;
            }
        }
    }
    queue.changed.notify_all();
}

/// How many optimizations are queued or running in this process.
pub fn pending_optimizations() -> usize {
    let state = lock(queue());
    state.jobs.len() + usize::from(state.busy)
}

/// Waits until no optimization is queued or running, for at most `timeout`; returns whether
/// none is left. A host that is about to exit calls this so a first start's optimization is
/// not lost.
pub fn wait_for_optimizations(timeout: Duration) -> bool {
    let queue = queue();
    let deadline = Instant::now() + timeout;
    let mut state = lock(queue);
    while !state.jobs.is_empty() || state.busy {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        state = queue
            .changed
            .wait_timeout(state, left)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    true
}

fn work() {
    // SAFETY: setpriority on this thread's own id (Linux applies a thread id's nice value to
    // that thread alone).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
    let queue = queue();
    loop {
        let job = {
            let mut state = lock(queue);
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    state.busy = true;
                    break job;
                }
                state = queue.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        optimize(job);
        lock(queue).busy = false;
        queue.changed.notify_all();
    }
}

fn optimize(job: Job) {
    let Some(cache) = compile_cache() else {
        return;
    };
    if let Err(e) = optimize_into(cache, &job) {
        log::warn!("{}: not optimized: {e}", job.guest_path);
    }
}

/// Why a program was not optimized: logged, and the program keeps its baseline code.
#[derive(Debug, Error)]
enum NotOptimized {
    /// The engine the code is for, or the one that compiles it, could not be made.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The compile cache's directory went away (containerd's state removed).
    #[error("{} is gone", .0.display())]
    CacheGone(PathBuf),
    /// The program's bytes are not those whose digest it was asked for under.
    #[error("it changed since it started")]
    Changed,
    /// The compile helper stored nothing.
    #[error(transparent)]
    Helper(#[from] HelperFailure),
    /// This process's optimizing engine makes code its target engine would not load.
    #[error("the optimizing engine's code would not load in the engine that runs it")]
    Incompatible,
    /// wasmtime would not compile it with the optimizing engine.
    #[error("the optimizing compile failed: {0:#}")]
    Compile(#[source] wasmtime::Error),
}

/// Compiles `job`'s program with the optimizing engine and stores it in `cache` for the
/// shared engine, in place of its baseline entry, unless another process of the node is at
/// it or has done it: the background claim on the entry (a lock file of its own, so a
/// foreground compile of the same entry, say a precompile task's, never waits for this
/// lowest-priority one) says which process optimizes.
fn optimize_into(cache: &CompileCache, job: &Job) -> Result<(), NotOptimized> {
    let started = Instant::now();
    let target = job.family.engine(Tier::Optimized)?;
    if cache.has_entry(target, &job.digest) {
        return Ok(());
    }
    // The cache's directory went away (containerd's state removed): nothing to keep it for.
    if !cache.dir().is_dir() {
        return Err(NotOptimized::CacheGone(cache.dir().to_path_buf()));
    }
    let Some(_claim) = cache.claim_background(target, &job.digest) else {
        log::debug!("{}: another process optimizes it", job.guest_path);
        return Ok(());
    };
    if cache.has_entry(target, &job.digest) {
        return Ok(());
    }
    if <[u8; 32]>::from(Sha256::digest(&job.wasm)) != job.digest {
        return Err(NotOptimized::Changed);
    }
    // Stored for the family's optimized engine, which loads it. A foreground compile that
    // stored it meanwhile made the same code.
    let entry = cache.entry(target, &job.digest);
    // A helper checks its own engine against the target's; only an in-process compile needs
    // this process's optimizing engine.
    match crate::compile_process::store_in_helper(job.what, target, &entry, &job.wasm) {
        Some(stored) => {
            stored?;
            cache.evict(&entry);
        }
        None => {
            let engine = optimizing_engine()?;
            // The target differs in its allocator (the serving engine's pool) or its
            // compilation threads, neither of which may change what code it loads.
            if compatibility(target) != compatibility(engine) {
                return Err(NotOptimized::Incompatible);
            }
            let artifact = (job.compile)(engine, &job.wasm).map_err(NotOptimized::Compile)?;
            if !cache.dir().is_dir() {
                return Err(NotOptimized::CacheGone(cache.dir().to_path_buf()));
            }
            if !cache.has_entry(target, &job.digest) {
                cache.put_serialized(target, &job.digest, &artifact);
            }
        }
    }
    // The baseline entry is never loaded again once the optimized one is there: its room
    // in the size bound goes back to other programs. (A process running it keeps its
    // mapping.)
    if let Ok(baseline) = job.family.engine(Tier::Baseline) {
        cache.remove(baseline, &job.digest);
    }
    log::info!(
        "{}: optimized code compiled in the background in {:.1} s; the next start runs it",
        job.guest_path,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A program that runs on baseline code and whose optimized code is on its way to the
/// compile cache: a host keeps this to hand that code, once there, to the process that
/// serves the program (an HTTP component switches code while it serves).
#[derive(Debug, Clone)]
pub struct PendingOptimization {
    guest_path: String,
    digest: WasmDigest,
    family: EngineFamily,
}

impl PendingOptimization {
    pub(crate) fn new(guest_path: &str, digest: WasmDigest, family: EngineFamily) -> Self {
        PendingOptimization {
            guest_path: guest_path.to_string(),
            digest,
            family,
        }
    }

    /// The program, as its container names it.
    pub fn guest_path(&self) -> &str {
        &self.guest_path
    }

    /// Waits up to `timeout`, and while `wanted` says so, for the optimized code to be in
    /// the compile cache (stored by this process's optimizer or another's), and returns its
    /// entry, opened and checked, to hand over (see [`HandoverDir::put`]). `None` if it did
    /// not come (the compile failed, or took longer) or is no longer wanted.
    pub fn wait(&self, timeout: Duration, wanted: impl Fn() -> bool) -> Option<CheckedEntry> {
        let cache = compile_cache()?;
        let engine = self.family.engine(Tier::Optimized).ok()?;
        let deadline = Instant::now() + timeout;
        let queue = queue();
        while wanted() {
            if let Some(file) = cache.open_sound(engine, &self.digest) {
                return Some(CheckedEntry(file));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Woken when a job of this process ends; another process's compile, or the
            // end of the want, is noticed within a second.
            let state = lock(queue);
            let _ = queue
                .changed
                .wait_timeout(state, left.min(Duration::from_secs(1)));
        }
        None
    }
}
