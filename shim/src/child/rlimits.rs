//! The spec's `process.rlimits`, set on the container's process as runc sets them on a
//! Linux one: the kernel then holds the program to them (open files through WASI, threads
//! and processes per user, file size, CPU time...).
//!
//! They are set at Create, once the program is loaded (that load may write a compile cache
//! entry, which a small `RLIMIT_FSIZE` must not fail, and its compile is no part of the
//! program's `RLIMIT_CPU`), while the process is still privileged, so a limit above the
//! shim's own hard limit can be granted (CAP_SYS_RESOURCE). A limit the kernel refuses
//! fails Create with the reason. Threads the process makes later (the signal thread, the
//! executor's) count against `RLIMIT_NPROC` of the spec's user, as a native program's would.

use std::io;

use oci_spec::runtime::{PosixRlimit, PosixRlimitType, Process as SpecProcess};
use thiserror::Error;

/// A limit the kernel refused.
#[derive(Debug, Error)]
pub enum RlimitError {
    /// The spec asks for a soft limit above the hard one.
    #[error("rlimit {name}: soft limit {soft} is above the hard limit {hard}")]
    SoftAboveHard {
        name: &'static str,
        soft: u64,
        hard: u64,
    },
    /// setrlimit failed.
    #[error("setting rlimit {name} to {soft}/{hard}")]
    Set {
        name: &'static str,
        soft: u64,
        hard: u64,
        #[source]
        source: io::Error,
    },
}

/// The resource `typ` names, and its name as the spec spells it.
fn resource(typ: PosixRlimitType) -> (libc::__rlimit_resource_t, &'static str) {
    use PosixRlimitType::*;
    match typ {
        RlimitCpu => (libc::RLIMIT_CPU, "RLIMIT_CPU"),
        RlimitFsize => (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        RlimitData => (libc::RLIMIT_DATA, "RLIMIT_DATA"),
        RlimitStack => (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        RlimitCore => (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        RlimitRss => (libc::RLIMIT_RSS, "RLIMIT_RSS"),
        RlimitNproc => (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        RlimitNofile => (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        RlimitMemlock => (libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK"),
        RlimitAs => (libc::RLIMIT_AS, "RLIMIT_AS"),
        RlimitLocks => (libc::RLIMIT_LOCKS, "RLIMIT_LOCKS"),
        RlimitSigpending => (libc::RLIMIT_SIGPENDING, "RLIMIT_SIGPENDING"),
        RlimitMsgqueue => (libc::RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE"),
        RlimitNice => (libc::RLIMIT_NICE, "RLIMIT_NICE"),
        RlimitRtprio => (libc::RLIMIT_RTPRIO, "RLIMIT_RTPRIO"),
        RlimitRttime => (libc::RLIMIT_RTTIME, "RLIMIT_RTTIME"),
    }
}

/// Checks every limit `process` lists without setting any, so that a bad spec changes
/// nothing.
fn check(process: Option<&SpecProcess>) -> Result<(), RlimitError> {
    for limit in listed(process) {
        let (_, name) = resource(limit.typ());
        if limit.soft() > limit.hard() {
            return Err(RlimitError::SoftAboveHard {
                name,
                soft: limit.soft(),
                hard: limit.hard(),
            });
        }
    }
    Ok(())
}

/// Sets every limit `process` lists on this process, in the spec's order.
pub fn apply(process: Option<&SpecProcess>) -> Result<(), RlimitError> {
    check(process)?;
    for limit in listed(process) {
        let (resource, name) = resource(limit.typ());
        let value = libc::rlimit {
            rlim_cur: limit.soft(),
            rlim_max: limit.hard(),
        };
        // SAFETY: setrlimit reads the struct it is given; it changes only this process.
        if unsafe { libc::setrlimit(resource, &value) } != 0 {
            return Err(RlimitError::Set {
                name,
                soft: limit.soft(),
                hard: limit.hard(),
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn listed(process: Option<&SpecProcess>) -> impl Iterator<Item = &PosixRlimit> {
    process
        .and_then(|p| p.rlimits().as_ref())
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{PosixRlimitBuilder, ProcessBuilder};

    fn process(limits: &[(PosixRlimitType, u64, u64)]) -> SpecProcess {
        let rlimits = limits
            .iter()
            .map(|&(typ, soft, hard)| {
                PosixRlimitBuilder::default()
                    .typ(typ)
                    .soft(soft)
                    .hard(hard)
                    .build()
                    .unwrap()
            })
            .collect::<Vec<_>>();
        ProcessBuilder::default().rlimits(rlimits).build().unwrap()
    }

    #[test]
    fn a_soft_limit_above_the_hard_one_is_refused_with_its_name() {
        let p = process(&[
            (PosixRlimitType::RlimitNofile, 1024, 1024),
            (PosixRlimitType::RlimitNproc, 200, 100),
        ]);
        let e = check(Some(&p)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rlimit RLIMIT_NPROC: soft limit 200 is above the hard limit 100"
        );
        assert!(check(None).is_ok());
    }

    #[test]
    fn every_spec_name_maps_to_its_own_resource() {
        use PosixRlimitType::*;
        let all = [
            RlimitCpu,
            RlimitFsize,
            RlimitData,
            RlimitStack,
            RlimitCore,
            RlimitRss,
            RlimitNproc,
            RlimitNofile,
            RlimitMemlock,
            RlimitAs,
            RlimitLocks,
            RlimitSigpending,
            RlimitMsgqueue,
            RlimitNice,
            RlimitRtprio,
            RlimitRttime,
        ];
        let mut seen: Vec<_> = all.iter().map(|&t| resource(t).0).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), all.len());
        // The spec's spelling, as serde reads it.
        for typ in all {
            let json = serde_json::to_string(&typ).unwrap();
            assert_eq!(json, format!("\"{}\"", resource(typ).1));
        }
    }

    /// In a child process, so the test binary's own limits stay as they were.
    #[test]
    fn apply_sets_soft_and_hard() {
        let p = process(&[(PosixRlimitType::RlimitNofile, 100, 200)]);
        // SAFETY: the child only calls setrlimit, getrlimit and _exit.
        match unsafe { libc::fork() } {
            0 => {
                let ok = apply(Some(&p)).is_ok() && {
                    let mut got = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    // SAFETY: getrlimit writes the struct it is given.
                    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut got) };
                    (got.rlim_cur, got.rlim_max) == (100, 200)
                };
                // SAFETY: ends the forked child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
            }
            _ => panic!("fork: {}", io::Error::last_os_error()),
        }
    }
}
