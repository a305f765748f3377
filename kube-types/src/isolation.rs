//! Namespace isolation (Multus' `namespaceIsolation` and `globalNamespaces`): with it, a pod may
//! only use NetworkAttachmentDefinitions of its own namespace or of the global namespaces. genie
//! enforces it on the node; the controller at admission.

/// The isolation settings: off by default, no global namespaces by default (as genie's conf).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    pub enabled: bool,
    pub global_namespaces: Vec<String>,
}

/// A pod referenced a NetworkAttachmentDefinition that namespace isolation forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {pod_namespace}/{pod_name} may not use NetworkAttachmentDefinition {nad_namespace}/{nad_name}: with namespaceIsolation a pod may only use NetworkAttachmentDefinitions of its own namespace or of the global namespaces ({global})")]
pub struct IsolationError {
    pub pod_namespace: String,
    pub pod_name: String,
    pub nad_namespace: String,
    pub nad_name: String,
    pub global: String,
}

impl Isolation {
    /// Whether pod `pod_namespace/pod_name` may use NAD `nad_namespace/nad_name`.
    pub fn check(
        &self,
        pod_namespace: &str,
        pod_name: &str,
        nad_namespace: &str,
        nad_name: &str,
    ) -> Result<(), IsolationError> {
        if !self.enabled
            || pod_namespace == nad_namespace
            || self.global_namespaces.iter().any(|g| g == nad_namespace)
        {
            return Ok(());
        }
        Err(IsolationError {
            pod_namespace: pod_namespace.to_string(),
            pod_name: pod_name.to_string(),
            nad_namespace: nad_namespace.to_string(),
            nad_name: nad_name.to_string(),
            global: if self.global_namespaces.is_empty() {
                "none".to_string()
            } else {
                self.global_namespaces.join(", ")
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_and_global_namespaces_pass_when_enabled() {
        let off = Isolation::default();
        assert!(off.check("a", "p", "b", "n").is_ok());
        let on = Isolation {
            enabled: true,
            global_namespaces: vec!["shared".into()],
        };
        assert!(on.check("a", "p", "a", "n").is_ok());
        assert!(on.check("a", "p", "shared", "n").is_ok());
        let e = on.check("a", "p", "b", "n").unwrap_err().to_string();
        assert!(
            e.contains("pod a/p") && e.contains("b/n") && e.contains("(shared)"),
            "{e}"
        );
        let none = Isolation {
            enabled: true,
            global_namespaces: vec![],
        };
        assert!(none
            .check("a", "p", "b", "n")
            .unwrap_err()
            .to_string()
            .contains("(none)"));
    }
}
