//! WASI preview 2 command components run like modules: argv, env, preopens, stdio and exit
//! status from the spec, told apart from modules by their bytes alone.

use integration::{component_of, program, Containerd};

#[test]
fn a_command_component_gets_argv_env_and_its_exit_status() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = tempfile::tempdir().unwrap();
    for name in ["printenv", "exitcode", "filetool"] {
        let component = component_of(name).unwrap();
        assert_eq!(
            &component[..8],
            b"\0asm\x0d\0\x01\0",
            "{name} is a component"
        );
        std::fs::write(rootfs.path().join(format!("{name}.wasm")), component).unwrap();
    }

    let out = containerd.run_rootfs(
        &["--env", "GREETING=hello component"],
        rootfs.path(),
        "comp1",
        &["/printenv.wasm", "first", "second arg"],
    );
    assert_eq!(out.code, 0, "{out:?}\n{}", containerd.shim_log());
    for line in [
        "argv[0]=/printenv.wasm",
        "argv[1]=first",
        "argv[2]=second arg",
        "env:GREETING=hello component",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "{line}: {out:?}");
    }

    // The preview 1 adapter turns proc_exit(n) into `exit(err)` for any n != 0: status 1,
    // as `wasmtime run` reports it. (Components calling `exit-with-code` keep their status.)
    let out = containerd.run_rootfs(&[], rootfs.path(), "comp2", &["/exitcode.wasm", "42"]);
    assert_eq!(out.code, 1, "{out:?}");
    let out = containerd.run_rootfs(&[], rootfs.path(), "comp2b", &["/exitcode.wasm", "0"]);
    assert_eq!(out.code, 0, "{out:?}");

    // A host directory mounted into the container is a preopen for a component too.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in.txt"), "from the host\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.path().display()
    );
    let out = containerd.run_rootfs(
        &["--mount", &mount],
        rootfs.path(),
        "comp3",
        &["/filetool.wasm", "read", "/data/in.txt"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("from the host"), "{out:?}");

    // The same program as a module still runs as a module.
    std::fs::copy(program("exitcode"), rootfs.path().join("module.wasm")).unwrap();
    let out = containerd.run_rootfs(&[], rootfs.path(), "comp4", &["/module.wasm", "7"]);
    assert_eq!(out.code, 7, "{out:?}");
}

#[test]
fn a_component_that_is_not_a_command_is_refused_with_the_reason() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = tempfile::tempdir().unwrap();
    // A valid component exporting nothing: no wasi:cli/run to call.
    let library = wat::parse_str("(component)").unwrap();
    std::fs::write(rootfs.path().join("lib.wasm"), library).unwrap();
    std::fs::write(
        rootfs.path().join("cmd.wasm"),
        component_of("exitcode").unwrap(),
    )
    .unwrap();

    let out = containerd.run_rootfs(&[], rootfs.path(), "notcmd", &["/lib.wasm"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("/lib.wasm") && out.stderr.contains("wasi:cli/run"),
        "{out:?}"
    );
    // `#name` selects a core module's function; a component has only its run export.
    let out = containerd.run_rootfs(&[], rootfs.path(), "withexport", &["/cmd.wasm#main"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("wasi:cli/run"), "{out:?}");
    // Nothing was left running or mounted by the refused Creates.
    assert!(containerd
        .wait_for_no_shims(std::time::Duration::from_secs(5))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

#[test]
fn a_command_component_calling_exit_with_code_keeps_its_status() {
    // cli-exit is built by `make examples` as a component (clang + wit-bindgen's C bindings +
    // the command adapter); it calls wasi:cli/exit.exit-with-code itself.
    let containerd = Containerd::start().expect("containerd");
    let rootfs = integration::rootfs_with(&["cli-exit"]).unwrap();
    let bytes = std::fs::read(rootfs.path().join("cli-exit.wasm")).unwrap();
    assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0", "cli-exit is a component");
    let out = containerd.run_rootfs(
        &["--env", "ANSWER=forty two"],
        rootfs.path(),
        "exit42",
        &["/cli-exit.wasm", "42", "two words"],
    );
    assert_eq!(out.code, 42, "{out:?}\n{}", containerd.shim_log());
    for line in [
        "argv[0]=/cli-exit.wasm",
        "argv[1]=42",
        "argv[2]=two words",
        "env: ANSWER=forty two",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "{line}: {out:?}");
    }
    let out = containerd.run_rootfs(&[], rootfs.path(), "exit0", &["/cli-exit.wasm", "0"]);
    assert_eq!(out.code, 0, "{out:?}");
}
