//! The compile cache as an operator sees it: the first start compiles and stores, later
//! starts load, and a damaged entry is compiled again rather than trusted.

use std::path::PathBuf;

use integration::{rootfs_with, Containerd};

/// The default cache directory under the private containerd's state.
fn cache_dir(containerd: &Containerd) -> PathBuf {
    containerd
        .dir()
        .join("state/io.containerd.wasmtime.v1/cache")
}

fn entries(containerd: &Containerd) -> Vec<PathBuf> {
    std::fs::read_dir(cache_dir(containerd))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn the_second_start_loads_what_the_first_compiled() {
    let containerd = Containerd::start().expect("containerd");
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
    let trailer = &artifact[artifact.len() - 24..];
    assert_eq!(&trailer[..8], b"wshimc2\n");
    assert_eq!(
        u64::from_le_bytes(trailer[8..16].try_into().unwrap()),
        artifact.len() as u64 - 24
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
