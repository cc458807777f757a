//! Where this shim keeps compiled modules, from its environment and its bundle.
//!
//! Shims inherit containerd's environment, so an operator sets these where containerd is
//! started (a systemd drop-in's `Environment=`):
//! - `WASMTIME_SHIM_CACHE_DIR`: the directory; `off` (or empty) disables the cache.
//!   Default: `<containerd state>/io.containerd.wasmtime.v1/cache`, found from the bundle
//!   (`<state>/io.containerd.runtime.v2.task/<namespace>/<id>`), so it lives and dies with
//!   containerd's state, like every other runtime's files.
//! - `WASMTIME_SHIM_CACHE_MAX_BYTES`: the size bound (default 512 MiB); least recently used
//!   entries are removed beyond it.
//! - `WASMTIME_SHIM_TIERING`: `off` compiles every program optimized before it starts. By
//!   default a program the cache does not hold optimized starts on baseline (Winch) code
//!   while its optimized code is compiled in the background (see the runtime's `optimizer`).

use std::path::{Path, PathBuf};

use runtime::CompileCache;

/// Environment variable naming the cache directory.
pub const CACHE_DIR_ENV: &str = "WASMTIME_SHIM_CACHE_DIR";
/// Environment variable bounding the cache's size in bytes.
pub const CACHE_MAX_ENV: &str = "WASMTIME_SHIM_CACHE_MAX_BYTES";
/// Default size bound.
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;
/// Environment variable that turns tiered compilation off.
pub const TIERING_ENV: &str = "WASMTIME_SHIM_TIERING";
/// The longest a background compile of optimized code is waited for: by a shim with no
/// task left before it exits, and by a server on baseline code for its switch.
pub const OPTIMIZATION_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Whether tiered compilation is on, given the environment lookups: anything but `off`
/// (or `0`, `false`, `no`) keeps the default, on.
pub fn tiering(env: impl Fn(&str) -> Option<String>) -> bool {
    !matches!(
        env(TIERING_ENV).as_deref().map(str::trim),
        Some("off" | "0" | "false" | "no")
    )
}

/// The cache for a shim whose bundle is `bundle`, given its environment lookups.
pub fn compile_cache(bundle: &Path, env: impl Fn(&str) -> Option<String>) -> Option<CompileCache> {
    let max_bytes = match env(CACHE_MAX_ENV) {
        Some(value) => match value.trim().parse::<u64>() {
            Ok(bytes) => bytes,
            Err(_) => {
                log::warn!("{CACHE_MAX_ENV}={value:?} is not a number of bytes; using the default");
                DEFAULT_MAX_BYTES
            }
        },
        None => DEFAULT_MAX_BYTES,
    };
    let dir = match env(CACHE_DIR_ENV) {
        Some(dir) if dir.is_empty() || dir == "off" => return None,
        Some(dir) => PathBuf::from(dir),
        None => default_dir(bundle)?,
    };
    Some(CompileCache::new(dir, max_bytes))
}

/// `<state>/io.containerd.wasmtime.v1/cache` for a bundle under containerd's state.
fn default_dir(bundle: &Path) -> Option<PathBuf> {
    let tasks = bundle.parent()?.parent()?;
    if tasks.file_name()? != "io.containerd.runtime.v2.task" {
        log::info!(
            "bundle {} is not under containerd's state; no compile cache unless {CACHE_DIR_ENV} is set",
            bundle.display()
        );
        return None;
    }
    Some(
        tasks
            .parent()?
            .join("io.containerd.wasmtime.v1")
            .join("cache"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc";

    #[test]
    fn tiering_is_on_unless_the_environment_says_off() {
        assert!(tiering(|_| None));
        assert!(tiering(|_| Some("on".into())));
        for off in ["off", "0", "false", "no", " off "] {
            assert!(!tiering(|key| (key == TIERING_ENV).then(|| off.to_string())));
        }
    }

    #[test]
    fn the_default_lives_in_containerds_state() {
        let cache = compile_cache(Path::new(BUNDLE), |_| None).unwrap();
        assert_eq!(
            cache.dir(),
            Path::new("/run/containerd/io.containerd.wasmtime.v1/cache")
        );
        assert!(compile_cache(Path::new("/tmp/some/bundle"), |_| None).is_none());
    }

    #[test]
    fn the_environment_moves_or_disables_it() {
        let env =
            |dir: &'static str| move |key: &str| (key == CACHE_DIR_ENV).then(|| dir.to_string());
        let moved = compile_cache(Path::new(BUNDLE), env("/var/cache/wasm")).unwrap();
        assert_eq!(moved.dir(), Path::new("/var/cache/wasm"));
        assert!(compile_cache(Path::new(BUNDLE), env("off")).is_none());
        assert!(compile_cache(Path::new(BUNDLE), env("")).is_none());
    }
}
