use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::{PreopenPlan, RuntimeError};

/// Which program to run and which of its exports to call, from `process.args[0]`.
///
/// `app.wasm#name` calls export `name` instead of `_start`, the convention other wasm shims
/// use so one module can serve several entry points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    /// The path as written in the spec, without the `#export` suffix.
    pub path: String,
    /// The export named after `#`, if any.
    pub export: Option<String>,
}

impl Entrypoint {
    /// Splits `args[0]` into path and export.
    pub fn parse(arg0: &str) -> Result<Self, RuntimeError> {
        let (path, export) = match arg0.rsplit_once('#') {
            Some((path, export)) => (path, Some(export.to_string())),
            None => (arg0, None),
        };
        if path.is_empty() {
            return Err(RuntimeError::InvalidSpec(
                "process.args[0] names no program".to_string(),
            ));
        }
        if export.as_deref() == Some("") {
            return Err(RuntimeError::InvalidSpec(format!(
                "process.args[0] {arg0:?} has an empty export name after '#'"
            )));
        }
        Ok(Entrypoint {
            path: path.to_string(),
            export,
        })
    }

    /// The absolute paths inside the container where the program may be, in search order:
    /// an absolute path as is, a path with a slash relative to cwd, a bare name through
    /// `PATH` (as a shell would) and then cwd.
    pub fn candidates(&self, cwd: &str, path_var: Option<&str>) -> Vec<String> {
        let join = |dir: &str, name: &str| format!("{}/{}", dir.trim_end_matches('/'), name);
        if self.path.starts_with('/') {
            return vec![self.path.clone()];
        }
        if self.path.contains('/') {
            return vec![join(cwd, &self.path)];
        }
        let mut out: Vec<String> = path_var
            .unwrap_or("")
            .split(':')
            .filter(|dir| dir.starts_with('/'))
            .map(|dir| join(dir, &self.path))
            .collect();
        out.push(join(cwd, &self.path));
        // Once each, in the first place found (cwd is often on PATH too).
        let mut seen = std::collections::HashSet::new();
        out.retain(|path| seen.insert(path.clone()));
        out
    }

    /// Opens and reads the program, resolving every candidate path *inside* the preopen that
    /// holds it: symlinks and `..` cannot lead out of the rootfs or a mount, as they could not
    /// for the program itself. Returns the guest path found and the bytes.
    pub fn read(
        &self,
        preopens: &PreopenPlan,
        cwd: &str,
        path_var: Option<&str>,
    ) -> Result<(String, Vec<u8>), RuntimeError> {
        let (guest_path, file, _) = self.open(preopens, cwd, path_var)?;
        let bytes = crate::program_bytes::read_capped(&file, &guest_path)?;
        Ok((guest_path, bytes))
    }

    /// Opens the program as [`Entrypoint::read`] finds it, without reading it: enough to
    /// look at its first bytes. Returns the guest path, the file and its size.
    pub fn open(
        &self,
        preopens: &PreopenPlan,
        cwd: &str,
        path_var: Option<&str>,
    ) -> Result<(String, File, u64), RuntimeError> {
        let candidates = self.candidates(cwd, path_var);
        for guest_path in &candidates {
            let Some((preopen, relative)) = preopens.locate(guest_path) else {
                continue;
            };
            let root = File::open(&preopen.host)
                .map_err(|e| RuntimeError::io(format!("opening {}", preopen.host.display()), e))?;
            let relative = if relative.is_empty() { "." } else { relative };
            let how = OpenHow::new()
                // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
                // forever (and Create with it); this way it opens and is refused below as
                // not a regular file. Reads of a regular file ignore the flag.
                .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
                .mode(Mode::empty())
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
            let fd = match nix::fcntl::openat2(root.as_fd_raw(), relative, how) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => continue,
                Err(e) => {
                    return Err(RuntimeError::EntrypointNotFound(format!(
                        "{guest_path}: {e}"
                    )))
                }
            };
            // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
            let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let metadata = file
                .metadata()
                .map_err(|e| RuntimeError::io(format!("inspecting {guest_path}"), e))?;
            if metadata.is_dir() {
                return Err(RuntimeError::InvalidProgram(format!(
                    "entrypoint {guest_path} is a directory, not a WebAssembly program"
                )));
            }
            if !metadata.is_file() {
                return Err(RuntimeError::InvalidProgram(format!(
                    "entrypoint {guest_path} is not a regular file"
                )));
            }
            return Ok((guest_path.clone(), file, metadata.len()));
        }
        // Worded as runc words it: Docker answers 127 for a start or exec whose error says
        // "no such file or directory" or "executable file not found", as a shell would.
        Err(RuntimeError::EntrypointNotFound(
            if self.path.contains('/') {
                format!(
                    "{}: no such file or directory in the container",
                    candidates.join(", ")
                )
            } else {
                format!(
                    "{}: executable file not found in the container (looked for {})",
                    self.path,
                    candidates.join(", ")
                )
            },
        ))
    }
}

/// nix 0.29's openat2 takes a raw descriptor.
trait AsFdRaw {
    fn as_fd_raw(&self) -> std::os::fd::RawFd;
}

impl AsFdRaw for File {
    fn as_fd_raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn export_suffix_is_split_off() {
        let e = Entrypoint::parse("/app.wasm#serve").unwrap();
        assert_eq!(e.path, "/app.wasm");
        assert_eq!(e.export.as_deref(), Some("serve"));
        assert!(Entrypoint::parse("/app.wasm#").is_err());
        assert!(Entrypoint::parse("").is_err());
    }

    #[test]
    fn bare_names_search_path_then_cwd() {
        let e = Entrypoint::parse("tool.wasm").unwrap();
        assert_eq!(
            e.candidates("/work", Some("/bin:relative:/usr/bin")),
            vec!["/bin/tool.wasm", "/usr/bin/tool.wasm", "/work/tool.wasm"]
        );
        let e = Entrypoint::parse("./x/tool.wasm").unwrap();
        assert_eq!(e.candidates("/work/", None), vec!["/work/./x/tool.wasm"]);
        // A directory on PATH twice, or the cwd on it too, is looked in once.
        let e = Entrypoint::parse("sh").unwrap();
        assert_eq!(
            e.candidates("/", Some("/bin:/:/bin")),
            vec!["/bin/sh", "/sh"]
        );
    }

    /// Worded as runc's errors are, which Docker turns into exit status 127 (it looks for
    /// "no such file or directory" and "executable file not found").
    #[test]
    fn a_missing_program_is_named_as_runc_names_it() {
        let rootfs = tempfile::tempdir().unwrap();
        let plan = PreopenPlan::from_mounts(rootfs.path(), false, &[]).unwrap();
        let message =
            |path: &str| match Entrypoint::parse(path)
                .unwrap()
                .read(&plan, "/", Some("/bin:/"))
            {
                Err(e @ RuntimeError::EntrypointNotFound(_)) => e.to_string(),
                other => panic!("{other:?}"),
            };
        assert_eq!(
            message("/app.wasm"),
            "entrypoint not found: /app.wasm: no such file or directory in the container"
        );
        assert_eq!(
            message("sh"),
            "entrypoint not found: sh: executable file not found in the container \
             (looked for /bin/sh, /sh)"
        );
    }

    #[test]
    fn symlinks_cannot_escape_the_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.wasm"), b"\0asm").unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.wasm"),
            rootfs.path().join("app.wasm"),
        )
        .unwrap();
        let plan = PreopenPlan::from_mounts(rootfs.path(), false, &[]).unwrap();
        let e = Entrypoint::parse("/app.wasm").unwrap();
        // Inside the root, the absolute symlink target does not exist.
        assert!(matches!(
            e.read(&plan, "/", None),
            Err(RuntimeError::EntrypointNotFound(_))
        ));
        std::fs::write(rootfs.path().join("real.wasm"), b"\0asm").unwrap();
        let e = Entrypoint::parse("../../../real.wasm").unwrap();
        let (found, bytes) = e.read(&plan, "/", None).unwrap();
        assert_eq!(found, "/../../../real.wasm");
        assert_eq!(bytes, b"\0asm");
        let _ = Path::new("/");
    }

    #[test]
    fn a_directory_entrypoint_is_a_clear_error() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir(rootfs.path().join("app.wasm")).unwrap();
        let plan = PreopenPlan::from_mounts(rootfs.path(), false, &[]).unwrap();
        let err = Entrypoint::parse("/app.wasm")
            .unwrap()
            .read(&plan, "/", None)
            .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    /// Found by the spec_structured fuzz target: a FIFO entrypoint hung Create.
    #[test]
    fn a_fifo_entrypoint_is_refused_without_waiting_for_a_writer() {
        let rootfs = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&rootfs.path().join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let plan = PreopenPlan::from_mounts(rootfs.path(), false, &[]).unwrap();
        let err = Entrypoint::parse("/fifo")
            .unwrap()
            .read(&plan, "/", None)
            .unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
