//! The compile cache as an operator sees it: the first start compiles and stores, later
//! starts load, and a damaged entry is compiled again rather than trusted.

use std::path::PathBuf;

use std::time::Duration;

use integration::{rootfs_with, with_custom_payload, Containerd, RUNTIME};

fn entries(containerd: &Containerd) -> Vec<PathBuf> {
    std::fs::read_dir(containerd.compile_cache_dir())
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A containerd whose shims compile every program optimized before it starts, as before
/// tiering: one entry per program, the mechanics these tests look at.
fn containerd_without_tiering() -> Containerd {
    Containerd::start_with_env(&[("WASMTIME_SHIM_TIERING", "off")]).expect("containerd")
}

#[test]
fn the_second_start_loads_what_the_first_compiled() {
    let containerd = containerd_without_tiering();
    let rootfs = rootfs_with(&["hello"]).unwrap();
    assert!(entries(&containerd).is_empty());

    let first = containerd.run_rootfs(&[], rootfs.path(), "cache1", &["/hello.wasm"]);
    assert_eq!(first.code, 0, "{first:?}");
    let stored = entries(&containerd);
    assert_eq!(stored.len(), 1, "{stored:?}");
    let entry = stored[0].clone();
    assert!(entry.to_string_lossy().ends_with(".cwasm"), "{entry:?}");
    let artifact = std::fs::read(&entry).unwrap();
    // The compiled code first (wasmtime maps it from the file), then the trailer: magic,
    // length, checksum.
    assert!(artifact.starts_with(b"\x7fELF"), "{:?}", &artifact[..16]);
    let trailer = &artifact[artifact.len() - 32..];
    assert_eq!(&trailer[..8], b"wshimc3\n");
    assert_eq!(
        u64::from_le_bytes(trailer[8..16].try_into().unwrap()),
        artifact.len() as u64 - 32
    );

    let second = containerd.run_rootfs(&[], rootfs.path(), "cache2", &["/hello.wasm"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(entries(&containerd), vec![entry.clone()]);
    let log = containerd.shim_log();
    assert!(log.contains("compiled module from the cache"), "{log}");

    // Damage the entry: it is discarded, the program still runs, the entry is rewritten.
    let mut damaged = artifact.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x55;
    std::fs::write(&entry, &damaged).unwrap();
    let third = containerd.run_rootfs(&[], rootfs.path(), "cache3", &["/hello.wasm"]);
    assert_eq!(third.code, 0, "{third:?}");
    assert_eq!(third.stdout, first.stdout);
    assert!(
        containerd
            .shim_log()
            .contains("discarded a bad cache entry"),
        "{}",
        containerd.shim_log()
    );
    assert_eq!(std::fs::read(&entry).unwrap(), artifact);
}

/// A module printing the 4-letter `word` and a newline, padded to over 1 MiB: large enough
/// that the shim remembers its digest by file identity instead of hashing it at every start.
fn large_program(word: &str) -> Vec<u8> {
    assert_eq!(word.len(), 4);
    let module = wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 0) "\10\00\00\00\05\00\00\00")
            (data (i32.const 16) "{word}\0a")
            (func (export "_start")
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 32)))))"#
    ))
    .unwrap();
    with_custom_payload(&module, "padding", &vec![0x5a; 1_200_000])
}

/// The image-layer files named `name` in the private containerd's overlay snapshots.
fn layer_files(containerd: &Containerd, name: &str) -> Vec<PathBuf> {
    let snapshots = containerd
        .dir()
        .join("root/io.containerd.snapshotter.v1.overlayfs/snapshots");
    std::fs::read_dir(snapshots)
        .map(|dir| {
            dir.flatten()
                .map(|snapshot| snapshot.path().join("fs").join(name))
                .filter(|file| file.is_file())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_large_program_is_known_by_its_identity_until_it_changes() {
    let containerd = containerd_without_tiering();
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("big.wasm");
    let (first, second) = (large_program("AAAA"), large_program("BBBB"));
    assert_eq!(first.len(), second.len());
    std::fs::write(&program, &first).unwrap();
    let image = containerd.import_program(&program, "big:test").unwrap();
    // A layer file is remembered once its last change is settled (50 ms; 2 s where ctimes
    // are whole seconds) before the read and before the container's upper layer is made.
    std::thread::sleep(Duration::from_millis(2200));
    // Counted in the shim's own lines: the container's process (whose lines carry its
    // pid) loads the program again, from what the shim's validation left in the cache.
    let remembered = |containerd: &Containerd| {
        containerd
            .shim_log()
            .lines()
            .filter(|l| l.contains("remembered by its identity") && !l.contains(" pid="))
            .count()
    };
    let run = |id: &str| {
        let out = containerd.ctr(&["run", "--rm", "--runtime", RUNTIME, &image, id]);
        assert_eq!(out.code, 0, "{out:?}\n{}", containerd.log_tail(30));
        out.stdout
    };

    assert_eq!(run("big1"), "AAAA\n");
    assert_eq!(remembered(&containerd), 0);
    let digests = containerd.compile_cache_dir().join("digests");
    let memo: Vec<_> = std::fs::read_dir(&digests)
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(memo.len(), 1, "nothing remembered in {}", digests.display());

    assert_eq!(run("big2"), "AAAA\n");
    assert_eq!(remembered(&containerd), 1, "{}", containerd.shim_log());

    // Remembered, but the compiled form evicted: compiled again from the bytes.
    let compiled = containerd.compiled_entries();
    assert_eq!(compiled.len(), 1, "{compiled:?}");
    std::fs::remove_file(&compiled[0]).unwrap();
    assert_eq!(run("big2b"), "AAAA\n");
    assert_eq!(remembered(&containerd), 2, "{}", containerd.shim_log());
    assert!(
        compiled[0].exists(),
        "the compiled form was not stored again"
    );
    assert_eq!(run("big2c"), "AAAA\n");
    assert_eq!(remembered(&containerd), 3, "{}", containerd.shim_log());

    // The layer file rewritten in place behind containerd's back, same size: read, hashed
    // and run anew, never taken for the program remembered.
    let layers = layer_files(&containerd, "big.wasm");
    assert_eq!(layers.len(), 1, "{layers:?}");
    std::fs::write(&layers[0], &second).unwrap();
    assert_eq!(run("big3"), "BBBB\n");
    assert_eq!(remembered(&containerd), 3, "{}", containerd.shim_log());
    // Once settled, the new file is remembered in turn (by big3 or big4, depending on how
    // soon after the write big3's container was made) and found by the next start.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(run("big4"), "BBBB\n");
    let before = remembered(&containerd);
    assert_eq!(run("big5"), "BBBB\n");
    assert_eq!(
        remembered(&containerd),
        before + 1,
        "{}",
        containerd.shim_log()
    );
}

/// The code tier the container's process of task `id` (`process`), or the shim's
/// validation of its program, reported loading.
fn tier_of(containerd: &Containerd, id: &str, process: bool) -> String {
    let log = containerd.shim_log();
    log.lines()
        .filter(|l| l.contains(&format!("id={id} ")) && l.contains(" pid=") == process)
        .find_map(|l| {
            ["baseline (Winch) code", "optimized (Cranelift) code"]
                .into_iter()
                .find(|tier| l.contains(tier))
        })
        .unwrap_or_else(|| panic!("no tier logged for {id}:\n{log}"))
        .to_string()
}

#[test]
fn a_first_start_runs_baseline_code_and_the_next_runs_optimized_code() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["hello"]).unwrap();
    let first = containerd.run_rootfs(&[], rootfs.path(), "tier1", &["/hello.wasm"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout, "hello from wasm\n");
    // What the shim compiled for it. (The process itself may already find the optimized
    // code, which takes a small program like this one only milliseconds.)
    assert_eq!(
        tier_of(&containerd, "tier1", false),
        "baseline (Winch) code"
    );
    // Once the background compile has stored the optimized code (in place of the baseline
    // entry), a start runs it. Each start before that runs baseline code.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for attempt in 2.. {
        let id = format!("tier{attempt}");
        let next = containerd.run_rootfs(&[], rootfs.path(), &id, &["/hello.wasm"]);
        assert_eq!(next.code, 0, "{next:?}");
        assert_eq!(next.stdout, first.stdout);
        if tier_of(&containerd, &id, true) == "optimized (Cranelift) code" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no start ran optimized code:\n{}",
            containerd.shim_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The shim removes the baseline entry once the helper that stored the optimized one has
    // ended: moments after a start can map it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut compiled = containerd.compiled_entries();
    while compiled.len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        compiled = containerd.compiled_entries();
    }
    assert_eq!(
        compiled.len(),
        1,
        "the baseline entry is gone: {compiled:?}"
    );
}

#[test]
fn a_precompile_task_leaves_optimized_code_for_the_first_real_start() {
    let containerd = Containerd::start().expect("containerd");
    let rootfs = rootfs_with(&["hello"]).unwrap();
    let warm = containerd.run_rootfs(
        &["--annotation", "io.containerd.wasmtime.precompile=true"],
        rootfs.path(),
        "warm",
        &["/hello.wasm"],
    );
    // Compiled, not run.
    assert_eq!(warm.code, 0, "{warm:?}");
    assert_eq!(warm.stdout, "", "{warm:?}");
    let log = containerd.shim_log();
    assert!(
        log.contains("warm: precompiled /hello.wasm (optimized (Cranelift) code in the cache)"),
        "{log}"
    );
    // What the first real start finds: the optimized code, nothing to compile.
    let first = containerd.run_rootfs(&[], rootfs.path(), "real", &["/hello.wasm"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout, "hello from wasm\n");
    assert_eq!(
        tier_of(&containerd, "real", true),
        "optimized (Cranelift) code"
    );
    assert!(
        !containerd
            .shim_log()
            .lines()
            .any(|l| l.contains("id=real ") && l.contains("validated")),
        "the first real start compiled again:\n{}",
        containerd.shim_log()
    );
}
