//! Least privilege for a container's process (see `child`).
//!
//! Before any guest code runs, and before the process has a second thread (every thread made
//! later inherits all of this), the process gives up what a Linux container's process would
//! not have, and more:
//! - its own umask (`process.user.umask`);
//! - the spec's `process.user` uid, gid and additional gids, so file permissions on the
//!   rootfs and the mounts apply to the wasm as they would to a Linux process;
//! - no capabilities at all, in every set, bounding set included;
//! - `no_new_privs`, and a seccomp filter that allows only the system calls wasmtime, WASI
//!   and the executor make (file, socket, memory, time, thread and signal calls); anything
//!   else fails with EPERM.
//!
//! Every change is a raw system call on the calling thread, which at that point is the
//! process's only thread. (glibc's `setuid` family would broadcast the change to every
//! thread; raw calls keep `apply` usable on one thread of a larger process, as its test does.)

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, OnceLock};

use oci_spec::runtime::Process as SpecProcess;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use thiserror::Error;

/// The umask of a process whose spec names none, as runc uses.
const DEFAULT_UMASK: u32 = 0o022;

/// Why the process could not be confined; the program then never runs.
#[derive(Debug, Error)]
pub enum ConfineError {
    /// The seccomp filters could not be built. Built once per process, so the failure is
    /// shared (hence the `Arc`) with every later try.
    #[error(transparent)]
    Filters(Arc<FilterError>),
    /// A system call that changes the thread's identity or privileges failed.
    #[error("{call}")]
    Call {
        /// The call, with the arguments that matter ("setresuid 1000").
        call: String,
        /// The kernel's reason.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a seccomp filter.
    #[error("seccomp")]
    Seccomp(#[source] seccompiler::Error),
}

impl ConfineError {
    fn call(call: impl Into<String>) -> impl FnOnce(io::Error) -> ConfineError {
        let call = call.into();
        move |source| ConfineError::Call { call, source }
    }
}

/// Why the seccomp filters could not be built: this build's rules are wrong for the
/// machine, the same for every container.
#[derive(Debug, Error)]
pub enum FilterError {
    /// seccompiler does not know this architecture.
    #[error("seccomp on {arch}")]
    Architecture {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
        /// seccompiler's reason.
        #[source]
        source: seccompiler::BackendError,
    },
    /// A rule or a filter is invalid.
    #[error("building the seccomp filter")]
    Build(#[source] seccompiler::BackendError),
    /// A condition on an argument is invalid.
    #[error("seccomp rule")]
    Rule(#[source] seccompiler::BackendError),
}

/// Who the program acts as; from the spec's `process.user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    umask: u32,
}

impl Confinement {
    /// The identity `process` asks for; root (0:0) when the spec names no user.
    pub fn from_process(process: Option<&SpecProcess>) -> Self {
        let user = process.map(|p| p.user());
        Confinement {
            uid: user.map(|u| u.uid()).unwrap_or(0),
            gid: user.map(|u| u.gid()).unwrap_or(0),
            additional_gids: user
                .and_then(|u| u.additional_gids().clone())
                .unwrap_or_default(),
            umask: user.and_then(|u| u.umask()).unwrap_or(DEFAULT_UMASK),
        }
    }

    /// Confines the calling thread for good. The order matters: the bounding set and the
    /// ids can only be changed while the thread still has its capabilities; the filter goes
    /// last, as it forbids the calls made before it.
    pub fn apply(&self) -> Result<(), ConfineError> {
        let filters = filters()
            .as_ref()
            .map_err(|e| ConfineError::Filters(e.clone()))?;
        // SAFETY: unshare(CLONE_FS) only detaches this thread's cwd/root/umask record.
        check(unsafe { libc::unshare(libc::CLONE_FS) }).map_err(ConfineError::call("unshare"))?;
        // SAFETY: umask cannot fail; it now affects this thread's filesystem context only.
        unsafe { libc::umask(self.umask as libc::mode_t) };
        drop_bounding_set()?;
        let gids: Vec<libc::gid_t> = self.additional_gids.clone();
        // SAFETY: raw per-thread system calls with valid arguments (see the module comment
        // for why not the libc wrappers).
        unsafe {
            check(libc::syscall(
                libc::SYS_setgroups,
                gids.len(),
                gids.as_ptr(),
            ))
            .map_err(ConfineError::call(format!("setgroups {gids:?}")))?;
            check(libc::syscall(
                libc::SYS_setresgid,
                self.gid,
                self.gid,
                self.gid,
            ))
            .map_err(ConfineError::call(format!("setresgid {}", self.gid)))?;
            check(libc::syscall(
                libc::SYS_setresuid,
                self.uid,
                self.uid,
                self.uid,
            ))
            .map_err(ConfineError::call(format!("setresuid {}", self.uid)))?;
        }
        drop_capabilities()?;
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
            .map_err(ConfineError::call("no_new_privs"))?;
        for filter in filters {
            seccompiler::apply_filter(filter).map_err(ConfineError::Seccomp)?;
        }
        Ok(())
    }
}

/// The result of a libc call or raw system call: negative means `errno` holds the reason.
fn check(rc: impl Into<i64>) -> io::Result<()> {
    if rc.into() < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Drops every capability from the thread's bounding set, up to the first number the
/// kernel does not know.
fn drop_bounding_set() -> Result<(), ConfineError> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(());
            }
            return Err(ConfineError::Call {
                call: format!("dropping capability {cap} from the bounding set"),
                source: e,
            });
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the thread's effective, permitted and inheritable sets (and so the ambient
/// set). A uid change away from 0 clears them already; a root container needs this.
fn drop_capabilities() -> Result<(), ConfineError> {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads a valid header and two data structs (version 3).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    check(rc).map_err(ConfineError::call("capset"))
}

/// The filters, built once per shim, in the order they are installed: first one that makes
/// `clone3` fail with ENOSYS (and allows everything else, so the second can still be
/// installed), then the allow-list, which lets `clone3` through to the first. glibc tries
/// `clone3` first to start a thread and falls back to `clone` (whose flags a filter can
/// inspect) only on ENOSYS; the kernel applies the most restrictive answer of all filters.
fn filters() -> &'static Result<Vec<BpfProgram>, Arc<FilterError>> {
    static FILTERS: OnceLock<Result<Vec<BpfProgram>, Arc<FilterError>>> = OnceLock::new();
    FILTERS.get_or_init(|| build_filters().map_err(Arc::new))
}

/// Builds the filters [`filters`] keeps.
fn build_filters() -> Result<Vec<BpfProgram>, FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|source| {
        FilterError::Architecture {
            arch: std::env::consts::ARCH,
            source,
        }
    })?;
    let allow = SeccompFilter::new(
        allowed_syscalls()?,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(FilterError::Build)?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(FilterError::Build)?;
    Ok(vec![no_clone3, allow])
}

/// A rule on argument `index`: equal to `value`, or, with `mask`, equal under the mask.
fn arg(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompRule, FilterError> {
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(FilterError::Rule)
}

/// What the wasm thread may call. Calls with no rule are allowed with any arguments;
/// `clone` only makes threads (never a process or a namespace), `ioctl` only asks about or
/// sets blocking mode on a descriptor, `prctl` only names the thread, and signals only go
/// to the shim's own threads.
fn allowed_syscalls() -> Result<BTreeMap<i64, Vec<SeccompRule>>, FilterError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in ANY_ARGUMENTS {
        rules.insert(*call, Vec::new());
    }
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![arg(0, SeccompCmpOp::MaskedEq(thread), thread)?],
    );
    let ioctls = [
        libc::FIONREAD,
        libc::FIONBIO,
        libc::FIOCLEX,
        libc::FIONCLEX,
        libc::TCGETS,
        libc::TIOCGWINSZ,
    ];
    rules.insert(
        libc::SYS_ioctl,
        ioctls
            .iter()
            .map(|cmd| arg(1, SeccompCmpOp::Eq, *cmd))
            .collect::<Result<_, _>>()?,
    );
    rules.insert(
        libc::SYS_prctl,
        [libc::PR_SET_NAME, libc::PR_GET_NAME]
            .iter()
            .map(|op| arg(0, SeccompCmpOp::Eq, *op as u64))
            .collect::<Result<_, _>>()?,
    );
    rules.insert(
        libc::SYS_tgkill,
        vec![arg(0, SeccompCmpOp::Eq, u64::from(std::process::id()))?],
    );
    Ok(rules)
}

/// System calls allowed with any arguments.
const ANY_ARGUMENTS: &[i64] = &[
    // Files and directories (WASI filesystem through cap-std, stdio).
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_utimensat,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_umask,
    // Memory (linear memories, tables, stacks, the allocator).
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_msync,
    libc::SYS_mincore,
    libc::SYS_membarrier,
    // wasmtime makes a module's memory image (copy-on-write) at its first instantiation.
    libc::SYS_memfd_create,
    // Threads, synchronisation and the executor (`clone3` is answered by the first filter).
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Signals (wasmtime's trap handling, thread start-up).
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Time and randomness.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    // Sockets (wasi:sockets, wasi:http, name lookups).
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // Questions about the thread and the system.
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrusage,
    libc::SYS_prlimit64,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_capget,
    // The x86-64 forms glibc or Rust's std may still use.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_renameat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
];

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{ProcessBuilder, UserBuilder};

    #[test]
    fn the_spec_user_is_taken_and_root_is_the_default() {
        assert_eq!(
            Confinement::from_process(None),
            Confinement {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                umask: DEFAULT_UMASK
            }
        );
        let process = ProcessBuilder::default()
            .user(
                UserBuilder::default()
                    .uid(1000u32)
                    .gid(100u32)
                    .additional_gids(vec![5u32, 6])
                    .umask(0o077u32)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let confinement = Confinement::from_process(Some(&process));
        assert_eq!(confinement.uid, 1000);
        assert_eq!(confinement.gid, 100);
        assert_eq!(confinement.additional_gids, vec![5, 6]);
        assert_eq!(confinement.umask, 0o077);
    }

    #[test]
    fn the_filters_build() {
        let filters = filters().as_ref().unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }

    /// Runs the confinement on a thread of the test process (as root, as the shim runs)
    /// and looks at what the kernel reports for it.
    #[test]
    fn a_confined_thread_has_the_user_no_capabilities_and_a_filter() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to change a thread's ids");
            return;
        }
        let confinement = Confinement {
            uid: 1234,
            gid: 2345,
            additional_gids: vec![3456],
            umask: 0o077,
        };
        let status = std::thread::spawn(move || {
            confinement.apply().unwrap();
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            // A forbidden call fails with EPERM, the thread goes on.
            let rc = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) };
            let errno = io::Error::last_os_error().raw_os_error();
            // A thread spawned now inherits the confinement.
            let child = std::thread::spawn(|| unsafe { libc::syscall(libc::SYS_getuid) })
                .join()
                .unwrap();
            (status, rc, errno, child)
        })
        .join()
        .unwrap();
        let (status, rc, errno, child_uid) = status;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(field("Uid"), "1234 1234 1234 1234");
        assert_eq!(field("Gid"), "2345 2345 2345 2345");
        assert_eq!(field("Groups"), "3456");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(field(set), "0000000000000000", "{set}");
        }
        assert_eq!(field("NoNewPrivs"), "1");
        assert_eq!(field("Seccomp"), "2");
        assert_eq!(field("Umask"), "0077");
        assert_eq!((rc, errno), (-1, Some(libc::EPERM)));
        assert_eq!(child_uid, 1234);
        // The test process's other threads are untouched.
        assert_eq!(unsafe { libc::geteuid() }, 0);
    }
}
