//! Turning an OCI `linux.cgroupsPath` into the path of the cgroup below each hierarchy's
//! root, the way runc does, so a container lands where kubelet and cAdvisor look for it.

use std::path::{Component, Path, PathBuf};

use super::CgroupError;

/// The cgroup path below every hierarchy's root (always absolute, e.g. `/default/hello`) for
/// a spec's `cgroupsPath`, accepting both forms containerd passes:
///
/// - cgroupfs: `/a/b` as is; a relative `a/b` is taken as `/a/b` (runc's cgroupfs driver
///   joins it to the root the same way).
/// - systemd: `slice:prefix:name` becomes the expanded slice followed by the unit,
///   `prefix-name.scope` (`system.slice:docker:abc` → `/system.slice/docker-abc.scope`). An
///   empty slice is `system.slice`, systemd's default for services, as in runc. A `name`
///   ending in `.slice` is the unit itself and, as in runc, is placed under the parent slice
///   without expanding it.
///
/// A relative path with a colon that is not exactly `slice:prefix:name` (such as `a:b`) is
/// rejected rather than read as a directory name: it is far more likely a malformed systemd
/// path, and guessing would put the container where nobody looks for it. An absolute path is
/// never read as the systemd form, so colons are allowed there.
///
/// Empty paths, paths with `..`, and paths naming the root cgroup itself are invalid: the
/// caller would otherwise write limits into, freeze or remove a cgroup it does not own.
pub fn relative_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let invalid = |reason: &'static str| CgroupError::InvalidPath {
        path: cgroups_path.to_string(),
        reason,
    };
    if cgroups_path.is_empty() {
        return Err(invalid("empty"));
    }
    let path = if cgroups_path.starts_with('/') {
        PathBuf::from(cgroups_path)
    } else if cgroups_path.contains(':') {
        let parts: Vec<&str> = cgroups_path.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return Err(invalid(
                "a relative path with ':' must be slice:prefix:name",
            ));
        };
        systemd_path(slice, prefix, name).map_err(invalid)?
    } else {
        Path::new("/").join(cgroups_path)
    };
    normalize(&path).map_err(invalid)
}

/// The path of systemd unit `prefix-name.scope` (or slice `name`) in slice `slice`.
fn systemd_path(slice: &str, prefix: &str, name: &str) -> Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("the systemd unit name is empty");
    }
    if [slice, prefix, name].iter().any(|part| part.contains('/')) {
        return Err("systemd names cannot contain '/'");
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else {
        // runc writes the dash even for an empty prefix; matching it keeps the same path.
        format!("{prefix}-{name}.scope")
    };
    Ok(expand_slice(slice)?.join(unit))
}

/// systemd's slice naming: `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice`, and
/// `-.slice` is the root slice.
pub fn expand_slice(slice: &str) -> Result<PathBuf, &'static str> {
    let name = slice
        .strip_suffix(".slice")
        .ok_or("a systemd slice name must end in .slice")?;
    if name == "-" {
        return Ok(PathBuf::from("/"));
    }
    let mut path = PathBuf::from("/");
    let mut prefix = String::new();
    for part in name.split('-') {
        // `a--b.slice`, `-a.slice` and `.slice` have an empty component; systemd refuses them.
        if part.is_empty() {
            return Err("invalid systemd slice name");
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
        prefix.push('-');
    }
    Ok(path)
}

/// `path` with `.`, repeated and trailing slashes removed; refuses `..` and the root.
fn normalize(path: &Path) -> Result<PathBuf, &'static str> {
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => normal.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err("'..' is not allowed");
            }
        }
    }
    if normal == Path::new("/") {
        return Err("names the root cgroup");
    }
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> String {
        match relative_path(input) {
            Ok(path) => path.display().to_string(),
            Err(e) => panic!("{input}: {e}"),
        }
    }

    #[test]
    fn cgroupfs_paths_are_kept_or_rooted() {
        assert_eq!(ok("/default/hello"), "/default/hello");
        assert_eq!(ok("default/hello"), "/default/hello");
        assert_eq!(ok("/a//b/./c/"), "/a/b/c");
        assert_eq!(ok("/pods/with:colon"), "/pods/with:colon");
    }

    #[test]
    fn systemd_paths_expand_the_slice_and_name_a_scope() {
        assert_eq!(
            ok("system.slice:docker:abc"),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            ok("kubepods-besteffort-pod12.slice:cri-containerd:c1"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-c1.scope"
        );
        assert_eq!(ok("-.slice:p:n"), "/p-n.scope");
        assert_eq!(ok(":docker:abc"), "/system.slice/docker-abc.scope");
        assert_eq!(ok("user.slice:p:my-sub.slice"), "/user.slice/my-sub.slice");
    }

    #[test]
    fn invalid_paths_are_refused() {
        for input in [
            "",
            "/",
            "../x",
            "/a/../../x",
            "a:b",
            "a:b:c:d",
            "a--b.slice:p:n",
            "-a.slice:p:n",
            ".slice:p:n",
            "notaslice:p:n",
            "system.slice:p:",
            "system.slice:p:a/b",
        ] {
            assert!(
                matches!(relative_path(input), Err(CgroupError::InvalidPath { .. })),
                "{input:?} was accepted"
            );
        }
    }
}
