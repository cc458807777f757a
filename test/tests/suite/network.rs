//! The pid Create returns lives in the network namespace the spec asks for.

use std::time::Duration;

use integration::{rootfs_with, Containerd};

fn task_netns(containerd: &Containerd, id: &str) -> String {
    containerd
        .wait_for_status(id, "RUNNING", Duration::from_secs(5))
        .unwrap();
    let pid = containerd.task_pid(id);
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn a_spec_without_network_path_gets_its_own_namespace_and_net_host_shares_the_hosts() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["ticker"]).unwrap();
    let host = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();

    containerd.run_detached(&[], rootfs.path(), "net-own", &["/ticker.wasm"]);
    let own = task_netns(&containerd, "net-own");
    assert_ne!(own, host);

    containerd.run_detached(
        &["--net-host"],
        rootfs.path(),
        "net-host",
        &["/ticker.wasm"],
    );
    assert_eq!(task_netns(&containerd, "net-host"), host);

    containerd.kill_and_remove("net-own", "SIGKILL");
    containerd.kill_and_remove("net-host", "SIGKILL");
}
