//! The objects the watches keep, as the reflector stores hold them: NADs and LogicalNetworks
//! decoded once to kube-types' types as they arrive ([`Cached`], the controller's approach),
//! MultiNetworkPolicies with their spec kept raw (it is parsed, and its problems reported, by
//! [`super::policies`]), and pods, namespaces and NetworkPolicies as metadata only, trimmed to
//! what the model reads.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as KubeMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::core::PartialObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use vfkube::annotations::NETWORK_STATUS;
use vfkube::objects::{LogicalNetwork, NetworkAttachmentDefinition, ObjectMeta};
use vfkube::policy::{GENIE_NETWORK_POLICY, POLICY_FOR};

/// How many cached objects did not decode to our types (kept as absent), over all kinds.
pub(super) static UNDECODABLE: AtomicU64 = AtomicU64::new(0);

/// One of the custom kinds we watch, with where it is served.
pub trait Cacheable: DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static {
    const GROUP: &'static str;
    const VERSION: &'static str;
    const KIND: &'static str;
    const PLURAL: &'static str;
}

impl Cacheable for NetworkAttachmentDefinition {
    const GROUP: &'static str = "k8s.cni.cncf.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "NetworkAttachmentDefinition";
    const PLURAL: &'static str = "network-attachment-definitions";
}

impl Cacheable for LogicalNetwork {
    const GROUP: &'static str = "alpha.network.k8s.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "LogicalNetwork";
    const PLURAL: &'static str = "logicalnetworks";
}

/// A MultiNetworkPolicy as it arrives: its metadata and its spec, not yet parsed. v1beta1 and
/// v1beta2 objects have the same shape here (the spec is a NetworkPolicy's).
#[derive(Debug, Clone, Deserialize)]
pub struct RawMultiPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
}

impl Cacheable for RawMultiPolicy {
    const GROUP: &'static str = "k8s.cni.cncf.io";
    const VERSION: &'static str = "v1beta1";
    const KIND: &'static str = "MultiNetworkPolicy";
    const PLURAL: &'static str = "multi-networkpolicies";
}

impl RawMultiPolicy {
    /// Keeps of the metadata what the policy engine reads (`policy-for`).
    fn trim(&mut self) {
        self.metadata.annotations.retain(|k, _| k == POLICY_FOR);
        self.metadata.labels.clear();
    }
}

/// A cached object: the metadata the reflector and its watcher read, and the object in our type
/// (`None` when it does not decode: treated as absent, logged once when it arrives).
#[derive(Debug, Clone)]
pub struct Cached<T> {
    meta: KubeMeta,
    object: Option<T>,
}

impl<T> Cached<T> {
    pub fn object(&self) -> Option<&T> {
        self.object.as_ref()
    }
}

impl<'de, T: Cacheable> Deserialize<'de> for Cached<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let field = |k: &str| {
            v.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let meta = KubeMeta {
            name: field("name"),
            namespace: field("namespace"),
            resource_version: field("resourceVersion"),
            uid: field("uid"),
            ..KubeMeta::default()
        };
        let object = match T::deserialize(&v) {
            Ok(t) => Some(t),
            Err(e) => {
                UNDECODABLE.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    kind = T::KIND,
                    namespace = meta.namespace.as_deref().unwrap_or(""),
                    name = meta.name.as_deref().unwrap_or(""),
                    error = %e,
                    "object does not decode; treated as absent"
                );
                None
            }
        };
        Ok(Self { meta, object })
    }
}

impl<T: Cacheable> kube::Resource for Cached<T> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::PLURAL)
    }

    fn meta(&self) -> &KubeMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut KubeMeta {
        &mut self.meta
    }
}

/// Keeps of a MultiNetworkPolicy what [`super::policies`] reads.
pub(super) fn trim_multi(c: &mut Cached<RawMultiPolicy>) {
    if let Some(o) = c.object.as_mut() {
        o.trim();
    }
}

fn trim_meta(m: &mut KubeMeta) {
    m.managed_fields = None;
    m.owner_references = None;
    m.finalizers = None;
}

/// A pod: name, namespace, uid, resourceVersion, labels and the network-status annotation.
pub(super) fn trim_pod(p: &mut PartialObjectMeta<Pod>) {
    trim_meta(&mut p.metadata);
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.retain(|k, _| k == NETWORK_STATUS);
    }
}

/// A namespace: its labels (namespaceSelector).
pub(super) fn trim_namespace(n: &mut PartialObjectMeta<Namespace>) {
    trim_meta(&mut n.metadata);
    n.metadata.annotations = None;
}

/// A NetworkPolicy: only `genieNetworkpolicy` matters (the rest is the cluster's own policy
/// provider's).
pub(super) fn trim_network_policy(p: &mut PartialObjectMeta<NetworkPolicy>) {
    trim_meta(&mut p.metadata);
    p.metadata.labels = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.retain(|k, _| k == GENIE_NETWORK_POLICY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn custom_kinds_are_served_where_the_crds_say() {
        assert_eq!(
            Cached::<RawMultiPolicy>::url_path(&(), Some("a")),
            "/apis/k8s.cni.cncf.io/v1beta1/namespaces/a/multi-networkpolicies"
        );
        assert_eq!(
            Cached::<LogicalNetwork>::url_path(&(), None),
            "/apis/alpha.network.k8s.io/v1/logicalnetworks"
        );
    }

    #[test]
    fn a_multi_policy_keeps_its_raw_spec_and_only_policy_for() {
        let mut c: Cached<RawMultiPolicy> = serde_json::from_value(json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta2", "kind": "MultiNetworkPolicy",
            "metadata": {"name": "p", "namespace": "a", "uid": "u", "resourceVersion": "4",
                "annotations": {POLICY_FOR: "blue", "other": "x"}},
            "spec": {"podSelector": 5}}))
        .unwrap();
        trim_multi(&mut c);
        let o = c.object().unwrap();
        assert_eq!(o.metadata.annotations.len(), 1);
        assert_eq!(o.spec, json!({"podSelector": 5}));
        assert_eq!(c.meta().uid.as_deref(), Some("u"));
        let bad: Cached<NetworkAttachmentDefinition> =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"config": 1}}))
                .unwrap();
        assert!(bad.object().is_none());
    }
}
