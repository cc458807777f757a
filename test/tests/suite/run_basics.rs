//! What a user sees from `ctr run`: output, argv/env/cwd, exit statuses, images.

use integration::{component_of, program, rootfs_with, Containerd, RUNTIME};

#[test]
fn hello_image_prints_its_output() {
    let containerd = Containerd::start().unwrap();
    let image = containerd
        .import_program(&program("hello"), "wasm-hello:test")
        .unwrap();
    assert_eq!(image, "docker.io/library/wasm-hello:test");
    let out = containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, &image, "hello1"]);
    assert_eq!(out.code, 0, "{out:?}\n{}", containerd.log());
    assert_eq!(out.stdout, "hello from wasm\n");
    assert!(containerd
        .wait_for_no_shims(std::time::Duration::from_secs(5))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

#[test]
fn image_args_replace_the_cmd_after_the_entrypoint() {
    let containerd = Containerd::start().unwrap();
    let image = containerd
        .import_program(&program("printenv"), "wasm-printenv:test")
        .unwrap();
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--env",
        "FOO=bar",
        &image,
        "pe1",
        "/printenv.wasm",
        "one",
        "two words",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("argv[0]=/printenv.wasm\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("argv[1]=one\nargv[2]=two words\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("env:FOO=bar\n"), "{}", out.stdout);
    assert!(out.stdout.contains("env:PATH=/\n"), "{}", out.stdout);
}

#[test]
fn argv_env_and_cwd_come_from_the_spec() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["printenv"]).unwrap();
    std::fs::create_dir_all(rootfs.path().join("work/dir")).unwrap();
    let out = containerd.run_rootfs(
        &["--env", "GREETING=hello world", "--cwd", "/work/dir"],
        rootfs.path(),
        "pe2",
        &["/printenv.wasm", "alpha", "--beta=1"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        &lines[..3],
        [
            "argv[0]=/printenv.wasm",
            "argv[1]=alpha",
            "argv[2]=--beta=1"
        ]
    );
    assert!(lines.contains(&"env:GREETING=hello world"), "{lines:?}");
    // Preview 1 has no working directory (wasi-libc's getcwd is always "/"): the spec's cwd
    // reaches the program as PWD.
    assert!(lines.contains(&"env:PWD=/work/dir"), "{lines:?}");
}

/// `ctr run --cwd`: a C program (wasi-libc) opens relative paths in the working directory,
/// reads and writes alike, and into a mount below it; absolute paths into it and elsewhere
/// in the rootfs still work; without `--cwd` relative paths stay at `/`. The same for a
/// component.
#[test]
fn relative_paths_resolve_in_the_working_directory() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool"]).unwrap();
    std::fs::write(
        rootfs.path().join("filetool-component.wasm"),
        component_of("filetool").unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(rootfs.path().join("srv/app/volume")).unwrap();
    std::fs::create_dir_all(rootfs.path().join("etc")).unwrap();
    std::fs::write(
        rootfs.path().join("srv/app/rel.txt"),
        "in the working directory\n",
    )
    .unwrap();
    std::fs::write(rootfs.path().join("rel.txt"), "at the root\n").unwrap();
    std::fs::write(rootfs.path().join("etc/conf.txt"), "in /etc\n").unwrap();
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("v.txt"), "in the volume\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/srv/app/volume,options=rbind:rw",
        volume.path().display()
    );
    for program in ["/filetool.wasm", "/filetool-component.wasm"] {
        let run = |id: &str, flags: &[&str], args: &[&str]| {
            let mut argv = vec![program];
            argv.extend(args);
            containerd.run_rootfs(flags, rootfs.path(), id, &argv)
        };
        let relative = run("cwd1", &["--cwd", "/srv/app"], &["read", "rel.txt"]);
        assert_eq!(
            (relative.code, relative.stdout.as_str()),
            (0, "in the working directory\n"),
            "{program}: {relative:?}"
        );
        let dotted = run("cwd2", &["--cwd", "/srv/app/"], &["read", "./rel.txt"]);
        assert_eq!(
            dotted.stdout, "in the working directory\n",
            "{program}: {dotted:?}"
        );
        let absolute = run(
            "cwd3",
            &["--cwd", "/srv/app"],
            &["read", "/srv/app/rel.txt"],
        );
        assert_eq!(
            absolute.stdout, "in the working directory\n",
            "{program}: {absolute:?}"
        );
        let written = run(
            "cwd4",
            &["--cwd", "/srv/app"],
            &["write", "out.txt", "written"],
        );
        assert_eq!(written.code, 0, "{program}: {written:?}");
        assert_eq!(
            std::fs::read_to_string(rootfs.path().join("srv/app/out.txt")).unwrap(),
            "written\n"
        );
        std::fs::remove_file(rootfs.path().join("srv/app/out.txt")).unwrap();
        let at_root = run("cwd5", &[], &["read", "rel.txt"]);
        assert_eq!(at_root.stdout, "at the root\n", "{program}: {at_root:?}");
        // Elsewhere in the rootfs by absolute path, and a mount below the working directory
        // by relative path.
        let elsewhere = run("cwd6", &["--cwd", "/srv/app"], &["read", "/etc/conf.txt"]);
        assert_eq!(elsewhere.stdout, "in /etc\n", "{program}: {elsewhere:?}");
        let in_volume = run(
            "cwd7",
            &["--cwd", "/srv/app", "--mount", &mount],
            &["read", "volume/v.txt"],
        );
        assert_eq!(
            in_volume.stdout, "in the volume\n",
            "{program}: {in_volume:?}"
        );
    }
}

#[test]
fn exit_statuses_zero_and_forty_two_pass_through() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["exitcode"]).unwrap();
    let zero = containerd.run_rootfs(&[], rootfs.path(), "ex0", &["/exitcode.wasm", "0"]);
    assert_eq!(zero.code, 0, "{zero:?}");
    let answer = containerd.run_rootfs(&[], rootfs.path(), "ex42", &["/exitcode.wasm", "42"]);
    assert_eq!(answer.code, 42, "{answer:?}");
}

#[test]
fn trap_exits_134_with_message_and_backtrace_on_stderr() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["trap"]).unwrap();
    let out = containerd.run_rootfs(&[], rootfs.path(), "trap1", &["/trap.wasm"]);
    assert_eq!(out.code, 134, "{out:?}");
    assert_eq!(out.stdout, "about to trap\n");
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);
    assert!(out.stderr.contains("wasm backtrace"), "{}", out.stderr);
    assert!(out.stderr.contains("do_work"), "{}", out.stderr);
}

#[test]
fn wat_text_and_named_exports_run() {
    let containerd = Containerd::start().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(
        rootfs.path().join("app.wat"),
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (data (i32.const 16) "from the greet export\n")
          (func (export "_start") (call $exit (i32.const 3)))
          (func (export "greet")
            (i32.store (i32.const 0) (i32.const 16))
            (i32.store (i32.const 4) (i32.const 22))
            (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap();
    let start = containerd.run_rootfs(&[], rootfs.path(), "wat1", &["/app.wat"]);
    assert_eq!(start.code, 3, "{start:?}");
    let greet = containerd.run_rootfs(&[], rootfs.path(), "wat2", &["/app.wat#greet"]);
    assert_eq!(greet.code, 0, "{greet:?}");
    assert_eq!(greet.stdout, "from the greet export\n");
}

#[test]
fn the_same_id_runs_again_right_after_removal() {
    // Each run's shim unlinks its socket before answering Shutdown, so the next `start` for
    // the same id gets a fresh shim instead of the exiting one.
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["hello"]).unwrap();
    for round in 0..5 {
        let out = containerd.run_rootfs(&[], rootfs.path(), "again", &["/hello.wasm"]);
        assert_eq!(out.code, 0, "round {round}: {out:?}");
        assert_eq!(out.stdout, "hello from wasm\n", "round {round}");
    }
    assert!(containerd
        .wait_for_no_shims(std::time::Duration::from_secs(5))
        .is_empty());
}

#[test]
fn a_linux_amd64_image_whose_entrypoint_is_wasm_runs() {
    let containerd = Containerd::start().unwrap();
    let image = containerd
        .import_program_as(&program("hello"), "linux-wasm:test", "linux/amd64")
        .unwrap();
    let out = containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, &image, "lw1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "hello from wasm\n");
}
