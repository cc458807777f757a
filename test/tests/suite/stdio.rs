//! stdin, stdout and stderr through containerd's FIFOs (ctr always attaches its stdin), and
//! through a `binary://` logging program.

use std::io::Write;
use std::process::Stdio;

use integration::{rootfs_with, Containerd};

#[test]
fn stdin_is_piped_through_ctr_run() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["cat"]).unwrap();
    let mut child = containerd
        .run_rootfs_command(&[], rootfs.path(), "cat1", &["/cat.wasm"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), input);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cat: {} bytes", input.len())),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn five_megabytes_of_stdout_arrive_byte_exact() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["bigout"]).unwrap();
    let out = containerd
        .run_rootfs_command(&[], rootfs.path(), "big1", &["/bigout.wasm"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let size = 5 * 1024 * 1024;
    assert_eq!(out.stdout.len(), size);
    let expected: Vec<u8> = (0..size)
        .map(|i| ((i * 31 + i / 4096) % 251) as u8)
        .collect();
    assert!(out.stdout == expected, "stdout differs from the pattern");
}

/// `ctr run --log-uri binary://PROGRAM?k=v`, the way nerdctl's log drivers reach a shim: the
/// logging program gets the process's stdout and stderr at descriptors 3 and 4 and the
/// task's identity in its environment, and `ctr run --rm` ends once the program is done.
#[test]
fn a_binary_logger_gets_the_programs_output_and_identity() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["hello", "filetool"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logger = dir.path().join("logger.sh");
    // Only CONTAINER_ID and CONTAINER_NAMESPACE are in its environment (no PATH).
    std::fs::write(
        &logger,
        "#!/bin/sh\nexec 5>&-\n/bin/cat <&3 >\"$2/$CONTAINER_ID.out\" &\n\
         /bin/cat <&4 >\"$2/$CONTAINER_ID.err\"\nwait\n\
         echo \"$CONTAINER_NAMESPACE\" >\"$2/$CONTAINER_ID.ns\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let uri = format!("binary://{}?dir={}", logger.display(), dir.path().display());
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

    let out = containerd.run_rootfs(
        &["--log-uri", &uri],
        rootfs.path(),
        "log1",
        &["/hello.wasm"],
    );
    assert_eq!(out.code, 0, "{out:?}\n{}", containerd.shim_log());
    assert_eq!(read("log1.out"), "hello from wasm\n");
    assert_eq!(read("log1.err"), "");
    assert_eq!(read("log1.ns"), "default\n");

    let out = containerd.run_rootfs(
        &["--log-uri", &uri],
        rootfs.path(),
        "log2",
        &["/filetool.wasm"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        read("log2.err").starts_with("usage: filetool"),
        "{}",
        read("log2.err")
    );
    assert_eq!(read("log2.out"), "");

    // A logging program that is not there fails the run with its path, not a hang.
    let missing = "binary:///no/such/logger";
    let out = containerd.run_rootfs(
        &["--log-uri", missing],
        rootfs.path(),
        "log3",
        &["/hello.wasm"],
    );
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("/no/such/logger"), "{out:?}");
}
