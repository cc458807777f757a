//! The kernel enforces what a wasm container's spec asks: each container is a process in a
//! cgroup of its own, written as runc writes it, and a pid that means that process alone.

use std::path::Path;
use std::time::Duration;

use integration::{cgroups_of, process_cpu_ns, rootfs_with, Containerd, EventWatch};

/// The container's cgroup path (relative to each hierarchy) for a controller.
fn cgroup_of(pid: u32, controller: &str) -> String {
    cgroups_of(pid)
        .into_iter()
        .find_map(|(controllers, path)| {
            let v2 = controllers.is_empty();
            (v2 || controllers.split(',').any(|c| c == controller)).then_some(path)
        })
        .unwrap_or_else(|| panic!("{pid} has no {controller} cgroup"))
}

/// A file of the container's cgroup: the v1 hierarchy of `controller`, else the unified one.
fn cgroup_file(pid: u32, controller: &str, v1_name: &str, v2_name: &str) -> String {
    let path = cgroup_of(pid, controller);
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
        .join(v1_name);
    let file = if v1.exists() {
        v1
    } else {
        Path::new("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join(v2_name)
    };
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_string()
}

/// A rootfs holding `/hog.wasm`, the module `wat` describes.
fn rootfs_with_hog(wat: &str) -> tempfile::TempDir {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("hog.wasm"), wat::parse_str(wat).unwrap()).unwrap();
    rootfs
}

#[test]
fn a_cpu_quota_holds_a_busy_program_to_its_share_and_limits_are_the_cgroups() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["spin"]).unwrap();
    containerd.run_detached(
        &[
            "--cpu-quota",
            "20000",
            "--cpu-period",
            "100000",
            "--memory-limit",
            "268435456",
        ],
        rootfs.path(),
        "quota",
        &["/spin.wasm"],
    );
    containerd
        .wait_for_status("quota", "RUNNING", Duration::from_secs(10))
        .unwrap();
    let pid = containerd.task_pid("quota");
    assert_eq!(cgroup_of(pid, "memory"), "/default/quota");
    let quota = cgroup_file(pid, "cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(quota == "20000" || quota == "20000 100000", "{quota}");
    let memory = cgroup_file(pid, "memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(memory, "268435456");

    std::thread::sleep(Duration::from_millis(500));
    let before = process_cpu_ns(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = process_cpu_ns(pid) - before;
    // 20% of a core for 3 s is 600 ms; a spinning program left alone would use 3 s.
    assert!(
        used <= 750_000_000,
        "a program limited to 20% of a core used {used} ns in 3 s"
    );
    assert!(
        used >= 300_000_000,
        "the program hardly ran: {used} ns in 3 s"
    );

    // Stats come from the cgroup: the memory the process uses, the CPU it used.
    let metrics = containerd.ctr(&["task", "metrics", "quota"]);
    assert_eq!(metrics.code, 0, "{metrics:?}");
    containerd.kill_and_remove("quota", "SIGKILL");
    assert_eq!(containerd.ctr(&["containers", "rm", "quota"]).code, 0);
    assert!(!Path::new("/sys/fs/cgroup/memory/default/quota").exists());
}

#[test]
fn a_kill_from_the_host_ends_only_the_container_whose_pid_it_is() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["spin"]).unwrap();
    // One shim for both, as a pod's containers share one.
    let group = ["--annotation", "io.kubernetes.cri.sandbox-id=host-kill"];
    containerd.run_detached(&group, rootfs.path(), "victim", &["/spin.wasm"]);
    containerd.run_detached(&group, rootfs.path(), "bystander", &["/spin.wasm"]);
    for id in ["victim", "bystander"] {
        containerd
            .wait_for_status(id, "RUNNING", Duration::from_secs(10))
            .unwrap();
    }
    let shims = containerd.shim_pids();
    assert_eq!(shims.len(), 1, "not one shim: {shims:?}");
    let (victim, bystander) = (
        containerd.task_pid("victim"),
        containerd.task_pid("bystander"),
    );
    assert_ne!(victim, bystander);
    // `ctr task ps` lists the real process.
    let ps = containerd.ctr(&["task", "ps", "victim"]);
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&victim.to_string())),
        "{ps:?}"
    );
    let comm = std::fs::read_to_string(format!("/proc/{victim}/status")).unwrap();
    assert!(comm.contains(&format!("PPid:\t{}", shims[0])), "{comm}");

    // What dockerd does when a stop times out, and what an operator does by hand.
    assert_eq!(unsafe { libc::kill(victim as i32, libc::SIGKILL) }, 0);
    containerd
        .wait_for_status("victim", "STOPPED", Duration::from_secs(5))
        .unwrap();
    let rm = containerd.ctr(&["task", "rm", "victim"]);
    assert!(rm.stderr.contains("exit code 137"), "{rm:?}");
    // The neighbour and the shim go on.
    assert_eq!(containerd.shim_pids(), shims);
    containerd
        .wait_for_status("bystander", "RUNNING", Duration::from_secs(1))
        .unwrap();
    let before = process_cpu_ns(bystander);
    std::thread::sleep(Duration::from_millis(500));
    assert!(process_cpu_ns(bystander) > before + 100_000_000);
    containerd.kill_and_remove("bystander", "SIGTERM");
    for id in ["victim", "bystander"] {
        containerd.ctr(&["containers", "rm", id]);
    }
}

#[test]
fn host_memory_over_the_cgroup_limit_ends_in_137_and_an_oom_event() {
    let containerd = Containerd::start().unwrap();
    // Tables are host memory (a pointer per element), not linear memory: only the kernel's
    // account of the container's cgroup sees this program grow.
    let rootfs = rootfs_with_hog(
        r#"(module
            (table $t 1 funcref)
            (func (export "_start")
                (loop $more
                    (drop (table.grow $t (ref.null func) (i32.const 1048576)))
                    (br $more))))"#,
    );
    let events = EventWatch::start(&containerd);
    let limit = 64 << 20;
    let out = containerd.run_rootfs(
        &["--memory-limit", &limit.to_string()],
        rootfs.path(),
        "hog",
        &["/hog.wasm"],
    );
    assert_eq!(out.code, 137, "{out:?}\n{}", containerd.shim_log());
    events.expect("/tasks/oom", &["hog"]);
    events.expect("/tasks/exit", &["\"hog\"", "\"exit_status\":137"]);
    assert_oom_before_exit(&events.lines(), "hog");
    assert!(
        containerd.shim_log().contains("cgroup OOM killer"),
        "{}",
        containerd.shim_log()
    );
}

#[test]
fn the_kernels_oom_notice_is_published_while_the_container_still_runs() {
    let containerd = Containerd::start().unwrap();
    // Waits for a byte on stdin, then grows host memory (table elements) without end.
    let rootfs = rootfs_with_hog(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_read"
                (func $fd_read (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (table $t 1 funcref)
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 1))
                (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
                (loop $more
                    (drop (table.grow $t (ref.null func) (i32.const 1048576)))
                    (br $more))))"#,
    );
    let events = EventWatch::start(&containerd);
    let mut run = containerd
        .run_rootfs_command(
            &["--memory-limit", &(64u64 << 20).to_string()],
            rootfs.path(),
            "stuck",
            &["/hog.wasm"],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    containerd
        .wait_for_status("stuck", "RUNNING", Duration::from_secs(10))
        .unwrap();
    let pid = containerd.task_pid("stuck");
    // With the OOM killer off, a cgroup at its limit holds its processes in the kernel's
    // OOM wait instead of killing one: nothing exits, so only the kernel's notice can say
    // what happened. (v1 only: v2 has no such switch, and its notice follows a kill.)
    let oom_control = Path::new("/sys/fs/cgroup/memory")
        .join(cgroup_of(pid, "memory").trim_start_matches('/'))
        .join("memory.oom_control");
    if !oom_control.exists() {
        eprintln!("skipped: no v1 memory hierarchy");
        let _ = run.kill();
        let _ = run.wait();
        return;
    }
    std::fs::write(&oom_control, "1").unwrap();
    {
        use std::io::Write;
        let mut stdin = run.stdin.take().unwrap();
        stdin.write_all(b"x").unwrap();
    }
    events.expect("/tasks/oom", &["stuck"]);
    let status = containerd.ctr(&["task", "ls"]);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("stuck ") && l.contains("RUNNING")),
        "{status:?}"
    );
    assert!(
        !events.lines().iter().any(|l| l.contains("/tasks/exit")),
        "{:?}",
        events.lines()
    );
    let kill = containerd.ctr(&["task", "kill", "-s", "SIGKILL", "stuck"]);
    assert_eq!(kill.code, 0, "{kill:?}");
    let out = run.wait().unwrap();
    assert_eq!(out.code(), Some(137), "{out:?}\n{}", containerd.shim_log());
    events.expect("/tasks/exit", &["\"stuck\"", "\"exit_status\":137"]);
    assert_oom_before_exit(&events.lines(), "stuck");
}

/// Every `/tasks/oom` of container `id` came before its `/tasks/exit`, as runc's shim
/// orders them (a client reading the exit decides then whether it was an OOM kill).
fn assert_oom_before_exit(lines: &[String], id: &str) {
    let position = |topic: &str| {
        lines
            .iter()
            .rposition(|l| l.contains(topic) && l.contains(&format!("\"{id}\"")))
    };
    let (oom, exit) = (position("/tasks/oom"), position("/tasks/exit"));
    assert!(
        matches!((oom, exit), (Some(o), Some(e)) if o < e),
        "{lines:#?}"
    );
}

#[test]
fn a_pids_limit_holds_and_an_exec_past_it_fails_clearly() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["spin"]).unwrap();
    containerd.run_detached(&[], rootfs.path(), "pids", &["/spin.wasm"]);
    containerd
        .wait_for_status("pids", "RUNNING", Duration::from_secs(10))
        .unwrap();
    let pid = containerd.task_pid("pids");
    let dir = Path::new("/sys/fs/cgroup/pids").join(cgroup_of(pid, "pids").trim_start_matches('/'));
    let current: u64 = std::fs::read_to_string(dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The container's process and its threads: the program's, signals and the epoch ticker.
    assert!((1..=4).contains(&current), "pids.current {current}");
    // The limit reached: what Kubernetes' podPidsLimit and `docker run --pids-limit` set.
    std::fs::write(dir.join("pids.max"), current.to_string()).unwrap();
    // The exec's process may join (the kernel lets a move exceed the limit), but not start a
    // thread there, and it says so, as `runc exec` fails into a full container.
    let exec = containerd.ctr(&["task", "exec", "--exec-id", "more", "pids", "/spin.wasm"]);
    assert_ne!(exec.code, 0, "{exec:?}");
    assert!(
        exec.stderr.contains("Resource temporarily unavailable"),
        "{exec:?}"
    );
    let after: u64 = std::fs::read_to_string(dir.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(after, current);
    // The container goes on.
    let before = process_cpu_ns(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(process_cpu_ns(pid) > before + 50_000_000);
    containerd.kill_and_remove("pids", "SIGKILL");
    containerd.ctr(&["containers", "rm", "pids"]);
}
