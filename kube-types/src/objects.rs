//! The parts of Kubernetes objects we read, as plain serde types (unknown fields are ignored).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The annotation naming the device-plugin resource of a NetworkAttachmentDefinition.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// `metadata` of any object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub resource_version: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Set by the API server on objects whose spec changes count (custom resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Set when the object is being deleted (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
}

/// A pod: its metadata and, when present, its status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// A NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachmentDefinition {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NadSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NadSpec {
    /// The CNI config as a JSON string; empty means "the conf file whose name matches".
    #[serde(default)]
    pub config: String,
}

impl NetworkAttachmentDefinition {
    /// `k8s.v1.cni.cncf.io/resourceName`, when set and not empty.
    pub fn resource_name(&self) -> Option<&str> {
        self.metadata
            .annotations
            .get(RESOURCE_NAME_ANNOTATION)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }
}

/// A CNI-Genie LogicalNetwork (`alpha.network.k8s.io/v1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalNetwork {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LogicalNetworkSpec,
    /// Written by the controller through the `status` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<LogicalNetworkStatus>,
}

/// `status` of a LogicalNetwork, as the controller keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogicalNetworkStatus {
    /// The `metadata.generation` the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many pods have the network in their `k8s.v1.cni.cncf.io/network-status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_pods: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A `metav1.Condition`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339, when `status` last changed.
    #[serde(default)]
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogicalNetworkSpec {
    #[serde(default)]
    pub physical_net: String,
    #[serde(default)]
    pub plugin: String,
    #[serde(default)]
    pub subnet: String,
    /// The VLAN the network is tagged with on its physical network (1..=4094), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// What kind of object a request is about (for errors and paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    NetworkAttachmentDefinition,
    LogicalNetwork,
}

impl Kind {
    /// The collection path in a namespace.
    pub fn collection(self, namespace: &str) -> String {
        match self {
            Kind::Pod => format!("/api/v1/namespaces/{namespace}/pods"),
            Kind::NetworkAttachmentDefinition => format!(
                "/apis/k8s.cni.cncf.io/v1/namespaces/{namespace}/network-attachment-definitions"
            ),
            Kind::LogicalNetwork => {
                format!("/apis/alpha.network.k8s.io/v1/namespaces/{namespace}/logicalnetworks")
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Pod => "pod",
            Kind::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            Kind::LogicalNetwork => "LogicalNetwork",
        })
    }
}

/// One object: kind, namespace and name. Displays as `pod default/web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// The object's REST path; only for names that passed [`is_object_name`].
    pub fn path(&self) -> String {
        format!("{}/{}", self.kind.collection(&self.namespace), self.name)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A DNS-1123 label (`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 bytes): namespaces, NAD names.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_lower_alnum_dash(s)
}

/// A DNS-1123 subdomain (labels joined by dots, at most 253 bytes): pod names.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_lower_alnum_dash)
}

/// A name that is safe as one path segment of an object's REST path.
pub fn is_object_name(s: &str) -> bool {
    is_dns_subdomain(s)
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 bytes
/// (letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit).
pub fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_dns_subdomain(p)) && is_label_name(name)
}

/// A label value: empty, or at most 63 bytes of letters, digits, `-`, `_`, `.`, starting and
/// ending with a letter or digit.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    s.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || matches!(c, b'-' | b'_' | b'.'))
}

fn is_lower_alnum_dash(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_rules() {
        for ok in ["a", "net-1", "0abc"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "../x",
            "a/b",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("web-0.x"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_object_name(".."));
    }

    #[test]
    fn labels_follow_kubernetes_rules() {
        for ok in ["app", "app.kubernetes.io/name", "a_b.c-d", "x/Y1"] {
            assert!(is_label_key(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a b",
            "A.b/c",
            "a/b/c",
            &"a".repeat(64),
        ] {
            assert!(!is_label_key(bad), "{bad}");
        }
        for ok in ["", "web", "v1.2_x-y"] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a/b", "a\nb", &"a".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }

    #[test]
    fn objects_decode_and_name_their_paths() {
        let nad: NetworkAttachmentDefinition = serde_json::from_str(
            r#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
            "metadata":{"name":"sriov-a","namespace":"default","annotations":{"k8s.v1.cni.cncf.io/resourceName":"intel.com/sriov_a"}},
            "spec":{"config":"{\"type\":\"sriov\"}"}}"#,
        )
        .unwrap();
        assert_eq!(nad.resource_name(), Some("intel.com/sriov_a"));
        let ln: LogicalNetwork = serde_json::from_str(
            r#"{"metadata":{"name":"net1","namespace":"default"},"spec":{"physicalNet":"p1","plugin":"flannel","subnet":"10.1.0.0/16"}}"#,
        )
        .unwrap();
        assert_eq!(ln.spec.plugin, "flannel");
        assert_eq!(ln.spec.subnet, "10.1.0.0/16");
        let r = ObjectRef::new(Kind::NetworkAttachmentDefinition, "ns", "n");
        assert_eq!(
            r.path(),
            "/apis/k8s.cni.cncf.io/v1/namespaces/ns/network-attachment-definitions/n"
        );
        assert_eq!(r.to_string(), "NetworkAttachmentDefinition ns/n");
    }
}
