//! Noisy neighbours in one pod's shim: a container that traps, one that runs out of memory
//! and two that spin forever share the shim with an HTTP server. The server keeps answering
//! throughout, and every container's exit code is its own.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use integration::cri::{import_pause_image, import_wasm_image, Cri};
use integration::http::{free_port, request, wait_until_listening};
use integration::pod::{container_config, pod_config, poll, read_log, run_pod_test, Pod};
use integration::{Containerd, RUNTIME_HANDLER};
use k8s_cri::v1::{ContainerConfig, ContainerState, KeyValue, LinuxContainerResources};

#[test]
fn a_trap_an_oom_and_spinning_neighbours_leave_a_server_in_the_same_shim_answering() {
    run_pod_test(run);
}

/// Asks the server for `/` `count` times; every answer must be the full greeting. Returns
/// the slowest answer's time.
fn server_answers(addr: &str, count: usize) -> Result<Duration> {
    let mut slowest = Duration::ZERO;
    for i in 0..count {
        let started = Instant::now();
        let response =
            request(addr, "GET", "/", b"").with_context(|| format!("request {i} to the server"))?;
        slowest = slowest.max(started.elapsed());
        ensure!(
            response.status == 200 && response.text() == "hello from wasm\n",
            "request {i}: {} {:?}",
            response.status,
            response.text()
        );
    }
    Ok(slowest)
}

fn exited_with(cri: &mut Cri, id: &str, seconds: u64, code: i32, what: &str) -> Result<String> {
    poll(&format!("{what} to exit"), seconds, || {
        Ok(cri.container_status(id)?.state == ContainerState::ContainerExited as i32)
    })?;
    let status = cri.container_status(id)?;
    ensure!(
        status.exit_code == code,
        "{what}: expected exit {code}, got {} ({status:?})",
        status.exit_code
    );
    Ok(status.reason)
}

fn run(containerd: &Containerd, pod: &mut Pod) -> Result<()> {
    let mut cri = Cri::connect(containerd.address())?;
    import_pause_image(containerd)?;
    let server_image = import_wasm_image(containerd, "http-hello", "n-server:test")?;
    let trap_image = import_wasm_image(containerd, "trap", "n-trap:test")?;
    let grow_image = import_wasm_image(containerd, "grow", "n-grow:test")?;
    let spin_image = import_wasm_image(containerd, "spin", "n-spin:test")?;
    let config = pod_config(pod);
    let pod_id = cri.run_pod_sandbox(&config, RUNTIME_HANDLER)?;
    pod.id = Some(pod_id.clone());

    let addr = format!("127.0.0.1:{}", free_port());
    let container = |name: &str, image: &str| -> ContainerConfig {
        container_config(name, image, &[], &[], &format!("{name}.log"), &pod.data())
    };
    let mut server = container("server", &server_image);
    server.envs.push(KeyValue {
        key: "WASI_HTTP_ADDR".into(),
        value: addr.clone(),
    });
    let server = cri.create_container(&pod_id, &server, &config)?;
    cri.start_container(&server)?;
    wait_until_listening(&addr, Duration::from_secs(15)).context("the server never listened")?;
    server_answers(&addr, 5)?;

    let mut spinners = Vec::new();
    for name in ["spin1", "spin2"] {
        let id = cri.create_container(&pod_id, &container(name, &spin_image), &config)?;
        cri.start_container(&id)?;
        spinners.push(id);
    }
    let trap = cri.create_container(&pod_id, &container("trap", &trap_image), &config)?;
    let mut grow = container("grow", &grow_image);
    if let Some(linux) = grow.linux.as_mut() {
        linux.resources = Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        });
    }
    let grow = cri.create_container(&pod_id, &grow, &config)?;
    cri.start_container(&trap)?;
    cri.start_container(&grow)?;

    // Two programs spin on the machine's two cores while the others crash beside them.
    let slowest = server_answers(&addr, 100)?;
    exited_with(&mut cri, &trap, 15, 134, "the trapping container")?;
    let trap_log = read_log(&pod.logs().join("trap.log"));
    ensure!(
        trap_log.contains("about to trap") && trap_log.contains("wasm backtrace"),
        "trap log:\n{trap_log}"
    );
    let reason = exited_with(&mut cri, &grow, 30, 137, "the growing container")?;
    ensure!(reason == "OOMKilled", "grow ended with reason {reason:?}");
    let slowest = slowest.max(server_answers(&addr, 100)?);
    // Not a speed target: a starved server would take seconds, not milliseconds.
    ensure!(
        slowest < Duration::from_secs(5),
        "the server was starved: slowest answer {slowest:?}"
    );
    for id in &spinners {
        ensure!(
            cri.container_status(id)?.state == ContainerState::ContainerRunning as i32,
            "a spinner stopped by itself"
        );
    }
    let shims = containerd.shim_pids();
    ensure!(
        shims.len() == 1,
        "the pod's wasm containers are not in one shim: {shims:?}"
    );

    for id in &spinners {
        cri.stop_container(id, 10)?;
        exited_with(&mut cri, id, 5, 143, "a spinner stopped with SIGTERM")?;
    }
    cri.stop_container(&server, 10)?;
    exited_with(&mut cri, &server, 5, 0, "the server, drained")?;
    cri.stop_pod_sandbox(&pod_id)?;
    cri.remove_pod_sandbox(&pod_id)?;
    pod.id = None;
    let left = containerd.wait_for_no_shims(Duration::from_secs(10));
    ensure!(left.is_empty(), "shims left: {left:?}");
    Ok(())
}
