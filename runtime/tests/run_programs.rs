//! Runs small WAT programs through the whole runtime path: spec → plan → load → run.

use std::path::Path;
use std::time::{Duration, Instant};

use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec, SpecBuilder};
use runtime::{Controls, ExitStatus, Program, RuntimeError, StdioFiles, Stopper, WasiPlan};

const PRINT_AND_EXIT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.const 42)))
  (func (export "other")
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

const TRAP: &str = r#"(module (func $inner unreachable) (func (export "_start") call $inner))"#;
const SPIN: &str = r#"(module (func (export "_start") (loop $l (br $l))))"#;

fn spec(args: &[&str]) -> Spec {
    SpecBuilder::default()
        .root(RootBuilder::default().path("rootfs").build().unwrap())
        .process(
            ProcessBuilder::default()
                .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .cwd("/")
                .env(vec!["PATH=/bin".to_string()])
                .build()
                .unwrap(),
        )
        .mounts(vec![])
        .build()
        .unwrap()
}

fn load(rootfs: &Path, args: &[&str]) -> Result<Program, RuntimeError> {
    Program::load(WasiPlan::from_spec(&spec(args), rootfs)?)
}

fn run_capturing(program: Program, stopper: &Stopper) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let stdio = StdioFiles {
        stdin: None,
        stdout: Some(std::fs::File::create(&out).unwrap()),
        stderr: Some(std::fs::File::create(&err).unwrap()),
        terminal: false,
    };
    let status = program.run_blocking(
        stdio,
        &Controls {
            stopper: stopper.clone(),
            ..Default::default()
        },
    );
    (
        status,
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
    )
}

#[test]
fn text_module_prints_and_exits_with_its_status() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("app.wat"), PRINT_AND_EXIT).unwrap();
    let program = load(rootfs.path(), &["/app.wat"]).unwrap();
    let (status, out, _) = run_capturing(program, &Stopper::new());
    assert_eq!(status, ExitStatus::Exited(42));
    assert_eq!(out, "hello from wasm\n");
}

#[test]
fn named_export_runs_instead_of_start() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(
        rootfs.path().join("app.wasm"),
        wat::parse_str(PRINT_AND_EXIT).unwrap(),
    )
    .unwrap();
    let program = load(rootfs.path(), &["app.wasm#other"]).unwrap();
    let (status, _, _) = run_capturing(program, &Stopper::new());
    assert_eq!(status, ExitStatus::Exited(0));
    let err = load(rootfs.path(), &["/app.wasm#missing"]).unwrap_err();
    assert!(
        err.to_string().contains("no exported function `missing`"),
        "{err}"
    );
}

#[test]
fn trap_gives_134_and_a_backtrace_on_stderr() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("trap.wat"), TRAP).unwrap();
    let program = load(rootfs.path(), &["/trap.wat"]).unwrap();
    let (status, _, err) = run_capturing(program, &Stopper::new());
    assert_eq!(status.code(), 134);
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains("wasm backtrace"), "{err}");
}

#[test]
fn stop_interrupts_a_busy_loop() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("spin.wat"), SPIN).unwrap();
    let program = load(rootfs.path(), &["/spin.wat"]).unwrap();
    let stopper = Stopper::new();
    let remote = stopper.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        remote.stop(15);
    });
    let started = Instant::now();
    let (status, _, _) = run_capturing(program, &stopper);
    assert_eq!(status, ExitStatus::Signaled(15));
    assert_eq!(status.code(), 143);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn unknown_imports_fail_at_load() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(
        rootfs.path().join("imp.wat"),
        r#"(module (import "env" "nope" (func)) (func (export "_start")))"#,
    )
    .unwrap();
    let err = load(rootfs.path(), &["/imp.wat"]).unwrap_err().to_string();
    assert!(
        err.contains("cannot be linked") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn corrupt_and_missing_programs_fail_at_load() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("bad.wasm"), b"\0asm\x01\0\0\0\x01\xff").unwrap();
    let err = load(rootfs.path(), &["/bad.wasm"]).unwrap_err().to_string();
    assert!(err.contains("not a valid WebAssembly module"), "{err}");
    let err = load(rootfs.path(), &["/nothere.wasm"]).unwrap_err();
    assert!(matches!(err, RuntimeError::EntrypointNotFound(_)), "{err}");
}

const WRITE_FOREVER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $l))))"#;

#[test]
fn stop_reaches_a_program_blocked_on_a_full_stdout_pipe() {
    use std::os::unix::fs::OpenOptionsExt;
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("w.wat"), WRITE_FOREVER).unwrap();
    let fifo = rootfs.path().join("out.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: plain mkfifo(3) on a fresh path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Opened read-write, as the shim opens containerd's FIFOs; nobody ever reads it.
    let out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&fifo)
        .unwrap();
    let program = load(rootfs.path(), &["/w.wat"]).unwrap();
    let stopper = Stopper::new();
    let remote = stopper.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        remote.stop(9);
    });
    let started = Instant::now();
    let stdio = StdioFiles {
        stdin: None,
        stdout: Some(out),
        stderr: None,
        terminal: false,
    };
    let status = program.run_blocking(
        stdio,
        &Controls {
            stopper: stopper.clone(),
            ..Default::default()
        },
    );
    assert_eq!(status, ExitStatus::Signaled(9));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Grows by one page at a time, forever.
const GROW: &str = r#"(module
  (memory 1)
  (func (export "_start")
    (loop $l (drop (memory.grow (i32.const 1))) (br $l))))"#;

#[test]
fn growing_past_the_memory_limit_stops_the_program_like_an_oom_kill() {
    let rootfs = tempfile::tempdir().unwrap();
    std::fs::write(rootfs.path().join("grow.wat"), GROW).unwrap();
    let program = load(rootfs.path(), &["/grow.wat"]).unwrap();
    let controls = Controls::default();
    controls.gauge.set_limit(4 << 20);
    let status = program.run_blocking(StdioFiles::default(), &controls);
    assert!(
        matches!(&status, ExitStatus::OutOfMemory(msg) if msg.contains("limit")),
        "{status:?}"
    );
    assert_eq!(status.code(), 137);
    assert!(controls.gauge.peak() <= 4 << 20);
    assert_eq!(
        controls.gauge.current(),
        0,
        "the instance's memory was given back"
    );
}
