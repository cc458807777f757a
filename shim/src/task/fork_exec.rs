//! Executing a container's process already in its cgroup.
//!
//! The usual way in, writing the new process's pid to `cgroup.procs`, takes the kernel's
//! cgroup-wide threadgroup lock for writing, and taking it first waits for an RCU grace
//! period: 4 to 16 ms measured on this project's 2-core test machine, a quarter of a whole
//! `ctr run --rm`, on every start. Two ways in do not take that lock, and this file uses
//! them:
//! - v2 (pure, or the unified hierarchy beside v1 ones): `clone3` with `CLONE_INTO_CGROUP`
//!   (Linux 5.7) makes the process in its cgroup;
//! - v1: a thread that moves only itself (`0` written to a hierarchy's `tasks` file) skips
//!   the lock, and the forked child, single-threaded until it executes, is its whole process.
//!
//! A seccomp profile without `clone3`, or a kernel older than 5.7, gets the same process
//! with its v2 move left to the caller ([`Forked::v2_pending`]). Born in its v2 cgroup, the
//! process counts against that cgroup's `pids.max` at the fork: an exec into a container at
//! its pids limit fails to start there, as the kernel would fail a fork inside it.
//!
//! Why not `std::process::Command`: it forks with no way to pass `clone3` arguments. What it
//! does between fork and exec is done here the same way: only async-signal-safe calls on
//! memory prepared before the fork, since the shim is multithreaded and another thread may
//! have held any lock (the allocator's included) at that moment.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// What the new process executes and holds.
pub struct ExecPlan<'a> {
    /// The executable (`/proc/self/exe`).
    pub program: &'a Path,
    /// Its arguments, `argv[0]` first.
    pub argv: Vec<OsString>,
    /// Variables added to (or replacing) the shim's environment.
    pub env: &'a [(OsString, OsString)],
    /// Descriptors it gets at 0, 1, 2, 3, ...: its stdio, then the control socket and log.
    pub fds: [RawFd; 5],
    /// The v1 cgroup directories it joins before it executes.
    pub v1_dirs: &'a [PathBuf],
    /// The v2 cgroup directory it is born into, if any.
    pub v2_dir: Option<&'a Path>,
}

/// A process that executed its program.
pub struct Forked {
    /// Its pid.
    pub pid: u32,
    /// Its pidfd (close-on-exec), taken at the fork: no window for pid reuse.
    pub pidfd: OwnedFd,
    /// The v2 directory it was not born into, for the caller to move it into the usual
    /// way: `clone3` or `CLONE_INTO_CGROUP` was refused.
    pub v2_pending: bool,
}

/// Why the process could not be started. Each keeps the system's error.
#[derive(Debug, Error)]
pub enum ForkExecError {
    /// An argument, variable or path held a NUL byte.
    #[error("{0:?} holds a NUL byte")]
    Nul(OsString),
    /// Preparing (the v2 directory, the report pipe) or forking failed.
    #[error("{what}")]
    Setup {
        /// The step.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The new process failed a step before its program ran; it was reaped.
    #[error("in the new process: {what}")]
    Child {
        /// The step.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Where the child failed, reported through the pipe with its errno.
const STEP_SIGNALS: u32 = 0;
const STEP_DESCRIPTORS: u32 = 1;
const STEP_EXEC: u32 = 2;
/// Joining the v1 directory `i` is step `STEP_V1 + i`.
const STEP_V1: u32 = 100;

/// The `clone3` flag (Linux 5.7); the `libc` crate's constant does not fit its type.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks, places the child as the module says, and executes `plan.program` in it; returns
/// once the child has executed the program or ended without a report (killed before it
/// could, which the caller sees as the process's end), or has failed a step and been
/// reaped.
pub fn fork_exec(plan: &ExecPlan) -> Result<Forked, ForkExecError> {
    let program = c_string(plan.program.as_os_str())?;
    let argv = plan
        .argv
        .iter()
        .map(|a| c_string(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = environment(plan.env)?;
    let tasks = plan
        .v1_dirs
        .iter()
        .map(|dir| c_string(dir.join("tasks").as_os_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    let task_ptrs: Vec<*const libc::c_char> = tasks.iter().map(|t| t.as_ptr()).collect();
    let v2 = match plan.v2_dir {
        Some(dir) => {
            Some(
                File::open(dir)
                    .map(OwnedFd::from)
                    .map_err(|source| ForkExecError::Setup {
                        what: format!("opening the cgroup {}", dir.display()),
                        source,
                    })?,
            )
        }
        None => None,
    };
    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ForkExecError::Setup {
            what: "a pipe".into(),
            source: e.into(),
        })?;
    let child = ChildSteps {
        program: program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        fds: plan.fds,
        tasks: &task_ptrs,
        report: report_write.as_raw_fd(),
    };
    let (pid, pidfd, v2_pending) = fork(v2.as_ref().map(AsRawFd::as_raw_fd), &child)?;
    drop(report_write);
    // End of file: the report pipe closed on exec. Otherwise the step and its errno.
    let mut report = Vec::new();
    let _ = File::from(report_read).read_to_end(&mut report);
    let Some((step, errno)) = report.first_chunk::<8>().map(|r| {
        (
            u32::from_ne_bytes([r[0], r[1], r[2], r[3]]),
            i32::from_ne_bytes([r[4], r[5], r[6], r[7]]),
        )
    }) else {
        return Ok(Forked {
            pid,
            pidfd,
            v2_pending,
        });
    };
    reap(pid, false);
    let what = match step {
        STEP_SIGNALS => "resetting its signals".to_string(),
        STEP_DESCRIPTORS => "placing its descriptors".to_string(),
        STEP_EXEC => format!("executing {}", plan.program.display()),
        n => match n
            .checked_sub(STEP_V1)
            .and_then(|i| plan.v1_dirs.get(i as usize))
        {
            Some(dir) => format!("joining the cgroup {}", dir.display()),
            None => format!("step {n}"),
        },
    };
    Err(ForkExecError::Child {
        what,
        source: std::io::Error::from_raw_os_error(errno),
    })
}

/// Waits for a child that failed before it was ready, killing it first if asked; its
/// status, for the error that reports it.
pub(crate) fn reap(pid: u32, kill: bool) -> String {
    if kill {
        // SAFETY: our own unreaped child: the pid cannot have been reused.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(status) => format!("{status:?}"),
        Err(e) => format!("waitpid: {e}"),
    }
}

fn c_string(s: &OsStr) -> Result<CString, ForkExecError> {
    CString::new(s.as_bytes()).map_err(|_| ForkExecError::Nul(s.to_os_string()))
}

/// The shim's environment with `overrides` set.
fn environment(overrides: &[(OsString, OsString)]) -> Result<Vec<CString>, ForkExecError> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(key, _)| !overrides.iter().any(|(k, _)| k == key))
        .collect();
    vars.extend(overrides.iter().cloned());
    vars.into_iter()
        .map(|(key, value)| {
            let mut entry = key;
            entry.push("=");
            entry.push(value);
            c_string(&entry)
        })
        .collect()
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Forks with `clone3` (into `cgroup` if given), falling back to `clone` where `clone3` or
/// `CLONE_INTO_CGROUP` is refused; returns the pid, the pidfd and whether the v2 move is
/// left to the caller. The child runs `child` and never returns.
fn fork(cgroup: Option<RawFd>, child: &ChildSteps) -> Result<(u32, OwnedFd, bool), ForkExecError> {
    let setup = |e: std::io::Error| ForkExecError::Setup {
        what: "forking the container's process".into(),
        source: e,
    };
    let mut pidfd: libc::c_int = -1;
    // SAFETY: a zeroed clone_args is the all-defaults request; the fields set below are
    // the flags, where the kernel writes the pidfd, the exit signal and the cgroup.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = libc::CLONE_PIDFD as u64;
    args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    let mut v2_pending = false;
    let mut rc = clone3(&mut args, child);
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            // A kernel before 5.7 (CLONE_INTO_CGROUP unknown: E2BIG for the longer struct,
            // EINVAL for the flag).
            Some(libc::E2BIG) | Some(libc::EINVAL) if cgroup.is_some() => {
                args.flags &= !CLONE_INTO_CGROUP;
                args.cgroup = 0;
                v2_pending = true;
                rc = clone3(&mut args, child);
            }
            // No clone3 at all (a seccomp profile that refuses it: Docker's answers ENOSYS
            // so that a libc falls back to clone, older profiles EPERM; nothing this call
            // asks for needs a privilege): clone, which also gives a pidfd.
            Some(libc::ENOSYS) | Some(libc::EPERM) => {
                v2_pending = cgroup.is_some();
                // SAFETY: a fork-like clone (no new stack, no shared memory); the child
                // branch below never returns.
                rc = unsafe {
                    libc::syscall(
                        libc::SYS_clone,
                        (libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong,
                        0 as libc::c_ulong,
                        &mut pidfd as *mut libc::c_int,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                    )
                };
                if rc == 0 {
                    // SAFETY: in the new child, single-threaded, before exec.
                    unsafe { child.run() }
                }
            }
            _ => return Err(setup(e)),
        }
    }
    if rc < 0 {
        return Err(setup(std::io::Error::last_os_error()));
    }
    if pidfd < 0 {
        // A kernel that made the process but no pidfd (clone before 5.2 ignores the flag):
        // the process cannot be watched, so it does not run.
        reap(rc as u32, true);
        return Err(setup(std::io::Error::from_raw_os_error(libc::ENOSYS)));
    }
    // SAFETY: the kernel wrote a new descriptor, ours alone, for the child it made.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((rc as u32, pidfd, v2_pending))
}

/// `clone3` without a new stack: a fork whose child runs `child` and never returns.
fn clone3(args: &mut libc::clone_args, child: &ChildSteps) -> libc::c_long {
    // SAFETY: `args` is a valid clone_args of the size passed; with no stack and no
    // CLONE_VM the child is a copy of this process, continuing here on its own stack copy.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if rc == 0 {
        // SAFETY: in the new child, single-threaded, before exec.
        unsafe { child.run() }
    }
    rc
}

/// Between fork and exec: puts `fds` (at most six) at descriptors `first`, `first + 1`, ...
/// in order, each inheritable, and marks every descriptor after them close-on-exec, so the
/// new program inherits those (and below `first`, what the caller placed there) only: not a
/// descriptor the shim holds without FD_CLOEXEC. Marked rather than closed, because a pipe
/// through which the parent learns of a failed exec may be among them; before Linux 5.11
/// (no CLOSE_RANGE_CLOEXEC) closed, at the cost of such a failure looking like a process
/// that ended at once. Returns whether they were marked or closed: not before 5.9, which
/// has no `close_range`. Only async-signal-safe calls, and no allocation.
///
/// # Safety
/// Only in a forked child before it executes a program: it overwrites descriptors `first`
/// and up, which other code of this process may own.
pub(crate) unsafe fn place_descriptors(first: RawFd, fds: &[RawFd]) -> std::io::Result<bool> {
    let mut moved = [0; 6];
    if fds.len() > moved.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Moved out of the way first (above 10, beyond any target), so placing one cannot
    // overwrite another.
    for (slot, fd) in moved.iter_mut().zip(fds) {
        // SAFETY: a new descriptor from one the caller holds.
        *slot = check(unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10) })?;
    }
    for (target, fd) in (first..).zip(&moved[..fds.len()]) {
        // SAFETY: see the function's safety section.
        check(unsafe { libc::dup2(*fd, target) })?;
    }
    let after = (first as usize + fds.len()) as libc::c_uint;
    // SAFETY: close_range on this process's own descriptor table.
    let sealed = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            after,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
            || libc::syscall(libc::SYS_close_range, after, u32::MAX, 0) == 0
    };
    Ok(sealed)
}

fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Reports `step` and the current errno through `report`, and ends the child.
///
/// # Safety
/// Only in the forked child (see [`ChildSteps::run`]).
unsafe fn fail(report: RawFd, step: u32) -> ! {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut message = [0u8; 8];
    message[..4].copy_from_slice(&step.to_ne_bytes());
    message[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writing a stack buffer to our descriptor, then ending at once.
    unsafe {
        libc::write(report, message.as_ptr().cast(), message.len());
        libc::_exit(127)
    }
}

/// What the child does between fork and exec, all prepared before the fork.
struct ChildSteps<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    fds: [RawFd; 5],
    tasks: &'a [*const libc::c_char],
    report: RawFd,
}

impl ChildSteps<'_> {
    /// Joins the v1 cgroups, resets signals, places the descriptors and executes; on a
    /// failure reports the step and errno and exits 127.
    ///
    /// # Safety
    /// Only in a freshly forked child: it makes only async-signal-safe calls, allocates
    /// nothing, and overwrites descriptors 0 to 5.
    unsafe fn run(&self) -> ! {
        let mut report = self.report;
        // First, while this is still the only thread of the process: `0` is the calling
        // thread, the whole process here.
        for (i, path) in self.tasks.iter().enumerate() {
            // SAFETY: a NUL-terminated path prepared before the fork.
            let fd = unsafe { libc::open(*path, libc::O_WRONLY | libc::O_CLOEXEC) };
            // SAFETY: writing one byte from a static string to the descriptor just opened.
            if fd < 0 || unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) } != 1 {
                // SAFETY: still the forked child.
                unsafe { fail(report, STEP_V1 + i as u32) };
            }
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
        }
        // As `std::process::Command` leaves a child: no signal blocked, SIGPIPE (ignored by
        // Rust's runtime, and an ignored signal stays ignored across exec) at its default.
        // SAFETY: sigset and sigaction on local values.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0
                || libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut()) != 0
            {
                fail(report, STEP_SIGNALS);
            }
        }
        // A copy of the report pipe above the targets, for a failure while placing.
        // SAFETY: a new descriptor from one we hold.
        let report_high = unsafe { libc::fcntl(report, libc::F_DUPFD_CLOEXEC, 10) };
        if report_high < 0 {
            // SAFETY: still the forked child.
            unsafe { fail(report, STEP_DESCRIPTORS) };
        }
        report = report_high;
        let [stdin, stdout, stderr, control, log] = self.fds;
        // SAFETY: in the forked child, before exec. Whether the rest could be marked does
        // not matter here: the shim opens every descriptor close-on-exec.
        if unsafe { place_descriptors(0, &[stdin, stdout, stderr, control, log, report]) }.is_err()
        {
            // SAFETY: still the forked child.
            unsafe { fail(report, STEP_DESCRIPTORS) };
        }
        // The report pipe, now at 5, closes on exec: the parent's end of file.
        // SAFETY: fcntl on our own descriptor.
        if unsafe { libc::fcntl(5, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            // SAFETY: still the forked child.
            unsafe { fail(report, STEP_DESCRIPTORS) };
        }
        report = 5;
        // SAFETY: NUL-terminated program and NULL-terminated argument and variable arrays,
        // prepared before the fork and alive in this copy of the parent's memory.
        unsafe { libc::execve(self.program, self.argv, self.envp) };
        // SAFETY: still the forked child.
        unsafe { fail(report, STEP_EXEC) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn exit_code(pid: u32) -> i32 {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
            other => panic!("{other:?}"),
        }
    }

    fn null() -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .expect("/dev/null")
    }

    fn sh(script: &str) -> Vec<OsString> {
        ["sh", "-c", script].iter().map(OsString::from).collect()
    }

    #[test]
    fn the_program_gets_its_descriptors_in_place_its_variables_and_nothing_else() {
        let (out_read, out_write) = std::io::pipe().expect("pipe");
        let (control_read, mut control_write) = std::io::pipe().expect("pipe");
        let (log_read, log_write) = std::io::pipe().expect("pipe");
        control_write.write_all(b"control\n").expect("write");
        drop(control_write);
        // A descriptor the parent holds without close-on-exec must not reach the program.
        // SAFETY: dup of a descriptor we hold; the copy is closed below.
        let leaked = unsafe { libc::dup(null().as_raw_fd()) };
        assert!(leaked >= 0);
        let stdin = null();
        let env = [(OsString::from("FORK_EXEC_TEST"), OsString::from("set"))];
        let forked = fork_exec(&ExecPlan {
            program: Path::new("/bin/sh"),
            argv: sh("echo \"$FORK_EXEC_TEST\"; cat <&3 >&4; ls /proc/$$/fd"),
            env: &env,
            fds: [
                stdin.as_raw_fd(),
                out_write.as_fd().as_raw_fd(),
                out_write.as_fd().as_raw_fd(),
                control_read.as_fd().as_raw_fd(),
                log_write.as_fd().as_raw_fd(),
            ],
            v1_dirs: &[],
            v2_dir: None,
        })
        .expect("fork_exec");
        // SAFETY: our own copy, made above.
        unsafe { libc::close(leaked) };
        drop((out_write, log_write, control_read, stdin));
        assert!(!forked.v2_pending);
        assert_eq!(exit_code(forked.pid), 0);
        let mut out = String::new();
        File::from(OwnedFd::from(out_read))
            .read_to_string(&mut out)
            .expect("read");
        assert_eq!(out, "set\n0\n1\n2\n3\n4\n");
        let mut log = String::new();
        File::from(OwnedFd::from(log_read))
            .read_to_string(&mut log)
            .expect("read");
        assert_eq!(log, "control\n");
    }

    #[test]
    fn the_process_joins_each_v1_directory_by_writing_itself_to_tasks() {
        let dirs: Vec<PathBuf> = (0..2)
            .map(|_| tempfile::tempdir().expect("tempdir").keep())
            .collect();
        for dir in &dirs {
            std::fs::write(dir.join("tasks"), "").expect("tasks");
        }
        let io = null();
        let fd = io.as_raw_fd();
        let forked = fork_exec(&ExecPlan {
            program: Path::new("/bin/true"),
            argv: vec!["true".into()],
            env: &[],
            fds: [fd; 5],
            v1_dirs: &dirs,
            v2_dir: None,
        })
        .expect("fork_exec");
        assert_eq!(exit_code(forked.pid), 0);
        for dir in &dirs {
            // `0`: the calling thread, which the kernel moves without its cgroup-wide lock.
            assert_eq!(
                std::fs::read_to_string(dir.join("tasks")).expect("read"),
                "0"
            );
            std::fs::remove_dir_all(dir).expect("cleanup");
        }
    }

    #[test]
    fn a_cgroup_it_cannot_join_or_a_missing_program_fails_the_start_saying_which() {
        // The step the start failed at, and the kind of the system's error.
        let failure = |program: &str, v1_dirs: &[PathBuf]| {
            let io = null();
            let err = fork_exec(&ExecPlan {
                program: Path::new(program),
                argv: vec!["program".into()],
                env: &[],
                fds: [io.as_raw_fd(); 5],
                v1_dirs,
                v2_dir: None,
            })
            .err()
            .expect("a failed start");
            match err {
                ForkExecError::Child { what, source } => (what, source.kind()),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            failure("/bin/true", &[PathBuf::from("/nonexistent/cgroup/dir")]),
            (
                "joining the cgroup /nonexistent/cgroup/dir".to_string(),
                std::io::ErrorKind::NotFound
            )
        );
        assert_eq!(
            failure("/nonexistent/program", &[]),
            (
                "executing /nonexistent/program".to_string(),
                std::io::ErrorKind::NotFound
            )
        );
    }
}

/// The fallback for a process whose seccomp profile refuses `clone3` (Docker's default one
/// answers ENOSYS so that a libc falls back to `clone`): forked with `clone` instead, the
/// v2 move left to the caller.
#[cfg(test)]
mod without_clone3 {
    use super::*;
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

    /// On a thread of its own (a seccomp filter is per thread): refuses clone3 with ENOSYS,
    /// then starts `sh -c 'exit 7'` with `v2_dir`.
    fn start_without_clone3(v2_dir: Option<PathBuf>) -> Result<(Forked, i32), ForkExecError> {
        std::thread::spawn(move || {
            let arch = TargetArch::try_from(std::env::consts::ARCH).expect("arch");
            let filter = SeccompFilter::new(
                [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
                arch,
            )
            .expect("filter");
            let program: seccompiler::BpfProgram = filter.try_into().expect("bpf");
            // SAFETY: no_new_privs on this test thread only, as a filter needs unprivileged.
            assert_eq!(
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
                0
            );
            seccompiler::apply_filter(&program).expect("apply");
            let io = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .expect("/dev/null");
            let fd = io.as_raw_fd();
            let forked = fork_exec(&ExecPlan {
                program: Path::new("/bin/sh"),
                argv: ["sh", "-c", "exit 7"].iter().map(OsString::from).collect(),
                env: &[],
                fds: [fd; 5],
                v1_dirs: &[],
                v2_dir: v2_dir.as_deref(),
            })?;
            let code = match nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(forked.pid as i32),
                None,
            ) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                other => panic!("{other:?}"),
            };
            Ok((forked, code))
        })
        .join()
        .expect("the test thread")
    }

    #[test]
    fn a_profile_without_clone3_still_starts_the_process_and_leaves_the_v2_move_to_the_caller() {
        let (forked, code) = start_without_clone3(None).expect("fork_exec");
        assert_eq!((code, forked.v2_pending), (7, false));
        // The pidfd names that process: it is readable once the process has ended.
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&forked.pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(nix::poll::poll(&mut fds, 1000u16).expect("poll"), 1);

        let dir = tempfile::tempdir().expect("tempdir");
        let (forked, code) = start_without_clone3(Some(dir.path().to_path_buf())).expect("fork");
        assert_eq!((code, forked.v2_pending), (7, true));
    }
}
