//! Least privilege for wasm: each container is a process of its own, in its cgroup, its
//! namespaces and its own root, acting as the spec's user with no capabilities,
//! no_new_privs and a seccomp filter; file permissions apply to that user; annotations
//! narrow the filesystem view further.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use integration::{cgroups_of, fixtures_dir, rootfs_with, Containerd, CtrOutput, RUNTIME};
use serde_json::{json, Value};

/// A `ctr run --config` spec from ctr's own capture, with the test's rootfs, program, user
/// and extra bind mounts.
struct UserSpec {
    dir: tempfile::TempDir,
}

impl UserSpec {
    fn new(rootfs: &Path, args: &[&str], user: Value, binds: &[(&Path, &str)]) -> Self {
        let text = std::fs::read_to_string(fixtures_dir().join("ctr-plain.json")).unwrap();
        let mut spec: Value = serde_json::from_str(&text).unwrap();
        spec["root"]["path"] = json!(rootfs);
        spec["process"]["args"] = json!(args);
        spec["process"]["terminal"] = json!(false);
        spec["process"]["user"] = user;
        let mounts = spec["mounts"].as_array_mut().unwrap();
        for (source, destination) in binds {
            mounts.push(json!({
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["rbind", "rw"],
            }));
        }
        let dir = tempfile::tempdir().unwrap();
        // A cgroup of its own per spec, as ctr gives each container.
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        spec["linux"]["cgroupsPath"] = json!(format!("/wasmtime-test/{name}"));
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        UserSpec { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    fn cgroups_path(&self) -> String {
        let text = std::fs::read_to_string(self.path()).unwrap();
        let spec: Value = serde_json::from_str(&text).unwrap();
        spec["linux"]["cgroupsPath"].as_str().unwrap().to_string()
    }

    fn ctr(&self, containerd: &Containerd, mode: &str, id: &str) -> CtrOutput {
        let path = self.path().display().to_string();
        containerd.ctr(&["run", mode, "--runtime", RUNTIME, "--config", &path, id])
    }
}

/// The fields of a `/proc/.../status` file, values with single spaces.
fn status_fields(path: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            Some((k.to_string(), v))
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
}

/// The namespace `/proc/PID/ns/NAME` links to.
fn namespace(pid: u32, name: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}")).unwrap()
}

#[test]
fn the_wasm_process_is_confined_in_its_own_cgroup_namespaces_and_root() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["spin"]).unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("host-file"), "x").unwrap();
    let user = json!({"uid": 1000, "gid": 1000, "additionalGids": [44], "umask": 63});
    let spec = UserSpec::new(
        rootfs.path(),
        &["/spin.wasm"],
        user,
        &[(data.path(), "/data")],
    );
    let out = spec.ctr(&containerd, "-d", "confined");
    assert_eq!(out.code, 0, "{out:?}");
    containerd
        .wait_for_status("confined", "RUNNING", Duration::from_secs(10))
        .unwrap();
    let pid = containerd.task_pid("confined");
    let shims = containerd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let shim = shims[0];
    assert!(!shims.contains(&pid), "the task pid {pid} is the shim");
    // A process of its own, a child of the shim.
    let status = status_fields(&format!("/proc/{pid}/status"));
    assert_eq!(field(&status, "PPid"), shim.to_string());
    assert_eq!(field(&status, "Tgid"), pid.to_string());
    // Its command line is its program's, as a native container's (what `ps` shows).
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
        b"/spin.wasm\0"
    );
    assert_eq!(field(&status, "Uid"), "1000 1000 1000 1000");
    assert_eq!(field(&status, "Gid"), "1000 1000 1000 1000");
    assert_eq!(field(&status, "Groups"), "44");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&status, set), "0000000000000000", "{set}");
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(field(&status, "Seccomp"), "2");
    assert_eq!(field(&status, "Umask"), "0077");
    // Its threads (executor, epoch ticker, signals) all carry the same confinement.
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let thread = status_fields(&format!("{}/status", task.path().display()));
        assert_eq!(field(&thread, "Seccomp"), "2", "{}", task.path().display());
        assert_eq!(field(&thread, "CapEff"), "0000000000000000");
    }
    // The spec's cgroup, in every hierarchy.
    let cgroup_path = spec.cgroups_path();
    for (controllers, path) in cgroups_of(pid) {
        assert_eq!(path, cgroup_path, "hierarchy {controllers:?}");
    }
    // Namespaces of its own: mount and network.
    for ns in ["mnt", "net", "ipc", "uts"] {
        assert_ne!(namespace(pid, ns), namespace(shim, ns), "{ns}");
    }
    // Its root is the container's rootfs with the mount points (the spec's bind mount at
    // /data, and the tmpfs containerd's default spec puts at /run and /dev, the latter with
    // the standard device nodes): nothing of the host.
    let names = |dir: &str| {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/{dir}"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(""), ["data", "dev", "run", "spin.wasm"]);
    assert_eq!(
        names("dev"),
        ["full", "null", "random", "tty", "urandom", "zero"]
    );
    assert!(Path::new(&format!("/proc/{pid}/root/data/host-file")).exists());
    // The shim itself keeps what it needs to serve other containers.
    let main = status_fields(&format!("/proc/{shim}/status"));
    assert_eq!(field(&main, "Uid"), "0 0 0 0");
    assert_ne!(field(&main, "CapEff"), "0000000000000000");
    assert_eq!(field(&main, "Seccomp"), "0");
    containerd.kill_and_remove("confined", "SIGKILL");
    containerd.ctr(&["containers", "rm", "confined"]);
    // Delete removed its cgroup.
    assert!(!Path::new(&format!("/sys/fs/cgroup/memory{cgroup_path}")).exists());

    // A root container's process keeps uid 0 but holds no capability either.
    let root = UserSpec::new(
        rootfs.path(),
        &["/spin.wasm"],
        json!({"uid": 0, "gid": 0}),
        &[],
    );
    let out = root.ctr(&containerd, "-d", "rootwasm");
    assert_eq!(out.code, 0, "{out:?}");
    let pid = containerd.task_pid("rootwasm");
    let status = status_fields(&format!("/proc/{pid}/status"));
    assert_eq!(field(&status, "Uid"), "0 0 0 0");
    assert_eq!(field(&status, "CapEff"), "0000000000000000");
    assert_eq!(field(&status, "CapBnd"), "0000000000000000");
    assert_eq!(field(&status, "Seccomp"), "2");
    containerd.kill_and_remove("rootwasm", "SIGKILL");
}

#[test]
fn file_permissions_apply_to_the_spec_user() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool"]).unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = host.path().join("secret.txt");
    std::fs::write(&secret, "root only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shared = host.path().join("shared.txt");
    std::fs::write(&shared, "for everyone\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let owned = host.path().join("owned");
    std::fs::create_dir(&owned).unwrap();
    std::os::unix::fs::chown(&owned, Some(1000), Some(1000)).unwrap();
    let user = json!({"uid": 1000, "gid": 1000});
    let run = |id: &str, user: &Value, args: &[&str]| {
        let spec = UserSpec::new(rootfs.path(), args, user.clone(), &[(host.path(), "/data")]);
        spec.ctr(&containerd, "--rm", id)
    };

    let denied = run(
        "perm1",
        &user,
        &["/filetool.wasm", "read", "/data/secret.txt"],
    );
    assert_eq!(denied.code, 1, "{denied:?}");
    assert!(
        denied.stderr.contains("/data/secret.txt") && denied.stderr.contains("Permission denied"),
        "{denied:?}"
    );
    let allowed = run(
        "perm2",
        &user,
        &["/filetool.wasm", "read", "/data/shared.txt"],
    );
    assert_eq!(
        (allowed.code, allowed.stdout.as_str()),
        (0, "for everyone\n")
    );
    let not_mine = run(
        "perm3",
        &user,
        &["/filetool.wasm", "write", "/data/new.txt", "x"],
    );
    assert_eq!(not_mine.code, 1, "{not_mine:?}");
    assert!(!host.path().join("new.txt").exists());
    let mine = run(
        "perm4",
        &user,
        &["/filetool.wasm", "write", "/data/owned/new.txt", "mine"],
    );
    assert_eq!(mine.code, 0, "{mine:?}");
    let created = std::fs::metadata(owned.join("new.txt")).unwrap();
    assert_eq!((created.uid(), created.gid()), (1000, 1000));
    assert_eq!(created.mode() & 0o777, 0o644, "umask 022 by default");

    // Root in the container reads the root-only file, as a Linux process would.
    let root = run(
        "perm5",
        &json!({"uid": 0, "gid": 0}),
        &["/filetool.wasm", "read", "/data/secret.txt"],
    );
    assert_eq!((root.code, root.stdout.as_str()), (0, "root only\n"));
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
}

/// `HOME`, which no client puts in the spec, is what runc gives a process: the home of the
/// spec's uid in the container's /etc/passwd (the image's, or a file the client binds over
/// it), `/` without an entry; a spec's own `HOME` wins unless it is empty.
#[test]
fn home_is_the_spec_users_home_in_the_images_passwd() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["printenv"]).unwrap();
    std::fs::create_dir(rootfs.path().join("etc")).unwrap();
    std::fs::write(
        rootfs.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    let home_of = |out: CtrOutput| {
        assert_eq!(out.code, 0, "{out:?}");
        let homes: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("env:HOME="))
            .map(str::to_string)
            .collect();
        homes
    };
    let as_root = containerd.run_rootfs(&[], rootfs.path(), "home-root", &["/printenv.wasm"]);
    assert_eq!(home_of(as_root), ["/root"]);
    let run_as = |id: &str, uid: u32, binds: &[(&Path, &str)]| {
        let spec = UserSpec::new(
            rootfs.path(),
            &["/printenv.wasm"],
            json!({"uid": uid, "gid": uid}),
            binds,
        );
        spec.ctr(&containerd, "--rm", id)
    };
    assert_eq!(home_of(run_as("home-app", 1000, &[])), ["/home/app"]);
    assert_eq!(home_of(run_as("home-nobody", 4242, &[])), ["/"]);
    // `docker run -u UID -v /etc/passwd:/etc/passwd:ro`: the bound file is the one read.
    let host = tempfile::tempdir().unwrap();
    let passwd = host.path().join("passwd");
    std::fs::write(&passwd, "app:x:1000:1000::/from-the-bind:/bin/sh\n").unwrap();
    let bound = run_as("home-bound", 1000, &[(&passwd, "/etc/passwd")]);
    assert_eq!(home_of(bound), ["/from-the-bind"]);
    let own = containerd.run_rootfs(
        &["--env", "HOME=/custom"],
        rootfs.path(),
        "home-own",
        &["/printenv.wasm"],
    );
    assert_eq!(home_of(own), ["/custom"]);
    let empty = containerd.run_rootfs(
        &["--env", "HOME="],
        rootfs.path(),
        "home-empty",
        &["/printenv.wasm"],
    );
    assert_eq!(home_of(empty), ["/root"]);
}

#[test]
fn annotations_make_the_rootfs_read_only_or_hidden_and_expose_only_listed_mounts() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["filetool"]).unwrap();
    std::fs::create_dir(rootfs.path().join("tmp")).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(a.path().join("a.txt"), "from a\n").unwrap();
    std::fs::write(b.path().join("b.txt"), "from b\n").unwrap();
    let mount_a = format!(
        "type=bind,src={},dst=/a,options=rbind:rw",
        a.path().display()
    );
    let mount_b = format!(
        "type=bind,src={},dst=/b,options=rbind:rw",
        b.path().display()
    );
    let run = |id: &str, annotation: &str, args: &[&str]| {
        let flags = [
            "--mount",
            &mount_a,
            "--mount",
            &mount_b,
            "--annotation",
            annotation,
        ];
        containerd.run_rootfs(&flags, rootfs.path(), id, args)
    };

    let ro = run(
        "ann1",
        "io.containerd.wasmtime.rootfs=ro",
        &["/filetool.wasm", "write", "/tmp/x.txt", "no"],
    );
    assert_eq!(ro.code, 1, "{ro:?}");
    assert!(!rootfs.path().join("tmp/x.txt").exists());
    let rw = run(
        "ann2",
        "io.containerd.wasmtime.rootfs=rw",
        &["/filetool.wasm", "write", "/tmp/x.txt", "yes"],
    );
    assert_eq!(rw.code, 0, "{rw:?}");
    assert!(rootfs.path().join("tmp/x.txt").exists());

    // Hidden: the program is still found in the rootfs, but cannot read it.
    let hidden = run(
        "ann3",
        "io.containerd.wasmtime.rootfs=none",
        &["/filetool.wasm", "read", "/tmp/x.txt"],
    );
    assert_eq!(hidden.code, 1, "{hidden:?}");
    assert!(!hidden.stdout.contains("yes"), "{hidden:?}");
    let mounts_still = run(
        "ann4",
        "io.containerd.wasmtime.rootfs=none",
        &["/filetool.wasm", "read", "/a/a.txt"],
    );
    assert_eq!(
        (mounts_still.code, mounts_still.stdout.as_str()),
        (0, "from a\n")
    );

    // Only /a is listed: /b is not there.
    let listed = run(
        "ann5",
        "io.containerd.wasmtime.mounts=/a",
        &["/filetool.wasm", "read", "/a/a.txt"],
    );
    assert_eq!((listed.code, listed.stdout.as_str()), (0, "from a\n"));
    let unlisted = run(
        "ann6",
        "io.containerd.wasmtime.mounts=/a",
        &["/filetool.wasm", "read", "/b/b.txt"],
    );
    assert_eq!(unlisted.code, 1, "{unlisted:?}");
    assert!(!unlisted.stdout.contains("from b"), "{unlisted:?}");

    // A misspelt restriction fails Create instead of granting everything.
    let bad = run(
        "ann7",
        "io.containerd.wasmtime.rootfs=readonly",
        &["/filetool.wasm", "read", "/a/a.txt"],
    );
    assert_ne!(bad.code, 0, "{bad:?}");
    assert!(bad.stderr.contains("expected rw, ro or none"), "{bad:?}");
    let missing = run(
        "ann8",
        "io.containerd.wasmtime.mounts=/a,/c",
        &["/filetool.wasm", "read", "/a/a.txt"],
    );
    assert_ne!(missing.code, 0, "{missing:?}");
    assert!(missing.stderr.contains("/c"), "{missing:?}");
    assert!(containerd
        .wait_for_no_shims(Duration::from_secs(10))
        .is_empty());
    assert!(containerd.mounts().is_empty(), "{:?}", containerd.mounts());
}

#[test]
fn mount_points_are_made_inside_the_rootfs_even_through_the_images_symlinks() {
    let containerd = Containerd::start().unwrap();
    let rootfs = rootfs_with(&["hello"]).unwrap();
    // Where an image's absolute symlinks point to on the host: nothing may appear there.
    let host = tempfile::tempdir().unwrap();
    let escape_file = host.path().join("nologin");
    let escape_dir = host.path().join("voldir");
    std::fs::create_dir(rootfs.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(&escape_file, rootfs.path().join("etc/hosts")).unwrap();
    std::os::unix::fs::symlink(&escape_dir, rootfs.path().join("vol")).unwrap();
    let sources = tempfile::tempdir().unwrap();
    let hosts = sources.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let data = sources.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let spec = UserSpec::new(
        rootfs.path(),
        &["/hello.wasm"],
        json!({"uid": 0, "gid": 0}),
        &[(&hosts, "/etc/hosts"), (&data, "/vol/data")],
    );
    let out = spec.ctr(&containerd, "--rm", "symlinks");
    assert_eq!(out.code, 0, "{out:?}\n{}", containerd.shim_log());
    assert_eq!(out.stdout, "hello from wasm\n");
    assert!(!escape_file.exists(), "a file was made on the host");
    assert!(!escape_dir.exists(), "a directory was made on the host");
    // Inside the rootfs instead, where the links lead within it.
    let inside = rootfs.path().join(escape_dir.strip_prefix("/").unwrap());
    assert!(inside.join("data").is_dir(), "{}", inside.display());
}
