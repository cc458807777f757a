//! The mount → preopen rule: binds are reachable (read-only when `ro`), and so is a tmpfs
//! of the container's own; nothing else is.

use std::time::Duration;

use integration::{rootfs_with, Containerd};

#[test]
fn a_bind_mount_written_by_wasm_is_seen_on_the_host() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool"]).unwrap();
    let host = tempfile::tempdir().unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        host.path().display()
    );
    let out = containerd.run_rootfs(
        &["--mount", &mount],
        rootfs.path(),
        "bind1",
        &[
            "/filetool.wasm",
            "write",
            "/data/out.txt",
            "written by wasm",
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let text = std::fs::read_to_string(host.path().join("out.txt")).unwrap();
    assert_eq!(text, "written by wasm\n");
}

/// docker's `--read-only --tmpfs /scratch`: the tmpfs is the program's writable scratch
/// space on a read-only rootfs, an exec sees the same one, and none of it is on the host.
#[test]
fn a_tmpfs_mount_is_scratch_space_on_a_read_only_rootfs() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool", "ticker"]).unwrap();
    let tmpfs = "type=tmpfs,src=tmpfs,dst=/scratch,options=nosuid:nodev:size=1m:mode=1777";
    containerd.run_detached(
        &["--read-only", "--mount", tmpfs],
        rootfs.path(),
        "tmpfs1",
        &["/ticker.wasm", "0", "200"],
    );
    containerd
        .wait_for_status("tmpfs1", "RUNNING", Duration::from_secs(10))
        .unwrap();
    let exec = |exec_id: &str, args: &[&str]| {
        let mut argv = vec!["task", "exec", "--exec-id", exec_id, "tmpfs1"];
        argv.extend_from_slice(args);
        containerd.ctr(&argv)
    };
    let write = exec(
        "w",
        &["/filetool.wasm", "write", "/scratch/note.txt", "scratch"],
    );
    assert_eq!(write.code, 0, "{write:?}\n{}", containerd.shim_log());
    let read = exec("r", &["/filetool.wasm", "read", "/scratch/note.txt"]);
    assert_eq!(
        (read.code, read.stdout.as_str()),
        (0, "scratch\n"),
        "{read:?}"
    );
    let ls = exec("l", &["/filetool.wasm", "ls", "/scratch"]);
    assert_eq!((ls.code, ls.stdout.as_str()), (0, "note.txt\n"), "{ls:?}");
    // The rootfs itself stays read-only.
    let root = exec("o", &["/filetool.wasm", "write", "/outside.txt", "nope"]);
    assert_eq!(root.code, 1, "{root:?}");
    // An exec has the container's /dev too, writable under the read-only rootfs.
    let null = exec("n", &["/filetool.wasm", "write", "/dev/null", "gone"]);
    assert_eq!(null.code, 0, "{null:?}");
    // The tmpfs is the container's alone: its mount point is in the rootfs (as runc makes
    // one), the file is not, and the host has no such mount.
    assert!(rootfs.path().join("scratch").is_dir());
    assert!(!rootfs.path().join("scratch/note.txt").exists());
    assert!(!rootfs.path().join("outside.txt").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = rootfs.path().join("scratch").display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&point)),
        "the host sees the tmpfs"
    );
    containerd.kill_and_remove("tmpfs1", "SIGKILL");
}

/// A rootfs that is read-only underneath (a read-only view of an image) and has no `/run`
/// for the tmpfs containerd's default spec puts there: the tmpfs is left out with a warning
/// and the program runs, as it did before tmpfs mounts were made (runc would fail it).
#[test]
fn a_read_only_rootfs_with_no_directory_for_a_tmpfs_still_runs() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["hello"]).unwrap();
    let dir = rootfs.path().display().to_string();
    let mount = std::process::Command::new("mount")
        .args(["-o", "bind,ro", &dir, &dir])
        .status()
        .unwrap();
    assert!(mount.success(), "mount -o bind,ro {dir}");
    let out = containerd.run_rootfs(&[], rootfs.path(), "rofs1", &["/hello.wasm"]);
    let unmount = std::process::Command::new("umount")
        .arg(&dir)
        .status()
        .unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "hello from wasm\n"),
        "{out:?}"
    );
    assert!(unmount.success(), "umount {dir}");
    assert!(!rootfs.path().join("run").exists());
    assert!(
        containerd.shim_log().contains("tmpfs /run left out"),
        "{}",
        containerd.shim_log()
    );
}

#[test]
fn a_read_only_mount_refuses_writes_but_allows_reads() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool"]).unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in.txt"), "host data\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        host.path().display()
    );
    let write = containerd.run_rootfs(
        &["--mount", &mount],
        rootfs.path(),
        "ro1",
        &["/filetool.wasm", "write", "/data/out.txt", "nope"],
    );
    assert_eq!(write.code, 1, "{write:?}");
    assert!(write.stderr.contains("/data/out.txt"), "{}", write.stderr);
    assert!(!host.path().join("out.txt").exists());
    let read = containerd.run_rootfs(
        &["--mount", &mount],
        rootfs.path(),
        "ro2",
        &["/filetool.wasm", "read", "/data/in.txt"],
    );
    assert_eq!(
        (read.code, read.stdout.as_str()),
        (0, "host data\n"),
        "{read:?}"
    );
}

#[test]
fn host_files_outside_the_rootfs_and_mounts_are_invisible() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool"]).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", rootfs.path().join("passwd-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", rootfs.path().join("etc-link")).unwrap();
    std::fs::write(rootfs.path().join("inside.txt"), "inside\n").unwrap();
    let probes = [
        "/etc/passwd",
        "/proc/self/status",
        "/sys/kernel/hostname",
        "/../../../etc/passwd",
        "/passwd-link",
        "/etc-link/passwd",
    ];
    for (i, path) in probes.iter().enumerate() {
        let out = containerd.run_rootfs(
            &[],
            rootfs.path(),
            &format!("iso{i}"),
            &["/filetool.wasm", "read", path],
        );
        assert_eq!(out.code, 1, "{path} was readable: {out:?}");
        assert!(!out.stdout.contains("root:"), "{path}: {}", out.stdout);
    }
    // The rootfs itself is the program's `/`, with one mount point: ctr's spec (containerd's
    // default) mounts a tmpfs at /run, whose directory is made in the rootfs as runc makes it.
    let ls = containerd.run_rootfs(&[], rootfs.path(), "iso-ls", &["/filetool.wasm", "ls", "/"]);
    assert_eq!(ls.code, 0, "{ls:?}");
    assert_eq!(
        ls.stdout,
        "dev\netc-link\nfiletool.wasm\ninside.txt\npasswd-link\nrun\n"
    );
}

/// An image of 100 layers: containerd's overlay `lowerdir` then names 100 snapshot
/// directories, longer together than the page the kernel takes mount options in.
#[test]
fn an_image_of_a_hundred_layers_runs_with_every_layer_in_its_root() {
    let containerd = Containerd::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut pack = std::process::Command::new(integration::bin_dir().join("wasm-oci-pack"));
    pack.args(["--layer-per-file", "--name", "layers:100", "--output"])
        .arg(dir.path().join("layers.tar"))
        .arg(integration::program("filetool"));
    for n in 1..100 {
        let file = dir.path().join(format!("{n}.txt"));
        std::fs::write(&file, format!("layer {n}\n")).unwrap();
        pack.arg(format!("{}:/layers/{n}.txt", file.display()));
    }
    // The last layer changes what an earlier one put there.
    let newer = dir.path().join("newer.txt");
    std::fs::write(&newer, "layer 100 over layer 1\n").unwrap();
    pack.arg(format!("{}:/layers/1.txt", newer.display()));
    let packed = pack.output().unwrap();
    assert!(packed.status.success(), "{packed:?}");
    let tar = dir.path().join("layers.tar").display().to_string();
    let import = containerd.ctr(&["images", "import", "--platform", "wasi/wasm", &tar]);
    assert_eq!(import.code, 0, "{import:?}");
    let image = "docker.io/library/layers:100";
    for (id, file, expected) in [
        ("l2", "/layers/2.txt", "layer 2\n"),
        ("l99", "/layers/99.txt", "layer 99\n"),
        ("l1", "/layers/1.txt", "layer 100 over layer 1\n"),
    ] {
        let out = containerd.ctr(&[
            "run",
            "--rm",
            "--runtime",
            integration::RUNTIME,
            image,
            id,
            "/filetool.wasm",
            "read",
            file,
        ]);
        assert_eq!(out.code, 0, "{out:?}\n{}", containerd.shim_log());
        assert_eq!(out.stdout, expected);
    }
    let mounts = containerd.mounts();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

/// runc's device policy: the spec's `/dev` tmpfs holds the standard nodes and the spec's
/// devices, and no other node opens: not one an image carries (here a `null` of the
/// image's own, mode 0666), whose writes under no such policy would go to the device.
/// Writing to `/dev/null` discards instead of making a file in the rootfs, also with a
/// read-only rootfs, which still refuses other writes.
#[test]
fn dev_holds_the_standard_nodes_and_no_other_node_opens() {
    use std::os::unix::fs::FileTypeExt;
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool"]).unwrap();
    let image_node = rootfs.path().join("imgnull");
    let made = std::process::Command::new("mknod")
        .args(["-m", "0666"])
        .arg(&image_node)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());

    let list = containerd.run_rootfs(
        &[],
        rootfs.path(),
        "dev1",
        &["/filetool.wasm", "ls", "/dev"],
    );
    let mut names: Vec<&str> = list.stdout.lines().collect();
    names.sort();
    assert_eq!(
        (list.code, names),
        (0, vec!["full", "null", "random", "tty", "urandom", "zero"]),
        "{list:?}"
    );

    let discard = containerd.run_rootfs(
        &[],
        rootfs.path(),
        "dev2",
        &["/filetool.wasm", "write", "/dev/null", "gone"],
    );
    assert_eq!(discard.code, 0, "{discard:?}");
    let in_rootfs = std::fs::read_dir(rootfs.path().join("dev"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(in_rootfs, 0, "the rootfs's own /dev stays empty");

    let refused = containerd.run_rootfs(
        &[],
        rootfs.path(),
        "dev3",
        &["/filetool.wasm", "write", "/imgnull", "to the device"],
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("/imgnull") && refused.stderr.contains("Permission denied"),
        "{}",
        refused.stderr
    );
    assert!(std::fs::symlink_metadata(&image_node)
        .unwrap()
        .file_type()
        .is_char_device());

    let read_only_discard = containerd.run_rootfs(
        &["--read-only"],
        rootfs.path(),
        "dev4",
        &["/filetool.wasm", "write", "/dev/null", "gone"],
    );
    assert_eq!(read_only_discard.code, 0, "{read_only_discard:?}");
    let read_only_write = containerd.run_rootfs(
        &["--read-only"],
        rootfs.path(),
        "dev5",
        &["/filetool.wasm", "write", "/new.txt", "nope"],
    );
    assert_eq!(read_only_write.code, 1, "{read_only_write:?}");
    assert!(
        read_only_write.stderr.contains("/new.txt"),
        "{}",
        read_only_write.stderr
    );
    assert!(!rootfs.path().join("new.txt").exists());
    // Making the rootfs read-only keeps it nodev: the image's node stays refused.
    let read_only_node = containerd.run_rootfs(
        &["--read-only"],
        rootfs.path(),
        "dev7",
        &["/filetool.wasm", "read", "/imgnull"],
    );
    assert_eq!(read_only_node.code, 1, "{read_only_node:?}");
    assert!(
        read_only_node.stderr.contains("Permission denied"),
        "{}",
        read_only_node.stderr
    );

    // A device the spec adds (ctr --device, docker --device) is made too.
    if std::path::Path::new("/dev/fuse").exists() {
        let added = containerd.run_rootfs(
            &["--device", "/dev/fuse"],
            rootfs.path(),
            "dev6",
            &["/filetool.wasm", "ls", "/dev"],
        );
        assert!(
            added.code == 0 && added.stdout.lines().any(|l| l == "fuse"),
            "{added:?}"
        );
    } else {
        eprintln!("no /dev/fuse on this host: the spec-device check is skipped");
    }
}
