//! The process that compiles optimized code in the background: the shim binary run as a
//! compile helper. Driven directly here (what it does at a first start is in
//! compile_cache.rs and pod.rs): it must take the kernel's idle priority in a session of
//! its own, since a thread's nice value holds only within its session.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::bin_dir;

fn helper(kind: &str, engine: &str, entry: &Path) -> Child {
    Command::new(bin_dir().join("containerd-shim-wasmtime-v1"))
        .args(["--compile-helper", kind, engine])
        .arg(entry)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the compile helper")
}

/// The engine the helper compiles for, from its refusal of another one.
fn helper_engine(entry: &Path) -> String {
    let refused = helper("module", "0000000000000000", entry)
        .wait_with_output()
        .expect("the helper");
    assert!(!refused.status.success(), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    let ours = said
        .split("its engine is ")
        .nth(1)
        .map(|rest| rest.chars().take(16).collect::<String>())
        .unwrap_or_default();
    assert!(
        ours.len() == 16 && ours.chars().all(|c| c.is_ascii_hexdigit()),
        "no engine named in {said:?}"
    );
    ours
}

/// `/proc/PID/stat` fields after the command name: index 0 is field 3 (the state).
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

const SCHED_IDLE: &str = "5";

#[test]
fn the_compile_helper_runs_at_idle_priority_and_stores_what_it_compiles() {
    let cache = tempfile::tempdir().expect("tempdir");
    let entry = cache.path().join("entry.cwasm");
    let engine = helper_engine(&entry);
    let mut child = helper("module", &engine, &entry);
    let pid = child.id();
    // It lowers its priority before it reads its input (held back here).
    let deadline = Instant::now() + Duration::from_secs(10);
    let fields = loop {
        let fields = stat_fields(pid);
        let (session, nice, policy) = (
            fields.get(3).cloned().unwrap_or_default(),
            fields.get(16).cloned().unwrap_or_default(),
            fields.get(38).cloned().unwrap_or_default(),
        );
        if session == pid.to_string() && nice == "19" && policy == SCHED_IDLE {
            break fields;
        }
        assert!(
            Instant::now() < deadline,
            "session {session}, nice {nice}, policy {policy}: not a session of its own at \
             nice 19 and SCHED_IDLE"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(fields[3], std::process::id().to_string());
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "wasm-optimize", "what ps and top call it");
    // The OOM killer's first choice: losing it costs only time.
    let score = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default();
    assert_eq!(score.trim(), "1000");
    // Its session's weight (the kernel's autogroup), where the kernel has them.
    if let Ok(autogroup) = std::fs::read_to_string(format!("/proc/{pid}/autogroup")) {
        assert!(autogroup.contains("nice 19"), "{autogroup}");
    }
    let wasm = wat::parse_str(
        r#"(module (func (export "_start") (local i32) (local.set 0 (i32.const 7))))"#,
    )
    .expect("wat");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&wasm).expect("writing the wasm");
    drop(stdin);
    let out = child.wait_with_output().expect("the helper");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The entry: the artifact (an ELF object) and the cache's trailer after it.
    let stored = std::fs::read(&entry).expect("the entry");
    assert!(stored.starts_with(b"\x7fELF"), "{} bytes", stored.len());
    let names: Vec<String> = std::fs::read_dir(cache.path())
        .expect("the cache")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["entry.cwasm"], "no temporary file left");

    // Bytes that are not wasm: a failure with the compiler's reason, and no entry.
    let other = cache.path().join("other.cwasm");
    let mut child = helper("module", &engine, &other);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"\0asm\x01\0\0\0garbage").expect("writing");
    drop(stdin);
    let out = child.wait_with_output().expect("the helper");
    assert!(!out.status.success());
    assert!(!other.exists());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.starts_with("compile helper: "), "{said}");

    // A cache directory that is gone is not made again.
    let gone = cache.path().join("gone").join("entry.cwasm");
    let mut child = helper("module", &engine, &gone);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&wasm).expect("writing the wasm");
    drop(stdin);
    let out = child.wait_with_output().expect("the helper");
    assert!(!out.status.success());
    assert!(!cache.path().join("gone").exists());
}
