//! Tier bookkeeping: which code a start gets from the compile cache, and what the
//! background optimization leaves there. Each test uses a cache of its own (the process's
//! global cache stays unset, so no background thread starts here).

use std::path::Path;
use std::time::Duration;

use wasmtime::Module;

use crate::cache::CompileCache;
use crate::engine::{baseline, shared, EngineFamily, Tier};
use crate::program::compile_tiered;
use crate::source::ProgramSource;
use crate::WasiPlan;

const HELLO: &str = r#"(module (func (export "_start")))"#;
/// Tail calls: Cranelift compiles them, Winch does not.
const TAIL_CALL: &str = r#"(module
    (func $g)
    (func $f (return_call $g))
    (func (export "_start") (call $f)))"#;

fn plan(rootfs: &Path, wasm: &[u8]) -> WasiPlan {
    std::fs::write(rootfs.join("p.wasm"), wasm).unwrap();
    let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "root": { "path": rootfs },
        "process": { "args": ["/p.wasm"], "cwd": "/", "user": { "uid": 0, "gid": 0 } },
    }))
    .unwrap();
    WasiPlan::from_spec(&spec, rootfs).unwrap()
}

/// The tier a start of the program in `plan` gets from `cache`.
fn start(plan: &WasiPlan, cache: &CompileCache) -> Tier {
    let mut source = ProgramSource::open(
        &plan.entrypoint,
        &plan.preopens,
        &plan.cwd,
        plan.path_var(),
        None,
    )
    .unwrap();
    let (_module, tier) = compile_tiered::<Module>(&mut source, cache, EngineFamily::Command)
        .unwrap()
        .unwrap();
    tier
}

fn entries(cache: &CompileCache) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(cache.dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "cwasm"));
    files.sort();
    files
}

fn digest(wasm: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(wasm).into()
}

#[test]
fn a_first_start_is_baseline_until_the_optimized_entry_is_stored() {
    let (rootfs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = CompileCache::new(dir.path(), 1 << 30);
    let wasm = wat::parse_str(HELLO).unwrap();
    let plan = plan(rootfs.path(), &wasm);
    assert_eq!(start(&plan, &cache), Tier::Baseline);
    assert_eq!(entries(&cache).len(), 1, "the baseline entry");
    // Still baseline: nothing optimized yet.
    assert_eq!(start(&plan, &cache), Tier::Baseline);
    // What the background optimization stores.
    cache
        .compiled::<Module>(&shared().unwrap().engine, &digest(&wasm), &wasm)
        .unwrap();
    assert_eq!(entries(&cache).len(), 2);
    // The optimized entry wins, though the baseline one is still there.
    assert_eq!(start(&plan, &cache), Tier::Optimized);
}

#[test]
fn a_corrupt_baseline_entry_is_compiled_again() {
    let (rootfs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = CompileCache::new(dir.path(), 1 << 30);
    let wasm = wat::parse_str(HELLO).unwrap();
    let plan = plan(rootfs.path(), &wasm);
    assert_eq!(start(&plan, &cache), Tier::Baseline);
    let entry = entries(&cache).remove(0);
    let mut bytes = std::fs::read(&entry).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    assert_eq!(start(&plan, &cache), Tier::Baseline);
    // Removed and written anew, sound: the next start maps it.
    assert_ne!(std::fs::read(&entry).unwrap(), bytes);
    assert_eq!(start(&plan, &cache), Tier::Baseline);
}

#[test]
fn a_program_the_baseline_compiler_refuses_starts_on_optimized_code() {
    let (rootfs, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cache = CompileCache::new(dir.path(), 1 << 30);
    let plan = plan(rootfs.path(), &wat::parse_str(TAIL_CALL).unwrap());
    assert_eq!(start(&plan, &cache), Tier::Optimized);
    assert_eq!(entries(&cache).len(), 1, "only the optimized entry");
}

#[test]
fn the_optimizing_engines_code_loads_in_the_shared_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::new(dir.path(), 1 << 30);
    let wasm = wat::parse_str(HELLO).unwrap();
    let engine = crate::engine::optimizing_engine().unwrap();
    let artifact = Module::new(engine, &wasm).unwrap().serialize().unwrap();
    let shared = &shared().unwrap().engine;
    cache.put_serialized(shared, &digest(&wasm), &artifact);
    assert!(cache.get::<Module>(shared, &digest(&wasm)).is_some());
}

/// An HTTP component's optimized code, compiled in the background by the optimizing engine,
/// loads in the serving engine, whose pooling allocator must not change what it loads.
#[test]
fn the_optimizing_engines_code_loads_in_the_serving_engine() {
    use wasmtime::component::Component;
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::new(dir.path(), 1 << 30);
    let wasm = wat::parse_str("(component)").unwrap();
    let engine = crate::engine::optimizing_engine().unwrap();
    let artifact = Component::new(engine, &wasm).unwrap().serialize().unwrap();
    let serving = &crate::engine::serving().unwrap().engine;
    assert_eq!(
        crate::engine::compatibility(engine),
        crate::engine::compatibility(serving)
    );
    assert!(cache.open_sound(serving, &digest(&wasm)).is_none());
    cache.put_serialized(serving, &digest(&wasm), &artifact);
    assert!(cache.get::<Component>(serving, &digest(&wasm)).is_some());
}

#[test]
fn one_claim_at_a_time_on_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::new(dir.path(), 1 << 30);
    let (engine, digest) = (&shared().unwrap().engine, digest(b"x"));
    let held = cache
        .claim(engine, &digest, Duration::ZERO)
        .expect("the first claim");
    assert!(cache
        .claim(engine, &digest, Duration::from_millis(50))
        .is_none());
    // Another engine's entry (the baseline one) is claimed apart.
    assert!(cache
        .claim(&baseline().unwrap().engine, &digest, Duration::ZERO)
        .is_some());
    drop(held);
    assert!(cache.claim(engine, &digest, Duration::ZERO).is_some());
}

#[test]
fn a_concurrent_first_start_waits_for_the_compile_under_way_and_maps_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CompileCache::new(dir.path(), 1 << 30);
    let wasm = wat::parse_str(HELLO).unwrap();
    let (engine, digest) = (&shared().unwrap().engine, digest(&wasm));
    // This thread is the first start, compiling; another comes meanwhile.
    let claim = cache.claim(engine, &digest, Duration::ZERO).unwrap();
    let (second_cache, second_wasm) = (cache.clone(), wasm.clone());
    let second = std::thread::spawn(move || {
        second_cache
            .compiled::<Module>(&shared().unwrap().engine, &digest, &second_wasm)
            .map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!second.is_finished(), "the second start did not wait");
    cache.put_serialized(engine, &digest, &engine.precompile_module(&wasm).unwrap());
    let stored = std::fs::metadata(entries(&cache).remove(0)).unwrap();
    drop(claim);
    second.join().unwrap().unwrap();
    // It mapped what the first stored rather than compiling and storing its own.
    let after = std::fs::metadata(entries(&cache).remove(0)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(after.ino(), stored.ino());
    assert_eq!(entries(&cache).len(), 1);
}
