//! A pod that is not host-network: CRI gives it a network namespace of its own through the
//! test containerd's CNI network (loopback, and an `eth0` that stays inside the namespace;
//! see `integration::write_cni`). A wasm HTTP component serves on that namespace's loopback;
//! a test thread that enters the namespace reaches it, and so does a native sidecar of the
//! same pod on localhost. No traffic leaves the namespace.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use integration::cri::{import_busybox_image, import_pause_image, import_wasm_image, Cri};
use integration::http::{request, wait_until_listening};
use integration::netns::{inside, interface_names, same_namespace};
use integration::pod::{
    container_config, log_has_line, pod_config, poll, read_log, run_pod_test, use_pod_network, Pod,
};
use integration::{Containerd, RUNTIME_HANDLER};

/// Where the http-hello component listens by default (`WASI_HTTP_ADDR` unset).
const SERVER: &str = "127.0.0.1:8080";

#[test]
fn a_wasm_server_answers_on_the_loopback_of_its_pods_own_network_namespace() {
    run_pod_test(run);
}

fn run(containerd: &Containerd, pod: &mut Pod) -> Result<()> {
    let mut cri = Cri::connect(containerd.address())?;
    import_pause_image(containerd)?;
    let server_image = import_wasm_image(containerd, "http-hello", "wasm-http-hello:pod")?;
    let busybox_image = import_busybox_image(containerd, "sidecar-busybox:net")?;

    let mut sandbox = pod_config(pod);
    let mut server = container_config("server", &server_image, &[], &[], "server.log", &pod.data());
    // The sidecar asks the server over the pod's localhost until it answers, once.
    let script = format!(
        "until /bin/busybox wget -q -O /data/answer http://{SERVER}/; do \
           /bin/busybox sleep 0.2; \
         done; \
         echo sidecar got: $(/bin/busybox cat /data/answer); \
         while true; do /bin/busybox sleep 1; done"
    );
    let mut sidecar = container_config(
        "sidecar",
        &busybox_image,
        &["/bin/busybox", "sh", "-c", &script],
        &[],
        "sidecar.log",
        &pod.data(),
    );
    use_pod_network(&mut sandbox, &mut [&mut server, &mut sidecar]);
    let pod_id = cri
        .run_pod_sandbox(&sandbox, RUNTIME_HANDLER)
        .context("the pod sandbox did not start in a network namespace of its own")?;
    pod.id = Some(pod_id.clone());
    let netns = cri.pod_network_namespace(&pod_id)?;
    ensure!(
        !same_namespace(&netns, Path::new("/proc/self/ns/net"))?,
        "the pod's network namespace {} is the host's",
        netns.display()
    );

    let server_id = cri.create_container(&pod_id, &server, &sandbox)?;
    cri.start_container(&server_id)?;

    // From a thread inside the pod's namespace: its interfaces, and the server on loopback.
    let (interfaces, answer) = inside(&netns, || {
        let answer = wait_until_listening(SERVER, Duration::from_secs(20))
            .and_then(|()| request(SERVER, "GET", "/", b""));
        (interface_names(), answer)
    })?;
    // Loopback, and the veth pair of the test's CNI plugin, both ends inside the namespace.
    let mut sorted = interfaces.clone();
    sorted.sort();
    ensure!(
        sorted == ["eth0", "eth0p", "lo"],
        "the pod's namespace has interfaces {interfaces:?}"
    );
    let answer = answer.context("the server never answered on the pod's loopback")?;
    ensure!(
        answer.status == 200 && answer.text() == "hello from wasm\n",
        "the server answered {} {:?}",
        answer.status,
        answer.text()
    );

    let sidecar_id = cri.create_container(&pod_id, &sidecar, &sandbox)?;
    cri.start_container(&sidecar_id)?;
    let sidecar_log = pod.logs().join("sidecar.log");
    poll("the sidecar to reach the server on localhost", 20, || {
        Ok(log_has_line(&sidecar_log, "sidecar got: hello from wasm"))
    })
    .with_context(|| format!("sidecar log:\n{}", read_log(&sidecar_log)))?;
    // Both requests reached the server (it logs each one).
    let server_log = pod.logs().join("server.log");
    poll("the server to log both requests", 5, || {
        Ok(read_log(&server_log).matches("GET /").count() >= 2)
    })
    .with_context(|| format!("server log:\n{}", read_log(&server_log)))?;

    cri.stop_pod_sandbox(&pod_id)?;
    cri.remove_pod_sandbox(&pod_id)?;
    pod.id = None;
    let mounts = containerd.mounts();
    ensure!(
        mounts.is_empty(),
        "mounts left after RemovePodSandbox: {mounts:?}"
    );
    Ok(())
}
