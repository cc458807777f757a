//! One wasm container: its main process, its execs, its cgroup, its rootfs and hooks.
//!
//! Each process of the container is a Linux process of its own (see `spawn`, `child`); the
//! container is what they share: the cgroup (limits, freezer, stats), the namespaces of the
//! main process (which execs join) and the rootfs. No events are raised here; the task
//! service and the exit loop raise them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use oci_spec::runtime::{LinuxResources, Process as SpecProcess, Spec};
use runtime::{HandoverDir, PendingOptimization, Program, WasiPlan};

use crate::cache_config::OPTIMIZATION_GRACE;
use crate::cgroup::{cgroups_path, CgroupError, ContainerCgroup, Hierarchies};
use crate::error::{ShimError, ShimResult};
use crate::launch::{Launch, ShimIdentity};
use crate::task::hooks::{Hooks, Phase};
use crate::task::lifecycle::{Exit, Lifecycle};
use crate::task::mount::{self, RootfsMount};
use crate::task::oom_watch::{OomAlarm, OomWatch};
use crate::task::process::{lock, CpuUsage, Process};
use crate::task::spawn::{ChildCommand, Prepared};
use crate::task::stdio_fifos::StdioPaths;

/// What a Create request asks for, in the shim's own terms.
pub struct CreateParams {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The rootfs, mounted.
    pub mount: RootfsMount,
    /// The bundle's spec.
    pub spec: Spec,
    /// Where stdio goes.
    pub stdio: StdioPaths,
    /// What its processes (the main one and its execs) execute.
    pub child: ChildCommand,
}

/// What an Exec request asks for.
pub struct ExecParams {
    /// The exec id, unique within the container.
    pub exec_id: String,
    /// The process to run, as the OCI `process` object containerd sends.
    pub process: SpecProcess,
    /// Where its stdio goes.
    pub stdio: StdioPaths,
}

/// A wasm container. Shared between the task service and the exit loop.
pub struct Container {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The main process.
    pub init: Arc<Process>,
    execs: Mutex<Execs>,
    /// The spec execs start from (mounts, env, cwd).
    spec: Spec,
    rootfs: PathBuf,
    identity: ShimIdentity,
    /// The cgroup `linux.cgroupsPath` names; `None` when the spec names none.
    cgroup: Option<ContainerCgroup>,
    paused: Mutex<bool>,
    /// The kernel's OOM notices for the cgroup, watched while the container exists.
    oom: Option<Arc<OomAlarm>>,
    mounted_rootfs: Option<PathBuf>,
    /// The spec's OCI hooks, run at Create, Start and Delete.
    hooks: Hooks,
    /// Where a server on baseline code gets its optimized code; removed with the container.
    handover: Option<Arc<HandoverDir>>,
    /// What its execs execute.
    child: ChildCommand,
}

/// The execs of a container. One lock covers the map, the ids being created and the end of
/// the main process, so an exec can never join a container whose main process has ended.
#[derive(Default)]
struct Execs {
    processes: HashMap<String, Arc<Process>>,
    /// Ids whose Exec is starting its process.
    loading: HashSet<String>,
    /// Set once the main process ended (or the container is deleted): no more execs.
    closed: bool,
}

/// Releases an exec id reserved while its process starts, however the Exec ends.
struct Loading<'a> {
    container: &'a Container,
    exec_id: String,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        lock(&self.container.execs).loading.remove(&self.exec_id);
    }
}

/// The task API error for a cgroup failure, its whole chain of causes in the message.
fn cgroup_error(e: CgroupError) -> ShimError {
    let mut message = format!("cgroup: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(source) = cause {
        message.push_str(&format!(": {source}"));
        cause = source.source();
    }
    match e {
        CgroupError::InvalidPath { .. } | CgroupError::InvalidValue { .. } => {
            ShimError::InvalidArgument(message)
        }
        _ => ShimError::Internal(message),
    }
}

/// Loads the program `plan` names once in the shim, unless the compile cache already holds
/// it: a first start compiles it here with every core, into the cache the container's
/// process loads from, and a missing, corrupt or unlinkable program fails the request with
/// its reason. A cached program is not loaded twice: the process's own load (which would
/// report the same errors) is then the only one, and the start waits for no other.
///
/// A pod's shim tiers too: it lives in the pod's cgroup, but its background compiles run in
/// helper processes it moves out of it (see `compile_helper`).
///
/// Returns, for an HTTP component that will serve baseline code, its optimized code on the
/// way (see [`hand_over_optimized_code`]).
fn validate(name: &str, plan: WasiPlan) -> ShimResult<Option<PendingOptimization>> {
    let Some(program) = Program::load_unless_compiled(plan, true)? else {
        return Ok(None);
    };
    log::debug!("{name}: validated {}", program.guest_path());
    let pending = program
        .pending_optimization()
        .filter(|_| program.is_server())
        .cloned();
    if pending.is_some() && !crate::child::handover_supported() {
        // No switch possible (a kernel without detached mounts): a server would keep its
        // baseline code for good, so it starts on optimized code, compiled now, as before
        // tiering. The queued background compile then finds it done.
        log::info!(
            "{name}: {} compiled optimized before it serves (this kernel cannot hand over code)",
            program.guest_path()
        );
        Program::load_unless_compiled(program.plan().clone(), false)?;
        return Ok(None);
    }
    Ok(pending)
}

/// Hands the container's process its optimized code once the compile cache has it, from a
/// thread of its own: an HTTP component switches to it while it serves. The thread holds
/// the handover directory weakly: a container deleted meanwhile (its directory gone with
/// it) ends the wait; a process that never gets its code keeps serving baseline code.
fn hand_over_optimized_code(
    id: &str,
    pending: PendingOptimization,
    handover: Weak<HandoverDir>,
    process: Weak<Process>,
) {
    let name = id.to_string();
    let spawned = std::thread::Builder::new()
        .name("code-upgrade".into())
        .spawn(move || {
            let entry = pending.wait(OPTIMIZATION_GRACE, || handover.strong_count() > 0);
            let (Some(entry), Some(dir)) = (entry, handover.upgrade()) else {
                if handover.strong_count() > 0 {
                    log::info!(
                        "{name}: no optimized code for {} came; it serves baseline code",
                        pending.guest_path()
                    );
                }
                return;
            };
            match dir.put(&entry) {
                Ok(()) => {
                    if let Some(process) = process.upgrade() {
                        process.offer_optimized_code();
                    }
                }
                Err(e) => log::warn!(
                    "{name}: serving baseline code for good: handing over its optimized code: {e}"
                ),
            }
        });
    if let Err(e) = spawned {
        log::warn!(
            "{id}: serving baseline code for good: no thread to wait for optimized code: {e}"
        );
    }
}

/// The handover directory of a server that starts on baseline code; `None` (and a log
/// line) where none can be made: the server then keeps its baseline code.
fn make_handover(id: &str, namespace: &str) -> Option<Arc<HandoverDir>> {
    match HandoverDir::create(namespace, id) {
        Ok(dir) => dir.map(Arc::new),
        Err(e) => {
            log::warn!("{id}: serving baseline code for good: no handover directory: {e}");
            None
        }
    }
}

/// [`validate`] for a precompile-only task (see `precompile`): the optimized code, compiled
/// now if the cache does not hold it yet.
fn precompile(name: &str, plan: WasiPlan) -> ShimResult<()> {
    let program = Program::precompile(plan)?;
    log::info!(
        "{name}: precompiled {} ({} code in the cache)",
        program.guest_path(),
        program.tier()
    );
    Ok(())
}

/// The container's cgroup, made from the spec (none without a `cgroupsPath`).
fn create_cgroup(spec: &Spec) -> ShimResult<Option<ContainerCgroup>> {
    let Some(path) = cgroups_path(spec) else {
        return Ok(None);
    };
    let hierarchies = Hierarchies::discover().map_err(cgroup_error)?;
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    ContainerCgroup::create(&hierarchies, path, resources)
        .map(Some)
        .map_err(cgroup_error)
}

/// Registers the cgroup's OOM notices with the shim's watch. A container whose notices
/// cannot be watched still runs: only its `/tasks/oom` events are missing, which is logged.
fn watch_oom(
    id: &str,
    cgroup: Option<&ContainerCgroup>,
    watch: &Arc<OomWatch>,
) -> Option<Arc<OomAlarm>> {
    let notifier = match cgroup?.oom_notifier()? {
        Ok(notifier) => notifier,
        Err(e) => {
            log::warn!("{id}: no OOM events: {}", cgroup_error(e));
            return None;
        }
    };
    watch
        .watch(id, notifier)
        .inspect_err(|e| log::warn!("{id}: no OOM events: watching the cgroup: {e}"))
        .ok()
}

impl Container {
    /// Prepares a container whose rootfs is mounted: starts the main process, which waits
    /// for Start; while it starts, makes the cgroup and validates and compiles the program
    /// (here, where compilation may use every core; the container's process then maps it
    /// from the compile cache). Any failure leaves nothing behind: no mount, no cgroup, no
    /// process.
    pub fn create(
        params: CreateParams,
        identity: &ShimIdentity,
        oom_watch: &Arc<OomWatch>,
    ) -> ShimResult<Arc<Container>> {
        let spec = params.spec;
        let guard = params.mount;
        let rootfs = rootfs_dir(&params.bundle, &spec, guard.is_mounted())?;
        let plan = WasiPlan::from_spec(&spec, &rootfs)?;
        for (destination, why) in &plan.preopens.skipped {
            // The container's process mounts the spec's /dev tmpfs itself, with its nodes.
            if destination == "/dev" && why.starts_with("tmpfs ") {
                continue;
            }
            log::debug!("{}: mount {destination} not preopened: {why}", params.id);
        }
        let launch = Launch {
            name: format!("task {}", params.id),
            identity: identity.clone(),
            spec: spec.clone(),
            rootfs: rootfs.clone(),
            bundle: params.bundle.clone(),
            stdio: [false; 3],
            terminal: false,
            join: None,
        };
        // Before the process, which starts in it (see `fork_exec`).
        let cgroup = create_cgroup(&spec)?;
        if let Some(cgroup) = &cgroup {
            log::debug!("{}: cgroup {}", params.id, cgroup.path().display());
        }
        let placement = cgroup
            .as_ref()
            .map(ContainerCgroup::placement)
            .unwrap_or_default();
        // Made while the process starts (see `spawn`); kept here for the container.
        let mut pending = None;
        let mut handover = None;
        let prepare = || {
            if crate::precompile::requested(&spec) {
                precompile(&params.id, plan)?;
            } else {
                pending = validate(&params.id, plan)?;
                if pending.is_some() {
                    handover = make_handover(&params.id, &identity.namespace);
                }
            }
            Ok(Prepared {
                handover: handover.as_ref().map(|dir| dir.path().to_path_buf()),
            })
        };
        let created = Process::create(
            &params.child,
            &params.id,
            None,
            launch,
            params.stdio,
            &placement,
            prepare,
        );
        let init = match created {
            Ok(init) => init,
            Err(e) => {
                if let Some(cgroup) = &cgroup {
                    cgroup.remove();
                }
                return Err(e);
            }
        };
        // The create-time hooks see the container's process, already in its namespaces,
        // and run before Create returns: nothing of the program has run.
        let hooks = Hooks::from_spec(&spec, &params.id, &params.bundle);
        for phase in [
            Phase::Prestart,
            Phase::CreateRuntime,
            Phase::CreateContainer,
        ] {
            if let Err(e) = hooks.run(phase, init.pid) {
                init.discard();
                if let Some(cgroup) = &cgroup {
                    cgroup.remove();
                }
                return Err(e);
            }
        }
        let oom = watch_oom(&params.id, cgroup.as_ref(), oom_watch);
        if let (Some(pending), Some(dir)) = (pending, &handover) {
            hand_over_optimized_code(
                &params.id,
                pending,
                Arc::downgrade(dir),
                Arc::downgrade(&init),
            );
        }
        Ok(Arc::new(Container {
            id: params.id,
            bundle: params.bundle,
            init,
            execs: Mutex::new(Execs::default()),
            spec,
            rootfs,
            identity: identity.clone(),
            cgroup,
            paused: Mutex::new(false),
            oom,
            mounted_rootfs: guard.keep(),
            hooks,
            handover,
            child: params.child,
        }))
    }

    /// Runs the startContainer hooks. A failing one fails Start, and the program never
    /// runs: the process is killed and its exit recorded before Start answers, so the
    /// client's next step (ctr deletes the task and the container) finds it stopped.
    pub fn before_start(&self) -> ShimResult<()> {
        if let Err(e) = self.hooks.run(Phase::StartContainer, self.init.pid) {
            let _ = self.init.kill(libc::SIGKILL as u32);
            self.init.wait();
            return Err(e);
        }
        Ok(())
    }

    /// Runs the poststart hooks; their failures are logged inside and, as OCI lets them,
    /// change nothing.
    pub fn after_start(&self) {
        let _ = self.hooks.run(Phase::Poststart, self.init.pid);
    }

    /// Refuses further execs and returns the current ones.
    pub fn close_execs(&self) -> Vec<Arc<Process>> {
        let mut execs = lock(&self.execs);
        execs.closed = true;
        execs.processes.values().cloned().collect()
    }

    /// Kills whatever is left in the container's cgroup once its main process has ended:
    /// as in a Linux container, nothing outlives the container's init.
    pub fn kill_remaining(&self) {
        if let Some(cgroup) = &self.cgroup {
            for pid in cgroup.pids() {
                // SAFETY: kill with a pid from the cgroup and a valid signal.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }

    /// Publishes `/tasks/oom` if the kernel gave an OOM notice for the container's cgroup
    /// that was not published yet; returns whether it did. The exit loop asks before it
    /// publishes an exit, so the notice comes first.
    pub fn check_oom(&self) -> bool {
        self.oom.as_ref().is_some_and(|alarm| alarm.check())
    }

    /// The process `exec_id` names: the main process for "".
    pub fn process(&self, exec_id: &str) -> ShimResult<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        lock(&self.execs)
            .processes
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                ShimError::NotFound(format!("task {}: exec {exec_id} not found", self.id))
            })
    }

    /// The container's execs, in no particular order.
    pub fn execs(&self) -> Vec<Arc<Process>> {
        lock(&self.execs).processes.values().cloned().collect()
    }

    /// Adds an exec: another wasm program from the container's rootfs, in a process that
    /// joins the main process's namespaces and the container's cgroup, with the process
    /// (args, env, cwd, user) the request gives. It is loaded now, so a missing or non-wasm
    /// program fails the Exec request itself. `announce` runs once the exec is registered,
    /// under the lock the main process's end takes, so its exit cannot be reported first.
    pub fn exec(&self, params: ExecParams, announce: impl FnOnce()) -> ShimResult<Arc<Process>> {
        let not_running = || {
            ShimError::FailedPrecondition(format!(
                "task {} is not running; exec needs a running container",
                self.id
            ))
        };
        let _loading = {
            let mut execs = lock(&self.execs);
            if execs.closed || !matches!(self.init.lifecycle(), Lifecycle::Running) {
                return Err(not_running());
            }
            // Its process would join the frozen cgroup and never answer; runc refuses too.
            if self.is_paused() {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {} is paused; resume it before exec",
                    self.id
                )));
            }
            if execs.processes.contains_key(&params.exec_id)
                || !execs.loading.insert(params.exec_id.clone())
            {
                return Err(ShimError::AlreadyExists(format!(
                    "task {}: exec {} already exists",
                    self.id, params.exec_id
                )));
            }
            Loading {
                container: self,
                exec_id: params.exec_id.clone(),
            }
        };
        let mut spec = self.spec.clone();
        spec.set_process(Some(params.process));
        if let Some(native) = runtime::native_entrypoint(&spec, &self.rootfs) {
            return Err(ShimError::InvalidArgument(format!(
                "exec {}: {} is {}, not wasm; a wasm container can only exec wasm programs",
                params.exec_id, native.guest_path, native.kind
            )));
        }
        let plan = WasiPlan::from_spec(&spec, &self.rootfs)?;
        let launch = Launch {
            name: format!("task {} exec {}", self.id, params.exec_id),
            identity: self.identity.clone(),
            spec,
            rootfs: self.rootfs.clone(),
            bundle: self.bundle.clone(),
            stdio: [false; 3],
            terminal: false,
            join: Some(self.init.pid),
        };
        let name = format!("{} exec {}", self.id, params.exec_id);
        let placement = self
            .cgroup
            .as_ref()
            .map(ContainerCgroup::placement)
            .unwrap_or_default();
        let process = Process::create(
            &self.child,
            &self.id,
            Some(&params.exec_id),
            launch,
            params.stdio,
            &placement,
            || {
                validate(&name, plan)?;
                Ok(Prepared { handover: None })
            },
        )?;
        let mut execs = lock(&self.execs);
        if execs.closed {
            drop(execs);
            process.discard();
            return Err(not_running());
        }
        execs
            .processes
            .insert(params.exec_id.clone(), process.clone());
        announce();
        Ok(process)
    }

    /// The exec `exec_id`, if the main process still runs.
    pub fn startable_exec(&self, exec_id: &str) -> ShimResult<Arc<Process>> {
        let execs = lock(&self.execs);
        let process = execs.processes.get(exec_id).cloned().ok_or_else(|| {
            ShimError::NotFound(format!("task {}: exec {exec_id} not found", self.id))
        })?;
        if execs.closed {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} has stopped; exec {exec_id} cannot start",
                self.id
            )));
        }
        Ok(process)
    }

    /// Forgets exec `exec_id` whose process could not be watched, ending that process.
    pub fn drop_exec(&self, exec_id: &str) {
        if let Some(process) = lock(&self.execs).processes.remove(exec_id) {
            process.discard();
        }
    }

    /// Deletes exec `exec_id` once it has ended.
    pub fn delete_exec(&self, exec_id: &str) -> ShimResult<(u32, Exit)> {
        let process = self.process(exec_id)?;
        let exit = process.delete()?;
        lock(&self.execs).processes.remove(exec_id);
        Ok((process.pid, exit))
    }

    /// Signals the main process, or with `all` every process of the container (all of its
    /// cgroup). A SIGKILL thaws a paused container afterwards: a frozen process cannot die
    /// under the cgroup v1 freezer until it is thawed.
    pub fn kill(&self, signal: u32, all: bool) -> ShimResult<()> {
        let result = if all {
            for exec in self.execs() {
                let _ = exec.kill(signal);
            }
            if let Some(cgroup) = &self.cgroup {
                for pid in cgroup.pids() {
                    // SAFETY: kill with a pid of the container's cgroup.
                    unsafe { libc::kill(pid as i32, signal as i32) };
                }
            }
            match self.init.kill(signal) {
                Err(ShimError::NotFound(_)) => Ok(()),
                other => other,
            }
        } else {
            self.init.kill(signal)
        };
        if signal == libc::SIGKILL as u32 && *lock(&self.paused) {
            let _ = self.resume();
        }
        result
    }

    /// Freezes every process of the container: the cgroup freezer, or SIGSTOP without one.
    pub fn pause(&self) -> ShimResult<()> {
        if !matches!(self.init.lifecycle(), Lifecycle::Running) {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not running",
                self.id
            )));
        }
        let mut paused = lock(&self.paused);
        if *paused {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is already paused",
                self.id
            )));
        }
        match &self.cgroup {
            Some(cgroup) if cgroup.has_freezer() => cgroup.freeze().map_err(cgroup_error)?,
            _ => self.signal_all(libc::SIGSTOP),
        }
        *paused = true;
        log::info!("paused {}", self.id);
        Ok(())
    }

    /// Lets a paused container's processes continue where they stopped.
    pub fn resume(&self) -> ShimResult<()> {
        let mut paused = lock(&self.paused);
        if !*paused {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not paused",
                self.id
            )));
        }
        match &self.cgroup {
            Some(cgroup) if cgroup.has_freezer() => cgroup.thaw().map_err(cgroup_error)?,
            _ => self.signal_all(libc::SIGCONT),
        }
        *paused = false;
        log::info!("resumed {}", self.id);
        Ok(())
    }

    fn signal_all(&self, signal: i32) {
        let _ = self.init.kill(signal as u32);
        for exec in self.execs() {
            let _ = exec.kill(signal as u32);
        }
    }

    /// Whether the container is paused.
    pub fn is_paused(&self) -> bool {
        *lock(&self.paused)
    }

    /// Applies new resources to the running container's cgroup, and a new memory limit to
    /// its programs' linear memory too.
    pub fn update(&self, resources: &LinuxResources) -> ShimResult<()> {
        match &self.cgroup {
            Some(cgroup) => cgroup.update(resources).map_err(cgroup_error)?,
            None => log::info!("{}: no cgroup, only a memory limit applies", self.id),
        }
        let limit = resources
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .map(|l| l.max(0) as u64);
        if let Some(limit) = limit {
            log::info!("{}: memory limit set to {limit} bytes", self.id);
            self.init.set_memory_limit(limit);
            for exec in self.execs() {
                exec.set_memory_limit(limit);
            }
        }
        Ok(())
    }

    /// The container's cgroup, if the spec named one.
    pub fn cgroup(&self) -> Option<&ContainerCgroup> {
        self.cgroup.as_ref()
    }

    /// Releases everything the container holds. Refused while the main process runs:
    /// containerd kills and waits first. Execs still known are ended and waited for.
    pub fn delete(&self) -> ShimResult<Exit> {
        let exit = self.init.delete()?;
        let execs: Vec<Arc<Process>> = {
            let mut execs = lock(&self.execs);
            execs.closed = true;
            execs.processes.drain().map(|(_, e)| e).collect()
        };
        for exec in execs {
            let _ = exec.kill(libc::SIGKILL as u32);
            let _ = exec.delete();
        }
        if let Some(alarm) = &self.oom {
            // Before the removal, which signals a v1 cgroup's eventfd too.
            alarm.stop();
        }
        if let Some(cgroup) = &self.cgroup {
            if *lock(&self.paused) {
                let _ = cgroup.thaw();
            }
            cgroup.remove();
        }
        if let Some(rootfs) = &self.mounted_rootfs {
            mount::unmount_all(rootfs);
        }
        if let Some(handover) = &self.handover {
            handover.remove();
        }
        // Logged inside on failure; the container is gone either way.
        let _ = self.hooks.run(Phase::Poststop, self.init.pid);
        Ok(exit)
    }

    /// CPU time of all the container's processes that still run.
    pub fn cpu(&self) -> CpuUsage {
        let mut total = self.init.cpu();
        for exec in self.execs() {
            let cpu = exec.cpu();
            total.total_ns += cpu.total_ns;
            total.user_ns += cpu.user_ns;
            total.kernel_ns += cpu.kernel_ns;
        }
        total
    }

    /// The memory limit the spec sets, in bytes (0: none).
    pub fn memory_limit(&self) -> u64 {
        self.spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .map(|l| l.max(0) as u64)
            .unwrap_or(0)
    }
}

/// Where the container's root filesystem is: the mounts we just made, or the spec's root
/// (relative to the bundle, or absolute as docker gives it).
pub fn rootfs_dir(bundle: &Path, spec: &Spec, mounted: bool) -> ShimResult<PathBuf> {
    if mounted {
        return Ok(bundle.join("rootfs"));
    }
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let path = if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    };
    if !path.is_dir() {
        return Err(ShimError::InvalidArgument(format!(
            "rootfs {} is not a directory",
            path.display()
        )));
    }
    Ok(path)
}
