//! The task API as containerd sees it, without containerd or root: a [`TaskService`] served
//! over ttrpc on a temporary socket and called through a ttrpc client, its events recorded
//! instead of forwarded, and its containers' processes a stand-in (this test binary run
//! again, see [`container_process_stand_in`]) that speaks the control protocol of `launch`
//! but runs no wasm and enters no namespace. The spawn, pidfds, reaper, exit loop, rootfs,
//! validation of the program and the service's state machine are the real ones.
//!
//! Each test is one behaviour of the API: the codes of refused requests, and the events and
//! their order, which containerd relies on (`/tasks/start` before `/tasks/exit`, an exec's
//! exit before its container's, `/tasks/exit` before `/tasks/delete`).

use std::ffi::OsString;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageFull;
use containerd_shim_protos::shim::shim_ttrpc::{create_task, Task, TaskClient};
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, Code};

use crate::launch::{self, FailureKind, FromChild, ShimIdentity, ToChild, CONTROL_FD};
use crate::runc::proxy::{ContainerdEndpoint, RuncShims};
use crate::task::events::{Publisher, Recorded};
use crate::task::service::TaskService;
use crate::task::spawn::ChildCommand;

/// Set in the stand-in's environment: the test binary is a container's process.
const STAND_IN_ENV: &str = "WASMTIME_SHIM_TEST_STAND_IN";

/// The longest any request or awaited event may take before the test fails.
const BOUND: Duration = Duration::from_secs(20);

/// How long the tests watch for an event that must not come.
const QUIET: Duration = Duration::from_millis(300);

/// A core module exporting an empty `_start`: a program that validates (the stand-in never
/// runs it).
const EMPTY_COMMAND: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // types: () -> ()
    0x03, 0x02, 0x01, 0x00, // functions: one of type 0
    0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // export _start
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: an empty body
];

/// A container's process when [`STAND_IN_ENV`] is set (see [`ChildCommand`]); nothing in an
/// ordinary test run. It answers `spawn` as `child` does (Launch, Joined; Ready; Start), then
/// behaves as its process's arguments after the program say:
/// - `exit N`: reports and exits with status N once started;
/// - `wait`: runs until a signal ends it (or the shim is gone);
/// - `fail`: fails before Ready, as a program that does not load would.
#[test]
fn container_process_stand_in() {
    if std::env::var_os(STAND_IN_ENV).is_some() {
        stand_in();
    }
}

fn stand_in() -> ! {
    use std::process::exit;
    // SAFETY: `spawn` placed the control socket here, and nothing else owns it.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    let Ok(Some(ToChild::Launch(launch))) = launch::receive::<ToChild>(&control) else {
        exit(1)
    };
    let Ok(Some(ToChild::Joined { .. })) = launch::receive::<ToChild>(&control) else {
        exit(1)
    };
    let args = launch
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.args().clone())
        .unwrap_or_default();
    let behaviour: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    if behaviour.first() == Some(&"fail") {
        let failed = FromChild::Failed {
            kind: FailureKind::InvalidArgument,
            message: "the stand-in was told to fail".into(),
        };
        let _ = launch::send(&control, &failed);
        exit(1)
    }
    if launch::send(&control, &FromChild::Ready).is_err() {
        exit(1)
    }
    loop {
        match launch::receive::<ToChild>(&control) {
            Ok(Some(ToChild::Start)) => break,
            Ok(Some(_)) => continue,
            _ => exit(1),
        }
    }
    if let ["exit", code] = behaviour[..] {
        let code: u32 = code.parse().unwrap_or(255);
        let exited = FromChild::Exited {
            code,
            oom: false,
            status: format!("exited with {code}"),
        };
        let _ = launch::send(&control, &exited);
        exit(code as i32)
    }
    // `wait`: until a signal; a shim that is gone closes the socket.
    while let Ok(Some(_)) = launch::receive::<ToChild>(&control) {}
    exit(1)
}

/// How the test binary runs [`container_process_stand_in`] alone.
fn stand_in_command() -> ChildCommand {
    // libtest names a test by its path without the crate's name.
    let (_, module) = module_path!().split_once("::").expect("a module path");
    let test = format!("{module}::container_process_stand_in");
    ChildCommand::new(
        std::env::current_exe().expect("the test binary"),
        ["--exact", "--nocapture", "--test-threads=1", &test]
            .iter()
            .map(OsString::from)
            .collect(),
        vec![(STAND_IN_ENV.into(), "1".into())],
    )
}

/// A task service on a socket of its own, a client of it, and its recorded events. On drop,
/// kills and deletes the tasks it created, stops the server and removes its files.
struct Harness {
    client: TaskClient,
    events: Recorded,
    shutdown: mpsc::Receiver<()>,
    socket: PathBuf,
    server: Option<ttrpc::Server>,
    /// Ids created through [`Harness::create`], to clean up after a failed test.
    created: Mutex<Vec<String>>,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("shim.sock");
        let (publisher, events) = Publisher::recording();
        let (shutdown_tx, shutdown) = mpsc::channel();
        let service = TaskService::new(
            publisher,
            shutdown_tx,
            socket.clone(),
            dir.path().join("shim.pid"),
            RuncShims::new(ContainerdEndpoint::default()),
            ShimIdentity {
                namespace: "test".into(),
                shim_id: "service-tests".into(),
                debug: false,
            },
        )
        .expect("the task service")
        .executing(stand_in_command());
        let service: Arc<dyn Task + Send + Sync> = Arc::new(service);
        let address = format!("unix://{}", socket.display());
        let mut server = ttrpc::Server::new()
            .bind(&address)
            .expect("binding the socket")
            .register_service(create_task(service));
        server.start().expect("starting the server");
        let client = TaskClient::new(ttrpc::Client::connect(&address).expect("connecting"));
        Harness {
            client,
            events,
            shutdown,
            socket,
            server: Some(server),
            created: Mutex::new(Vec::new()),
            dir,
        }
    }

    /// A bundle for task `id` whose program is the stand-in told `behaviour`.
    fn bundle(&self, id: &str, behaviour: &[&str]) -> PathBuf {
        let bundle = self.dir.path().join("bundles").join(id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).expect("the rootfs");
        std::fs::write(rootfs.join("app.wasm"), EMPTY_COMMAND).expect("the program");
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": process(behaviour),
            "root": { "path": "rootfs" },
        });
        std::fs::write(bundle.join("config.json"), spec.to_string()).expect("the spec");
        bundle
    }

    /// Creates task `id` from a new bundle whose program behaves as `behaviour` says.
    fn create(&self, id: &str, behaviour: &[&str]) -> ttrpc::Result<api::CreateTaskResponse> {
        let bundle = self.bundle(id, behaviour);
        self.created.lock().unwrap().push(id.to_string());
        self.client.create(
            context(),
            &api::CreateTaskRequest {
                id: id.into(),
                bundle: bundle.display().to_string(),
                ..Default::default()
            },
        )
    }

    fn start(&self, id: &str, exec_id: &str) -> ttrpc::Result<api::StartResponse> {
        self.client.start(
            context(),
            &api::StartRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
    }

    fn exec(&self, id: &str, exec_id: &str, behaviour: &[&str]) -> ttrpc::Result<api::Empty> {
        self.client.exec(
            context(),
            &api::ExecProcessRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                spec: Some(Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: process(behaviour).to_string().into_bytes(),
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        )
    }

    fn kill(&self, id: &str, exec_id: &str, signal: i32) -> ttrpc::Result<api::Empty> {
        self.client.kill(
            context(),
            &api::KillRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                signal: signal as u32,
                ..Default::default()
            },
        )
    }

    fn wait(&self, id: &str, exec_id: &str) -> ttrpc::Result<api::WaitResponse> {
        self.client.wait(
            context(),
            &api::WaitRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
    }

    fn state(&self, id: &str, exec_id: &str) -> ttrpc::Result<api::StateResponse> {
        self.client.state(
            context(),
            &api::StateRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
    }

    fn delete(&self, id: &str, exec_id: &str) -> ttrpc::Result<api::DeleteResponse> {
        self.client.delete(
            context(),
            &api::DeleteRequest {
                id: id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            },
        )
    }

    fn shutdown(&self) -> ttrpc::Result<api::Empty> {
        self.client
            .shutdown(context(), &api::ShutdownRequest::default())
    }

    /// The next event, which must be `topic` with a body of type `M`.
    fn expect<M: MessageFull>(&self, topic: &str) -> M {
        let (published, body) = self
            .events
            .next(BOUND)
            .unwrap_or_else(|| panic!("no event came; expected {topic}"));
        assert_eq!(published, topic, "expected {topic}, got {published}");
        assert_eq!(body.type_url, M::descriptor().full_name());
        M::parse_from_bytes(&body.value).expect("an event body")
    }

    /// No event comes for a while.
    fn expect_no_event(&self) {
        if let Some((topic, _)) = self.events.next(QUIET) {
            panic!("unexpected event {topic}");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Nothing a failed test started outlives it: each task is killed and deleted (a
        // Delete waits for its exit), so no request is left blocked in the server either.
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        for id in created {
            let _ = self.client.kill(
                context(),
                &api::KillRequest {
                    id: id.clone(),
                    signal: libc::SIGKILL as u32,
                    all: true,
                    ..Default::default()
                },
            );
            let _ = self.delete(&id, "");
        }
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// An OCI `process` running `/app.wasm` with `behaviour` as its arguments.
fn process(behaviour: &[&str]) -> serde_json::Value {
    let mut args = vec!["/app.wasm"];
    args.extend_from_slice(behaviour);
    serde_json::json!({
        "args": args,
        "cwd": "/",
        "user": { "uid": 0, "gid": 0 },
    })
}

/// A request context with a deadline: no request can hang a test.
fn context() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(BOUND.as_nanos() as i64)
}

/// The status code a refused request answered with.
fn code_of<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> Code {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => status.code(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn status_of(state: &api::StateResponse) -> Status {
    state.status.enum_value().expect("a known status")
}

/// Whether the process `pid` exists (a zombie counts: not yet reaped).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn create_start_exit_wait_delete_publish_their_events_in_order() {
    let shim = Harness::new();
    let created = shim.create("t1", &["exit", "3"]).expect("create");
    assert!(created.pid > 0);
    let event: TaskCreate = shim.expect(topics::TASK_CREATE_EVENT_TOPIC);
    assert_eq!(event.container_id, "t1");
    assert_eq!(event.pid, created.pid);
    assert!(event.bundle.ends_with("/bundles/t1"));
    assert_eq!(
        status_of(&shim.state("t1", "").expect("state")),
        Status::CREATED
    );

    let started = shim.start("t1", "").expect("start");
    assert_eq!(started.pid, created.pid);
    let event: TaskStart = shim.expect(topics::TASK_START_EVENT_TOPIC);
    assert_eq!(
        (event.container_id.as_str(), event.pid),
        ("t1", created.pid)
    );

    let waited = shim.wait("t1", "").expect("wait");
    assert_eq!(waited.exit_status, 3);
    let event: TaskExit = shim.expect(topics::TASK_EXIT_EVENT_TOPIC);
    assert_eq!(event.container_id, "t1");
    assert_eq!(event.id, "t1");
    assert_eq!(event.pid, created.pid);
    assert_eq!(event.exit_status, 3);
    let state = shim.state("t1", "").expect("state");
    assert_eq!(status_of(&state), Status::STOPPED);
    assert_eq!(state.exit_status, 3);

    let deleted = shim.delete("t1", "").expect("delete");
    assert_eq!((deleted.pid, deleted.exit_status), (created.pid, 3));
    let event: TaskDelete = shim.expect(topics::TASK_DELETE_EVENT_TOPIC);
    assert_eq!((event.id.as_str(), event.pid), ("t1", created.pid));
    assert_eq!(event.exit_status, 3);
    shim.expect_no_event();
    assert_eq!(code_of(shim.state("t1", "")), Code::NOT_FOUND);
    assert!(!alive(created.pid), "the process was reaped");
}

#[test]
fn a_second_create_of_a_live_id_is_already_exists() {
    let shim = Harness::new();
    let first = shim.create("dup", &["wait"]).expect("create");
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    assert_eq!(code_of(shim.create("dup", &["wait"])), Code::ALREADY_EXISTS);
    shim.expect_no_event();
    // The first is untouched, and its id free again once it is deleted.
    assert_eq!(shim.state("dup", "").expect("state").pid, first.pid);
    shim.delete("dup", "").expect("delete");
    shim.expect::<TaskExit>(topics::TASK_EXIT_EVENT_TOPIC);
    shim.expect::<TaskDelete>(topics::TASK_DELETE_EVENT_TOPIC);
    let again = shim.create("dup", &["wait"]).expect("create again");
    assert_ne!(again.pid, first.pid);
}

#[test]
fn a_create_whose_process_fails_is_refused_with_its_code_and_leaves_the_id_free() {
    let shim = Harness::new();
    assert_eq!(
        code_of(shim.create("bad", &["fail"])),
        Code::INVALID_ARGUMENT
    );
    shim.expect_no_event();
    assert_eq!(code_of(shim.state("bad", "")), Code::NOT_FOUND);
    shim.create("bad", &["wait"])
        .expect("create after the failure");
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
}

#[test]
fn starting_twice_is_a_failed_precondition() {
    let shim = Harness::new();
    shim.create("t2", &["wait"]).expect("create");
    shim.start("t2", "").expect("start");
    assert_eq!(code_of(shim.start("t2", "")), Code::FAILED_PRECONDITION);
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    shim.expect::<TaskStart>(topics::TASK_START_EVENT_TOPIC);
    shim.expect_no_event();
    assert_eq!(
        status_of(&shim.state("t2", "").expect("state")),
        Status::RUNNING
    );
}

#[test]
fn a_running_task_is_not_deleted_until_it_is_killed() {
    let shim = Harness::new();
    let created = shim.create("t3", &["wait"]).expect("create");
    shim.start("t3", "").expect("start");
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    shim.expect::<TaskStart>(topics::TASK_START_EVENT_TOPIC);
    assert_eq!(code_of(shim.delete("t3", "")), Code::FAILED_PRECONDITION);
    shim.expect_no_event();
    assert_eq!(
        status_of(&shim.state("t3", "").expect("state")),
        Status::RUNNING
    );
    assert!(alive(created.pid));
    shim.kill("t3", "", libc::SIGKILL).expect("kill");
    assert_eq!(shim.wait("t3", "").expect("wait").exit_status, 137);
    shim.delete("t3", "").expect("delete once stopped");
    shim.expect::<TaskExit>(topics::TASK_EXIT_EVENT_TOPIC);
    shim.expect::<TaskDelete>(topics::TASK_DELETE_EVENT_TOPIC);
}

#[test]
fn a_created_task_that_is_deleted_is_killed_and_its_exit_published_first() {
    let shim = Harness::new();
    let created = shim.create("t4", &["wait"]).expect("create");
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    let deleted = shim.delete("t4", "").expect("delete");
    assert_eq!(deleted.exit_status, 137);
    let exit: TaskExit = shim.expect(topics::TASK_EXIT_EVENT_TOPIC);
    assert_eq!((exit.pid, exit.exit_status), (created.pid, 137));
    shim.expect::<TaskDelete>(topics::TASK_DELETE_EVENT_TOPIC);
    shim.expect_no_event();
}

#[test]
fn sigkill_stops_a_running_task_with_137_published_once() {
    let shim = Harness::new();
    let created = shim.create("t5", &["wait"]).expect("create");
    shim.start("t5", "").expect("start");
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    shim.expect::<TaskStart>(topics::TASK_START_EVENT_TOPIC);
    shim.kill("t5", "", libc::SIGKILL).expect("kill");
    let exit: TaskExit = shim.expect(topics::TASK_EXIT_EVENT_TOPIC);
    assert_eq!((exit.id.as_str(), exit.pid), ("t5", created.pid));
    assert_eq!(exit.exit_status, 137);
    assert_eq!(shim.wait("t5", "").expect("wait").exit_status, 137);
    // A second kill finds nothing to signal and publishes nothing.
    assert_eq!(code_of(shim.kill("t5", "", libc::SIGKILL)), Code::NOT_FOUND);
    shim.expect_no_event();
    let state = shim.state("t5", "").expect("state");
    assert_eq!(
        (status_of(&state), state.exit_status),
        (Status::STOPPED, 137)
    );
}

#[test]
fn an_exec_is_added_started_and_reported_before_it_is_deleted() {
    let shim = Harness::new();
    let created = shim.create("t6", &["wait"]).expect("create");
    // Not before the container runs.
    assert_eq!(
        code_of(shim.exec("t6", "e1", &["exit", "5"])),
        Code::FAILED_PRECONDITION
    );
    shim.start("t6", "").expect("start");
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    shim.expect::<TaskStart>(topics::TASK_START_EVENT_TOPIC);

    shim.exec("t6", "e1", &["exit", "5"]).expect("exec");
    let added: TaskExecAdded = shim.expect(topics::TASK_EXEC_ADDED_EVENT_TOPIC);
    assert_eq!(
        (added.container_id.as_str(), added.exec_id.as_str()),
        ("t6", "e1")
    );
    assert_eq!(
        code_of(shim.exec("t6", "e1", &["wait"])),
        Code::ALREADY_EXISTS
    );
    assert_eq!(
        status_of(&shim.state("t6", "e1").expect("state")),
        Status::CREATED
    );

    let started = shim.start("t6", "e1").expect("start the exec");
    assert_ne!(started.pid, created.pid);
    let event: TaskExecStarted = shim.expect(topics::TASK_EXEC_STARTED_EVENT_TOPIC);
    assert_eq!((event.exec_id.as_str(), event.pid), ("e1", started.pid));
    assert_eq!(shim.wait("t6", "e1").expect("wait").exit_status, 5);
    let exit: TaskExit = shim.expect(topics::TASK_EXIT_EVENT_TOPIC);
    assert_eq!((exit.container_id.as_str(), exit.id.as_str()), ("t6", "e1"));
    assert_eq!((exit.pid, exit.exit_status), (started.pid, 5));

    let deleted = shim.delete("t6", "e1").expect("delete the exec");
    assert_eq!((deleted.pid, deleted.exit_status), (started.pid, 5));
    // An exec's delete is no task's: no event, and the container runs on.
    shim.expect_no_event();
    assert_eq!(code_of(shim.state("t6", "e1")), Code::NOT_FOUND);
    assert_eq!(
        status_of(&shim.state("t6", "").expect("state")),
        Status::RUNNING
    );
}

#[test]
fn an_execs_exit_is_published_before_its_containers_when_the_main_process_ends() {
    let shim = Harness::new();
    let created = shim.create("t7", &["wait"]).expect("create");
    shim.start("t7", "").expect("start");
    shim.exec("t7", "e1", &["wait"]).expect("exec");
    let exec_pid = shim.start("t7", "e1").expect("start the exec").pid;
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    shim.expect::<TaskStart>(topics::TASK_START_EVENT_TOPIC);
    shim.expect::<TaskExecAdded>(topics::TASK_EXEC_ADDED_EVENT_TOPIC);
    shim.expect::<TaskExecStarted>(topics::TASK_EXEC_STARTED_EVENT_TOPIC);

    // Only the main process is signalled; the shim ends the exec with it.
    shim.kill("t7", "", libc::SIGTERM).expect("kill");
    let first: TaskExit = shim.expect(topics::TASK_EXIT_EVENT_TOPIC);
    assert_eq!((first.id.as_str(), first.pid), ("e1", exec_pid));
    assert_eq!(first.exit_status, 137);
    let second: TaskExit = shim.expect(topics::TASK_EXIT_EVENT_TOPIC);
    assert_eq!((second.id.as_str(), second.pid), ("t7", created.pid));
    assert_eq!(second.exit_status, 143);
    assert_eq!(shim.wait("t7", "e1").expect("wait").exit_status, 137);
    assert_eq!(shim.wait("t7", "").expect("wait").exit_status, 143);
    // And no new exec joins a container whose main process has ended.
    assert_eq!(
        code_of(shim.exec("t7", "e2", &["wait"])),
        Code::FAILED_PRECONDITION
    );
    shim.expect_no_event();
}

#[test]
fn shutdown_waits_for_the_last_task_and_then_refuses_creates() {
    let shim = Harness::new();
    shim.create("t8", &["wait"]).expect("create");
    shim.shutdown().expect("shutdown");
    assert!(shim.shutdown.try_recv().is_err(), "a task is still there");
    assert!(shim.socket.exists());
    shim.delete("t8", "").expect("delete");

    shim.shutdown().expect("shutdown");
    assert!(shim.shutdown.recv_timeout(BOUND).is_ok());
    assert!(!shim.socket.exists(), "the socket is unlinked at once");
    assert_eq!(
        code_of(shim.create("t9", &["wait"])),
        Code::FAILED_PRECONDITION
    );
    // A second Shutdown does not signal again.
    shim.shutdown().expect("shutdown");
    assert!(shim.shutdown.try_recv().is_err());
}

#[test]
fn requests_for_unknown_tasks_and_execs_are_not_found() {
    let shim = Harness::new();
    assert_eq!(code_of(shim.start("nope", "")), Code::NOT_FOUND);
    assert_eq!(code_of(shim.state("nope", "")), Code::NOT_FOUND);
    assert_eq!(
        code_of(shim.kill("nope", "", libc::SIGKILL)),
        Code::NOT_FOUND
    );
    assert_eq!(code_of(shim.wait("nope", "")), Code::NOT_FOUND);
    assert_eq!(code_of(shim.delete("nope", "")), Code::NOT_FOUND);
    assert_eq!(code_of(shim.exec("nope", "e1", &["wait"])), Code::NOT_FOUND);

    shim.create("t10", &["wait"]).expect("create");
    shim.start("t10", "").expect("start");
    assert_eq!(code_of(shim.start("t10", "e9")), Code::NOT_FOUND);
    assert_eq!(code_of(shim.state("t10", "e9")), Code::NOT_FOUND);
    assert_eq!(
        code_of(shim.kill("t10", "e9", libc::SIGKILL)),
        Code::NOT_FOUND
    );
    assert_eq!(code_of(shim.wait("t10", "e9")), Code::NOT_FOUND);
    assert_eq!(code_of(shim.delete("t10", "e9")), Code::NOT_FOUND);
    shim.expect::<TaskCreate>(topics::TASK_CREATE_EVENT_TOPIC);
    shim.expect::<TaskStart>(topics::TASK_START_EVENT_TOPIC);
    shim.expect_no_event();
}

/// The bound on a test's waits holds for the harness too: a harness is set up and torn down
/// (a task killed and deleted on drop) well within it.
#[test]
fn a_harness_cleans_up_what_a_test_left_running() {
    let started = Instant::now();
    let pid = {
        let shim = Harness::new();
        let pid = shim.create("left", &["wait"]).expect("create").pid;
        shim.start("left", "").expect("start");
        pid
    };
    assert!(!alive(pid), "the harness killed and reaped its task");
    assert!(started.elapsed() < BOUND);
}
