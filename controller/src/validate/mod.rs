//! Admission rules as pure functions over a [`Lookup`]: what genie would refuse on the node is
//! refused here, with the same messages where genie has one (the checks live in `vfkube`).
//!
//! Every denial names the object, the field and the problem. Kinds:
//! - NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`): [`nad::validate_nad`];
//! - LogicalNetwork (`alpha.network.k8s.io/v1`): [`logical::validate_logical_network`];
//! - Pod (`v1`, CREATE only): [`pod::validate_pod`];
//! - NetworkPolicy (`networking.k8s.io/v1`) with `genieNetworkpolicy`, MultiNetworkPolicy
//!   (`k8s.cni.cncf.io/v1beta1`, `v1beta2`): [`policy`].
//!
//! DELETE and CONNECT are always allowed, as is a pod UPDATE (genie writes network-status) and any
//! subresource of these resources (a pod's status, binding, eviction). A kind the webhook does
//! not handle is denied, saying so: only a misconfigured webhook sends one.

pub mod logical;
pub mod nad;
pub mod pod;
pub mod policy;

use serde_json::Value;

use crate::lookup::{Lookup, Settings};
use crate::review::{AdmissionRequest, GroupVersionKind};

/// Why a review was denied: the `reason` label of `vfgenie_admission_denials_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The object does not decode, or a field breaks a rule.
    Invalid,
    /// A pod annotation does not parse.
    Annotation,
    /// A referenced object does not exist.
    NotFound,
    /// Namespace isolation forbids the reference.
    Isolation,
    /// A network config says what a tenant's config may not (host paths, devices, genie).
    Refused,
    /// A LogicalNetwork's subnet overlaps another on its physical network.
    Overlap,
    /// The pod does not request the devices its attachments need.
    Resources,
    /// The webhook does not handle this kind.
    UnhandledKind,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::Invalid,
        Reason::Annotation,
        Reason::NotFound,
        Reason::Isolation,
        Reason::Refused,
        Reason::Overlap,
        Reason::Resources,
        Reason::UnhandledKind,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::Annotation => "annotation",
            Reason::NotFound => "not_found",
            Reason::Isolation => "isolation",
            Reason::Refused => "refused",
            Reason::Overlap => "overlap",
            Reason::Resources => "resources",
            Reason::UnhandledKind => "unhandled_kind",
        }
    }
}

/// A denial: why, and the message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub message: String,
}

impl Denial {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// An allowed object's warnings, or the denial.
pub type Outcome = Result<Vec<String>, Denial>;

/// The kinds the webhook handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Pod,
    NetworkAttachmentDefinition,
    LogicalNetwork,
    NetworkPolicy,
    MultiNetworkPolicy,
}

impl Handled {
    /// The handled kind of a group/version/kind, if any.
    pub fn of(gvk: &GroupVersionKind) -> Option<Self> {
        match (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) {
            ("", "v1", "Pod") => Some(Self::Pod),
            ("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition") => {
                Some(Self::NetworkAttachmentDefinition)
            }
            ("alpha.network.k8s.io", "v1", "LogicalNetwork") => Some(Self::LogicalNetwork),
            ("networking.k8s.io", "v1", "NetworkPolicy") => Some(Self::NetworkPolicy),
            ("k8s.cni.cncf.io", "v1beta1" | "v1beta2", "MultiNetworkPolicy") => {
                Some(Self::MultiNetworkPolicy)
            }
            _ => None,
        }
    }

    /// The `kind` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            Self::LogicalNetwork => "LogicalNetwork",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::MultiNetworkPolicy => "MultiNetworkPolicy",
        }
    }
}

/// The resources whose objects the webhook validates (group, plural).
const OUR_RESOURCES: [(&str, &str); 5] = [
    ("", "pods"),
    ("k8s.cni.cncf.io", "network-attachment-definitions"),
    ("alpha.network.k8s.io", "logicalnetworks"),
    ("networking.k8s.io", "networkpolicies"),
    ("k8s.cni.cncf.io", "multi-networkpolicies"),
];

/// The rules applied to one admission request.
pub fn review(req: &AdmissionRequest, lookup: &dyn Lookup, settings: &Settings) -> Outcome {
    // A subresource of one of our resources (a pod's status, binding, eviction, ephemeral
    // containers) carries another kind or no network fields: nothing of ours to check.
    let subresource = req.sub_resource.as_deref().is_some_and(|s| !s.is_empty());
    let ours = req
        .resource
        .as_ref()
        .is_some_and(|r| OUR_RESOURCES.contains(&(r.group.as_str(), r.resource.as_str())));
    if subresource && ours {
        return Ok(Vec::new());
    }
    let Some(kind) = Handled::of(&req.kind) else {
        return Err(Denial::new(
            Reason::UnhandledKind,
            format!(
                "vfgenie-controller does not handle {} (resource {}); the webhook configuration should not send it here",
                req.kind,
                req.resource
                    .as_ref()
                    .map_or_else(|| "unknown".to_string(), |r| r.to_string())
            ),
        ));
    };
    match req.operation.as_str() {
        "CREATE" => {}
        "UPDATE" if kind != Handled::Pod => {}
        _ => return Ok(Vec::new()),
    }
    let Some(object) = &req.object else {
        return Err(Denial::new(
            Reason::Invalid,
            format!(
                "{} {}: the request carries no object to validate",
                kind.label(),
                req.display_name()
            ),
        ));
    };
    let namespace = req.namespace.as_deref().unwrap_or_default();
    match kind {
        Handled::Pod => pod::validate_pod_object(object, namespace, lookup, settings),
        Handled::NetworkAttachmentDefinition => nad::validate_nad_object(object, namespace),
        Handled::LogicalNetwork => {
            logical::validate_logical_network_object(object, namespace, lookup)
        }
        Handled::NetworkPolicy => policy::validate_network_policy(object, namespace, lookup),
        Handled::MultiNetworkPolicy => {
            policy::validate_multi_network_policy(object, namespace, lookup)
        }
    }
}

/// Decodes an object, or denies naming what it is and what did not decode.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    kind: &str,
    object: &Value,
    namespace: &str,
) -> Result<T, Denial> {
    T::deserialize(object).map_err(|e| {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        Denial::new(
            Reason::Invalid,
            format!("{kind} {namespace}/{name}: the object does not decode: {e}"),
        )
    })
}

/// The namespace of an object: its own, else the request's.
pub(crate) fn namespace_of(meta_ns: &str, request_ns: &str) -> String {
    if meta_ns.is_empty() {
        request_ns.to_string()
    } else {
        meta_ns.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::MemoryLookup;
    use serde_json::json;

    fn request(
        group: &str,
        version: &str,
        kind: &str,
        op: &str,
        object: Option<Value>,
    ) -> AdmissionRequest {
        serde_json::from_value(json!({
            "uid": "u", "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": "x"},
            "namespace": "default", "operation": op, "object": object,
        }))
        .unwrap()
    }

    #[test]
    fn operations_and_kinds_are_dispatched() {
        let l = MemoryLookup::new();
        let s = Settings::default();
        let bad_nad = json!({"metadata": {"name": "n"}, "spec": {"config": "{"}});
        let nad = |op, obj| {
            request(
                "k8s.cni.cncf.io",
                "v1",
                "NetworkAttachmentDefinition",
                op,
                obj,
            )
        };
        assert!(review(&nad("CREATE", Some(bad_nad.clone())), &l, &s).is_err());
        assert!(review(&nad("UPDATE", Some(bad_nad.clone())), &l, &s).is_err());
        assert!(review(&nad("DELETE", None), &l, &s).is_ok());
        assert!(review(&nad("CONNECT", None), &l, &s).is_ok());
        let d = review(&nad("CREATE", None), &l, &s).unwrap_err();
        assert!(d.message.contains("carries no object"), "{}", d.message);
        let bad_pod = json!({"metadata": {"name": "p", "annotations": {"cni": "../x"}}});
        assert!(review(
            &request("", "v1", "Pod", "CREATE", Some(bad_pod.clone())),
            &l,
            &s
        )
        .is_err());
        assert!(review(&request("", "v1", "Pod", "UPDATE", Some(bad_pod)), &l, &s).is_ok());
        let d = review(
            &request("apps", "v1", "Deployment", "CREATE", Some(json!({}))),
            &l,
            &s,
        )
        .unwrap_err();
        assert_eq!(d.reason, Reason::UnhandledKind);
        assert!(
            d.message.contains("kind apps/v1/Deployment"),
            "{}",
            d.message
        );
        // The namespace of the request fills a missing metadata.namespace.
        let d = review(&nad("CREATE", Some(bad_nad)), &l, &s).unwrap_err();
        assert!(
            d.message.contains("NetworkAttachmentDefinition default/n"),
            "{}",
            d.message
        );
        assert_eq!(Reason::ALL.len(), 8);
    }
}
