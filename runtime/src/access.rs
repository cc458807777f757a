//! Annotations with which an operator narrows what a program may touch below what the spec
//! grants: the rootfs read-only or hidden, and only some of the mounts.

use std::collections::HashMap;

use crate::{PreopenPlan, RuntimeError};

/// `ro` makes the rootfs read-only to the program, `none` hides it (the program is still
/// looked up in it), `rw` leaves it as the spec says.
pub const ROOTFS_ANNOTATION: &str = "io.containerd.wasmtime.rootfs";

/// A comma-separated list of mount destinations: only these mounts are visible to the
/// program; an empty value hides every mount.
pub const MOUNTS_ANNOTATION: &str = "io.containerd.wasmtime.mounts";

/// How the rootfs annotation changes the rootfs preopen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootfsAccess {
    AsSpecified,
    ReadOnly,
    Hidden,
}

/// The narrowing the annotations ask for. It can only take access away: nothing here makes
/// a read-only mount writable or adds a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    rootfs: RootfsAccess,
    mounts: Option<Vec<String>>,
}

impl AccessPolicy {
    /// Reads the annotations; an unknown rootfs value is an error rather than silently
    /// ignored, since an operator who misspells a restriction must not get none.
    pub fn from_annotations(
        annotations: Option<&HashMap<String, String>>,
    ) -> Result<Self, RuntimeError> {
        let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
        let rootfs = match get(ROOTFS_ANNOTATION) {
            None | Some("rw") => RootfsAccess::AsSpecified,
            Some("ro") => RootfsAccess::ReadOnly,
            Some("none") => RootfsAccess::Hidden,
            Some(other) => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "annotation {ROOTFS_ANNOTATION}={other:?}: expected rw, ro or none"
                )))
            }
        };
        let mounts = get(MOUNTS_ANNOTATION).map(|list| {
            list.split(',')
                .map(|d| d.trim().trim_end_matches('/'))
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        });
        Ok(AccessPolicy { rootfs, mounts })
    }

    /// Applies the policy to the plan. A listed destination that is not one of the spec's
    /// directory mounts is an error: the operator expected something that is not there.
    pub fn apply(&self, plan: &mut PreopenPlan) -> Result<(), RuntimeError> {
        match self.rootfs {
            RootfsAccess::AsSpecified => {}
            RootfsAccess::ReadOnly => plan.preopens[0].read_only = true,
            RootfsAccess::Hidden => plan.rootfs_hidden = true,
        }
        let Some(listed) = &self.mounts else {
            return Ok(());
        };
        plan.mounts_listed = true;
        for destination in listed {
            let bound = plan
                .preopens
                .iter()
                .skip(1)
                .any(|p| &p.guest == destination);
            if !bound && !plan.tmpfs.iter().any(|t| &t.guest == destination) {
                return Err(RuntimeError::InvalidSpec(format!(
                    "annotation {MOUNTS_ANNOTATION} lists {destination}, which is not a \
                     directory bind mount or a tmpfs of the spec"
                )));
            }
        }
        let (kept, dropped): (Vec<_>, Vec<_>) = plan
            .tmpfs
            .drain(..)
            .partition(|t| listed.contains(&t.guest));
        plan.tmpfs = kept;
        for t in dropped {
            plan.skipped
                .push((t.guest, format!("not listed in {MOUNTS_ANNOTATION}")));
        }
        let (kept, dropped): (Vec<_>, Vec<_>) = plan
            .preopens
            .drain(..)
            .enumerate()
            .partition(|(i, p)| *i == 0 || listed.contains(&p.guest));
        plan.preopens = kept.into_iter().map(|(_, p)| p).collect();
        for (_, p) in dropped {
            plan.skipped
                .push((p.guest, format!("not listed in {MOUNTS_ANNOTATION}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Preopen;

    fn plan() -> PreopenPlan {
        let preopen = |guest: &str| Preopen {
            host: format!("/host{guest}").into(),
            guest: guest.to_string(),
            read_only: false,
        };
        PreopenPlan {
            preopens: vec![preopen("/"), preopen("/data"), preopen("/config")],
            ..Default::default()
        }
    }

    fn policy(pairs: &[(&str, &str)]) -> Result<AccessPolicy, RuntimeError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AccessPolicy::from_annotations(Some(&map))
    }

    #[test]
    fn no_annotation_changes_nothing() {
        let mut p = plan();
        AccessPolicy::from_annotations(None)
            .unwrap()
            .apply(&mut p)
            .unwrap();
        assert_eq!(p, plan());
    }

    #[test]
    fn rootfs_read_only_and_hidden() {
        let mut p = plan();
        policy(&[(ROOTFS_ANNOTATION, "ro")])
            .unwrap()
            .apply(&mut p)
            .unwrap();
        assert!(p.preopens[0].read_only && !p.rootfs_hidden);
        let mut p = plan();
        policy(&[(ROOTFS_ANNOTATION, "none")])
            .unwrap()
            .apply(&mut p)
            .unwrap();
        assert!(p.rootfs_hidden);
        let visible: Vec<_> = p.visible().map(|p| p.guest.as_str()).collect();
        assert_eq!(visible, ["/data", "/config"]);
        let err = policy(&[(ROOTFS_ANNOTATION, "readonly")]).unwrap_err();
        assert!(err.to_string().contains("expected rw, ro or none"), "{err}");
    }

    #[test]
    fn only_listed_mounts_stay() {
        let mut p = plan();
        policy(&[(MOUNTS_ANNOTATION, " /config/ ")])
            .unwrap()
            .apply(&mut p)
            .unwrap();
        let guests: Vec<_> = p.preopens.iter().map(|p| p.guest.as_str()).collect();
        assert_eq!(guests, ["/", "/config"]);
        assert_eq!(p.skipped.len(), 1);
        let mut p = plan();
        policy(&[(MOUNTS_ANNOTATION, "")])
            .unwrap()
            .apply(&mut p)
            .unwrap();
        assert_eq!(p.preopens.len(), 1);
        let err = policy(&[(MOUNTS_ANNOTATION, "/data,/nope")])
            .unwrap()
            .apply(&mut plan())
            .unwrap_err();
        assert!(err.to_string().contains("/nope"), "{err}");
    }
}
