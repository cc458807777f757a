//! The spec's `linux.sysctl`, written in the container's own namespaces as runc writes them.
//!
//! Docker asks for `net.ipv4.ip_unprivileged_port_start=0` in every container with a network
//! of its own, so that a process without capabilities (as this one is from Start on) may
//! bind a port below 1024; Kubernetes passes a pod's `securityContext.sysctls`. Only the
//! settings a namespace scopes are allowed, each only when the container has that namespace
//! of its own (listed in the spec, made or joined), as runc allows them: anything else would
//! change the host.
//!
//! Checked before the process enters its namespaces (a namespace joined by path that is the
//! shim's own, the host's, counts as the host's, as runc tells it), written after it entered
//! them and before it leaves the host's root, through the host's `/proc`: `/proc/sys/net`
//! and the IPC and UTS settings answer for the namespaces of the thread that writes them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use thiserror::Error;

/// A sysctl the container may not set, or one the kernel refused.
#[derive(Debug, Error)]
pub enum SysctlError {
    /// Not scoped by a namespace the container has of its own.
    #[error("sysctl {key} is not allowed: {why}")]
    NotAllowed { key: String, why: &'static str },
    /// The kernel refused the value (or has no such setting).
    #[error("sysctl {key}={value}")]
    Write {
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

/// The namespace whose settings `key` names, if a namespace scopes it.
fn namespace_of(key: &str) -> Option<LinuxNamespaceType> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.domainname" {
        // Not kernel.hostname: the spec's `hostname` says that, and runc refuses both.
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// `key` as sysctl(8) spells it: dots between the levels, and a `/` for a dot inside one
/// (`net.ipv4.conf.eth0/100.forwarding`). A key written as a path (`net/ipv4/ip_forward`,
/// which runc accepts too) is turned into that form.
fn dotted(key: &str) -> String {
    if key.contains('/') && !key.contains('.') {
        key.replace('/', ".")
    } else {
        key.to_string()
    }
}

/// The file under /proc/sys of a dotted key: each level a directory, and a `/` inside a
/// level the `.` it stands for.
fn proc_path(dotted: &str) -> PathBuf {
    let swapped: String = dotted
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    Path::new("/proc/sys").join(swapped)
}

/// Whether the namespace file at `path` is the one this process is in (`/proc/self/ns/KIND`):
/// before the process enters its namespaces, that is the shim's, the host's.
fn is_own(path: &Path, kind: &str) -> bool {
    let own = Path::new("/proc/self/ns").join(kind);
    match (std::fs::metadata(path), std::fs::metadata(own)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Checks every sysctl `spec` lists against its namespaces, setting none. Called before the
/// process enters them.
pub fn check(spec: &Spec) -> Result<(), SysctlError> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    let has = |typ: LinuxNamespaceType| {
        let kind = match typ {
            LinuxNamespaceType::Network => "net",
            LinuxNamespaceType::Ipc => "ipc",
            _ => "uts",
        };
        linux
            .namespaces()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|n| n.typ() == typ)
            .any(|n| match n.path().as_deref() {
                Some(path) if !path.as_os_str().is_empty() => !is_own(path, kind),
                _ => true,
            })
    };
    for key in linux.sysctl().as_ref().into_iter().flat_map(|s| s.keys()) {
        let why = match namespace_of(&dotted(key)) {
            None => "no namespace scopes it, so it would change the host",
            Some(typ) if !has(typ) => match typ {
                LinuxNamespaceType::Network => "the container uses the host's network namespace",
                LinuxNamespaceType::Ipc => "the container uses the host's IPC namespace",
                _ => "the container uses the host's UTS namespace",
            },
            Some(_) => continue,
        };
        return Err(SysctlError::NotAllowed {
            key: key.clone(),
            why,
        });
    }
    Ok(())
}

/// Writes every sysctl `spec` lists, which [`check`] allowed before the process entered
/// its namespaces.
pub fn write(spec: &Spec) -> Result<(), SysctlError> {
    let settings = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref());
    for (key, value) in settings.into_iter().flatten() {
        std::fs::write(proc_path(&dotted(key)), value).map_err(|source| SysctlError::Write {
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &[&str], sysctl: &[(&str, &str)]) -> Spec {
        let namespaces: Vec<_> = namespaces
            .iter()
            .map(|t| serde_json::json!({ "type": t }))
            .collect();
        let sysctl: serde_json::Map<_, _> = sysctl
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": { "namespaces": namespaces, "sysctl": sysctl },
        }))
        .unwrap()
    }

    #[test]
    fn namespaced_settings_pass_when_the_container_has_the_namespace() {
        let docker = spec(
            &["mount", "network", "ipc", "uts"],
            &[
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("net.ipv4.ping_group_range", "0 2147483647"),
                ("kernel.shm_rmid_forced", "1"),
                ("fs.mqueue.msg_max", "20"),
                ("kernel.domainname", "example"),
            ],
        );
        assert!(check(&docker).is_ok());
    }

    #[test]
    fn the_hosts_namespaces_and_unscoped_settings_are_refused() {
        let host_network = spec(&["mount", "ipc"], &[("net.core.somaxconn", "1024")]);
        assert_eq!(
            check(&host_network).unwrap_err().to_string(),
            "sysctl net.core.somaxconn is not allowed: the container uses the host's network \
             namespace"
        );
        let global = spec(&["network", "ipc", "uts"], &[("vm.swappiness", "10")]);
        assert_eq!(
            check(&global).unwrap_err().to_string(),
            "sysctl vm.swappiness is not allowed: no namespace scopes it, so it would change \
             the host"
        );
        let host_ipc = spec(&["network"], &[("kernel.sem", "1 2 3 4")]);
        assert!(check(&host_ipc).is_err());
        let hostname = spec(&["uts"], &[("kernel.hostname", "x")]);
        assert!(check(&hostname).is_err());
    }

    /// runc tells the host's namespace by its identity, not by its absence from the spec.
    #[test]
    fn the_hosts_network_namespace_joined_by_path_is_the_hosts() {
        let joined: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {
                "namespaces": [{ "type": "network", "path": "/proc/self/ns/net" }],
                "sysctl": { "net.ipv4.ip_forward": "1" },
            },
        }))
        .unwrap();
        assert!(check(&joined).is_err());
    }

    #[test]
    fn keys_are_read_as_sysctl_8_reads_them() {
        assert_eq!(dotted("net/ipv4/ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(
            proc_path("net.ipv4.conf.eth0/100.forwarding"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            proc_path(&dotted("net/ipv4/ip_unprivileged_port_start")),
            Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        );
    }
}
