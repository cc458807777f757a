//! The pid Create returns lives in the network namespace the spec asks for.

use std::time::Duration;

use integration::{rootfs_with, Containerd, RUNTIME};

fn task_netns(containerd: &Containerd, id: &str) -> String {
    let ls = containerd
        .wait_for_status(id, "RUNNING", Duration::from_secs(5))
        .unwrap();
    let pid: u32 = ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap();
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string()
}

fn stop(containerd: &Containerd, id: &str) {
    assert_eq!(
        containerd.ctr(&["task", "kill", "-s", "SIGKILL", id]).code,
        0
    );
    containerd
        .wait_for_status(id, "STOPPED", Duration::from_secs(5))
        .unwrap();
    assert_eq!(containerd.ctr(&["task", "rm", id]).code, 0);
}

#[test]
fn a_spec_without_network_path_gets_its_own_namespace_and_net_host_shares_the_hosts() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["ticker"]).unwrap();
    let rootfs_arg = rootfs.path().display().to_string();
    let host = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();

    let run = containerd.ctr(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--rootfs",
        &rootfs_arg,
        "net-own",
        "/ticker.wasm",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let own = task_netns(&containerd, "net-own");
    assert_ne!(own, host);

    let run = containerd.ctr(&[
        "run",
        "-d",
        "--net-host",
        "--runtime",
        RUNTIME,
        "--rootfs",
        &rootfs_arg,
        "net-host",
        "/ticker.wasm",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(task_netns(&containerd, "net-host"), host);

    stop(&containerd, "net-own");
    stop(&containerd, "net-host");
}
