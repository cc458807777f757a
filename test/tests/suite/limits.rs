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
    let hog = wat::parse_str(
        r#"(module
            (table $t 1 funcref)
            (func (export "_start")
                (loop $more
                    (drop (table.grow $t (ref.null func) (i32.const 1048576)))
                    (br $more))))"#,
    )
    .unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("hog.wasm"), hog).unwrap();
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
    assert!(
        containerd.shim_log().contains("cgroup OOM killer"),
        "{}",
        containerd.shim_log()
    );
}
