//! HTTP components (wasi:http/proxy) served by the shim under `ctr run --net-host`: requests,
//! concurrency, errors, outgoing requests, and how SIGTERM and SIGKILL end a server.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use integration::http::{free_port, request, serve_fixed, wait_until_listening};
use integration::{rootfs_with, Containerd};

/// A server container run in the foreground by `ctr run --rm`, so its exit status and
/// output are `ctr`'s.
struct Server {
    child: Child,
    addr: String,
    id: String,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Server {
    fn start(containerd: &Containerd, rootfs: &std::path::Path, id: &str, env: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let listen = format!("WASI_HTTP_ADDR={addr}");
        let mut flags = vec!["--net-host", "--env", &listen];
        for var in env {
            flags.extend(["--env", var]);
        }
        let mut child = containerd
            .run_rootfs_command(&flags, rootfs, id, &["/http-hello.wasm"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr run");
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        if let Err(e) = wait_until_listening(&addr, Duration::from_secs(20)) {
            panic!(
                "{id} never listened on {addr}: {e}\n{}",
                containerd.shim_log()
            );
        }
        Server {
            child,
            addr,
            id: id.to_string(),
            stdout,
            stderr,
        }
    }

    fn kill(&self, containerd: &Containerd, signal: &str) {
        let out = containerd.ctr(&["task", "kill", "-s", signal, &self.id]);
        assert_eq!(out.code, 0, "kill {}: {out:?}", self.id);
    }

    /// Waits for `ctr run` to end: (exit status, stdout, stderr, how long it took).
    fn wait(mut self, timeout: Duration) -> (i32, String, String, Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let stdout = self.stdout.join().unwrap_or_default();
                let stderr = self.stderr.join().unwrap_or_default();
                return (status.code().unwrap_or(-1), stdout, stderr, start.elapsed());
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!("ctr run {} did not end within {timeout:?}", self.id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn an_http_component_answers_requests_many_at_once_and_survives_traps() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["http-hello"]).unwrap();
    let server = Server::start(&containerd, rootfs.path(), "http-basic", &[]);
    let addr = server.addr.clone();

    let hello = request(&addr, "GET", "/", b"").unwrap();
    assert_eq!(hello.status, 200, "{hello:?}");
    assert_eq!(hello.text(), "hello from wasm\n");
    assert_eq!(hello.header("content-type"), Some("text/plain"));

    // A body larger than any single buffer on the way, and not text.
    let body: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let echo = request(&addr, "POST", "/echo", &body).unwrap();
    assert_eq!(echo.status, 200);
    assert_eq!(echo.body.len(), body.len());
    assert!(echo.body == body, "the echoed body differs");

    assert_eq!(
        request(&addr, "GET", "/no/such/path", b"").unwrap().status,
        404
    );

    // A trap fails that request only: 500, then the server answers the next one.
    let trap = request(&addr, "GET", "/trap", b"").unwrap();
    assert_eq!(trap.status, 500, "{trap:?}");
    assert_eq!(request(&addr, "GET", "/", b"").unwrap().status, 200);

    // 200 clients at once, each on its own connection.
    let clients = 200;
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, barrier) = (addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let path = if i % 2 == 0 { "/" } else { "/echo" };
                let method = if i % 2 == 0 { "GET" } else { "POST" };
                let sent = format!("client {i}");
                let response = request(&addr, method, path, sent.as_bytes());
                (i, sent, response)
            })
        })
        .collect();
    for handle in handles {
        let (i, sent, response) = handle.join().unwrap();
        let response = response.unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(response.status, 200, "client {i}: {response:?}");
        let expected = if i % 2 == 0 {
            "hello from wasm\n"
        } else {
            &sent
        };
        assert_eq!(response.text(), expected, "client {i}");
    }

    // Outgoing HTTP from the component, to a server the test runs on the host network.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    serve_fixed(upstream, "upstream-body");
    let fetch = request(
        &addr,
        "GET",
        &format!("/fetch?url=http://{upstream_addr}/x"),
        b"",
    )
    .unwrap();
    assert_eq!(fetch.status, 200, "{fetch:?}");
    assert_eq!(fetch.text(), "upstream 200: upstream-body");

    server.kill(&containerd, "SIGTERM");
    let (code, stdout, stderr, _) = server.wait(Duration::from_secs(15));
    // Nothing in flight: the drain ends at once and the server exits cleanly.
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    for line in ["GET /", "POST /echo", "GET /trap"] {
        assert!(stdout.lines().any(|l| l == line), "{line}: {stdout}");
    }
    assert!(
        stderr.contains("/trap") && stderr.contains("Error"),
        "the trap is reported on the container's stderr: {stderr}"
    );
    assert!(
        containerd.shim_log().contains("/trap"),
        "the trap is in the shim log"
    );
}

#[test]
fn sigterm_drains_in_flight_requests_and_sigkill_does_not_wait() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["http-hello"]).unwrap();

    // SIGTERM: the slow request started before it completes; new connections are refused.
    let server = Server::start(&containerd, rootfs.path(), "http-drain", &[]);
    let addr = server.addr.clone();
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || request(&addr, "GET", "/slow?ms=2500", b""))
    };
    std::thread::sleep(Duration::from_millis(500));
    server.kill(&containerd, "SIGTERM");
    let refused_at = Instant::now();
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            refused_at.elapsed() < Duration::from_secs(2),
            "still accepting connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !slow.is_finished(),
        "the slow request ended before the drain"
    );
    let slow = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(slow.status, 200);
    assert_eq!(slow.text(), "slept 2500 ms\n");
    let (code, stdout, stderr, _) = server.wait(Duration::from_secs(15));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");

    // The drain bound: a request that outlasts it is cut and the status says SIGTERM.
    let server = Server::start(
        &containerd,
        rootfs.path(),
        "http-bound",
        &["WASI_HTTP_DRAIN_SECONDS=1"],
    );
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || request(&addr, "GET", "/slow?ms=30000", b""));
    std::thread::sleep(Duration::from_millis(500));
    server.kill(&containerd, "SIGTERM");
    let (code, _, _, took) = server.wait(Duration::from_secs(15));
    assert_eq!(code, 143);
    assert!(
        took < Duration::from_secs(5),
        "the bound was not kept: {took:?}"
    );
    assert!(
        slow.join().unwrap().is_err(),
        "the cut request has no response"
    );

    // SIGKILL during a drain ends the server at once.
    let server = Server::start(&containerd, rootfs.path(), "http-kill", &[]);
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || request(&addr, "GET", "/slow?ms=30000", b""));
    std::thread::sleep(Duration::from_millis(500));
    server.kill(&containerd, "SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    server.kill(&containerd, "SIGKILL");
    let (code, _, _, took) = server.wait(Duration::from_secs(15));
    assert_eq!(code, 137);
    assert!(took < Duration::from_secs(5), "SIGKILL waited: {took:?}");
    assert!(slow.join().unwrap().is_err());
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
}

/// A first start serves baseline code; once the shim has compiled the optimized code in the
/// background it hands it over, and the server switches while it serves: no request fails,
/// a request under way at the switch finishes, and later ones run the new code.
#[test]
fn an_http_component_switches_to_optimized_code_while_it_serves() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["http-hello"]).unwrap();
    let server = Server::start(&containerd, rootfs.path(), "http-tiers", &[]);
    let addr = server.addr.clone();
    let log = containerd.shim_log();
    assert!(
        log.lines()
            .any(|l| l.contains(" pid=") && l.contains("/http-hello.wasm: baseline (Winch) code")),
        "the first start serves baseline code:\n{log}"
    );
    // Under way across the switch.
    let slow = {
        let addr = addr.clone();
        std::thread::spawn(move || request(&addr, "GET", "/slow?ms=10000", b""))
    };
    // Requests one after another until told to stop: (answered, failures).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut answered, mut failures) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match request(&addr, "GET", "/", b"") {
                    Ok(r) if r.status == 200 && r.text() == "hello from wasm\n" => answered += 1,
                    other => failures.push(format!("{other:?}")),
                }
            }
            (answered, failures)
        })
    };
    let switched = "serving optimized (Cranelift) code from now on";
    let deadline = Instant::now() + Duration::from_secs(60);
    while !containerd.shim_log().contains(switched) {
        assert!(
            Instant::now() < deadline,
            "no switch to optimized code:\n{}",
            containerd.shim_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !slow.is_finished(),
        "the slow request ended before the switch; it cannot show one under way"
    );
    // The cache now holds the optimized code only: the baseline entry went when it came.
    let compiled = containerd.compiled_entries();
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    // It came to the process through the container's handover directory: the same file.
    let handover = containerd.compile_cache_dir().join("handover");
    let handed: Vec<_> = std::fs::read_dir(&handover)
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path().join("optimized.cwasm"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(handed.len(), 1, "{handed:?}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&handed[0]).map(|m| m.ino()).ok(),
        std::fs::metadata(&compiled[0]).map(|m| m.ino()).ok()
    );
    for _ in 0..20 {
        let after = request(&addr, "GET", "/", b"").unwrap();
        assert_eq!(after.status, 200, "{after:?}");
        assert_eq!(after.text(), "hello from wasm\n");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (answered, failures) = steady.join().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(answered > 0, "no request ran across the switch");
    let slow = slow
        .join()
        .unwrap()
        .expect("the request under way completes");
    assert_eq!(slow.status, 200);
    assert_eq!(slow.text(), "slept 10000 ms\n");
    server.kill(&containerd, "SIGTERM");
    let (code, stdout, stderr, _) = server.wait(Duration::from_secs(15));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    // Deleted with the container.
    let left = std::fs::read_dir(&handover).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        left,
        0,
        "handover directories left in {}",
        handover.display()
    );
}

#[test]
fn a_bad_listen_address_fails_the_container_with_the_reason() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["http-hello"]).unwrap();
    let out = containerd.run_rootfs(
        &["--net-host", "--env", "WASI_HTTP_ADDR=not-an-address"],
        rootfs.path(),
        "http-badaddr",
        &["/http-hello.wasm"],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("WASI_HTTP_ADDR=not-an-address"),
        "{out:?}"
    );

    // A port already taken: the task ends with status 1 and says where it could not listen.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let env = format!("WASI_HTTP_ADDR={taken_addr}");
    let out = containerd.run_rootfs(
        &["--net-host", "--env", &env],
        rootfs.path(),
        "http-taken",
        &["/http-hello.wasm"],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&taken_addr), "{out:?}");
}
