//! The container's process's own mount namespace, rooted at the container's rootfs.
//!
//! After this the process's whole filesystem is the rootfs with the spec's bind mounts at
//! their destinations: nothing of the host is reachable, even by an absolute path, even by
//! code that escaped the wasm sandbox. The program's preopens are then opened inside it
//! (`Program::enter_own_root`). Kernel filesystems (`/proc`, `/sys`, `/dev`) are not
//! mounted: no WASI call needs them.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use oci_spec::runtime::Spec;
use runtime::PreopenPlan;

use crate::error::{ShimError, ShimResult};

fn internal(what: String, e: impl std::fmt::Display) -> ShimError {
    ShimError::Internal(format!("{what}: {e}"))
}

/// Makes a mount namespace whose root is `rootfs`, with the directories `preopens` holds
/// outside it bound at their destinations and the spec's file bind mounts (docker's
/// `/etc/hosts`, `/etc/resolv.conf`) where they can be.
pub fn pivot_into(rootfs: &Path, preopens: &PreopenPlan, spec: &Spec) -> ShimResult<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| internal("making a mount namespace".into(), e))?;
    // Nothing done here may reach the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| internal("making the mounts private".into(), e))?;
    // pivot_root needs the new root to be a mount point (a plain directory from
    // `ctr run --rootfs` is not).
    bind(rootfs, rootfs)?;
    for preopen in preopens.outside(rootfs) {
        let target = below(rootfs, &preopen.guest);
        std::fs::create_dir_all(&target).map_err(|e| {
            ShimError::InvalidArgument(format!(
                "making the mount point {} in the rootfs: {e}",
                preopen.guest
            ))
        })?;
        bind(&preopen.host, &target)?;
        if preopen.read_only {
            remount_read_only(&target)?;
        }
    }
    bind_files(rootfs, spec);
    std::env::set_current_dir(rootfs)
        .map_err(|e| internal(format!("entering {}", rootfs.display()), e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| internal("pivot_root".into(), e))?;
    // The old root is stacked under the new one at `/`; detaching it leaves only the new.
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| internal("detaching the host's root".into(), e))?;
    std::env::set_current_dir("/").map_err(|e| internal("entering /".into(), e))?;
    let read_only = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if read_only {
        remount_read_only(Path::new("/"))?;
    }
    Ok(())
}

/// `rootfs` + an absolute container path.
fn below(rootfs: &Path, guest: &str) -> PathBuf {
    rootfs.join(guest.trim_start_matches('/'))
}

fn bind(source: &Path, target: &Path) -> ShimResult<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        ShimError::InvalidArgument(format!(
            "binding {} at {}: {e}",
            source.display(),
            target.display()
        ))
    })
}

fn remount_read_only(target: &Path) -> ShimResult<()> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| internal(format!("making {} read-only", target.display()), e))
}

/// Binds the spec's bind mounts of single files. They are not preopens (WASI preopens
/// directories), but through the rootfs a program reads `/etc/hosts` and the like as a
/// Linux process would. Best effort: a file that cannot be placed is logged and left out.
fn bind_files(rootfs: &Path, spec: &Spec) {
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let is_bind = m.typ().as_deref() == Some("bind")
            || m.options()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|o| o == "bind" || o == "rbind");
        let Some(source) = m.source().as_deref() else {
            continue;
        };
        if !is_bind || !source.is_file() {
            continue;
        }
        let Some(guest) = m.destination().to_str() else {
            continue;
        };
        let target = below(rootfs, guest);
        let placed = target.is_file()
            || (target
                .parent()
                .is_some_and(|p| std::fs::create_dir_all(p).is_ok())
                && OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&target)
                    .map(|_: File| ())
                    .is_ok());
        let read_only = m
            .options()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o == "ro");
        let result = if placed {
            bind(source, &target).and_then(|()| {
                if read_only {
                    remount_read_only(&target)
                } else {
                    Ok(())
                }
            })
        } else {
            Err(ShimError::Internal("no place for it in the rootfs".into()))
        };
        if let Err(e) = result {
            log::debug!("file mount {guest} left out: {e}");
        }
    }
}
