//! The pid Create returns lives in the network namespace the spec asks for, and a wasip2
//! program reaches that namespace's network through wasi:sockets as a Linux program would.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

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

#[test]
fn a_wasip2_program_serves_connects_and_looks_up_names_in_its_containers_network() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["tcp-echo"]).unwrap();
    // A name only the container's own /etc/hosts knows: the lookup reads the files the
    // container sees, not the host's.
    std::fs::create_dir(rootfs.path().join("etc")).unwrap();
    std::fs::write(
        rootfs.path().join("etc/hosts"),
        "127.0.0.1 echo-server.test\n",
    )
    .unwrap();

    // A TCP server in a network namespace of its own (ctr's default spec asks for one).
    containerd.run_detached(
        &[],
        rootfs.path(),
        "tcp-server",
        &["/tcp-echo.wasm", "serve", "7000"],
    );
    containerd
        .wait_for_status("tcp-server", "RUNNING", Duration::from_secs(5))
        .unwrap();
    let pid = containerd.task_pid("tcp-server");
    let answer = inside(Path::new(&format!("/proc/{pid}/ns/net")), || {
        wait_until_listening("127.0.0.1:7000", Duration::from_secs(20))?;
        echo_once("127.0.0.1:7000", "from the namespace's loopback")
    })
    .unwrap();
    let answer = answer.unwrap_or_else(|e| {
        panic!(
            "the server never answered: {e}\n{}",
            containerd.log_tail(30)
        )
    });
    assert_eq!(answer, "echo: from the namespace's loopback\n");

    // A client exec'd into the container: it joins the server's namespace, resolves the
    // name through the container's /etc/hosts and connects.
    let exec = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "client",
        "tcp-server",
        "/tcp-echo.wasm",
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
        "/tcp-echo.wasm",
        "connect",
        "not-in-the-hosts-file.test",
        "7000",
        "x",
    ]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(
        unknown.stderr.contains("tcp-echo: resolve: "),
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
        &["/tcp-echo.wasm", "connect", "127.0.0.1", &host_port, "x"],
    );
    assert_eq!(
        (isolated.code, isolated.stderr.as_str()),
        (1, "tcp-echo: connect: connection-refused\n"),
        "{isolated:?}"
    );
    let shared = containerd.run_rootfs(
        &["--net-host"],
        rootfs.path(),
        "tcp-net-host",
        &[
            "/tcp-echo.wasm",
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

/// The host's resolver answers from the image's files but never loads a library from the
/// image: an nsswitch.conf there naming a module (and the guest can write both into a
/// writable rootfs) would otherwise run that image's native code in the container's process.
#[test]
fn a_name_lookup_never_loads_a_library_from_the_image() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["tcp-echo"]).unwrap();
    let root = rootfs.path();
    std::fs::create_dir(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/nsswitch.conf"),
        "hosts: probe files dns\nservices: probe files\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 echo-server.test\n").unwrap();
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
        &["/tcp-echo.wasm", "connect", "echo-server.test", "9", "x"],
    );
    assert!(!out.stderr.contains("nss probe loaded"), "{out:?}");
    assert!(
        nscd.accept().is_err(),
        "the lookup asked the image's nscd socket"
    );
    // The lookup itself worked (from /etc/hosts): only the connection fails.
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (1, "tcp-echo: connect: connection-refused\n"),
        "{out:?}"
    );
}
