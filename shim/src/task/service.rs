//! The ttrpc task service: one thin method per RPC over the container registry.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use containerd_shim_protos::api::{self, Empty, Status};
use containerd_shim_protos::protobuf::MessageFull;
use containerd_shim_protos::shim::oci::{Options as RuncOptions, ProcessDetails};
use containerd_shim_protos::shim::shim_ttrpc::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskPaused, TaskResumed,
    TaskStart,
};

use crate::clock::timestamp;
use crate::error::{render, ShimError, ShimResult};
use crate::launch::ShimIdentity;
use crate::runc::pod::PodMembership;
use crate::runc::pod_cgroup;
use crate::runc::proxy::{RuncShim, RuncShims, NATIVE_MARKER};
use crate::task::cgroupless_metrics::container_metrics;
use crate::task::container::{rootfs_dir, Container, CreateParams, ExecParams};
use crate::task::events::Publisher;
use crate::task::exits::{Exits, Route};
use crate::task::lifecycle::Lifecycle;
use crate::task::mount::RootfsMount;
use crate::task::oom_watch::OomWatch;
use crate::task::process::Process;
use crate::task::spawn::ChildCommand;
use crate::task::stdio_fifos::StdioPaths;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use oci_spec::runtime::Spec;

/// Serves the tasks of one shim process: wasm containers itself, native ones through the
/// runc shim of their group.
pub struct TaskService {
    tasks: Mutex<Tasks>,
    publisher: Publisher,
    shutdown: Mutex<mpsc::Sender<()>>,
    socket: PathBuf,
    /// The daemon's pid file in the bundle, which `shim delete` reads (see `delete`).
    pid_file: PathBuf,
    runc: RuncShims,
    /// Set once this shim (and its runc shim) moved into the pod's cgroup.
    in_pod_cgroup: AtomicBool,
    /// The shim's cgroups before it joined the pod's (their `cgroup.procs` files), where it
    /// goes back at Shutdown.
    home_cgroups: Mutex<Vec<PathBuf>>,
    /// What the container processes log as.
    identity: ShimIdentity,
    /// Where the container processes' ends are turned into exits.
    exits: Arc<Exits>,
    /// Where the kernel's OOM notices are turned into `/tasks/oom`.
    oom_watch: Arc<OomWatch>,
    /// What container processes execute: this binary's child mode (a stand-in in the unit
    /// tests, see [`TaskService::executing`]).
    child: ChildCommand,
}

/// A task this shim answers for.
#[derive(Clone)]
enum Served {
    /// Runs here, on wasmtime.
    Wasm(Arc<Container>),
    /// Runs under runc; requests go to the runc shim of `group`.
    Native { shim: Arc<RuncShim>, group: String },
}

/// The registry: created tasks, and ids whose Create is in progress (reserved so two
/// Creates of one id cannot both mount the same bundle).
#[derive(Default)]
struct Tasks {
    containers: HashMap<String, Served>,
    creating: HashSet<String>,
    /// Set once Shutdown found no task: the socket is gone and Create is refused, so a new
    /// `start` for the same group gets a fresh shim instead of this exiting one.
    shutting_down: bool,
}

/// Releases an id reserved for a Create, whatever way the Create ends.
struct Reservation<'a> {
    service: &'a TaskService,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.service.tasks().creating.remove(&self.id);
    }
}

type TtrpcResult<T> = ttrpc::Result<T>;

impl TaskService {
    /// A service publishing through `publisher` and listening on `socket`, whose daemon's
    /// pid is in `pid_file`; `shutdown` is signalled when containerd asks the shim to exit
    /// and no task remains.
    pub fn new(
        publisher: Publisher,
        shutdown: mpsc::Sender<()>,
        socket: PathBuf,
        pid_file: PathBuf,
        runc: RuncShims,
        identity: ShimIdentity,
    ) -> std::io::Result<Self> {
        Ok(TaskService {
            tasks: Mutex::new(Tasks::default()),
            exits: Exits::start(publisher.clone())?,
            oom_watch: OomWatch::new(publisher.clone())?,
            publisher,
            shutdown: Mutex::new(shutdown),
            socket,
            pid_file,
            runc,
            in_pod_cgroup: AtomicBool::new(false),
            home_cgroups: Mutex::new(Vec::new()),
            identity,
            child: ChildCommand::default(),
        })
    }

    /// The service with its container processes executing `child` in place of this binary's
    /// child mode: for unit tests of the task API, whose stand-in process needs no root.
    #[cfg(test)]
    pub fn executing(mut self, child: ChildCommand) -> Self {
        self.child = child;
        self
    }

    fn tasks(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The runc shim serving `id`, if it is a native container: each RPC on a task asks this
    /// first, and a native task's request is that shim's to answer, unchanged.
    fn native(&self, id: &str) -> Option<Arc<RuncShim>> {
        match self.tasks().containers.get(id) {
            Some(Served::Native { shim, .. }) => Some(shim.clone()),
            _ => None,
        }
    }

    fn container(&self, id: &str) -> ShimResult<Arc<Container>> {
        match self.tasks().containers.get(id) {
            Some(Served::Wasm(container)) => Ok(container.clone()),
            _ => Err(ShimError::NotFound(format!("task {id} not found"))),
        }
    }

    /// The process `exec_id` names in container `id` (its main program for "").
    fn process(&self, id: &str, exec_id: &str) -> ShimResult<Arc<Process>> {
        self.container(id)?.process(exec_id)
    }

    fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if req.id.is_empty() || req.id.contains('/') {
            return Err(ShimError::InvalidArgument(format!("invalid task id {:?}", req.id)).into());
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(
                "Create from a checkpoint is not supported".to_string(),
            )
            .into());
        }
        let id = req.id.clone();
        let _reservation = {
            let mut tasks = self.tasks();
            if tasks.shutting_down {
                return Err(ShimError::FailedPrecondition(
                    "this shim is shutting down; start a new one".to_string(),
                )
                .into());
            }
            if tasks.containers.contains_key(&id) || !tasks.creating.insert(id.clone()) {
                return Err(ShimError::AlreadyExists(format!("task {id} already exists")).into());
            }
            Reservation {
                service: self,
                id: id.clone(),
            }
        };
        let bundle = PathBuf::from(&req.bundle);
        let spec_path = bundle.join("config.json");
        let spec =
            load_spec(&spec_path).inspect_err(|e| log::error!("create {id}: {}", render(e)))?;
        let pod = PodMembership::from_annotations(&spec.annotations().clone().unwrap_or_default());
        let result = if pod.is_sandbox {
            log::info!("{id}: the pod's sandbox container runs under runc");
            self.create_native(ctx, req, &spec, pod.group(&id).to_string())
        } else {
            self.create_here_or_native(ctx, req, spec.clone(), pod.group(&id).to_string())
        };
        let response = result.inspect_err(|e| log::error!("create {id}: {e}"))?;
        if pod.sandbox_id.is_some() {
            self.join_pod_cgroup(&spec);
        }
        Ok(response)
    }

    /// Mounts the rootfs and looks at the entrypoint: wasm is created here, a Linux program
    /// goes to runc (its rootfs unmounted again: the runc shim mounts its own).
    fn create_here_or_native(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
        spec: Spec,
        group: String,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let bundle = PathBuf::from(&req.bundle);
        let mount = RootfsMount::mount(&req.rootfs, &bundle)?;
        let rootfs = rootfs_dir(&bundle, &spec, mount.is_mounted())?;
        if let Some(native) = runtime::native_entrypoint(&spec, &rootfs) {
            drop(mount);
            log::info!(
                "{}: entrypoint {} is {}; it runs under runc",
                req.id,
                native.guest_path,
                native.kind
            );
            return self.create_native(ctx, req, &spec, group);
        }
        let id = req.id.clone();
        let container = Container::create(
            CreateParams {
                id: req.id,
                bundle,
                mount,
                spec,
                stdio: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
                child: self.child.clone(),
            },
            &self.identity,
            &self.oom_watch,
        )?;
        let pid = container.init.pid;
        self.publisher.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            &TaskCreate {
                container_id: id.clone(),
                bundle: req.bundle,
                rootfs: req.rootfs,
                io: Some(TaskIO {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                pid,
                ..Default::default()
            },
        );
        // After the create event: the exit loop reports this process's end after it.
        if let Err(e) =
            self.exits
                .watch(pid, container.init.pidfd(), Route::Init(container.clone()))
        {
            container.init.discard();
            let _ = container.delete();
            return Err(e.into());
        }
        self.tasks()
            .containers
            .insert(id.clone(), Served::Wasm(container));
        log::info!("created {id} (pid {pid})");
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// Creates a native container through the runc shim of its group.
    fn create_native(
        &self,
        ctx: &TtrpcContext,
        mut req: api::CreateTaskRequest,
        spec: &Spec,
        group: String,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let id = req.id.clone();
        let bundle = PathBuf::from(&req.bundle);
        req.options = runc_options(req.options.take(), spec).into();
        let shim = self.runc.get_or_start(&group, &id, &bundle)?;
        let response: api::CreateTaskResponse = shim.call(ctx, "Create", &req)?;
        // Tells `shim delete` after a crash that runc owns this bundle.
        let _ = std::fs::write(bundle.join(NATIVE_MARKER), &shim.address);
        self.tasks()
            .containers
            .insert(id.clone(), Served::Native { shim, group });
        log::info!("created native {id} (pid {})", response.pid);
        Ok(response)
    }

    /// Moves this shim, and the runc shims it started, into the pod's cgroup, once the pod's
    /// cgroup exists (runc makes it with the sandbox).
    fn join_pod_cgroup(&self, spec: &Spec) {
        if self.in_pod_cgroup.load(Ordering::Acquire) {
            return;
        }
        let Some(cgroup) = crate::cgroup::cgroups_path(spec).and_then(pod_cgroup::pod_cgroup)
        else {
            return;
        };
        let mut pids = vec![std::process::id() as i32];
        pids.extend(self.runc.pids());
        let home = pod_cgroup::current_procs_files();
        let joined = pod_cgroup::join(&cgroup, &pids);
        if joined > 0 {
            *self.home_cgroups.lock().unwrap_or_else(|e| e.into_inner()) = home;
            self.in_pod_cgroup.store(true, Ordering::Release);
            log::info!(
                "moved the shim (pids {pids:?}) into the pod cgroup {} ({joined} hierarchies)",
                cgroup.display()
            );
        }
    }

    /// Forgets a deleted native container; the last of its group lets its runc shim go.
    fn forget_native(&self, id: &str) {
        let mut tasks = self.tasks();
        let Some(Served::Native { group, .. }) = tasks.containers.remove(id) else {
            return;
        };
        let group_left = tasks
            .containers
            .values()
            .any(|t| matches!(t, Served::Native { group: g, .. } if *g == group));
        drop(tasks);
        if !group_left {
            self.runc.release(&group, id);
        }
    }
}

/// The runtime options runc gets: runc's own when containerd sent them; otherwise (ours
/// mean nothing to runc) none, except that a systemd-style cgroupsPath (`slice:prefix:name`,
/// which CRI writes on systemd nodes) needs runc's systemd cgroup driver.
fn runc_options(options: Option<Any>, spec: &Spec) -> Option<Any> {
    if let Some(options) = options {
        if options.type_url.ends_with("containerd.runc.v1.Options") {
            return Some(options);
        }
    }
    let cgroups_path = crate::cgroup::cgroups_path(spec).unwrap_or("");
    let systemd = !cgroups_path.starts_with('/') && cgroups_path.split(':').count() == 3;
    if !systemd {
        return None;
    }
    runc_any(&RuncOptions {
        systemd_cgroup: true,
        ..Default::default()
    })
}

/// `message`, one of runc's option types (package `containerd.runc.v1`), as an `Any`: named
/// as containerd's typeurl registry knows it, from the type's name rather than its
/// descriptor, whose first use builds the reflection tables of its whole file.
fn runc_any<M: MessageFull>(message: &M) -> Option<Any> {
    match message.write_to_bytes() {
        Ok(value) => Some(Any {
            type_url: format!("{RUNC_PACKAGE}.{}", M::NAME),
            value,
            ..Default::default()
        }),
        Err(e) => {
            log::warn!("encoding {}: {e}", M::NAME);
            None
        }
    }
}

/// The protobuf package of runc's option types.
const RUNC_PACKAGE: &str = "containerd.runc.v1";

/// What runc's shim puts in `ProcessInfo.info` for an exec (`containerd.runc.v1.ProcessDetails`,
/// field 1 the exec id), so `ctr task ps` shows which exec a pid is.
fn process_details(exec_id: &str) -> Option<Any> {
    runc_any(&ProcessDetails {
        exec_id: exec_id.to_string(),
        ..Default::default()
    })
}

fn unimplemented<T>(rpc: &str) -> TtrpcResult<T> {
    Err(ShimError::Unimplemented(format!("{rpc} is not supported by the wasmtime shim")).into())
}

impl Task for TaskService {
    fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        TaskService::create(self, ctx, req)
    }

    fn start(&self, ctx: &TtrpcContext, req: api::StartRequest) -> TtrpcResult<api::StartResponse> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Start", &req);
        }
        let container = self.container(&req.id)?;
        // Each start event is queued while the process is held in Created, before it may
        // run: its exit event cannot come first.
        let pid = if req.exec_id.is_empty() {
            container.before_start()?;
            let starting = container.init.begin_start()?;
            self.publisher.publish(
                topics::TASK_START_EVENT_TOPIC,
                &TaskStart {
                    container_id: req.id.clone(),
                    pid: container.init.pid,
                    ..Default::default()
                },
            );
            let pid = starting.commit()?;
            container.after_start();
            pid
        } else {
            let process = container.startable_exec(&req.exec_id)?;
            let starting = process.begin_start()?;
            self.publisher.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                &TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid: process.pid,
                    ..Default::default()
                },
            );
            starting.commit()?
        };
        log::info!("started {} {}", req.id, req.exec_id);
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(&self, ctx: &TtrpcContext, req: api::StateRequest) -> TtrpcResult<api::StateResponse> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "State", &req);
        }
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let lifecycle = process.lifecycle();
        let status = match lifecycle {
            Lifecycle::Created => Status::CREATED,
            Lifecycle::Running if container.is_paused() => Status::PAUSED,
            Lifecycle::Running => Status::RUNNING,
            Lifecycle::Stopped(_) => Status::STOPPED,
        };
        let exit = lifecycle.exit();
        Ok(api::StateResponse {
            id: process.id().to_string(),
            exec_id: req.exec_id.clone(),
            bundle: container.bundle.display().to_string(),
            pid: process.pid,
            status: status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.map(|e| e.code).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    fn kill(&self, ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Kill", &req);
        }
        let container = self.container(&req.id)?;
        log::info!(
            "kill {} {} signal {} all {}",
            req.id,
            req.exec_id,
            req.signal,
            req.all
        );
        if req.exec_id.is_empty() {
            container.kill(req.signal, req.all)?;
        } else {
            container.process(&req.exec_id)?.kill(req.signal)?;
        }
        Ok(Empty::new())
    }

    fn wait(&self, ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        // Blocks only this request's worker: ttrpc starts more workers when idle ones run
        // out, and the runc shim's client multiplexes waiting requests on one connection.
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Wait", &req);
        }
        let process = self.process(&req.id, &req.exec_id)?;
        let exit = process.wait();
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn delete(
        &self,
        ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if let Some(shim) = self.native(&req.id) {
            let response: api::DeleteResponse = shim.call(ctx, "Delete", &req)?;
            if req.exec_id.is_empty() {
                self.forget_native(&req.id);
                log::info!("deleted native {}", req.id);
            }
            return Ok(response);
        }
        let container = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let (pid, exit) = container.delete_exec(&req.exec_id)?;
            log::info!("deleted {} exec {}", req.id, req.exec_id);
            return Ok(api::DeleteResponse {
                pid,
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            });
        }
        let exit = container.delete()?;
        self.tasks().containers.remove(&req.id);
        self.publisher.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            &TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid: container.init.pid,
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..Default::default()
            },
        );
        log::info!("deleted {}", req.id);
        Ok(api::DeleteResponse {
            pid: container.init.pid,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn pids(&self, ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Pids", &req);
        }
        let container = self.container(&req.id)?;
        let mut processes = Vec::new();
        if !matches!(container.init.lifecycle(), Lifecycle::Stopped(_)) {
            processes.push(api::ProcessInfo {
                pid: container.init.pid,
                ..Default::default()
            });
        }
        for exec in container.execs() {
            if matches!(exec.lifecycle(), Lifecycle::Running) {
                processes.push(api::ProcessInfo {
                    pid: exec.pid,
                    info: process_details(exec.id()).into(),
                    ..Default::default()
                });
            }
        }
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn connect(
        &self,
        ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Connect", &req);
        }
        let task_pid = match self.tasks().containers.get(&req.id) {
            Some(Served::Wasm(c)) => c.init.pid,
            _ => 0,
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        // A shim serving several tasks (a pod) stays up until the last one is deleted.
        let mut tasks = self.tasks();
        if tasks.containers.is_empty() && tasks.creating.is_empty() && !tasks.shutting_down {
            tasks.shutting_down = true;
            drop(tasks);
            // Unlinked before replying, so a `start` racing our exit cannot connect to us.
            let _ = std::fs::remove_file(&self.socket);
            // Also before replying: containerd runs `shim delete` as soon as the connection
            // closes, and `delete` waits for (then kills) a daemon its pid file names. This
            // one exits by itself, after its last events and any background compile.
            let _ = std::fs::remove_file(&self.pid_file);
            // Out of the pod's cgroup, which kubelet removes once the pod is gone and could
            // not while this process (flushing its last events, finishing a background
            // compile) is still in it.
            if self.in_pod_cgroup.swap(false, Ordering::AcqRel) {
                let home = self.home_cgroups.lock().unwrap_or_else(|e| e.into_inner());
                let moved = pod_cgroup::leave_to(&home);
                log::debug!("left the pod cgroup ({moved} hierarchies)");
            }
            self.runc.release_all();
            let _ = self
                .shutdown
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(());
        }
        Ok(Empty::new())
    }

    fn stats(&self, ctx: &TtrpcContext, req: api::StatsRequest) -> TtrpcResult<api::StatsResponse> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Stats", &req);
        }
        let container = self.container(&req.id)?;
        let stats = match container.cgroup() {
            Some(cgroup) => cgroup
                .metrics()
                .map_err(|e| ShimError::internal(format!("stats of {}", req.id), e))?,
            None => container_metrics(&container)?,
        };
        Ok(api::StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    fn pause(&self, ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Pause", &req);
        }
        self.container(&req.id)?.pause()?;
        self.publisher.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            &TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn resume(&self, ctx: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Resume", &req);
        }
        self.container(&req.id)?.resume()?;
        self.publisher.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            &TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            },
        );
        Ok(Empty::new())
    }

    fn checkpoint(
        &self,
        ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Checkpoint", &req);
        }
        unimplemented("Checkpoint")
    }

    fn exec(&self, ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Exec", &req);
        }
        let container = self.container(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(ShimError::InvalidArgument("exec needs an exec id".to_string()).into());
        }
        let spec = req
            .spec
            .as_ref()
            .map(|any| any.value.as_slice())
            .unwrap_or(&[]);
        let process: oci_spec::runtime::Process = serde_json::from_slice(spec).map_err(|e| {
            ShimError::InvalidArgument(format!("exec {}: invalid process spec: {e}", req.exec_id))
        })?;
        let params = ExecParams {
            exec_id: req.exec_id.clone(),
            process,
            stdio: StdioPaths {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            },
        };
        let announce = || {
            self.publisher.publish(
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                &TaskExecAdded {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    ..Default::default()
                },
            )
        };
        let process = container
            .exec(params, announce)
            .inspect_err(|e| log::error!("exec {} in {}: {}", req.exec_id, req.id, render(e)))?;
        if let Err(e) = self.exits.watch(
            process.pid,
            process.pidfd(),
            Route::Exec(container.clone(), process.clone()),
        ) {
            container.drop_exec(&req.exec_id);
            return Err(e.into());
        }
        log::info!("exec {} added to {}", req.exec_id, req.id);
        Ok(Empty::new())
    }

    fn resize_pty(&self, ctx: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "ResizePty", &req);
        }
        self.process(&req.id, &req.exec_id)?
            .resize_pty(req.width, req.height)?;
        Ok(Empty::new())
    }

    fn close_io(&self, ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "CloseIO", &req);
        }
        let process = self.process(&req.id, &req.exec_id)?;
        if req.stdin {
            process.close_stdin();
        }
        Ok(Empty::new())
    }

    fn update(&self, ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        if let Some(shim) = self.native(&req.id) {
            return shim.call(ctx, "Update", &req);
        }
        let container = self.container(&req.id)?;
        let value = req
            .resources
            .as_ref()
            .map(|any| any.value.as_slice())
            .unwrap_or(&[]);
        if !value.is_empty() {
            let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(value)
                .map_err(|e| {
                    ShimError::InvalidArgument(format!("update {}: invalid resources: {e}", req.id))
                })?;
            container.update(&resources)?;
        }
        Ok(Empty::new())
    }
}

/// Reads a bundle's spec. Parsed with serde_json directly rather than `Spec::load`, whose
/// error says only "serde failed": the user needs the line, column and what was wrong.
fn load_spec(path: &std::path::Path) -> Result<Spec, ShimError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ShimError::InvalidArgument(format!("reading {}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ShimError::InvalidArgument(format!("{} is not a valid OCI spec: {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with_cgroups_path(path: &str) -> Spec {
        let mut spec = Spec::default();
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_cgroups_path(Some(path.into()));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn runc_gets_its_own_options_or_the_systemd_driver_when_the_path_needs_it() {
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x30, 0x01],
            ..Default::default()
        };
        let ours = Any {
            type_url: "io.containerd.wasmtime.v1.Options".into(),
            ..Default::default()
        };
        let cgroupfs = spec_with_cgroups_path("/kubepods/pod1/c1");
        let systemd = spec_with_cgroups_path("kubepods-pod1.slice:cri-containerd:c1");
        assert_eq!(
            runc_options(Some(runc.clone()), &systemd),
            Some(runc.clone())
        );
        assert_eq!(runc_options(Some(ours.clone()), &cgroupfs), None);
        assert_eq!(runc_options(None, &cgroupfs), None);
        let driver = runc_options(Some(ours), &systemd).unwrap();
        assert_eq!(driver.type_url, "containerd.runc.v1.Options");
        // `bool systemd_cgroup = 9`: tag (9 << 3 | 0), then varint 1, as runc's shim reads it.
        assert_eq!(driver.value, vec![0x48, 0x01]);
    }

    #[test]
    fn runc_types_are_named_as_their_descriptors_say() {
        use containerd_shim_protos::protobuf::Message;
        let details = process_details("exec-1").unwrap();
        assert_eq!(
            details.type_url,
            ProcessDetails::descriptor().full_name().to_string()
        );
        let decoded = ProcessDetails::parse_from_bytes(&details.value).unwrap();
        assert_eq!(decoded.exec_id, "exec-1");
        assert_eq!(
            format!("{RUNC_PACKAGE}.{}", RuncOptions::NAME),
            RuncOptions::descriptor().full_name()
        );
    }
}
