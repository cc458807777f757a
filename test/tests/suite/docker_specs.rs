//! Docker's specs, as dockerd 29.7 hands them to a shim (captured in
//! ../shared/fixtures/specs/docker-*.json), run through the real containerd with
//! `ctr run --config`: every one starts, network namespaces are there between Create and Start
//! as dockerd needs them, and OCI hooks run at their phases.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration::http::{request, serve_fixed, wait_until_listening};
use integration::netns::inside;
use integration::{fixtures_dir, rootfs_with, Containerd, CtrOutput, RUNTIME};
use serde_json::{json, Value};

fn docker_fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("the spec fixtures (../shared/fixtures/specs)")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("docker-") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "docker fixtures missing: {names:?}");
    names
}

/// A bundle-less spec file for `ctr run --config`: the fixture with the test's rootfs, the
/// test's program, and the capture's host paths (docker's resolv.conf, hosts, hostname,
/// docker-init, the bind source) replaced by the test's own files and directories.
struct DockerSpec {
    dir: tempfile::TempDir,
}

impl DockerSpec {
    fn new(fixture: &str, rootfs: &Path, args: &[&str], edit: impl FnOnce(&mut Value)) -> Self {
        let text = std::fs::read_to_string(fixtures_dir().join(fixture)).unwrap();
        let mut spec: Value = serde_json::from_str(&text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        spec["root"]["path"] = json!(rootfs);
        let wrapped = spec["process"]["args"][0]
            .as_str()
            .is_some_and(|a| a.ends_with("docker-init"));
        let mut new_args: Vec<&str> = Vec::new();
        if wrapped {
            // Keep `docker run --init`'s shape: [/sbin/docker-init, --, CMD...].
            new_args.extend(["/sbin/docker-init", "--"]);
        }
        new_args.extend(args);
        spec["process"]["args"] = json!(new_args);
        spec["process"]["terminal"] = json!(false);
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            for (i, mount) in mounts.iter_mut().enumerate() {
                let Some(source) = mount["source"].as_str() else {
                    continue;
                };
                if mount["type"] != "bind" || Path::new(source).exists() {
                    continue;
                }
                let destination = mount["destination"].as_str().unwrap_or_default();
                let replacement = dir.path().join(format!("host-{i}"));
                if destination.starts_with("/etc/") || destination.starts_with("/sbin/") {
                    std::fs::write(&replacement, "replaced by the test\n").unwrap();
                } else {
                    std::fs::create_dir(&replacement).unwrap();
                    std::fs::write(replacement.join("file.txt"), "from the host\n").unwrap();
                }
                mount["source"] = json!(replacement);
            }
        }
        edit(&mut spec);
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        DockerSpec { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn run_args(&self, id: &str) -> Vec<String> {
        vec![
            "run".into(),
            "--rm".into(),
            "--runtime".into(),
            RUNTIME.into(),
            "--config".into(),
            self.path().display().to_string(),
            id.into(),
        ]
    }

    /// `ctr run -d` of the spec as task `id`, asserted to start; its pid once RUNNING.
    fn run_detached(&self, containerd: &Containerd, id: &str) -> u32 {
        let mut args = self.run_args(id);
        args[1] = "-d".into();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = containerd.ctr(&args);
        assert_eq!(run.code, 0, "{run:?}");
        containerd
            .wait_for_status(id, "RUNNING", Duration::from_secs(10))
            .unwrap();
        containerd.task_pid(id)
    }

    fn run(&self, containerd: &Containerd, id: &str) -> CtrOutput {
        let args = self.run_args(id);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        containerd.ctr(&args)
    }
}

#[test]
fn every_docker_spec_runs_and_exits_with_the_programs_status() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["exitcode", "printenv", "filetool"]).unwrap();
    for (i, fixture) in docker_fixtures().iter().enumerate() {
        let spec = DockerSpec::new(fixture, rootfs.path(), &["/exitcode.wasm", "7"], |_| {});
        let out = spec.run(&containerd, &format!("docker-{i}"));
        assert_eq!(out.code, 7, "{fixture}: {out:?}\n{}", containerd.shim_log());
    }

    // -e FOO=bar -w /tmp: the env and the working directory (as PWD) reach the program.
    let spec = DockerSpec::new(
        "docker-env-workdir.json",
        rootfs.path(),
        &["/printenv.wasm"],
        |_| {},
    );
    let out = spec.run(&containerd, "docker-env");
    assert_eq!(out.code, 0, "{out:?}");
    for line in ["env:FOO=bar", "env:PWD=/tmp"] {
        assert!(out.stdout.lines().any(|l| l == line), "{line}: {out:?}");
    }
    assert!(
        out.stdout.lines().any(|l| l.starts_with("env:HOSTNAME=")),
        "{out:?}"
    );

    // -v HOSTDIR:/data:ro: readable, not writable.
    let spec = DockerSpec::new(
        "docker-bind-ro.json",
        rootfs.path(),
        &["/filetool.wasm", "read", "/data/file.txt"],
        |_| {},
    );
    let out = spec.run(&containerd, "docker-ro-read");
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "from the host\n");
    let spec = DockerSpec::new(
        "docker-bind-ro.json",
        rootfs.path(),
        &["/filetool.wasm", "write", "/data/new.txt", "x"],
        |_| {},
    );
    let out = spec.run(&containerd, "docker-ro-write");
    assert_ne!(out.code, 0, "a write to a ro bind succeeded: {out:?}");

    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

/// Runs `f` on a thread inside the network namespace of `pid`.
fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    inside(Path::new(&format!("/proc/{pid}/ns/net")), f).expect("entering the namespace")
}

fn hook(script: &str) -> Value {
    json!({ "path": "/bin/sh", "args": ["sh", "-c", script], "timeout": 30 })
}

#[test]
fn dockers_network_dance_and_every_hook_phase() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["http-hello"]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    let log_hook = |phase: &str| {
        hook(&format!(
            "printf '{phase} %s\\n' \"$(cat)\" >> {w}/hooks.log"
        ))
    };
    // createRuntime waits for the test, as dockerd's wiring would run at this point: the pid
    // Create returns exists and no wasm has run.
    let wait_hook = hook(&format!(
        "cat > {w}/state.json; touch {w}/created; while [ ! -e {w}/go ]; do sleep 0.02; done"
    ));
    let spec = DockerSpec::new(
        "docker-default-network.json",
        rootfs.path(),
        &["/http-hello.wasm"],
        |spec| {
            spec["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!("WASI_HTTP_ADDR=127.0.0.1:8080"));
            spec["hooks"] = json!({
                "prestart": [log_hook("prestart")],
                "createRuntime": [log_hook("createRuntime"), wait_hook],
                "createContainer": [log_hook("createContainer")],
                "startContainer": [log_hook("startContainer")],
                "poststart": [log_hook("poststart")],
                "poststop": [log_hook("poststop")],
            });
        },
    );
    let args = spec.run_args("docker-net");
    let mut run = containerd
        .ctr_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while !work.path().join("created").exists() {
        assert!(Instant::now() < deadline, "createRuntime never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let state: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["status"], "creating");
    assert_eq!(state["id"], "docker-net");
    let pid = state["pid"].as_u64().expect("a pid in the state") as u32;
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let task_ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        task_ns, host_ns,
        "the task pid is in the host's network namespace"
    );

    // The test's own socket in that namespace, made before Start, as dockerd wires its
    // network then. 127.0.0.1:9000 on the host side answers nothing.
    let upstream = in_netns(pid, || {
        let lo_up = std::net::TcpListener::bind("127.0.0.1:9000");
        lo_up.expect("loopback is up in the new namespace")
    });
    serve_fixed(upstream, "from the test's socket");
    assert!(std::net::TcpStream::connect("127.0.0.1:9000").is_err());
    assert!(
        !work.path().join("hooks.log").exists()
            || !std::fs::read_to_string(work.path().join("hooks.log"))
                .unwrap()
                .contains("startContainer"),
        "Start ran before createRuntime finished"
    );
    std::fs::write(work.path().join("go"), "").unwrap();

    // The component serves inside the namespace and its outgoing request reaches the test's
    // socket there.
    let fetched = in_netns(pid, || {
        wait_until_listening("127.0.0.1:8080", Duration::from_secs(20))?;
        request(
            "127.0.0.1:8080",
            "GET",
            "/fetch?url=http://127.0.0.1:9000/",
            b"",
        )
    })
    .expect("a request inside the namespace");
    assert_eq!(fetched.status, 200, "{fetched:?}");
    assert_eq!(fetched.text(), "upstream 200: from the test's socket");

    let kill = containerd.ctr(&["task", "kill", "docker-net"]);
    assert_eq!(kill.code, 0, "{kill:?}");
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    let _ = run.stderr.take().unwrap().read_to_string(&mut stderr);
    assert_eq!(status.code(), Some(0), "{stderr}");

    let log = std::fs::read_to_string(work.path().join("hooks.log")).unwrap();
    let phases: Vec<(&str, Value)> = log
        .lines()
        .map(|l| {
            let (phase, state) = l.split_once(' ').unwrap();
            (phase, serde_json::from_str(state).unwrap())
        })
        .collect();
    let order: Vec<&str> = phases.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        order,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
    let statuses: Vec<&str> = phases
        .iter()
        .map(|(_, s)| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["creating", "creating", "creating", "created", "running", "stopped"]
    );
    for (phase, state) in &phases[..5] {
        assert_eq!(state["pid"], pid, "{phase}");
    }
    assert!(phases[5].1.get("pid").is_none(), "poststop has no pid");
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
}

#[test]
fn a_failing_or_hanging_hook_fails_the_container_with_its_output() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["hello"]).unwrap();

    let spec = DockerSpec::new(
        "docker-network-none.json",
        rootfs.path(),
        &["/hello.wasm"],
        |spec| {
            spec["hooks"] = json!({
                "createRuntime": [hook("echo hook-said-no >&2; exit 3")],
            });
        },
    );
    let out = spec.run(&containerd, "hook-fails");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("createRuntime") && out.stderr.contains("hook-said-no"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("hello"), "the program ran: {out:?}");

    let spec = DockerSpec::new(
        "docker-network-none.json",
        rootfs.path(),
        &["/hello.wasm"],
        |spec| {
            spec["hooks"] = json!({
                "startContainer": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}],
            });
        },
    );
    let started = Instant::now();
    let out = spec.run(&containerd, "hook-hangs");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("timed out after 1s"), "{out:?}");
    assert!(!out.stdout.contains("hello"), "the program ran: {out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));

    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

/// `docker run --ulimit`: the spec's rlimits are the container's process's, as runc sets
/// them; a soft limit above its hard one fails the run with both named.
#[test]
fn the_specs_rlimits_are_the_processs() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["ticker"]).unwrap();
    let spec = DockerSpec::new(
        "docker-default-network.json",
        rootfs.path(),
        &["/ticker.wasm"],
        |spec| {
            spec["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
                {"type": "RLIMIT_FSIZE", "soft": 1048576, "hard": 1048576},
            ]);
        },
    );
    let pid = spec.run_detached(&containerd, "ulimits");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(row("Max open files"), "Max open files 512 2048 files");
    assert_eq!(row("Max file size"), "Max file size 1048576 1048576 bytes");
    containerd.kill_and_remove("ulimits", "SIGKILL");
    let rm = containerd.ctr(&["containers", "rm", "ulimits"]);
    assert_eq!(rm.code, 0, "{rm:?}");

    let spec = DockerSpec::new(
        "docker-default-network.json",
        rootfs.path(),
        &["/ticker.wasm", "1"],
        |spec| {
            spec["process"]["rlimits"] =
                json!([{"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 1024}]);
        },
    );
    let out = spec.run(&containerd, "bad-ulimits");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains("rlimit RLIMIT_NOFILE: soft limit 4096 is above the hard limit 1024"),
        "{out:?}"
    );
}

/// Docker's `net.ipv4.ip_unprivileged_port_start=0` is set in the container's network
/// namespace, so its program, which has no capabilities, binds a port below 1024 as a
/// process under runc does; a sysctl no namespace of the container scopes fails the run.
#[test]
fn the_specs_namespaced_sysctls_are_set_and_others_refused() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["net-echo"]).unwrap();
    let spec = DockerSpec::new(
        "docker-default-network.json",
        rootfs.path(),
        &["/net-echo.wasm", "serve", "80"],
        |_| {},
    );
    let pid = spec.run_detached(&containerd, "low-port");
    let (setting, answer) = in_netns(pid, || {
        let setting = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .unwrap_or_default();
        let answer = wait_until_listening("127.0.0.1:80", Duration::from_secs(10)).and_then(|()| {
            let mut stream = std::net::TcpStream::connect("127.0.0.1:80")?;
            std::io::Write::write_all(&mut stream, b"low\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        });
        (setting, answer)
    });
    assert_eq!(setting.trim(), "0");
    assert_eq!(
        answer.unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail(20))),
        "echo: low\n"
    );
    containerd.kill_and_remove("low-port", "SIGKILL");
    let rm = containerd.ctr(&["containers", "rm", "low-port"]);
    assert_eq!(rm.code, 0, "{rm:?}");

    let spec = DockerSpec::new(
        "docker-default-network.json",
        rootfs.path(),
        &["/net-echo.wasm", "serve", "81"],
        |spec| spec["linux"]["sysctl"]["vm.swappiness"] = json!("10"),
    );
    let out = spec.run(&containerd, "host-sysctl");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(
            "sysctl vm.swappiness is not allowed: no namespace scopes it, so it would change \
             the host"
        ),
        "{out:?}"
    );
}
