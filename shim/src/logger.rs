//! The shim's log, written to the `log` FIFO containerd creates in the bundle and copies into
//! its own log, in logrus' text format so it reads like the rest of containerd's output.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::clock::rfc3339;

struct FifoLogger {
    sink: Mutex<Option<File>>,
    namespace: String,
    id: String,
    /// ` pid=N` for a container's process, which logs into its shim's FIFO: its lines say
    /// which process wrote them. Empty for the shim itself.
    process: String,
}

impl Log for FifoLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        // wasmtime and cranelift narrate every compilation at debug level; in a shim log that
        // drowns the task's own story, so only their warnings and errors pass.
        let target = metadata.target();
        let chatty = ["wasmtime", "cranelift", "regalloc", "wasmparser", "wasi"]
            .iter()
            .any(|prefix| target.starts_with(prefix));
        let limit = if chatty { Level::Warn } else { Level::Trace };
        metadata.level() <= log::max_level() && metadata.level() <= limit
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // One record, one line: containerd copies the FIFO line by line into its own log, and
        // a message with a wasm backtrace would otherwise lose its tags after the first line.
        let message = format!("{}", record.args())
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let line = format!(
            "time=\"{}\" level={level} msg=\"{message}\" namespace={} id={}{} runtime=io.containerd.wasmtime.v1\n",
            rfc3339(SystemTime::now()),
            self.namespace,
            self.id,
            self.process,
        );
        // The FIFO is non-blocking: if containerd stops reading, a full pipe drops log lines
        // instead of stalling every task this shim serves.
        if let Ok(mut sink) = self.sink.lock() {
            if let Some(file) = sink.as_mut() {
                let _ = file.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// The log's descriptor, kept to hand a copy to each container's process.
static SINK: std::sync::OnceLock<File> = std::sync::OnceLock::new();

/// Sends the `log` facade to `bundle/log` (if containerd made one). Called once per process.
pub fn init(bundle_log: &std::path::Path, debug: bool, namespace: &str, id: &str) {
    let sink = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(bundle_log)
        .ok();
    if let Some(copy) = sink.as_ref().and_then(|f| f.try_clone().ok()) {
        let _ = SINK.set(copy);
    }
    init_with_sink(sink, debug, namespace, id, false);
}

/// A copy of the log's descriptor, for a container's process to log into the same FIFO.
pub fn sink_copy() -> Option<File> {
    SINK.get().and_then(|f| f.try_clone().ok())
}

/// Sends the `log` facade to `sink`, an already open log (a container's process gets the
/// shim's, and says so: `child`). Called once per process.
pub fn init_with_sink(sink: Option<File>, debug: bool, namespace: &str, id: &str, child: bool) {
    let logger = FifoLogger {
        sink: Mutex::new(sink),
        namespace: namespace.to_string(),
        id: id.to_string(),
        process: if child {
            format!(" pid={}", std::process::id())
        } else {
            String::new()
        },
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(if debug {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
}
