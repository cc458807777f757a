//! Pods: a Kubernetes RuntimeClass (`handler: wasmtime`) through containerd's own CRI
//! plugin, driven the way a kubelet drives it.
//!
//! One pod, host network, holds a wasm container and a native busybox sidecar sharing a
//! host directory (an emptyDir). The sandbox (a native pause) and the sidecar are handed by
//! the shim to containerd's runc shim; the wasm runs in the shim. The test follows the pod
//! from RunPodSandbox to RemovePodSandbox and checks what a kubelet would see (logs, status,
//! stats, exit codes) and what must be left afterwards: nothing.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use integration::cri::{
    import_busybox_image, import_image, import_pause_image, import_wasm_image, Cri, ImageRecipe,
};
use integration::pod::{
    container_config, log_has_line, pod_config, poll, read_log, run_pod_test, Pod,
};
use integration::{program, Containerd, RUNTIME_HANDLER};
use k8s_cri::v1::{ContainerState, PodSandboxState};

/// What podapp.wasm writes to /data/msg.txt for the sidecar to read.
const MESSAGE: &str = "hello sidecar, from the wasm container";

#[test]
fn a_pod_runs_a_wasm_container_beside_a_native_sidecar() {
    run_pod_test(run);
}

fn run(containerd: &Containerd, pod: &mut Pod) -> Result<()> {
    let mut cri = Cri::connect(containerd.address())?;
    let version = cri.version()?;
    ensure!(
        version.runtime_name == "containerd",
        "unexpected CRI runtime: {version:?}"
    );
    let pause_image = import_pause_image(containerd)?;
    let wasm_image = import_wasm_image(containerd, "podapp", "wasm-podapp:test")?;
    let busybox_image = import_busybox_image(containerd, "sidecar-busybox:test")?;
    let images = cri.list_images()?;
    for name in [&pause_image, &wasm_image, &busybox_image] {
        ensure!(
            images.iter().any(|i| i.repo_tags.contains(name)),
            "CRI does not list {name}: {images:?}"
        );
    }

    let config = pod_config(pod);
    let pod_id = cri
        .run_pod_sandbox(&config, RUNTIME_HANDLER)
        .context("the pod sandbox (native pause) did not start")?;
    pod.id = Some(pod_id.clone());
    let status = cri.pod_sandbox_status(&pod_id)?;
    ensure!(
        status.state == PodSandboxState::SandboxReady as i32,
        "pod not ready: {status:?}"
    );

    let wasm_config = container_config(
        "podapp",
        &wasm_image,
        &[],
        &["/data"],
        "podapp.log",
        &pod.data(),
    );
    let script = "while [ ! -f /data/msg.txt ]; do /bin/busybox sleep 0.1; done; \
                  /bin/busybox cat /data/msg.txt; \
                  while true; do /bin/busybox sleep 1; done";
    let sidecar_config = container_config(
        "sidecar",
        &busybox_image,
        &["/bin/busybox", "sh", "-c", script],
        &[],
        "sidecar.log",
        &pod.data(),
    );
    let wasm = cri.create_container(&pod_id, &wasm_config, &config)?;
    let sidecar = cri.create_container(&pod_id, &sidecar_config, &config)?;
    cri.start_container(&wasm)?;
    cri.start_container(&sidecar)?;

    let wasm_log = pod.logs().join("podapp.log");
    let sidecar_log = pod.logs().join("sidecar.log");
    poll("the sidecar to log the wasm's message", 15, || {
        Ok(log_has_line(&sidecar_log, MESSAGE))
    })
    .with_context(|| format!("sidecar log:\n{}", read_log(&sidecar_log)))?;
    poll("the wasm container to log its stdout line", 5, || {
        Ok(log_has_line(&wasm_log, "podapp: wrote /data/msg.txt"))
    })
    .with_context(|| format!("wasm log:\n{}", read_log(&wasm_log)))?;
    let shared = std::fs::read_to_string(pod.data().join("msg.txt"))?;
    ensure!(
        shared == format!("{MESSAGE}\n"),
        "the shared directory on the host holds {shared:?}"
    );
    for (name, id) in [("podapp", &wasm), ("sidecar", &sidecar)] {
        let status = cri.container_status(id)?;
        ensure!(
            status.state == ContainerState::ContainerRunning as i32,
            "container {name} is not running: {status:?}"
        );
    }
    // A pod's program tiers like any other: the shim compiled baseline code for its first
    // start, and the optimized code in a helper it moved out of the pod's cgroup, into
    // every cgroup the shim started in, so the compile counts against none of the pod's
    // limits.
    poll("the pod's background compile to finish", 90, || {
        Ok(containerd
            .shim_log()
            .contains("optimized code compiled in the background"))
    })
    .with_context(|| containerd.shim_log())?;
    let log = containerd.shim_log();
    ensure!(
        log.lines()
            .any(|l| l.contains("baseline (Winch) code") && !l.contains(" pid=")),
        "the pod's first start did not compile baseline code:\n{log}"
    );
    // "compile helper PID: in MOVED of the ALL cgroups the shim started in"
    let placed: Vec<(String, String)> = log
        .lines()
        .filter_map(|l| l.split_once("compile helper ")?.1.split_once(": in "))
        .filter_map(|(_, counts)| {
            let (moved, rest) = counts.split_once(" of the ")?;
            Some((moved.to_string(), rest.split(' ').next()?.to_string()))
        })
        .collect();
    ensure!(
        !placed.is_empty()
            && placed
                .iter()
                .all(|(moved, all)| moved == all && moved != "0"),
        "a compile helper stayed in the pod's cgroup: {placed:?}\n{log}"
    );
    poll("ContainerStats to show the wasm's CPU time", 5, || {
        let stats = cri.container_stats(&wasm)?;
        let cpu = stats.cpu.and_then(|c| c.usage_core_nano_seconds);
        Ok(cpu.is_some_and(|c| c.value > 0))
    })?;

    let wasmtime_shims = containerd.shim_pids();
    let runc_shims = containerd.runc_shim_pids();
    ensure!(
        wasmtime_shims.len() == 1,
        "expected one wasmtime shim for the pod, found pids {wasmtime_shims:?}"
    );
    ensure!(
        runc_shims.len() == 1,
        "expected one runc shim for the pod's native containers, found pids {runc_shims:?}"
    );
    // The wasm runs in the shim, so the shim must be where the node accounts the pod.
    for (what, pid) in [("wasmtime", wasmtime_shims[0]), ("runc", runc_shims[0])] {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        ensure!(
            cgroups
                .lines()
                .any(|l| l.ends_with(&format!(":{}", pod.cgroup_parent()))),
            "the {what} shim (pid {pid}) is not in the pod cgroup {}:\n{cgroups}",
            pod.cgroup_parent()
        );
    }

    stop_and_expect(&mut cri, &wasm, 10, 143, "the wasm container (SIGTERM)")?;
    stop_and_expect(
        &mut cri,
        &sidecar,
        2,
        137,
        "the sidecar (SIGKILL after 2 s)",
    )?;

    cri.stop_pod_sandbox(&pod_id)?;
    cri.remove_pod_sandbox(&pod_id)?;
    pod.id = None;
    no_shims_left(containerd)?;
    no_processes_left_in(pod)?;
    let mounts = containerd.mounts();
    ensure!(
        mounts.is_empty(),
        "mounts left after RemovePodSandbox: {mounts:?}"
    );
    Ok(())
}

/// StopContainer with `timeout`, then checks ContainerStatus says EXITED with `code`.
fn stop_and_expect(cri: &mut Cri, id: &str, timeout: i64, code: i32, what: &str) -> Result<()> {
    cri.stop_container(id, timeout)
        .with_context(|| format!("stopping {what}"))?;
    let status = cri.container_status(id)?;
    ensure!(
        status.state == ContainerState::ContainerExited as i32 && status.exit_code == code,
        "{what}: expected EXITED with {code}, got state {} exit code {} ({status:?})",
        status.state,
        status.exit_code
    );
    Ok(())
}

#[test]
fn kubelet_exec_and_a_lowered_memory_limit_reach_a_wasm_container() {
    run_pod_test(exec_and_update);
}

/// A growing wasm container: ExecSync runs another program of its image inside it, then
/// UpdateContainerResources lowers its memory limit and the container is OOM-killed.
fn exec_and_update(containerd: &Containerd, pod: &mut Pod) -> Result<()> {
    let mut cri = Cri::connect(containerd.address())?;
    import_pause_image(containerd)?;
    let image = import_image(
        containerd,
        &ImageRecipe {
            name: "wasm-grow:test",
            platform: "wasi/wasm",
            program: program("grow"),
            entrypoint: None,
            extra: vec![(program("printenv"), "/printenv.wasm")],
        },
    )?;
    let config = pod_config(pod);
    let pod_id = cri.run_pod_sandbox(&config, RUNTIME_HANDLER)?;
    pod.id = Some(pod_id.clone());
    let grow_config = container_config("grow", &image, &[], &[], "grow.log", &pod.data());
    let grow = cri.create_container(&pod_id, &grow_config, &config)?;
    cri.start_container(&grow)?;
    let log = pod.logs().join("grow.log");
    poll("the container to grow to 8 MiB", 15, || {
        Ok(log_has_line(&log, "grew to 8 MiB (8)"))
    })
    .with_context(|| format!("log:\n{}", read_log(&log)))?;

    let exec = cri.exec_sync(&grow, &["/printenv.wasm", "from-exec"], 10)?;
    let stdout = String::from_utf8_lossy(&exec.stdout);
    ensure!(
        exec.exit_code == 0
            && stdout.contains("argv[0]=/printenv.wasm\n")
            && stdout.contains("argv[1]=from-exec\n")
            && stdout.contains("cwd=/\n"),
        "ExecSync: exit {} stdout {stdout:?} stderr {:?}",
        exec.exit_code,
        String::from_utf8_lossy(&exec.stderr)
    );
    let status = cri.container_status(&grow)?;
    ensure!(
        status.state == ContainerState::ContainerRunning as i32,
        "the exec disturbed the container: {status:?}"
    );

    let limit: i64 = 40 << 20;
    cri.update_memory_limit(&grow, limit)?;
    poll("the container to be OOM-killed", 15, || {
        let status = cri.container_status(&grow)?;
        Ok(status.state == ContainerState::ContainerExited as i32)
    })?;
    let status = cri.container_status(&grow)?;
    ensure!(
        status.exit_code == 137 && status.reason == "OOMKilled",
        "expected exit 137 with reason OOMKilled, got {} {:?}",
        status.exit_code,
        status.reason
    );
    let logged = read_log(&log);
    let grown = logged
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.rsplit_once("grew to ")?;
            rest.split_once(" MiB")?.0.parse::<i64>().ok()
        })
        .max()
        .unwrap_or(0);
    ensure!(
        (8..=40).contains(&grown),
        "the program grew to {grown} MiB under a {} MiB limit:\n{logged}",
        limit >> 20
    );

    cri.stop_pod_sandbox(&pod_id)?;
    cri.remove_pod_sandbox(&pod_id)?;
    pod.id = None;
    no_shims_left(containerd)?;
    no_processes_left_in(pod)
}

/// Waits for the pod's cgroup to be empty: exiting processes stay in it until the kernel
/// has reaped them.
fn no_processes_left_in(pod: &Pod) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pids = pod.cgroup_pids();
    while !pids.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        pids = pod.cgroup_pids();
    }
    let described: Vec<String> = pids
        .iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let name = status.lines().next().unwrap_or("?").to_string();
            let state = status
                .lines()
                .find(|l| l.starts_with("State:"))
                .unwrap_or("?")
                .to_string();
            format!("{pid} ({name}, {state})")
        })
        .collect();
    ensure!(
        pids.is_empty(),
        "processes left in the pod's cgroup {}: {described:?}",
        pod.cgroup_parent()
    );
    Ok(())
}

/// Waits for the pod's shims (ours and the runc shim of its native containers) to exit
/// after RemovePodSandbox.
fn no_shims_left(containerd: &Containerd) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut wasmtime_left, mut runc_left) = (vec![], vec![]);
    while Instant::now() < deadline {
        wasmtime_left = containerd.shim_pids();
        runc_left = containerd.runc_shim_pids();
        if wasmtime_left.is_empty() && runc_left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        wasmtime_left.is_empty() && runc_left.is_empty(),
        "shims left after RemovePodSandbox: wasmtime {wasmtime_left:?}, runc {runc_left:?}"
    );
    Ok(())
}
