//! Bad programs fail Create with a clear message and leave nothing behind.

use std::time::Duration;

use integration::{Containerd, RUNTIME};

fn assert_fails_cleanly(
    containerd: &Containerd,
    rootfs: &std::path::Path,
    id: &str,
    entry: &str,
    needle: &str,
) {
    assert_run_fails_cleanly(containerd, rootfs, id, &[], &[entry], needle);
}

/// Runs `args` with `flags`, expecting Create to fail with `needle` in ctr's error and to
/// leave no shim and no mount behind.
fn assert_run_fails_cleanly(
    containerd: &Containerd,
    rootfs: &std::path::Path,
    id: &str,
    flags: &[&str],
    args: &[&str],
    needle: &str,
) {
    let out = containerd.run_rootfs(flags, rootfs, id, args);
    assert_ne!(out.code, 0, "{id}: {out:?}");
    assert!(
        out.stderr.contains(needle),
        "{id}: expected {needle:?} in: {}",
        out.stderr
    );
    assert!(
        containerd
            .wait_for_no_shims(Duration::from_secs(5))
            .is_empty(),
        "{id}: a shim outlived the failed create"
    );
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

#[test]
fn corrupt_wasm_fails_create_with_a_clear_error() {
    let containerd = Containerd::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&[0x01, 0x7f, 0x00, 0x13]);
    std::fs::write(rootfs.path().join("bad.wasm"), bytes).unwrap();
    assert_fails_cleanly(
        &containerd,
        rootfs.path(),
        "bad1",
        "/bad.wasm",
        "not a valid WebAssembly module",
    );
}

#[test]
fn missing_entrypoint_fails_create_with_a_clear_error() {
    let containerd = Containerd::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    assert_fails_cleanly(
        &containerd,
        rootfs.path(),
        "miss1",
        "/nothere.wasm",
        "/nothere.wasm: no such file or directory",
    );
}

#[test]
fn directory_entrypoint_fails_create_with_a_clear_error() {
    let containerd = Containerd::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::create_dir(rootfs.path().join("app.wasm")).unwrap();
    assert_fails_cleanly(
        &containerd,
        rootfs.path(),
        "dir1",
        "/app.wasm",
        "is a directory",
    );
}

#[test]
fn corrupt_image_fails_and_unmounts_its_rootfs() {
    let containerd = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("broken.wasm");
    std::fs::write(&wasm, b"this is not wasm").unwrap();
    let image = containerd.import_program(&wasm, "broken:test").unwrap();
    let out = containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, &image, "img-bad"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("not a WebAssembly program"),
        "{}",
        out.stderr
    );
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(5))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

/// Runs `args` in a rootfs holding `files`, expecting Create to fail with `needle` and to
/// leave nothing behind.
fn assert_rootfs_fails(
    containerd: &Containerd,
    id: &str,
    files: &[(&str, &[u8])],
    flags: &[&str],
    args: &[&str],
    needle: &str,
) {
    let rootfs = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(rootfs.path().join(name), bytes).unwrap();
    }
    assert_run_fails_cleanly(containerd, rootfs.path(), id, flags, args, needle);
}

/// A case of a bad program: its id, the rootfs files, the args and the expected message.
type BadProgram<'a> = (&'a str, &'a [(&'a str, &'a [u8])], &'a [&'a str], &'a str);

#[test]
fn bad_programs_fail_create_with_what_is_wrong() {
    let containerd = Containerd::start().unwrap();
    let module =
        wat::parse_str(r#"(module (func (export "_start")) (func (export "other")))"#).unwrap();
    let truncated = &module[..module.len() - 3];
    let component = std::fs::read(integration::program("cli-exit")).unwrap();
    let unknown_import = wat::parse_str(
        r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#,
    )
    .unwrap();
    let cases: [BadProgram; 6] = [
        (
            "truncated",
            &[("app.wasm", truncated)],
            &["/app.wasm"],
            "not a valid WebAssembly module",
        ),
        (
            "unknown-import",
            &[("app.wasm", &unknown_import)],
            &["/app.wasm"],
            "launch_missiles",
        ),
        (
            "plain-text",
            &[("app.wasm", b"just some text, not a program\n")],
            &["/app.wasm"],
            "not a WebAssembly program",
        ),
        (
            "no-such-export",
            &[("app.wasm", &module)],
            &["/app.wasm#nothing"],
            "no exported function `nothing`",
        ),
        (
            "truncated-component",
            &[("app.wasm", &component[..component.len() / 2])],
            &["/app.wasm"],
            "not a valid WebAssembly component",
        ),
        (
            "empty-file",
            &[("app.wasm", b"")],
            &["/app.wasm"],
            "not a WebAssembly program",
        ),
    ];
    for (id, files, args, needle) in cases {
        assert_rootfs_fails(&containerd, id, files, &[], args, needle);
    }
}

#[test]
fn bad_mounts_fail_create_with_the_mount_named() {
    let containerd = Containerd::start().unwrap();
    let hello = std::fs::read(integration::program("hello")).unwrap();
    let files: &[(&str, &[u8])] = &[("hello.wasm", &hello)];
    let data = tempfile::tempdir().unwrap();
    let good = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.path().display()
    );
    let cases: [(&str, Vec<String>, &str); 3] = [
        (
            "missing-source",
            vec![
                "--mount".into(),
                "type=bind,src=/no/such/dir,dst=/data,options=rbind".into(),
            ],
            "/no/such/dir",
        ),
        (
            "relative-destination",
            vec![
                "--mount".into(),
                format!(
                    "type=bind,src={},dst=data,options=rbind",
                    data.path().display()
                ),
            ],
            "destination data is not an absolute path",
        ),
        (
            "duplicate-destination",
            vec!["--mount".into(), good.clone(), "--mount".into(), good],
            "two mounts have the destination /data",
        ),
    ];
    for (id, flags, needle) in cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        assert_rootfs_fails(&containerd, id, files, &flags, &["/hello.wasm"], needle);
        assert!(
            containerd.log().contains("invalid mount"),
            "{id}: the shim log names the mount problem"
        );
    }
}

#[test]
fn huge_args_env_and_modules_run() {
    let containerd = Containerd::start().unwrap();
    let rootfs = integration::rootfs_with(&["printenv"]).unwrap();

    // 3,000 arguments and a 100 KiB variable (execve caps one string at 128 KiB, so ctr
    // itself could not take more).
    let big_value = "v".repeat(100 * 1024);
    let env = format!("BIG={big_value}");
    let mut args = vec!["/printenv.wasm".to_string()];
    args.extend((0..3000).map(|i| format!("arg-{i:04}-{}", "x".repeat(40))));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = containerd.run_rootfs(&["--env", &env], rootfs.path(), "huge-args", &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("argv["))
            .count(),
        3001
    );
    assert!(out.stdout.contains(&format!("env:BIG={big_value}")));

    // A 100 MB module (a custom section that large) loads and runs.
    let mut module = wat::parse_str(r#"(module (func (export "_start")))"#).unwrap();
    let payload_len = 100 * 1024 * 1024;
    let name = b"padding";
    let mut section = Vec::new();
    let mut size = (1 + name.len() + payload_len) as u64;
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        section.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    module.push(0);
    module.extend(section);
    module.push(name.len() as u8);
    module.extend(name);
    module.resize(module.len() + payload_len, 0);
    std::fs::write(rootfs.path().join("big.wasm"), &module).unwrap();
    let started = std::time::Instant::now();
    let out = containerd.run_rootfs(&[], rootfs.path(), "huge-module", &["/big.wasm"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(5))
        .is_empty());
}

/// containerd writes the spec bytes a client sends into the bundle's config.json as they
/// are, but `ctr` cannot send invalid JSON (it parses the spec itself). So this drives the
/// shim the way containerd does: `start` from the bundle directory, then Create over ttrpc.
#[test]
fn invalid_json_in_config_json_fails_create_with_invalid_argument() {
    use containerd_shim_protos::api::{ConnectRequest, CreateTaskRequest, ShutdownRequest};
    use containerd_shim_protos::TaskClient;

    let containerd = Containerd::start().unwrap();
    let bundle = tempfile::tempdir().unwrap();
    std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
    std::fs::write(
        bundle.path().join("config.json"),
        br#"{"ociVersion": "1.0.2", "process": {"args": ["/hello.wasm"], "cwd": "/""#,
    )
    .unwrap();
    let ttrpc_address = format!("{}.ttrpc", containerd.address().display());
    let start =
        std::process::Command::new(integration::bin_dir().join("containerd-shim-wasmtime-v1"))
            .current_dir(bundle.path())
            .env("TTRPC_ADDRESS", &ttrpc_address)
            .args(["-namespace", "default", "-id", "badjson", "-address"])
            .arg(containerd.address())
            .args(["-publish-binary", "containerd", "start"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
    assert!(start.status.success(), "{start:?}");
    let address = String::from_utf8_lossy(&start.stdout).trim().to_string();
    let socket = address.trim_start_matches("unix://").to_string();

    let task = TaskClient::new(ttrpc::Client::connect(&address).unwrap());
    let context = || ttrpc::context::with_timeout(10_000_000_000);
    let request = CreateTaskRequest {
        id: "badjson".into(),
        bundle: bundle.path().display().to_string(),
        ..Default::default()
    };
    match task.create(context(), &request) {
        Err(ttrpc::Error::RpcStatus(status)) => {
            assert_eq!(status.code(), ttrpc::Code::INVALID_ARGUMENT, "{status:?}");
            assert!(
                status.message().contains("config.json")
                    && status.message().contains("EOF while parsing")
                    && status.message().contains("line 1"),
                "{status:?}"
            );
        }
        other => panic!("Create with invalid JSON: {other:?}"),
    }

    // The shim still answers, and goes away when told to.
    let connected = task
        .connect(
            context(),
            &ConnectRequest {
                id: "badjson".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(connected.shim_pid > 0);
    let _ = task.shutdown(
        context(),
        &ShutdownRequest {
            id: "badjson".into(),
            now: true,
            ..Default::default()
        },
    );
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
    assert!(!std::path::Path::new(&socket).exists(), "{socket} left");
}
