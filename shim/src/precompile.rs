//! Tasks that only warm a node's compile cache.
//!
//! A container annotated `io.containerd.wasmtime.precompile=true` has its program compiled
//! to optimized code at Create, whatever the tiering, and its process ends with 0 at Start
//! without running it. An operator runs one per image on a node (`ctr run --rm --annotation
//! ...`, a Kubernetes Job or DaemonSet init container) so that the first real start there
//! maps optimized code instead of compiling; when the task ends, the code is in the cache.

use oci_spec::runtime::Spec;

/// The annotation asking for a precompile-only task.
pub const PRECOMPILE_ANNOTATION: &str = "io.containerd.wasmtime.precompile";

/// Whether `spec` asks for a precompile-only task (`true`, `1` or `yes`).
pub fn requested(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(PRECOMPILE_ANNOTATION))
        .is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: Option<&str>) -> Spec {
        let mut spec = Spec::default();
        if let Some(value) = value {
            spec.set_annotations(Some(
                [(PRECOMPILE_ANNOTATION.to_string(), value.to_string())].into(),
            ));
        }
        spec
    }

    #[test]
    fn only_a_true_value_asks_for_it() {
        assert!(!requested(&spec(None)));
        for yes in ["true", "1", "yes", " true "] {
            assert!(requested(&spec(Some(yes))), "{yes}");
        }
        for no in ["false", "0", "", "no"] {
            assert!(!requested(&spec(Some(no))), "{no}");
        }
    }
}
