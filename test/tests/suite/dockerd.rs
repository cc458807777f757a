//! What a Docker user does, through a real dockerd (Debian sid's, on a private containerd 2):
//! `docker load` of the packer's tarballs, then `docker run --runtime io.containerd.wasmtime.v1
//! --platform wasi/wasm` on Docker's default network mode, and the commands that manage a
//! running container. dockerd runs with `"bridge": "none"`: every container gets a network
//! namespace of its own with only loopback, and the HTTP test talks to its server from a
//! thread inside that namespace.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use integration::docker::Dockerd;
use integration::http::{request, wait_until_listening};
use integration::netns::{inside, interface_names};
use integration::{assert_ttycheck_answered, program, run_on_a_terminal, RUNTIME};

/// Where the http-hello component listens by default (`WASI_HTTP_ADDR` unset), inside its
/// container's network namespace.
const SERVER: &str = "127.0.0.1:8080";

/// `docker run` with this runtime and platform, then `flags` and `image` and `args`.
fn run_args<'a>(flags: &[&'a str], image: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["run", "--runtime", RUNTIME, "--platform", "wasi/wasm"];
    argv.extend(flags);
    argv.push(image);
    argv.extend(args);
    argv
}

/// Loads the example `name` as image `wasm-NAME:test`.
fn load(dockerd: &Dockerd, name: &str) -> String {
    dockerd
        .load_program(&program(name), &format!("wasm-{name}:test"), false)
        .unwrap()
}

/// Context for a failed assertion: the shim's lines in containerd's log and dockerd's tail.
fn logs(dockerd: &Dockerd) -> String {
    let log = dockerd.log();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    format!(
        "--- shim log ---\n{}\n--- dockerd log (tail) ---\n{}",
        dockerd.containerd().shim_log(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// `docker inspect -f TEMPLATE id`, trimmed.
fn inspect(dockerd: &Dockerd, template: &str, id: &str) -> String {
    let out = dockerd.docker(&["inspect", "-f", template, id]);
    assert_eq!(out.code, 0, "inspect {id}: {out:?}");
    out.stdout.trim().to_string()
}

#[test]
fn docker_load_and_run_give_output_status_args_env_workdir_and_volumes() {
    let dockerd = Dockerd::start().unwrap();
    let hello = load(&dockerd, "hello");
    let exitcode = load(&dockerd, "exitcode");
    let printenv = load(&dockerd, "printenv");
    let filetool = load(&dockerd, "filetool");
    let images = dockerd.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for image in [&hello, &exitcode, &printenv, &filetool] {
        let short = image.trim_start_matches("docker.io/library/");
        assert!(images.stdout.contains(short), "{image}: {images:?}");
    }

    let out = dockerd.docker(&run_args(&["--rm"], &hello, &[]));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{out:?}\n{}",
        logs(&dockerd)
    );

    // Arguments after the image are appended to its entrypoint; the status is the program's.
    let out = dockerd.docker(&run_args(&["--rm"], &exitcode, &["42"]));
    assert_eq!(out.code, 42, "{out:?}\n{}", logs(&dockerd));
    // --init puts docker-init in front; the program still runs and its status is kept.
    let out = dockerd.docker(&run_args(&["--rm", "--init"], &exitcode, &["3"]));
    assert_eq!(out.code, 3, "{out:?}\n{}", logs(&dockerd));
    // A program that is not there is 127, as Docker answers for runc's "no such file".
    let out = dockerd.docker(&run_args(
        &["--rm", "--entrypoint", "/nothere.wasm"],
        &exitcode,
        &[],
    ));
    assert_eq!(out.code, 127, "{out:?}\n{}", logs(&dockerd));

    // -e and -w reach the program: the env, and the working directory as PWD.
    let out = dockerd.docker(&run_args(
        &["--rm", "-e", "GREETING=hi there", "-w", "/tmp"],
        &printenv,
        &["one", "two words"],
    ));
    assert_eq!(out.code, 0, "{out:?}\n{}", logs(&dockerd));
    for line in [
        "argv[0]=/printenv.wasm",
        "argv[1]=one",
        "argv[2]=two words",
        "env:GREETING=hi there",
        "env:PWD=/tmp",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "{line}: {out:?}");
    }

    // -v DIR:/data is writable; -v DIR:/data:ro is readable only.
    let volume = tempfile::tempdir().unwrap();
    let bind = format!("{}:/data", volume.path().display());
    let out = dockerd.docker(&run_args(
        &["--rm", "-v", &bind],
        &filetool,
        &["write", "/data/out.txt", "from docker"],
    ));
    assert_eq!(out.code, 0, "{out:?}\n{}", logs(&dockerd));
    assert_eq!(
        std::fs::read_to_string(volume.path().join("out.txt")).unwrap(),
        "from docker\n"
    );
    let read_only = format!("{bind}:ro");
    let out = dockerd.docker(&run_args(
        &["--rm", "-v", &read_only],
        &filetool,
        &["read", "/data/out.txt"],
    ));
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "from docker\n"),
        "{out:?}"
    );
    let out = dockerd.docker(&run_args(
        &["--rm", "-v", &read_only],
        &filetool,
        &["write", "/data/out.txt", "overwritten"],
    ));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("filetool: open /data/out.txt"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(volume.path().join("out.txt")).unwrap(),
        "from docker\n"
    );
}

#[test]
fn docker_manages_a_running_wasm_container() {
    let dockerd = Dockerd::start().unwrap();
    let ticker = load(&dockerd, "ticker");
    let spin = load(&dockerd, "spin");

    // docker logs: what the program printed.
    let out = dockerd.docker(&run_args(
        &["-d", "--name", "ticker"],
        &ticker,
        &["0", "100"],
    ));
    assert_eq!(out.code, 0, "{out:?}\n{}", logs(&dockerd));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs_out = dockerd.docker(&["logs", "ticker"]);
        if logs_out.stdout.contains("tick 3\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "docker logs: {logs_out:?}\n{}",
            logs(&dockerd)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // docker exec: another program of the image, in the container, with its env.
    let out = dockerd.docker(&["exec", "ticker", "/ticker.wasm", "2", "10"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "tick 1\ntick 2\n"),
        "{out:?}\n{}",
        logs(&dockerd)
    );

    // docker top lists the processes of `ps -ef` whose pids the task's Pids names: the
    // container's own process is one of them.
    let out = dockerd.docker(&["top", "ticker"]);
    assert_eq!(out.code, 0, "{out:?}\n{}", logs(&dockerd));
    assert!(
        out.stdout.starts_with("UID") && out.stdout.lines().count() >= 2,
        "docker top: {out:?}"
    );
    // Its command line is the program's, as a native container's is: not the shim's.
    assert!(
        out.stdout.contains("/ticker.wasm 0 100") && !out.stdout.contains("containerd-shim"),
        "docker top: {out:?}"
    );

    // docker stop: SIGTERM ends a plain program at once, with 143. With a stop timeout of
    // 2 s, a program still running then would be SIGKILLed and show 137 instead.
    let out = dockerd.docker(&["stop", "-t", "2", "ticker"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(inspect(&dockerd, "{{.State.ExitCode}}", "ticker"), "143");

    // docker stats: a busy program shows CPU and memory; docker kill ends it with 137. Its
    // limits are its cgroup's, which the kernel enforces.
    let out = dockerd.docker(&run_args(
        &[
            "-d",
            "--name",
            "spin",
            "--cpus",
            "0.5",
            "--memory",
            "128m",
            "--pids-limit",
            "64",
        ],
        &spin,
        &[],
    ));
    assert_eq!(out.code, 0, "{out:?}\n{}", logs(&dockerd));
    let pid = dockerd.docker(&["inspect", "-f", "{{.State.Pid}}", "spin"]);
    let pid: u32 = pid
        .stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{pid:?}"));
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let pids_path = cgroups
        .lines()
        .find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_string()))
        .unwrap_or_else(|| panic!("no pids cgroup: {cgroups}"));
    let pids_max = format!("/sys/fs/cgroup/pids{pids_path}/pids.max");
    if std::path::Path::new(&pids_max).exists() {
        assert_eq!(std::fs::read_to_string(&pids_max).unwrap().trim(), "64");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let stats = dockerd.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.CPUPerc}} {{.MemUsage}}",
        "spin",
    ]);
    assert_eq!(stats.code, 0, "{stats:?}\n{}", logs(&dockerd));
    let (cpu, memory) = stats
        .stdout
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("docker stats: {stats:?}"));
    let cpu: f64 = cpu.trim_end_matches('%').parse().unwrap_or(0.0);
    // Half a core at most (a spinning program alone would show 100%).
    assert!(cpu > 0.0 && cpu < 70.0, "docker stats CPU: {stats:?}");
    let (used, limit) = memory
        .split_once('/')
        .unwrap_or_else(|| panic!("docker stats memory: {stats:?}"));
    assert!(
        !used.trim().is_empty() && !used.trim().starts_with("0B"),
        "docker stats memory: {stats:?}"
    );
    assert_eq!(limit.trim(), "128MiB", "docker stats memory: {stats:?}");
    let out = dockerd.docker(&["kill", "spin"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = dockerd.docker(&["wait", "spin"]);
    assert_eq!(out.stdout.trim(), "137", "{out:?}");
}

#[test]
fn docker_run_it_gives_the_program_a_terminal() {
    let dockerd = Dockerd::start().unwrap();
    let ttycheck = load(&dockerd, "ttycheck");
    // `docker run -it` needs a terminal of its own.
    let docker = dockerd.docker_command(&run_args(&["--rm", "-it"], &ttycheck, &[]));
    let command = shell_words(&docker);
    let envs: Vec<(&OsStr, &OsStr)> = docker
        .get_envs()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    // Typed once the docker CLI has surely put its terminal in raw mode, which discards
    // input typed before (TCSAFLUSH): on a loaded machine that takes it over a second.
    let out = run_on_a_terminal(
        &command,
        &envs,
        b"hello docker tty\n",
        Duration::from_millis(4000),
    )
    .expect("script (bsdutils)");
    assert_ttycheck_answered(&out, "hello docker tty", &logs(&dockerd));
}

#[test]
fn an_http_component_answers_on_its_containers_loopback() {
    let dockerd = Dockerd::start().unwrap();
    let image = dockerd
        .load_program(&program("http-hello"), "wasm-http-hello:test", true)
        .unwrap();
    let out = dockerd.docker(&run_args(&["-d", "--name", "web"], &image, &[]));
    assert_eq!(out.code, 0, "{out:?}\n{}", logs(&dockerd));
    let pid = inspect(&dockerd, "{{.State.Pid}}", "web");
    let netns = format!("/proc/{pid}/ns/net");
    let (interfaces, answer) = inside(Path::new(&netns), || {
        let answer = wait_until_listening(SERVER, Duration::from_secs(20))
            .and_then(|()| request(SERVER, "GET", "/", b""));
        (interface_names(), answer)
    })
    .unwrap();
    assert_eq!(interfaces, ["lo"], "the container's network namespace");
    let answer = answer.unwrap_or_else(|e| {
        panic!(
            "the server never answered on its loopback: {e}\n{}",
            logs(&dockerd)
        )
    });
    assert_eq!(
        (answer.status, answer.text().as_str()),
        (200, "hello from wasm\n")
    );
    let log = dockerd.docker(&["logs", "web"]);
    assert!(log.stdout.contains("GET /"), "{log:?}");
    // docker stop: the server drains and exits 0.
    let out = dockerd.docker(&["stop", "web"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(inspect(&dockerd, "{{.State.ExitCode}}", "web"), "0");
}

/// `command` as one shell command line, each word single-quoted.
fn shell_words(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| format!("'{}'", word.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}
