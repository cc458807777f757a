//! stdin, stdout and stderr through containerd's FIFOs (ctr always attaches its stdin).

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
