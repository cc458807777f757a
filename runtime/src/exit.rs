use std::fmt;

/// How a wasm program ended, kept richer than a bare integer so the host can log the cause
/// while still reporting the POSIX-style code containerd expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The program returned from its entry (status 0) or called `proc_exit(n)`.
    Exited(i32),
    /// The program trapped (unreachable, out-of-bounds, stack overflow...). Reported as 134,
    /// the status wasmtime's CLI uses, i.e. what SIGABRT would give a Linux process.
    Trapped(String),
    /// The host stopped the program on behalf of a signal; reported as 128 + signal.
    Signaled(i32),
    /// The program grew its memory past the container's limit and was stopped, as the
    /// kernel's OOM killer stops a Linux process: reported as 137 (128 + SIGKILL).
    OutOfMemory(String),
    /// The program could not be started or failed in the host (not the guest's fault).
    Failed(String),
}

/// Exit status of a trapped program: 128 + SIGABRT, as wasmtime's CLI reports traps.
pub const TRAP_EXIT_CODE: i32 = 134;

impl ExitStatus {
    /// The status code a container runtime reports for this ending.
    pub fn code(&self) -> u32 {
        let code = match self {
            ExitStatus::Exited(code) => *code,
            ExitStatus::Trapped(_) => TRAP_EXIT_CODE,
            ExitStatus::Signaled(signal) => 128 + signal,
            ExitStatus::OutOfMemory(_) => 128 + libc::SIGKILL,
            ExitStatus::Failed(_) => 1,
        };
        // POSIX keeps only the low 8 bits of an exit status; a wasm proc_exit(256) is 0 in a
        // shell too.
        (code & 0xff) as u32
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with status {code}"),
            ExitStatus::Trapped(msg) => write!(f, "trapped: {msg}"),
            ExitStatus::Signaled(sig) => write!(f, "stopped by signal {sig}"),
            ExitStatus::OutOfMemory(msg) => write!(f, "killed: {msg}"),
            ExitStatus::Failed(msg) => write!(f, "failed: {msg}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_posix_conventions() {
        assert_eq!(ExitStatus::Exited(42).code(), 42);
        assert_eq!(ExitStatus::Exited(256).code(), 0);
        assert_eq!(ExitStatus::Trapped("x".into()).code(), 134);
        assert_eq!(ExitStatus::Signaled(15).code(), 143);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert_eq!(ExitStatus::Failed("x".into()).code(), 1);
        assert_eq!(ExitStatus::OutOfMemory("x".into()).code(), 137);
    }
}
