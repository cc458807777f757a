//! Faults the shim must survive: containerd restarting under running containers, and a shim
//! killed outright, cleaned up by containerd's `delete` path without disturbing others.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::{program, rootfs_with, Containerd, EventWatch, RUNTIME};

fn running_line(containerd: &Containerd, id: &str) -> bool {
    containerd
        .ctr(&["task", "ls"])
        .stdout
        .lines()
        .any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"))
}

#[test]
fn running_containers_survive_a_containerd_restart() {
    let mut containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["ticker"]).unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("survivor-{i}")).collect();
    for id in &ids {
        containerd.run_detached(&[], rootfs.path(), id, &["/ticker.wasm"]);
    }
    for id in &ids {
        containerd
            .wait_for_status(id, "RUNNING", Duration::from_secs(10))
            .unwrap();
    }
    let mut shims = containerd.shim_pids();
    shims.sort();
    assert_eq!(shims.len(), ids.len(), "one shim per ctr run container");

    containerd.restart().expect("containerd restarts");

    let mut after = containerd.shim_pids();
    after.sort();
    assert_eq!(after, shims, "the shims were not restarted with containerd");
    for id in &ids {
        assert!(
            running_line(&containerd, id),
            "{id} is not RUNNING after the restart"
        );
    }
    // The restarted containerd reaches every shim: signals, exits and deletes work.
    let events = EventWatch::start(&containerd);
    for (i, id) in ids.iter().enumerate() {
        let signal = if i % 2 == 0 { "SIGTERM" } else { "SIGKILL" };
        containerd.kill_and_remove(id, signal);
    }
    for (i, id) in ids.iter().enumerate() {
        let status = if i % 2 == 0 { "143" } else { "137" };
        events.expect(
            "/tasks/exit",
            &[&format!("\"{id}\""), &format!("\"exit_status\":{status}")],
        );
    }
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
}

#[test]
fn a_killed_shim_is_cleaned_up_and_its_neighbour_keeps_running() {
    let containerd = Containerd::start().expect("containerd");
    // From an image, so each container's rootfs is a snapshot the shim mounted.
    let image = containerd
        .import_program(&program("ticker"), "ticker:faults")
        .unwrap();
    let run = |id: &str| {
        let out = containerd.ctr(&["run", "-d", "--runtime", RUNTIME, &image, id]);
        assert_eq!(out.code, 0, "{out:?}");
        containerd
            .wait_for_status(id, "RUNNING", Duration::from_secs(10))
            .unwrap();
    };
    run("victim");
    let victim_shim = containerd.shim_pids();
    assert_eq!(victim_shim.len(), 1);
    let victim_process = containerd.task_pid("victim");
    run("neighbour");

    let bundle =
        PathBuf::from(containerd.dir()).join("state/io.containerd.runtime.v2.task/default/victim");
    let socket = std::fs::read_to_string(bundle.join("address"))
        .expect("the bundle's address file")
        .trim()
        .trim_start_matches("unix://")
        .to_string();
    assert!(std::path::Path::new(&socket).exists());
    assert!(
        containerd.mounts().iter().any(|m| m.contains("/victim/")),
        "the victim's rootfs is mounted: {:?}",
        containerd.mounts()
    );

    let events = EventWatch::start(&containerd);
    // SAFETY: plain kill(2) on a shim of this test's containerd.
    unsafe { libc::kill(victim_shim[0] as i32, libc::SIGKILL) };

    events.expect("/tasks/exit", &["\"victim\"", "\"exit_status\":137"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let leftovers: Vec<String> = [
            bundle
                .exists()
                .then(|| format!("bundle {}", bundle.display())),
            std::path::Path::new(&socket)
                .exists()
                .then(|| format!("socket {socket}")),
        ]
        .into_iter()
        .flatten()
        .chain(
            containerd
                .mounts()
                .into_iter()
                .filter(|m| m.contains("/victim/")),
        )
        .collect();
        if leftovers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after the shim died: {leftovers:?}\n{}",
            containerd.log_tail(150)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!running_line(&containerd, "victim"));
    // The container's process did not outlive its shim (a zombie waiting for init to reap
    // it has ended).
    let state = std::fs::read_to_string(format!("/proc/{victim_process}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()?.to_string()));
    assert!(
        state.is_none() || state.as_deref() == Some("Z"),
        "the victim's process {victim_process} outlived its shim: state {state:?}"
    );
    // `shim delete` removed its cgroup, which the dead shim's Delete never did.
    let memory = std::path::Path::new("/sys/fs/cgroup/memory");
    if memory.exists() {
        assert!(
            !memory.join("default/victim").exists(),
            "the victim's cgroup is left"
        );
    }

    // The neighbour, in its own shim, never noticed.
    assert!(running_line(&containerd, "neighbour"));
    let events = EventWatch::start(&containerd);
    containerd.kill_and_remove("neighbour", "SIGTERM");
    events.expect("/tasks/exit", &["\"neighbour\"", "\"exit_status\":143"]);
    let _ = containerd.ctr(&["container", "rm", "victim", "neighbour"]);
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}
