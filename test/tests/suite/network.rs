//! The pid Create returns lives in the network namespace the spec asks for, and a wasip2
//! program reaches that namespace's network through wasi:sockets as a Linux program would.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use integration::http::wait_until_listening;
use integration::netns::inside;
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

/// One line sent to the echo server at `addr` and the line it answers.
fn echo_once(addr: &str, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer)
}

/// A rootfs with net-echo and an /etc/hosts naming `echo-server.test` (127.0.0.1): a name
/// only the container's own files know, so a lookup that finds it read them, not the host's.
fn net_echo_rootfs() -> tempfile::TempDir {
    let rootfs = rootfs_with(&["net-echo"]).unwrap();
    std::fs::create_dir(rootfs.path().join("etc")).unwrap();
    std::fs::write(
        rootfs.path().join("etc/hosts"),
        "127.0.0.1 echo-server.test\n",
    )
    .unwrap();
    rootfs
}

/// Starts the server `args` as `id` in a network namespace of its own (ctr's default spec
/// asks for one) and returns what `ask` gets from inside that namespace.
fn serve_and_ask<T: Send + 'static>(
    containerd: &Containerd,
    rootfs: &tempfile::TempDir,
    id: &str,
    args: &[&str],
    ask: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> T {
    containerd.run_detached(&[], rootfs.path(), id, args);
    containerd
        .wait_for_status(id, "RUNNING", Duration::from_secs(5))
        .unwrap();
    let pid = containerd.task_pid(id);
    inside(Path::new(&format!("/proc/{pid}/ns/net")), ask)
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the server never answered: {e}\n{}",
                containerd.log_tail(30)
            )
        })
}

#[test]
fn a_wasip2_program_serves_connects_and_looks_up_names_in_its_containers_network() {
    let containerd = Containerd::start().unwrap();
    let rootfs = net_echo_rootfs();

    // A TCP server in a network namespace of its own.
    let answer = serve_and_ask(
        &containerd,
        &rootfs,
        "tcp-server",
        &["/net-echo.wasm", "serve", "7000"],
        || {
            wait_until_listening("127.0.0.1:7000", Duration::from_secs(20))?;
            echo_once("127.0.0.1:7000", "from the namespace's loopback")
        },
    );
    assert_eq!(answer, "echo: from the namespace's loopback\n");

    // A client exec'd into the container: it joins the server's namespace, resolves the
    // name through the container's /etc/hosts and connects.
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "client",
        "tcp-server",
        "/net-echo.wasm",
        "connect",
        "echo-server.test",
        "7000",
        "from an exec",
    ]);
    assert_eq!(
        (exec.code, exec.stdout.as_str(), exec.stderr.as_str()),
        (0, "echo: from an exec\n", ""),
        "{}",
        containerd.log_tail(30)
    );
    // The host does not know the name: the host's files were not asked.
    let unknown = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "unknown",
        "tcp-server",
        "/net-echo.wasm",
        "connect",
        "not-in-the-hosts-file.test",
        "7000",
        "x",
    ]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("net-echo: resolve: "),
        "{unknown:?}"
    );

    // The host's loopback is another namespace's: a container of its own cannot reach a
    // listener there, and one with the host's network (--net-host) can.
    let host_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port().to_string();
    let host_side = std::thread::spawn(move || {
        let (stream, _) = host_listener.accept()?;
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line)?;
        (&stream).write_all(format!("host heard: {line}").as_bytes())?;
        std::io::Result::Ok(line)
    });
    let isolated = containerd.run_rootfs(
        &[],
        rootfs.path(),
        "tcp-isolated",
        &["/net-echo.wasm", "connect", "127.0.0.1", &host_port, "x"],
    );
    assert_eq!(
        (isolated.code, isolated.stderr.as_str()),
        (1, "net-echo: connect: connection-refused\n"),
        "{isolated:?}"
    );
    let shared = containerd.run_rootfs(
        &["--net-host"],
        rootfs.path(),
        "tcp-net-host",
        &[
            "/net-echo.wasm",
            "connect",
            "127.0.0.1",
            &host_port,
            "from net-host",
        ],
    );
    assert_eq!(
        (shared.code, shared.stdout.as_str()),
        (0, "host heard: from net-host\n"),
        "{shared:?}"
    );
    assert_eq!(host_side.join().unwrap().unwrap(), "from net-host\n");

    containerd.kill_and_remove("tcp-server", "SIGKILL");
}

/// One datagram sent to the UDP echo server at `addr` and the one it answers, sent again
/// until an answer comes (a datagram sent before the server bound is lost) or `patience` ends.
fn udp_echo_once(addr: &str, message: &str, patience: Duration) -> std::io::Result<String> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + patience;
    let mut buf = [0u8; 2048];
    loop {
        socket.send_to(message.as_bytes(), addr)?;
        match socket.recv_from(&mut buf) {
            Ok((len, _)) => return Ok(String::from_utf8_lossy(&buf[..len]).into_owned()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => continue,
        }
    }
}

/// UDP, as a DNS client, a QUIC stack or a metrics exporter uses it, through wasi:sockets:
/// datagrams to and from the container's own namespace, to a peer found by name, and to the
/// host's loopback when the container shares the host's network.
#[test]
fn a_wasip2_program_exchanges_udp_datagrams_in_its_containers_network() {
    let containerd = Containerd::start().unwrap();
    let rootfs = net_echo_rootfs();

    let answer = serve_and_ask(
        &containerd,
        &rootfs,
        "udp-server",
        &["/net-echo.wasm", "udp-serve", "7001"],
        || {
            udp_echo_once(
                "127.0.0.1:7001",
                "from the namespace's loopback",
                Duration::from_secs(20),
            )
        },
    );
    assert_eq!(answer, "echo: from the namespace's loopback");

    // An exec sends to the server by a name of the container's /etc/hosts; the answer
    // comes back from the server's port.
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "udp-client",
        "udp-server",
        "/net-echo.wasm",
        "udp-send",
        "echo-server.test",
        "7001",
        "from an exec",
    ]);
    assert_eq!(
        (exec.code, exec.stdout.as_str(), exec.stderr.as_str()),
        (0, "echo: from an exec (from port 7001)\n", ""),
        "{}",
        containerd.log_tail(30)
    );

    // With the host's network, a datagram reaches a socket on the host's loopback and
    // its answer comes back.
    let host_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    host_socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let host_port = host_socket.local_addr().unwrap().port().to_string();
    let host_side = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let (len, from) = host_socket.recv_from(&mut buf)?;
        let heard = String::from_utf8_lossy(&buf[..len]).into_owned();
        host_socket.send_to(format!("host heard: {heard}").as_bytes(), from)?;
        std::io::Result::Ok(heard)
    });
    let shared = containerd.run_rootfs(
        &["--net-host"],
        rootfs.path(),
        "udp-net-host",
        &[
            "/net-echo.wasm",
            "udp-send",
            "127.0.0.1",
            &host_port,
            "from net-host",
        ],
    );
    assert_eq!(
        (shared.code, shared.stdout.as_str()),
        (
            0,
            format!("host heard: from net-host (from port {host_port})\n").as_str()
        ),
        "{shared:?}"
    );
    assert_eq!(host_side.join().unwrap().unwrap(), "from net-host");

    containerd.kill_and_remove("udp-server", "SIGKILL");
}

/// Answers one HTTP request on `listener` with `body`; returns the request's head.
fn answer_one_request(listener: TcpListener, body: &str) -> std::io::Result<String> {
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(&stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(response.as_bytes())?;
    Ok(head)
}

/// A command component's HTTP client (wasi:http/outgoing-handler, what JavaScript's
/// `fetch` is in a componentize-js command) reaches what the container's network reaches:
/// a server on the host's loopback with the host's network, nothing there without it.
#[test]
fn a_command_component_makes_http_requests_from_its_containers_network() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["http-get"]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/greeting", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || answer_one_request(listener, "hello from the host\n"));

    // First a container with a network of its own, while the host's server listens: it
    // must not reach it (were it to, the server would answer it, and this would fail).
    let isolated = containerd.run_rootfs(
        &[],
        rootfs.path(),
        "http-get-own",
        &["/http-get.wasm", &url],
    );
    assert_eq!(
        (isolated.code, isolated.stderr.as_str()),
        (1, "http-get: response: 6 connection-refused\n"),
        "{isolated:?}"
    );

    let shared = containerd.run_rootfs(
        &["--net-host"],
        rootfs.path(),
        "http-get-host",
        &["/http-get.wasm", &url],
    );
    assert_eq!(
        (shared.code, shared.stdout.as_str(), shared.stderr.as_str()),
        (0, "status 200\nhello from the host\n", ""),
        "{}",
        containerd.log_tail(20)
    );
    let head = server.join().unwrap().unwrap();
    assert!(head.starts_with("GET /greeting HTTP/1.1\r\n"), "{head:?}");
}

/// The host's resolver answers from the image's files but never loads a library from the
/// image: an nsswitch.conf there naming a module (and the guest can write both into a
/// writable rootfs) would otherwise run that image's native code in the container's process.
#[test]
fn a_name_lookup_never_loads_a_library_from_the_image() {
    let containerd = Containerd::start().unwrap();
    let rootfs = net_echo_rootfs();
    let root = rootfs.path();
    std::fs::write(
        root.join("etc/nsswitch.conf"),
        "hosts: probe files dns\nservices: probe files\n",
    )
    .unwrap();
    // Wherever the dynamic loader of the host's libc would look for it.
    for dir in [
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
        "lib64",
        "lib",
        "usr/lib",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::copy(
            integration::example_file("libnss_probe.so.2"),
            root.join(dir).join("libnss_probe.so.2"),
        )
        .unwrap();
    }
    // And never asks an nscd: a socket where glibc looks for one (a guest-made file in a
    // writable rootfs could stand there) hears nothing.
    std::fs::create_dir_all(root.join("var/run/nscd")).unwrap();
    let nscd = std::os::unix::net::UnixListener::bind(root.join("var/run/nscd/socket")).unwrap();
    nscd.set_nonblocking(true).unwrap();
    let out = containerd.run_rootfs(
        &[],
        root,
        "nss-probe",
        &["/net-echo.wasm", "connect", "echo-server.test", "9", "x"],
    );
    assert!(!out.stderr.contains("nss probe loaded"), "{out:?}");
    assert!(
        nscd.accept().is_err(),
        "the lookup asked the image's nscd socket"
    );
    // The lookup itself worked (from /etc/hosts): only the connection fails.
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "net-echo: connect: connection-refused\n"),
        "{out:?}"
    );
}
