use std::path::Path;

use oci_spec::runtime::Spec;

use crate::{AccessPolicy, Entrypoint, PreopenPlan, RuntimeError};

/// What the OCI spec asks of a program, translated into WASI terms.
///
/// Built once at container creation so every spec problem surfaces before anything runs.
/// Only the process and the filesystem view matter to wasm: namespaces, cgroups, seccomp,
/// capabilities, rlimits and the like describe a Linux process and are ignored here.
#[derive(Debug, Clone)]
pub struct WasiPlan {
    /// argv as given by the spec, argv[0] included.
    pub args: Vec<String>,
    /// Environment, `KEY=VALUE` split at the first `=`.
    pub env: Vec<(String, String)>,
    /// The spec's uid: whose home `HOME` defaults to once the program is in the
    /// container's root (see [`crate::Program::enter_own_root`]).
    pub uid: u32,
    /// Initial working directory (absolute, inside the container): where relative paths
    /// resolve (see `working_directory`), `PWD`, and a component's `initial-cwd`.
    pub cwd: String,
    /// The filesystem the program sees.
    pub preopens: PreopenPlan,
    /// Which program and export to run.
    pub entrypoint: Entrypoint,
}

/// The command an init wrapper would run: `docker run --init` puts docker's init (tini,
/// bind-mounted from the host at `/sbin/docker-init`) in front of the command, as
/// `[/sbin/docker-init, --, CMD...]`. A wasm program needs no init (there are no zombies to
/// reap, and the shim delivers signals itself), so the command after `--` is what runs.
/// A native command keeps its wrapper: the whole spec goes to runc unchanged.
pub(crate) fn past_init(args: &[String]) -> &[String] {
    let is_init = |path: &str| {
        matches!(
            Path::new(path).file_name().and_then(|n| n.to_str()),
            Some("docker-init" | "tini")
        )
    };
    match args {
        [init, separator, command @ ..]
            if is_init(init) && separator == "--" && !command.is_empty() =>
        {
            command
        }
        _ => args,
    }
}

impl WasiPlan {
    /// Translates `spec`, whose root filesystem is (already mounted) at `rootfs`.
    pub fn from_spec(spec: &Spec, rootfs: &Path) -> Result<Self, RuntimeError> {
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| RuntimeError::InvalidSpec("the spec has no process".into()))?;
        let args = past_init(process.args().as_deref().unwrap_or_default()).to_vec();
        let arg0 = args
            .first()
            .ok_or_else(|| RuntimeError::InvalidSpec("process.args is empty".into()))?;
        let entrypoint = Entrypoint::parse(arg0)?;
        let mut env: Vec<(String, String)> = process
            .env()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (entry, String::new()),
            })
            .collect();
        let cwd = process
            .cwd()
            .to_str()
            .ok_or_else(|| RuntimeError::InvalidSpec("process.cwd is not valid UTF-8".into()))?
            .to_string();
        let cwd = if cwd.is_empty() { "/".to_string() } else { cwd };
        if !cwd.starts_with('/') {
            return Err(RuntimeError::InvalidSpec(format!(
                "process.cwd {cwd:?} is not an absolute path"
            )));
        }
        // WASI preview 1 has no working directory: wasi-libc's getcwd is always "/". Relative
        // paths reach the spec's cwd through preopens (see `working_directory`), and the cwd
        // is exported as PWD (what shells and many programs consult) unless the spec sets
        // PWD itself.
        if !env.iter().any(|(k, _)| k == "PWD") {
            env.push(("PWD".to_string(), cwd.clone()));
        }
        let read_only = spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        let mounts = spec.mounts().clone().unwrap_or_default();
        let mut preopens = PreopenPlan::from_mounts(rootfs, read_only, &mounts)?;
        AccessPolicy::from_annotations(spec.annotations().as_ref())?.apply(&mut preopens)?;
        Ok(WasiPlan {
            args,
            env,
            uid: process.user().uid(),
            cwd,
            preopens,
            entrypoint,
        })
    }

    /// The program's `PATH`, used to find a bare program name as a shell would.
    pub fn path_var(&self) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Option<Spec> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/specs")
            .join(name);
        if !path.exists() {
            return None;
        }
        Some(Spec::load(path).unwrap())
    }

    #[test]
    fn ctr_env_cwd_spec_maps_to_wasi() {
        let Some(spec) = fixture("ctr-env-cwd.json") else {
            return;
        };
        let plan = WasiPlan::from_spec(&spec, Path::new("/rootfs")).unwrap();
        assert_eq!(plan.args[0], "/bin/sh");
        assert_eq!(plan.cwd, "/tmp");
        assert!(plan.env.contains(&("FOO".into(), "bar".into())));
        assert!(plan.env.contains(&("PWD".into(), "/tmp".into())));
        // Only the rootfs: proc, dev, sys, tmpfs mounts are not reachable.
        assert_eq!(plan.preopens.preopens.len(), 1);
        assert!(plan.preopens.skipped.iter().any(|(d, _)| d == "/proc"));
    }

    #[test]
    fn every_docker_and_cri_fixture_is_accepted_apart_from_host_paths() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/specs");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let spec = Spec::load(&path).unwrap();
            match WasiPlan::from_spec(&spec, Path::new("/rootfs")) {
                Ok(plan) => assert_eq!(plan.preopens.preopens[0].guest, "/"),
                // The fixtures name host directories (/srv/hostdir, /var/lib/docker/...) that
                // do not exist here; only that kind of error is acceptable.
                Err(RuntimeError::InvalidMount(msg)) => {
                    assert!(msg.contains("No such file"), "{}: {msg}", path.display())
                }
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }

    #[test]
    fn docker_init_is_looked_past() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let wrapped = args(&["/sbin/docker-init", "--", "/app.wasm", "x"]);
        assert_eq!(past_init(&wrapped), &args(&["/app.wasm", "x"])[..]);
        for unchanged in [
            args(&["/sbin/docker-init", "--"]),
            args(&["/sbin/docker-init", "/app.wasm"]),
            args(&["/app.wasm", "--", "x"]),
        ] {
            assert_eq!(past_init(&unchanged), &unchanged[..]);
        }
        if let Some(spec) = fixture("docker-init.json") {
            let plan = WasiPlan::from_spec(&spec, Path::new("/rootfs"));
            // The fixture's mount sources are host paths of the capture; only the args matter.
            if let Ok(plan) = plan {
                assert_eq!(plan.args, args(&["echo", "hi"]));
            }
        }
    }
}
