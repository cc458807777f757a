//! The network namespace a container's process lives in.
//!
//! The process enters it before anything else of the container (see `child`). This matters
//! even for programs without sockets: the pid returned by Create is that process, and clients
//! (dockerd wiring its bridge network, CNI) configure `/proc/<pid>/ns/net`. Handing them the
//! host's namespace would let them reconfigure the host.

use std::fs::File;
use std::os::fd::AsRawFd;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{ShimError, ShimResult};

/// What the spec asks of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkPlan {
    /// No network namespace in the spec: the host's (`--net-host`, host-network pods).
    Host,
    /// A namespace without a path: a new, empty one with loopback up.
    New,
    /// Join the namespace at this path (a pod's sandbox).
    Join(String),
}

impl NetworkPlan {
    /// Reads the plan from `linux.namespaces`.
    pub fn from_spec(spec: &Spec) -> NetworkPlan {
        let namespaces = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        match namespaces
            .iter()
            .find(|ns| ns.typ() == LinuxNamespaceType::Network)
        {
            None => NetworkPlan::Host,
            Some(ns) => match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    NetworkPlan::Join(path.display().to_string())
                }
                _ => NetworkPlan::New,
            },
        }
    }

    /// Moves the calling thread into the planned namespace. Must run on the program thread
    /// before anything else, so every thread it spawns inherits the namespace.
    pub fn enter(&self) -> ShimResult<()> {
        match self {
            NetworkPlan::Host => Ok(()),
            NetworkPlan::New => {
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| ShimError::internal("creating a network namespace", e))?;
                loopback_up()
            }
            NetworkPlan::Join(path) => {
                let file = File::open(path).map_err(|e| {
                    ShimError::InvalidArgument(format!("network namespace {path}: {e}"))
                })?;
                setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    ShimError::InvalidArgument(format!("joining network namespace {path}: {e}"))
                })
            }
        }
    }
}

/// Brings `lo` up in the current network namespace, as runc does for a new one.
fn loopback_up() -> ShimResult<()> {
    let fail = |what: &str| {
        ShimError::internal(
            format!("bringing loopback up ({what})"),
            std::io::Error::last_os_error(),
        )
    };
    // SAFETY: a plain socket(2); the fd is owned by `socket` below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(fail("socket"));
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let socket = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(fail("SIOCGIFFLAGS"));
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(fail("SIOCSIFFLAGS"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Option<Spec> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/specs")
            .join(name);
        path.exists().then(|| Spec::load(path).ok()).flatten()
    }

    #[test]
    fn plans_follow_the_captured_specs() {
        let cases = [
            ("ctr-plain.json", NetworkPlan::New),
            ("ctr-net-host.json", NetworkPlan::Host),
            ("docker-default-network.json", NetworkPlan::New),
            ("docker-network-host.json", NetworkPlan::Host),
            (
                "cri-container.json",
                NetworkPlan::Join("/proc/1234/ns/net".into()),
            ),
            ("cri-sandbox.json", NetworkPlan::Host),
        ];
        for (name, expected) in cases {
            if let Some(spec) = fixture(name) {
                assert_eq!(NetworkPlan::from_spec(&spec), expected, "{name}");
            }
        }
    }

    #[test]
    fn a_new_namespace_is_not_the_hosts_and_has_loopback_up() {
        let host = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let inside = std::thread::spawn(|| {
            NetworkPlan::New.enter().map(|()| {
                let ns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
                let bound = std::net::TcpListener::bind("127.0.0.1:0").is_ok();
                (ns, bound)
            })
        })
        .join()
        .unwrap();
        match inside {
            Ok((ns, bound)) => {
                assert_ne!(ns, host);
                assert!(bound, "loopback is not usable in the new namespace");
            }
            // Without root (an unprivileged developer run) there is nothing to test.
            // SAFETY: geteuid has no preconditions.
            Err(e) if unsafe { libc::geteuid() } != 0 => eprintln!("skipped: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
}
