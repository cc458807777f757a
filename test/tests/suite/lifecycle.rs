//! Signals, task states, detached runs, metrics and events.

use std::process::Stdio;
use std::time::{Duration, Instant};

use integration::{rootfs_with, Containerd, EventWatch};

fn stop_busy_loop_with(signal: &str, expected: i32) {
    stop_with(&["/spin.wasm"], "spinning\n", signal, expected);
}

/// Runs `args` from a rootfs of the test programs, waits until it printed `says`, stops it
/// with `signal` and expects `expected` within 5 s, and no shim left.
fn stop_with(args: &[&str], says: &str, signal: &str, expected: i32) {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["spin", "ticker"]).unwrap();
    // Unique across the tests running beside this one: ctr's cgroup path is
    // /NAMESPACE/ID whichever containerd runs it.
    let program = args[0].trim_start_matches('/').trim_end_matches(".wasm");
    let id = format!("{program}-{}", signal.to_lowercase());
    let child = containerd
        .run_rootfs_command(&[], rootfs.path(), &id, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    containerd
        .wait_for_status(&id, "RUNNING", Duration::from_secs(10))
        .unwrap();
    // Let it really be inside the loop.
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    let kill = containerd.ctr(&["task", "kill", "-s", signal, &id]);
    assert_eq!(kill.code, 0, "{kill:?}");
    let out = child.wait_with_output().unwrap();
    let elapsed = sent.elapsed();
    assert_eq!(
        out.status.code(),
        Some(expected),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), says);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(5))
        .is_empty());
}

#[test]
fn sigterm_stops_a_busy_loop_with_143() {
    stop_busy_loop_with("SIGTERM", 143);
}

#[test]
fn sigkill_stops_a_busy_loop_with_137() {
    stop_busy_loop_with("SIGKILL", 137);
}

/// A preview-1 sleep is a blocking host call on the program's thread (as file I/O is),
/// which a stop cannot interrupt: the process ends without it, with the stop's status.
#[test]
fn sigterm_stops_a_program_asleep_in_a_host_call_with_143() {
    stop_with(&["/ticker.wasm", "0", "20000"], "tick 1\n", "SIGTERM", 143);
}

#[test]
fn detached_task_is_listed_running_then_stopped_and_is_removed() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["ticker"]).unwrap();
    containerd.run_detached(&[], rootfs.path(), "tick1", &["/ticker.wasm", "0", "50"]);
    containerd
        .wait_for_status("tick1", "RUNNING", Duration::from_secs(5))
        .unwrap();
    assert_eq!(containerd.shim_pids().len(), 1);

    // The shim reports CPU time and memory in cgroup metrics.
    let metrics = containerd.ctr(&["task", "metrics", "tick1"]);
    assert_eq!(metrics.code, 0, "{metrics:?}");
    let memory: u64 = metrics
        .stdout
        .lines()
        .find(|l| l.starts_with("memory.usage_in_bytes"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(memory >= 65536, "{}", metrics.stdout);

    let pids = containerd.ctr(&["task", "ps", "tick1"]);
    assert_eq!(pids.code, 0, "{pids:?}");
    assert_eq!(pids.stdout.lines().count(), 2, "{}", pids.stdout);

    let kill = containerd.ctr(&["task", "kill", "tick1"]);
    assert_eq!(kill.code, 0, "{kill:?}");
    containerd
        .wait_for_status("tick1", "STOPPED", Duration::from_secs(5))
        .unwrap();
    assert_eq!(containerd.ctr(&["task", "rm", "tick1"]).code, 0);
    assert_eq!(containerd.ctr(&["container", "rm", "tick1"]).code, 0);
    assert!(!containerd
        .ctr(&["container", "ls", "-q"])
        .stdout
        .contains("tick1"));
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(5))
        .is_empty());
    assert!(containerd.mounts().is_empty());
}

#[test]
fn a_busy_program_shows_cpu_time_in_metrics() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["spin"]).unwrap();
    containerd.run_detached(&[], rootfs.path(), "cpu1", &["/spin.wasm"]);
    std::thread::sleep(Duration::from_millis(500));
    let metrics = containerd.ctr(&["task", "metrics", "cpu1"]);
    let cpu: u64 = metrics
        .stdout
        .lines()
        .find(|l| l.starts_with("cpuacct.usage "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(cpu > 100_000_000, "{}", metrics.stdout);
    containerd.kill_and_remove("cpu1", "SIGKILL");
}

#[test]
fn events_arrive_create_start_exit_delete_in_order() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["hello"]).unwrap();
    let events = EventWatch::start(&containerd);
    let out = containerd.run_rootfs(&[], rootfs.path(), "ev1", &["/hello.wasm"]);
    assert_eq!(out.code, 0, "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let topics = loop {
        let topics: Vec<String> = events
            .lines()
            .iter()
            .filter(|l| l.contains("\"ev1\"") && l.contains("/tasks/"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("/tasks/"))
                    .map(str::to_string)
            })
            .collect();
        if topics.iter().any(|t| t == "/tasks/delete") || Instant::now() > deadline {
            break topics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(events);
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
}
