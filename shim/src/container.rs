//! One wasm container: its main program, its execs, its rootfs and the container-wide
//! controls (pause, memory limit) they share.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskIO, TaskPaused, TaskResumed,
};
use oci_spec::runtime::{LinuxResources, Process as SpecProcess, Spec};
use runtime::{Controls, CpuUsage, WasiPlan};

use crate::clock::timestamp;
use crate::confine::Confinement;
use crate::error::{ShimError, ShimResult};
use crate::events::Publisher;
use crate::hooks::{Hooks, Phase};
use crate::lifecycle::{Exit, Lifecycle};
use crate::mount::{self, RootfsMount};
use crate::netns::NetworkPlan;
use crate::process::{lock, Process, ProcessParams};
use crate::stdio::StdioPaths;

/// What a Create request asks for, in the shim's own terms.
pub struct CreateParams {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// Mounts that make up the rootfs (empty when the spec's root is already in place),
    /// as reported in the create event.
    pub rootfs: Vec<containerd_shim_protos::api::Mount>,
    /// The rootfs, mounted.
    pub mount: RootfsMount,
    /// The bundle's spec.
    pub spec: Spec,
    /// Where stdio goes.
    pub stdio: StdioPaths,
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

/// A wasm container. Shared between the task service and its programs' threads.
pub struct Container {
    /// Task id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// The main program.
    pub init: Arc<Process>,
    execs: Mutex<Execs>,
    /// The spec execs start from (mounts, env, cwd).
    spec: Spec,
    rootfs: PathBuf,
    network: NetworkPlan,
    /// Pause and memory, shared by the main program and every exec, as a cgroup is.
    controls: Controls,
    mounted_rootfs: Option<PathBuf>,
    publisher: Publisher,
    /// The spec's OCI hooks, run at Create, Start and Delete.
    hooks: Hooks,
}

/// The execs of a container. One lock covers the map, the ids being loaded and the end of
/// the main program, so an exec can never join a container whose main program has ended.
#[derive(Default)]
struct Execs {
    processes: HashMap<String, Arc<Process>>,
    /// Ids whose Exec is loading its program.
    loading: HashSet<String>,
    /// Set once the main program ended (or the container is deleted): no more execs.
    closed: bool,
}

/// Releases an exec id reserved while its program loads, however the Exec ends.
struct Loading<'a> {
    container: &'a Container,
    exec_id: String,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        lock(&self.container.execs).loading.remove(&self.exec_id);
    }
}

fn memory_limit_of(resources: Option<&LinuxResources>) -> Option<u64> {
    resources
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .map(|l| l.max(0) as u64)
}

impl Container {
    /// Prepares a container whose rootfs is mounted: reads the spec, opens stdio and
    /// compiles the program on a new thread, which then waits for Start. Any failure leaves
    /// nothing behind: no mount, no thread, no open FIFO.
    pub fn create(params: CreateParams, publisher: Publisher) -> ShimResult<Arc<Container>> {
        let spec = params.spec;
        let guard = params.mount;
        let rootfs = rootfs_dir(&params.bundle, &spec, guard.is_mounted())?;

        let plan = WasiPlan::from_spec(&spec, &rootfs)?;
        for (destination, why) in &plan.preopens.skipped {
            log::debug!("{}: mount {destination} not preopened: {why}", params.id);
        }
        let controls = Controls::default();
        let limit = memory_limit_of(spec.linux().as_ref().and_then(|l| l.resources().as_ref()));
        controls.gauge.set_limit(limit.unwrap_or(0));
        let network = NetworkPlan::from_spec(&spec);
        let init = Process::create(
            ProcessParams {
                container_id: params.id.clone(),
                exec_id: None,
                plan,
                stdio: params.stdio,
                network: network.clone(),
                confinement: Confinement::from_process(spec.process().as_ref()),
                controls: controls.clone(),
            },
            publisher.clone(),
        )?;
        // The create-time hooks see the program thread's pid, already in the container's
        // network namespace, and run before Create returns: nothing of the program has run.
        let hooks = Hooks::from_spec(&spec, &params.id, &params.bundle);
        for phase in [
            Phase::Prestart,
            Phase::CreateRuntime,
            Phase::CreateContainer,
        ] {
            if let Err(e) = hooks.run(phase, init.pid) {
                init.discard();
                return Err(e);
            }
        }
        let container = Arc::new(Container {
            id: params.id,
            bundle: params.bundle,
            init,
            execs: Mutex::new(Execs::default()),
            spec,
            rootfs,
            network,
            controls,
            mounted_rootfs: guard.keep(),
            publisher,
            hooks,
        });
        let stdio = &container.init.stdio;
        container.publisher.publish(
            "/tasks/create",
            &TaskCreate {
                container_id: container.id.clone(),
                bundle: container.bundle.display().to_string(),
                rootfs: params.rootfs,
                io: Some(TaskIO {
                    stdin: stdio.stdin.clone(),
                    stdout: stdio.stdout.clone(),
                    stderr: stdio.stderr.clone(),
                    terminal: stdio.terminal,
                    ..Default::default()
                })
                .into(),
                pid: container.init.pid,
                ..Default::default()
            },
        );
        Ok(container)
    }

    /// Runs the main program. When it ends, the execs still running are killed and their
    /// exits reported before its own: a Linux container's processes die with its init, and
    /// runc's shim reports the init's exit last.
    ///
    /// A failing startContainer hook fails Start, and the program never runs: it is ended as
    /// if killed before Start (137), so containerd sees an exit it can clean up after.
    pub fn start(self: &Arc<Self>) -> ShimResult<u32> {
        if let Err(e) = self.hooks.run(Phase::StartContainer, self.init.pid) {
            let _ = self.init.kill(libc::SIGKILL as u32);
            return Err(e);
        }
        let me: Weak<Container> = Arc::downgrade(self);
        let pid = self.init.start(Box::new(move || {
            if let Some(container) = me.upgrade() {
                for exec in container.close_execs() {
                    let _ = exec.kill(libc::SIGKILL as u32);
                    exec.wait();
                }
            }
        }))?;
        // Failures are logged inside: OCI lets poststart hooks fail without effect.
        let _ = self.hooks.run(Phase::Poststart, pid);
        Ok(pid)
    }

    /// Refuses further execs and returns the current ones.
    fn close_execs(&self) -> Vec<Arc<Process>> {
        let mut execs = lock(&self.execs);
        execs.closed = true;
        execs.processes.values().cloned().collect()
    }

    /// The process `exec_id` names: the main program for "".
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

    /// Adds an exec: another wasm program from the container's rootfs, with the container's
    /// mounts, network and memory limit, and the process (args, env, cwd) the request gives.
    /// It is loaded now, so a missing or non-wasm program fails the Exec request itself.
    pub fn exec(&self, params: ExecParams) -> ShimResult<()> {
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
        // A namespace made for the main program is joined through its thread.
        let network = match &self.network {
            NetworkPlan::New => NetworkPlan::Join(format!(
                "/proc/{}/task/{}/ns/net",
                std::process::id(),
                self.init.pid
            )),
            other => other.clone(),
        };
        let process = Process::create(
            ProcessParams {
                container_id: self.id.clone(),
                exec_id: Some(params.exec_id.clone()),
                plan,
                stdio: params.stdio,
                network,
                confinement: Confinement::from_process(spec.process().as_ref()),
                controls: Controls {
                    stopper: Default::default(),
                    ..self.controls.clone()
                },
            },
            self.publisher.clone(),
        )?;
        let mut execs = lock(&self.execs);
        if execs.closed {
            drop(execs);
            process.discard();
            return Err(not_running());
        }
        execs.processes.insert(params.exec_id.clone(), process);
        // Published under the lock: the main program's exit, which takes it to close the
        // execs, cannot be reported before this exec was announced.
        self.publisher.publish(
            "/tasks/exec-added",
            &TaskExecAdded {
                container_id: self.id.clone(),
                exec_id: params.exec_id,
                ..Default::default()
            },
        );
        Ok(())
    }

    /// Starts exec `exec_id`, if the main program still runs.
    pub fn start_exec(&self, exec_id: &str) -> ShimResult<u32> {
        let process = {
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
            process
        };
        // If the main program ends now, closing the execs kills this one, started or not.
        process.start(Box::new(|| {}))
    }

    /// Deletes exec `exec_id` once it has ended.
    pub fn delete_exec(&self, exec_id: &str) -> ShimResult<(u32, Exit)> {
        let process = self.process(exec_id)?;
        let exit = process.delete()?;
        lock(&self.execs).processes.remove(exec_id);
        Ok((process.pid, exit))
    }

    /// Signals the main program, or with `all` every program of the container.
    pub fn kill(&self, signal: u32, all: bool) -> ShimResult<()> {
        if all {
            for exec in self.execs() {
                let _ = exec.kill(signal);
            }
        }
        self.init.kill(signal)
    }

    /// Freezes every program of the container at its next safe point.
    pub fn pause(&self) -> ShimResult<()> {
        if !matches!(self.init.lifecycle(), Lifecycle::Running) {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not running",
                self.id
            )));
        }
        if !self.controls.pauser.pause() {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is already paused",
                self.id
            )));
        }
        log::info!("paused {}", self.id);
        self.publisher.publish(
            "/tasks/paused",
            &TaskPaused {
                container_id: self.id.clone(),
                ..Default::default()
            },
        );
        Ok(())
    }

    /// Lets a paused container's programs continue where they stopped.
    pub fn resume(&self) -> ShimResult<()> {
        if !self.controls.pauser.resume() {
            return Err(ShimError::FailedPrecondition(format!(
                "task {} is not paused",
                self.id
            )));
        }
        log::info!("resumed {}", self.id);
        self.publisher.publish(
            "/tasks/resumed",
            &TaskResumed {
                container_id: self.id.clone(),
                ..Default::default()
            },
        );
        Ok(())
    }

    /// Whether the container is paused (its programs are frozen).
    pub fn is_paused(&self) -> bool {
        self.controls.pauser.is_paused()
    }

    /// Applies new resources to the running container. The memory limit is what a wasm
    /// container can honour; CPU shares and the rest do not apply to a thread of the shim
    /// and are ignored.
    pub fn update(&self, resources: &LinuxResources) {
        if let Some(limit) = memory_limit_of(Some(resources)) {
            log::info!("{}: memory limit set to {limit} bytes", self.id);
            self.controls.gauge.set_limit(limit);
        }
        if resources.cpu().is_some() || resources.pids().is_some() {
            log::debug!("{}: cpu and pids resources do not apply to wasm", self.id);
        }
    }

    /// Releases everything the container holds. Refused while the main program runs:
    /// containerd kills and waits first. Execs still known are ended and joined.
    pub fn delete(&self) -> ShimResult<Exit> {
        let exit = self.init.delete()?;
        // The main program has ended, so its exit killed the execs; reap them.
        let execs: Vec<Arc<Process>> = {
            let mut execs = lock(&self.execs);
            execs.closed = true;
            execs.processes.drain().map(|(_, e)| e).collect()
        };
        for exec in execs {
            let _ = exec.kill(libc::SIGKILL as u32);
            exec.wait();
            let _ = exec.delete();
        }
        // A paused container being deleted has no program left to thaw, but nothing must
        // stay parked on the pauser either.
        self.controls.pauser.resume();
        if let Some(rootfs) = &self.mounted_rootfs {
            mount::unmount_all(rootfs);
        }
        // Logged inside on failure; the container is gone either way.
        let _ = self.hooks.run(Phase::Poststop, self.init.pid);
        self.publisher.publish(
            "/tasks/delete",
            &TaskDelete {
                container_id: self.id.clone(),
                id: self.id.clone(),
                pid: self.init.pid,
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            },
        );
        Ok(exit)
    }

    /// CPU time of all the container's programs (the main one and the current execs).
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

    /// The memory limit in bytes (0: none).
    pub fn memory_limit(&self) -> u64 {
        self.controls.gauge.limit()
    }

    /// Linear memory of the container's instances (current, peak), in bytes.
    pub fn memory(&self) -> (u64, u64) {
        (self.controls.gauge.current(), self.controls.gauge.peak())
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
