//! The spec → WASI mapping and what must hold of its result.

use std::collections::HashSet;
use std::path::{Component, Path};

use oci_spec::runtime::{Mount, Spec};
use runtime::{native_entrypoint, Entrypoint, PreopenPlan, RuntimeError, WasiPlan};

use crate::tree::{tree, Tree};

/// The annotations with which an operator narrows a program's access (runtime/src/access.rs):
/// they may only take access away.
pub const ROOTFS_ANNOTATION: &str = "io.containerd.wasmtime.rootfs";
pub const MOUNTS_ANNOTATION: &str = "io.containerd.wasmtime.mounts";

/// Parses `data` as a bundle's `config.json` and checks the spec if it parses.
pub fn check_json(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<Spec>(data) {
        check(&spec);
    }
}

/// Maps `spec` onto the fuzz tree's rootfs and checks everything that must hold: no panic,
/// only spec errors, a well-formed plan, annotations that only narrow, lookups that stay in
/// their preopen.
pub fn check(spec: &Spec) {
    let tree = tree();
    let result = WasiPlan::from_spec(spec, &tree.rootfs);
    match &result {
        Ok(plan) => {
            check_plan(spec, plan, tree);
            check_lookup(plan, tree);
        }
        Err(e) => assert!(
            matches!(
                e,
                RuntimeError::InvalidSpec(_) | RuntimeError::InvalidMount(_)
            ),
            "WasiPlan::from_spec failed with something other than a spec error: {e:?}"
        ),
    }
    if let Some(unnarrowed) = without_access_annotations(spec) {
        let base = WasiPlan::from_spec(&unnarrowed, &tree.rootfs);
        if let Ok(plan) = &result {
            let base = base.expect("the access annotations made an invalid spec valid");
            check_narrowing(spec, plan, &base);
        }
    }
    check_native(spec, tree);
}

/// `docker run --init` wraps the command as `[docker-init, --, CMD...]`.
fn past_init(args: &[String]) -> &[String] {
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

fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|o| o == "bind" || o == "rbind")
}

/// A destination as the plan spells it: `/` and the normal components.
fn normalized(destination: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in destination.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(format!("/{}", parts.join("/")))
}

fn check_plan(spec: &Spec, plan: &WasiPlan, tree: &Tree) {
    let process = spec
        .process()
        .as_ref()
        .expect("a plan from a spec without process");
    let spec_args = process.args().clone().unwrap_or_default();
    assert_eq!(
        plan.args,
        past_init(&spec_args),
        "args differ from the spec's"
    );
    assert!(!plan.args.is_empty(), "a plan without args");

    let entrypoint = &plan.entrypoint;
    assert_eq!(
        Some(entrypoint),
        Entrypoint::parse(&plan.args[0]).ok().as_ref(),
        "the entrypoint is not args[0]"
    );
    assert!(!entrypoint.path.is_empty(), "an empty entrypoint path");
    let rejoined = match &entrypoint.export {
        Some(export) => {
            assert!(!export.is_empty(), "an empty export name");
            assert!(!export.contains('#'), "an export name with '#': {export:?}");
            format!("{}#{export}", entrypoint.path)
        }
        None => entrypoint.path.clone(),
    };
    assert_eq!(
        rejoined, plan.args[0],
        "path#export does not give args[0] back"
    );

    assert!(plan.cwd.starts_with('/'), "cwd {:?} is relative", plan.cwd);
    let spec_cwd = process.cwd().to_str().unwrap_or_default();
    if !spec_cwd.is_empty() {
        assert_eq!(plan.cwd, spec_cwd, "cwd differs from the spec's");
    }

    let spec_env = process.env().clone().unwrap_or_default();
    let spec_has_pwd = spec_env
        .iter()
        .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == "PWD");
    assert_eq!(
        plan.env.len(),
        spec_env.len() + usize::from(!spec_has_pwd),
        "env entries lost or added"
    );
    for ((key, value), entry) in plan.env.iter().zip(&spec_env) {
        assert!(!key.contains('='), "env key {key:?} contains '='");
        if entry.contains('=') {
            assert_eq!(&format!("{key}={value}"), entry, "env entry changed");
        } else {
            assert!(key == entry && value.is_empty(), "env entry changed");
        }
    }
    if !spec_has_pwd {
        assert_eq!(
            plan.env.last(),
            Some(&("PWD".to_string(), plan.cwd.clone())),
            "PWD is not the cwd"
        );
    }

    let preopens = &plan.preopens.preopens;
    let root = preopens.first().expect("a plan without preopens");
    assert_eq!(root.guest, "/", "the first preopen is not /");
    assert_eq!(
        root.host, tree.rootfs,
        "the first preopen is not the rootfs"
    );
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        assert!(root.read_only, "a read-only rootfs became writable");
    }
    let mut guests = HashSet::new();
    let mounts = spec.mounts().clone().unwrap_or_default();
    for preopen in preopens {
        let guest = &preopen.guest;
        assert!(guests.insert(guest.as_str()), "two preopens at {guest}");
        assert_eq!(
            normalized(Path::new(guest)).as_ref(),
            Some(guest),
            "guest path {guest:?} is not normalized"
        );
    }
    for preopen in &preopens[1..] {
        assert_ne!(preopen.guest, "/", "a mount over /");
        assert!(preopen.host.is_absolute(), "relative host path");
        let from = mounts.iter().find(|m| {
            is_bind(m)
                && normalized(m.destination()).as_ref() == Some(&preopen.guest)
                && m.source().as_deref() == Some(preopen.host.as_path())
        });
        let mount = from
            .unwrap_or_else(|| panic!("preopen {preopen:?} comes from no bind mount of the spec"));
        let ro = mount.options().as_deref().unwrap_or_default();
        if ro.iter().any(|o| o == "ro") {
            assert!(
                preopen.read_only,
                "read-only mount {} became writable",
                preopen.guest
            );
        }
    }
    for (destination, reason) in &plan.preopens.skipped {
        assert!(
            destination.starts_with('/'),
            "skipped {destination:?}: {reason}"
        );
    }
}

/// The spec without the access annotations, if it has any.
fn without_access_annotations(spec: &Spec) -> Option<Spec> {
    let annotations = spec.annotations().as_ref()?;
    if !annotations.contains_key(ROOTFS_ANNOTATION) && !annotations.contains_key(MOUNTS_ANNOTATION)
    {
        return None;
    }
    let mut annotations = annotations.clone();
    annotations.remove(ROOTFS_ANNOTATION);
    annotations.remove(MOUNTS_ANNOTATION);
    let mut spec = spec.clone();
    spec.set_annotations(Some(annotations));
    Some(spec)
}

/// The annotations may take access away, never give it.
fn check_narrowing(spec: &Spec, narrowed: &WasiPlan, base: &WasiPlan) {
    assert_eq!(narrowed.args, base.args);
    assert_eq!(narrowed.env, base.env);
    assert_eq!(narrowed.cwd, base.cwd);
    assert_eq!(narrowed.entrypoint, base.entrypoint);
    for preopen in &narrowed.preopens.preopens {
        let granted = base
            .preopens
            .preopens
            .iter()
            .find(|p| p.guest == preopen.guest && p.host == preopen.host)
            .unwrap_or_else(|| panic!("annotations added the preopen {preopen:?}"));
        assert!(
            preopen.read_only || !granted.read_only,
            "annotations made {} writable",
            preopen.guest
        );
    }
    let rootfs = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ROOTFS_ANNOTATION))
        .map(|v| v.trim());
    if rootfs == Some("ro") {
        assert!(
            narrowed.preopens.preopens[0].read_only,
            "rootfs=ro left it writable"
        );
    }
}

/// Where the program is looked up: candidates, the preopen each falls in, and (when every
/// preopen is in the fuzz tree) the file found, which must be below its preopen.
fn check_lookup(plan: &WasiPlan, tree: &Tree) {
    let candidates = plan.entrypoint.candidates(&plan.cwd, plan.path_var());
    assert!(!candidates.is_empty(), "no candidate paths");
    for candidate in &candidates {
        assert!(
            candidate.starts_with('/'),
            "relative candidate {candidate:?}"
        );
        check_locate(&plan.preopens, candidate);
    }
    if !plan
        .preopens
        .preopens
        .iter()
        .all(|p| tree.contains(&p.host))
    {
        return;
    }
    let found = plan
        .entrypoint
        .open(&plan.preopens, &plan.cwd, plan.path_var());
    if let Ok((guest, file, size)) = found {
        assert!(
            candidates.contains(&guest),
            "found {guest}, not a candidate"
        );
        let meta = file.metadata().expect("fstat of the entrypoint");
        assert!(meta.is_file(), "{guest} is not a regular file");
        assert_eq!(meta.len(), size, "{guest}: wrong size");
        let (preopen, _) = plan.preopens.locate(&guest).expect("located before");
        assert!(
            tree.is_below(&file, &preopen.host),
            "{guest} was opened outside its preopen {}: {preopen:?}",
            preopen.host.display()
        );
    }
}

/// `locate` picks the longest preopen that is a prefix of the path at a component boundary.
fn check_locate(plan: &PreopenPlan, path: &str) {
    let matches = |guest: &str| -> Option<String> {
        if guest == "/" {
            return path.strip_prefix('/').map(str::to_string);
        }
        let rest = path.strip_prefix(guest)?;
        (rest.is_empty() || rest.starts_with('/')).then(|| rest.trim_start_matches('/').into())
    };
    let (preopen, rest) = plan
        .locate(path)
        .unwrap_or_else(|| panic!("no preopen holds {path:?}"));
    assert_eq!(matches(&preopen.guest).as_deref(), Some(rest), "{path:?}");
    for other in &plan.preopens {
        if other.guest.len() > preopen.guest.len() {
            assert!(
                matches(&other.guest).is_none(),
                "{path:?}: {} is longer than {}",
                other.guest,
                preopen.guest
            );
        }
    }
}

/// `native_entrypoint` looks at the entrypoint's first bytes: no panic, a sane answer. It is
/// only called when the preopens it would use are all in the fuzz tree.
fn check_native(spec: &Spec, tree: &Tree) {
    let mounts = spec.mounts().clone().unwrap_or_default();
    if let Ok(plan) = PreopenPlan::from_mounts(&tree.rootfs, false, &mounts) {
        if !plan.preopens.iter().all(|p| tree.contains(&p.host)) {
            return;
        }
    }
    if let Some(native) = native_entrypoint(spec, &tree.rootfs) {
        assert!(native.guest_path.starts_with('/'), "{native:?}");
        assert!(
            ["an ELF executable", "a script"].contains(&native.kind),
            "{native:?}"
        );
    }
}
