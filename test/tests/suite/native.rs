//! Containers whose entrypoint is a Linux program, run under this runtime: the shim hands
//! them to containerd's runc shim, and they behave exactly as runc containers.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use integration::Containerd;

/// A rootfs holding Debian's static busybox as /bin/busybox and a `#!` script using it.
fn busybox_rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    let script = dir.path().join("hello.sh");
    std::fs::write(
        &script,
        "#!/bin/busybox sh\necho \"script as pid $$\"\nexit 7\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn no_processes_left(containerd: &Containerd) {
    let left = containerd.wait_for_no_shims(Duration::from_secs(10));
    assert!(left.is_empty(), "wasmtime shims left: {left:?}");
    let mut runc = containerd.runc_shim_pids();
    for _ in 0..100 {
        if runc.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        runc = containerd.runc_shim_pids();
    }
    assert!(runc.is_empty(), "runc shims left: {runc:?}");
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

#[test]
fn an_elf_entrypoint_runs_under_runc_in_its_own_namespaces() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = busybox_rootfs();
    let out = containerd.run_rootfs(
        &[],
        rootfs.path(),
        "native-elf",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo \"native as pid $$\"; busybox cat /proc/self/cgroup; exit 3",
        ],
    );
    // PID 1 in a cgroup of its own (ctr names it after the container): a real Linux
    // container, not a process of the shim.
    assert_eq!(out.code, 3, "{out:?}\n{}", containerd.shim_log());
    assert!(out.stdout.contains("native as pid 1"), "{out:?}");
    assert!(out.stdout.contains("/native-elf"), "{out:?}");
    no_processes_left(&containerd);
}

#[test]
fn a_script_entrypoint_runs_under_runc() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = busybox_rootfs();
    let out = containerd.run_rootfs(&[], rootfs.path(), "native-script", &["/hello.sh"]);
    assert_eq!(out.code, 7, "{out:?}\n{}", containerd.shim_log());
    assert!(out.stdout.contains("script as pid 1"), "{out:?}");
    no_processes_left(&containerd);
}

#[test]
fn exec_ps_and_signals_reach_a_native_container() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = busybox_rootfs();
    // A shell as PID 1 ignores SIGTERM; `trap` makes it exit 42 on it instead.
    containerd.run_detached(
        &[],
        rootfs.path(),
        "native-long",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "trap 'exit 42' TERM; while true; do busybox sleep 0.1; done",
        ],
    );
    containerd
        .wait_for_status("native-long", "RUNNING", Duration::from_secs(10))
        .expect("running");
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "probe",
        "native-long",
        "/bin/busybox",
        "sh",
        "-c",
        "echo exec-ok; exit 5",
    ]);
    assert_eq!(exec.code, 5, "{exec:?}\n{}", containerd.shim_log());
    assert!(exec.stdout.contains("exec-ok"), "{exec:?}");
    let ps = containerd.ctr(&["task", "ps", "native-long"]);
    assert_eq!(ps.code, 0, "{ps:?}");
    assert!(ps.stdout.lines().count() >= 2, "{ps:?}");

    let kill = containerd.ctr(&["task", "kill", "-s", "SIGTERM", "native-long"]);
    assert_eq!(kill.code, 0, "{kill:?}");
    containerd
        .wait_for_status("native-long", "STOPPED", Duration::from_secs(10))
        .expect("stopped");
    // `ctr task rm` warns with the status Delete reported.
    let rm = containerd.ctr(&["task", "rm", "native-long"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    assert!(rm.stderr.contains("exit code 42"), "{rm:?}");
    let rm = containerd.ctr(&["containers", "rm", "native-long"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    no_processes_left(&containerd);
}

/// The sockets in containerd's shim socket directory.
fn shim_sockets() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/run/containerd/s")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect()
}

/// A group (a pod, by its sandbox-id annotation) whose native container is deleted first:
/// the runc shim started for it removes its own sockets when released, never the wasm
/// shim's, which keeps serving the group's wasm container, even across a containerd restart.
#[test]
fn a_released_runc_shim_takes_its_socket_and_leaves_ours() {
    let mut containerd = Containerd::start().expect("containerd");
    let rootfs = busybox_rootfs();
    std::fs::copy(
        integration::program("ticker"),
        rootfs.path().join("ticker.wasm"),
    )
    .expect("ticker");
    // The group is named after its native container, as a pod is after its sandbox (the
    // runc shim finds its sockets again by that name when it exits).
    let group = "io.kubernetes.cri.sandbox-id=grouped-native";
    let annotation = ["--annotation", group];
    containerd.run_detached(
        &annotation,
        rootfs.path(),
        "grouped-wasm",
        &["/ticker.wasm"],
    );
    let ours = std::fs::read_to_string(
        containerd
            .dir()
            .join("state/io.containerd.runtime.v2.task/default/grouped-wasm/address"),
    )
    .expect("the wasm container's address file");
    let ours = ours.trim().trim_start_matches("unix://").to_string();
    let before = shim_sockets();
    containerd.run_detached(
        &annotation,
        rootfs.path(),
        "grouped-native",
        &["/bin/busybox", "sleep", "600"],
    );
    // Its socket, and with -debug the debug socket of containerd 2's runc shim.
    let runc: Vec<String> = shim_sockets().difference(&before).cloned().collect();
    assert!(!runc.is_empty(), "the runc shim made no socket");
    assert_eq!(containerd.runc_shim_pids().len(), 1);

    containerd.kill_and_remove("grouped-native", "SIGKILL");
    let rm = containerd.ctr(&["containers", "rm", "grouped-native"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    for _ in 0..100 {
        if containerd.runc_shim_pids().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        containerd.runc_shim_pids().is_empty(),
        "the runc shim was not released"
    );
    let left: Vec<&String> = runc
        .iter()
        .filter(|socket| std::path::Path::new(socket).exists())
        .collect();
    assert!(left.is_empty(), "the released runc shim left {left:?}");
    assert!(
        std::path::Path::new(&ours).exists(),
        "our socket {ours} is gone\n{}",
        containerd.shim_log()
    );
    // containerd finds the shim again through that socket after a restart.
    containerd.restart().expect("restart");
    containerd
        .wait_for_status("grouped-wasm", "RUNNING", Duration::from_secs(10))
        .expect("the wasm container is still served");
    containerd.kill_and_remove("grouped-wasm", "SIGTERM");
    let rm = containerd.ctr(&["containers", "rm", "grouped-wasm"]);
    assert_eq!(rm.code, 0, "{rm:?}");
    no_processes_left(&containerd);
}
