//! What the Kubernetes CRI annotations of a spec say about the pod a container belongs to.
//!
//! containerd's CRI plugin (and CRI-O) mark every container of a pod with the pod's sandbox
//! id, and the sandbox (pause) container with its type. The shim groups a pod's containers
//! in one process by that id, and knows the pause container without looking at its image.

use std::collections::HashMap;
use std::path::Path;

/// The pod's sandbox id, on every container of the pod (containerd's CRI plugin).
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// "sandbox" for the pause container, "container" for the others (containerd's CRI plugin).
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI-O's names for the same two facts.
const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";

/// The pod facts of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMembership {
    /// The sandbox id, when the container belongs to a pod.
    pub sandbox_id: Option<String>,
    /// The container is the pod's sandbox (pause) container.
    pub is_sandbox: bool,
}

impl PodMembership {
    /// Reads the annotations.
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Self {
        let sandbox_id = [SANDBOX_ID, CRIO_SANDBOX_ID]
            .iter()
            .find_map(|key| annotations.get(*key))
            .filter(|id| !id.is_empty())
            .cloned();
        let is_sandbox = [CONTAINER_TYPE, CRIO_CONTAINER_TYPE]
            .iter()
            .any(|key| annotations.get(*key).map(String::as_str) == Some("sandbox"));
        PodMembership {
            sandbox_id,
            is_sandbox,
        }
    }

    /// Reads only the annotations of `bundle/config.json`: `start` runs for every container
    /// and must stay cheap. A missing or unreadable spec means no pod (Create reports it).
    pub fn from_bundle(bundle: &Path) -> Self {
        #[derive(serde::Deserialize)]
        struct AnnotationsOnly {
            #[serde(default)]
            annotations: Option<HashMap<String, String>>,
        }
        std::fs::read(bundle.join("config.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<AnnotationsOnly>(&bytes).ok())
            .and_then(|spec| spec.annotations)
            .map(|a| Self::from_annotations(&a))
            .unwrap_or_default()
    }

    /// The group of containers one shim process serves: the pod, or the container alone.
    pub fn group<'a>(&'a self, id: &'a str) -> &'a str {
        self.sandbox_id.as_deref().unwrap_or(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_containers_group_by_sandbox_and_others_alone() {
        let annotations: HashMap<String, String> = [
            (SANDBOX_ID.to_string(), "pod1".to_string()),
            (CONTAINER_TYPE.to_string(), "sandbox".to_string()),
        ]
        .into();
        let pod = PodMembership::from_annotations(&annotations);
        assert!(pod.is_sandbox);
        assert_eq!(pod.group("pod1"), "pod1");
        let alone = PodMembership::from_annotations(&HashMap::new());
        assert!(!alone.is_sandbox);
        assert_eq!(alone.group("c1"), "c1");
    }

    #[test]
    fn from_bundle_reads_annotations_and_tolerates_a_missing_spec() {
        let bundle = tempfile::tempdir().unwrap();
        assert_eq!(
            PodMembership::from_bundle(bundle.path()),
            PodMembership::default()
        );
        std::fs::write(
            bundle.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-id":"p",
               "io.kubernetes.cri.container-type":"container"}}"#,
        )
        .unwrap();
        let pod = PodMembership::from_bundle(bundle.path());
        assert_eq!(pod.sandbox_id.as_deref(), Some("p"));
        assert!(!pod.is_sandbox);
    }
}
