//! The ttrpc task service: one thin method per RPC over the container registry.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use containerd_shim_protos::api::{self, Empty, Status};
use containerd_shim_protos::shim::shim_ttrpc::Task;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};

use crate::clock::timestamp;
use crate::container::{Container, CreateParams};
use crate::error::{ShimError, ShimResult};
use crate::events::Publisher;
use crate::lifecycle::Lifecycle;
use crate::metrics::container_metrics;
use crate::stdio::StdioPaths;

/// Serves the tasks of one shim process.
pub struct TaskService {
    tasks: Mutex<Tasks>,
    publisher: Publisher,
    shutdown: Mutex<mpsc::Sender<()>>,
    socket: PathBuf,
}

/// The registry: created tasks, and ids whose Create is in progress (reserved so two
/// Creates of one id cannot both mount the same bundle).
#[derive(Default)]
struct Tasks {
    containers: HashMap<String, Arc<Container>>,
    creating: HashSet<String>,
    /// Set once Shutdown found no task: the socket is gone and Create is refused, so a new
    /// `start` for the same id gets a fresh shim instead of this exiting one.
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
    /// A service publishing through `publisher` and listening on `socket`; `shutdown` is
    /// signalled when containerd asks the shim to exit and no task remains.
    pub fn new(publisher: Publisher, shutdown: mpsc::Sender<()>, socket: PathBuf) -> Self {
        TaskService {
            tasks: Mutex::new(Tasks::default()),
            publisher,
            shutdown: Mutex::new(shutdown),
            socket,
        }
    }

    fn tasks(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn container(&self, id: &str, exec_id: &str) -> ShimResult<Arc<Container>> {
        if !exec_id.is_empty() {
            return Err(ShimError::NotFound(format!(
                "task {id}: exec process {exec_id} does not exist (exec is not supported yet)"
            )));
        }
        self.tasks()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NotFound(format!("task {id} not found")))
    }

    fn create(&self, req: api::CreateTaskRequest) -> ShimResult<u32> {
        if req.id.is_empty() || req.id.contains('/') {
            return Err(ShimError::InvalidArgument(format!(
                "invalid task id {:?}",
                req.id
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(
                "Create from a checkpoint is not supported".to_string(),
            ));
        }
        let id = req.id.clone();
        let _reservation = {
            let mut tasks = self.tasks();
            if tasks.shutting_down {
                return Err(ShimError::FailedPrecondition(
                    "this shim is shutting down; start a new one".to_string(),
                ));
            }
            if tasks.containers.contains_key(&id) || !tasks.creating.insert(id.clone()) {
                return Err(ShimError::AlreadyExists(format!(
                    "task {id} already exists"
                )));
            }
            Reservation {
                service: self,
                id: id.clone(),
            }
        };
        let container = Container::create(
            CreateParams {
                id: req.id,
                bundle: PathBuf::from(req.bundle),
                rootfs: req.rootfs,
                stdio: StdioPaths {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                },
            },
            self.publisher.clone(),
        )
        .inspect_err(|e| log::error!("create {id}: {e}"))?;
        let pid = container.pid;
        self.tasks().containers.insert(id.clone(), container);
        log::info!("created {id} (pid {pid})");
        Ok(pid)
    }
}

fn unimplemented<T>(rpc: &str) -> TtrpcResult<T> {
    Err(ShimError::Unimplemented(format!("{rpc} is not supported by the wasmtime shim")).into())
}

impl Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let pid = TaskService::create(self, req)?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let container = self.container(&req.id, &req.exec_id)?;
        let pid = container.start()?;
        log::info!("started {}", req.id);
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let container = self.container(&req.id, &req.exec_id)?;
        let lifecycle = container.lifecycle();
        let status = match lifecycle {
            Lifecycle::Created => Status::CREATED,
            Lifecycle::Running => Status::RUNNING,
            Lifecycle::Stopped(_) => Status::STOPPED,
        };
        let exit = lifecycle.exit();
        Ok(api::StateResponse {
            id: container.id.clone(),
            bundle: container.bundle.display().to_string(),
            pid: container.pid,
            status: status.into(),
            stdin: container.stdio.stdin.clone(),
            stdout: container.stdio.stdout.clone(),
            stderr: container.stdio.stderr.clone(),
            terminal: container.stdio.terminal,
            exit_status: exit.map(|e| e.code).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        let container = self.container(&req.id, &req.exec_id)?;
        log::info!("kill {} signal {}", req.id, req.signal);
        container.kill(req.signal)?;
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let container = self.container(&req.id, &req.exec_id)?;
        // Blocks only this request's worker: ttrpc starts more workers when idle ones run out.
        let exit = container.wait();
        Ok(api::WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let container = self.container(&req.id, &req.exec_id)?;
        let exit = container.delete()?;
        self.tasks().containers.remove(&req.id);
        log::info!("deleted {}", req.id);
        Ok(api::DeleteResponse {
            pid: container.pid,
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let container = self.container(&req.id, "")?;
        let processes = match container.lifecycle() {
            Lifecycle::Stopped(_) => vec![],
            _ => vec![api::ProcessInfo {
                pid: container.pid,
                ..Default::default()
            }],
        };
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self
            .tasks()
            .containers
            .get(&req.id)
            .map(|c| c.pid)
            .unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        // A shim serving several tasks stays up until the last one is deleted.
        let mut tasks = self.tasks();
        if tasks.containers.is_empty() && tasks.creating.is_empty() && !tasks.shutting_down {
            tasks.shutting_down = true;
            drop(tasks);
            // Unlinked before replying, so a `start` racing our exit cannot connect to us.
            let _ = std::fs::remove_file(&self.socket);
            let _ = self
                .shutdown
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(());
        }
        Ok(Empty::new())
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let container = self.container(&req.id, "")?;
        Ok(api::StatsResponse {
            stats: Some(container_metrics(&container)?).into(),
            ..Default::default()
        })
    }

    fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<Empty> {
        unimplemented("Pause")
    }

    fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> TtrpcResult<Empty> {
        unimplemented("Resume")
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        unimplemented("Checkpoint")
    }

    fn exec(&self, _ctx: &TtrpcContext, _req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        unimplemented("Exec")
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, _req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        unimplemented("ResizePty")
    }

    fn close_io(&self, _ctx: &TtrpcContext, _req: api::CloseIORequest) -> TtrpcResult<Empty> {
        unimplemented("CloseIO")
    }

    fn update(&self, _ctx: &TtrpcContext, _req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        unimplemented("Update")
    }
}
