//! The spec's `linux.sysctl`, written in the container's own namespaces as runc writes them.
//!
//! Docker asks for `net.ipv4.ip_unprivileged_port_start=0` in every container with a network
//! of its own, so that a process without capabilities (as this one is from Start on) may
//! bind a port below 1024; Kubernetes passes a pod's `securityContext.sysctls`. Only the
//! settings a namespace scopes are allowed, each only when the container has that namespace
//! of its own (listed in the spec, made or joined), as runc allows them: anything else would
//! change the host.
//!
//! Written after the process entered its namespaces and before it leaves the host's root,
//! through the host's `/proc`: `/proc/sys/net` and the IPC and UTS settings answer for the
//! namespaces of the process that writes them.

use std::path::PathBuf;

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
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

/// Checks every sysctl `spec` lists against its namespaces, setting none.
pub fn check(spec: &Spec) -> Result<(), SysctlError> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    let has = |typ: LinuxNamespaceType| {
        linux
            .namespaces()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|n| n.typ() == typ)
    };
    for key in linux.sysctl().as_ref().into_iter().flat_map(|s| s.keys()) {
        let why = match namespace_of(key) {
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

/// Writes every sysctl `spec` lists, once [`check`] allowed them all.
pub fn apply(spec: &Spec) -> Result<(), SysctlError> {
    check(spec)?;
    let settings = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref());
    for (key, value) in settings.into_iter().flatten() {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| SysctlError::Write {
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
    }
}
