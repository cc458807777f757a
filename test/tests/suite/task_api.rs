//! The task API beyond run and kill, through `ctr` as users reach it: exec, pause/resume,
//! a terminal, and the events each raises.

use std::process::Stdio;
use std::time::{Duration, Instant};

use integration::{
    assert_ttycheck_answered, process_cpu_ns, rootfs_with, run_on_a_terminal, Containerd,
    ContainerdBinaries, EventWatch, RUNTIME,
};

#[test]
fn exec_runs_another_wasm_program_of_the_container() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["ticker", "printenv", "exitcode", "spin"]).unwrap();
    std::fs::create_dir(rootfs.path().join("work")).unwrap();
    std::fs::write(rootfs.path().join("native.sh"), "#!/bin/sh\necho native\n").unwrap();
    let events = EventWatch::start(&containerd);
    containerd.run_detached(
        &["--env", "FROM_SPEC=yes"],
        rootfs.path(),
        "ex1",
        &["/ticker.wasm", "0", "200"],
    );
    containerd
        .wait_for_status("ex1", "RUNNING", Duration::from_secs(10))
        .unwrap();

    // argv from the exec, env from the container's process, cwd overridden (printenv
    // shows it as PWD; relative paths resolve in it, as for the main program).
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "--cwd",
        "/work",
        "ex1",
        "/printenv.wasm",
        "one",
        "two words",
    ]);
    assert_eq!(exec.code, 0, "{exec:?}\n{}", containerd.shim_log());
    for line in [
        "argv[0]=/printenv.wasm",
        "argv[1]=one",
        "argv[2]=two words",
        "env:FROM_SPEC=yes",
        "env:PWD=/work",
    ] {
        assert!(exec.stdout.lines().any(|l| l == line), "{line}: {exec:?}");
    }
    events.expect("/tasks/exec-added", &["ex1", "e1"]);
    events.expect("/tasks/exec-started", &["ex1", "e1"]);
    events.expect("/tasks/exit", &["ex1", "e1"]);

    // The exec's own exit status.
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "ex1",
        "/exitcode.wasm",
        "7",
    ]);
    assert_eq!(exec.code, 7, "{exec:?}");

    // Not wasm, or not there: a clear error, and the container is unaffected.
    let exec = containerd.ctr(&["task", "exec", "--exec-id", "e3", "ex1", "/native.sh"]);
    assert_ne!(exec.code, 0, "{exec:?}");
    assert!(exec.stderr.contains("not wasm"), "{exec:?}");
    let exec = containerd.ctr(&["task", "exec", "--exec-id", "e4", "ex1", "/missing.wasm"]);
    assert_ne!(exec.code, 0, "{exec:?}");
    assert!(exec.stderr.contains("/missing.wasm"), "{exec:?}");

    // A long exec shows in ps beside the init, and a signal ends only it.
    let mut long = containerd
        .ctr_command(&["task", "exec", "--exec-id", "spinner", "ex1", "/spin.wasm"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let ps = loop {
        let ps = containerd.ctr(&["task", "ps", "ex1"]);
        assert_eq!(ps.code, 0, "{ps:?}");
        if ps.stdout.lines().count() >= 3 || Instant::now() > deadline {
            break ps;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let init_pid = containerd.task_pid("ex1").to_string();
    let pids: Vec<&str> = ps
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pids.len(), 2, "{ps:?}");
    assert!(pids.contains(&init_pid.as_str()), "{ps:?}");
    assert!(ps.stdout.contains("spinner"), "{ps:?}");
    let kill = containerd.ctr(&[
        "task",
        "kill",
        "--exec-id",
        "spinner",
        "-s",
        "SIGTERM",
        "ex1",
    ]);
    assert_eq!(kill.code, 0, "{kill:?}");
    let status = long.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let ls = containerd.wait_for_status("ex1", "RUNNING", Duration::from_secs(1));
    assert!(ls.is_ok(), "the init stopped with its exec: {ls:?}");

    containerd.kill_and_remove("ex1", "SIGKILL");
    let rm = containerd.ctr(&["containers", "rm", "ex1"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(5))
        .is_empty());
}

#[test]
fn pause_freezes_a_busy_program_and_resume_continues_it() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["spin"]).unwrap();
    let events = EventWatch::start(&containerd);
    containerd.run_detached(&[], rootfs.path(), "pz", &["/spin.wasm"]);
    containerd
        .wait_for_status("pz", "RUNNING", Duration::from_secs(10))
        .unwrap();
    let pid = containerd.task_pid("pz");

    let pause = containerd.ctr(&["task", "pause", "pz"]);
    assert_eq!(pause.code, 0, "{pause:?}");
    containerd
        .wait_for_status("pz", "PAUSED", Duration::from_secs(2))
        .unwrap();
    events.expect("/tasks/paused", &["pz"]);
    // A second pause is refused, as runc refuses it; so is an exec, whose process would
    // join the frozen cgroup.
    assert_ne!(containerd.ctr(&["task", "pause", "pz"]).code, 0);
    let exec = containerd.ctr(&["task", "exec", "--exec-id", "frozen", "pz", "/spin.wasm"]);
    assert!(exec.code != 0 && exec.stderr.contains("paused"), "{exec:?}");
    std::thread::sleep(Duration::from_millis(100));
    let before = process_cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(1));
    let paused_ns = process_cpu_ns(pid) - before;
    assert!(
        paused_ns < 50_000_000,
        "a paused program used {paused_ns} ns of CPU in a second"
    );

    let resume = containerd.ctr(&["task", "resume", "pz"]);
    assert_eq!(resume.code, 0, "{resume:?}");
    containerd
        .wait_for_status("pz", "RUNNING", Duration::from_secs(2))
        .unwrap();
    events.expect("/tasks/resumed", &["pz"]);
    let before = process_cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(1));
    let running_ns = process_cpu_ns(pid) - before;
    assert!(
        running_ns > 200_000_000,
        "the resumed program used only {running_ns} ns of CPU in a second"
    );

    // Checkpointing a wasm instance is not offered: the error names the RPC.
    let checkpoint = containerd.ctr(&["task", "checkpoint", "pz"]);
    assert_ne!(checkpoint.code, 0, "{checkpoint:?}");
    assert!(
        checkpoint.stderr.contains("Checkpoint") && checkpoint.stderr.contains("not supported"),
        "{checkpoint:?}"
    );

    // A paused task still dies on SIGKILL.
    assert_eq!(containerd.ctr(&["task", "pause", "pz"]).code, 0);
    let kill = containerd.ctr(&["task", "kill", "-s", "SIGKILL", "pz"]);
    assert_eq!(kill.code, 0, "{kill:?}");
    containerd
        .wait_for_status("pz", "STOPPED", Duration::from_secs(5))
        .unwrap();
    let rm = containerd.ctr(&["task", "rm", "pz"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    assert!(rm.stderr.contains("exit code 137"), "{rm:?}");
    assert_eq!(containerd.ctr(&["containers", "rm", "pz"]).code, 0);
}

#[test]
fn a_terminal_task_sees_a_tty_and_its_input() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["ttycheck"]).unwrap();
    // `ctr run -t` needs a terminal of its own.
    let command = format!(
        "{} -a {} run --rm -t --runtime {RUNTIME} --rootfs {} tty1 /ttycheck.wasm",
        ContainerdBinaries::under_test().path("ctr").display(),
        containerd.address().display(),
        rootfs.path().display()
    );
    let out = run_on_a_terminal(&command, &[], b"hello tty\n", Duration::from_millis(500))
        .expect("script (bsdutils)");
    assert_ttycheck_answered(&out, "hello tty", &containerd.shim_log());
    // The terminal's line discipline turns the program's \n into \r\n, as on any tty
    // (`script`'s own pty may add another \r).
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stdout-tty=1\r"), "{stdout:?}");
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(5))
        .is_empty());
}

#[test]
fn a_program_over_its_memory_limit_is_oom_killed() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["grow"]).unwrap();
    let events = EventWatch::start(&containerd);
    let limit = 24 << 20;
    let out = containerd.run_rootfs(
        &["--memory-limit", &limit.to_string()],
        rootfs.path(),
        "oom1",
        &["/grow.wasm"],
    );
    assert_eq!(out.code, 137, "{out:?}");
    assert!(out.stdout.contains("grew to 16 MiB"), "{out:?}");
    assert!(!out.stdout.contains("grew to 24 MiB"), "{out:?}");
    assert!(out.stderr.contains("out of memory"), "{out:?}");
    events.expect("/tasks/oom", &["oom1"]);
}
