//! Network policies: a NetworkPolicy's `genieNetworkpolicy` annotation parses
//! ([`vfkube::policy::parse_genie_policy`]); a MultiNetworkPolicy's `k8s.v1.cni.cncf.io/policy-for`
//! parses and its `spec` has NetworkPolicy's shape. Networks that do not exist (yet) are warned
//! about, not denied: a policy may be written before its networks.

use k8s_openapi::api::networking::v1::NetworkPolicySpec;
use serde::Deserialize;
use serde_json::Value;
use vfkube::objects::ObjectMeta;
use vfkube::policy::{parse_genie_policy, parse_policy_for, GENIE_NETWORK_POLICY, POLICY_FOR};

use super::{namespace_of, Denial, Outcome, Reason};
use crate::lookup::Lookup;

fn meta(kind: &str, object: &Value, request_namespace: &str) -> Result<ObjectMeta, Denial> {
    let mut m: ObjectMeta = match object.get("metadata") {
        Some(v) => ObjectMeta::deserialize(v).map_err(|e| {
            Denial::new(
                Reason::Invalid,
                format!("{kind} {request_namespace}/: metadata does not decode: {e}"),
            )
        })?,
        None => ObjectMeta::default(),
    };
    m.namespace = namespace_of(&m.namespace, request_namespace);
    Ok(m)
}

/// A `networking.k8s.io/v1` NetworkPolicy: only its `genieNetworkpolicy` annotation is ours.
pub fn validate_network_policy(
    object: &Value,
    request_namespace: &str,
    lookup: &dyn Lookup,
) -> Outcome {
    let m = meta("NetworkPolicy", object, request_namespace)?;
    let Some(value) = m.annotations.get(GENIE_NETWORK_POLICY) else {
        return Ok(Vec::new());
    };
    let rules = parse_genie_policy(value).map_err(|e| {
        Denial::new(
            Reason::Annotation,
            format!("NetworkPolicy {}/{}: {e}", m.namespace, m.name),
        )
    })?;
    let mut missing: Vec<&str> = rules
        .iter()
        .flat_map(|r| std::iter::once(&r.network_selector).chain(&r.peer_networks))
        .map(String::as_str)
        .filter(|n| lookup.logical_network(&m.namespace, n).is_none())
        .collect();
    missing.sort_unstable();
    missing.dedup();
    Ok(missing
        .into_iter()
        .map(|n| {
            format!(
                "NetworkPolicy {}/{}: annotation {GENIE_NETWORK_POLICY} names LogicalNetwork {}/{n}, which does not exist yet",
                m.namespace, m.name, m.namespace
            )
        })
        .collect())
}

/// A `k8s.cni.cncf.io` MultiNetworkPolicy.
pub fn validate_multi_network_policy(
    object: &Value,
    request_namespace: &str,
    lookup: &dyn Lookup,
) -> Outcome {
    let m = meta("MultiNetworkPolicy", object, request_namespace)?;
    let what = format!("MultiNetworkPolicy {}/{}", m.namespace, m.name);
    let spec = object
        .get("spec")
        .ok_or_else(|| Denial::new(Reason::Invalid, format!("{what}: spec is missing")))?;
    NetworkPolicySpec::deserialize(spec).map_err(|e| {
        Denial::new(
            Reason::Invalid,
            format!("{what}: spec does not have NetworkPolicy's shape: {e}"),
        )
    })?;
    let Some(value) = m.annotations.get(POLICY_FOR) else {
        return Ok(vec![format!(
            "{what}: it has no annotation {POLICY_FOR}, so it applies to no network"
        )]);
    };
    let targets = parse_policy_for(value)
        .map_err(|e| Denial::new(Reason::Annotation, format!("{what}: {e}")))?;
    Ok(targets
        .iter()
        .filter_map(|t| {
            let ns = t.namespace.as_deref().unwrap_or(&m.namespace);
            lookup.nad(ns, &t.name).is_none().then(|| {
                format!(
                    "{what}: annotation {POLICY_FOR} names NetworkAttachmentDefinition {ns}/{}, which does not exist yet",
                    t.name
                )
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::MemoryLookup;
    use serde_json::json;

    fn lookup() -> MemoryLookup {
        let l = MemoryLookup::new();
        l.add_logical_network(
            serde_json::from_value(json!({"metadata": {"name": "net1", "namespace": "default"}, "spec": {"plugin": "bridge"}}))
                .unwrap(),
        );
        l
    }

    fn np(annotation: Option<&str>) -> Value {
        let mut v =
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"podSelector": {}}});
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = json!({GENIE_NETWORK_POLICY: a});
        }
        v
    }

    #[test]
    fn genie_policies_parse_or_are_denied() {
        let l = lookup();
        assert!(validate_network_policy(&np(None), "default", &l)
            .unwrap()
            .is_empty());
        let w = validate_network_policy(
            &np(Some("[{networkSelector: net1, peerNetworks: net2,net3}]")),
            "default",
            &l,
        )
        .unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("default/net2"), "{w:?}");
        let d = validate_network_policy(&np(Some("[{networkSelector: ../x}]")), "default", &l)
            .unwrap_err();
        assert!(
            d.message
                .starts_with("NetworkPolicy default/p: annotation genieNetworkpolicy"),
            "{}",
            d.message
        );
    }

    #[test]
    fn multi_network_policies_need_a_policy_for_and_a_network_policy_spec() {
        let l = lookup();
        let mnp = |a: Option<&str>, spec: Value| {
            let mut v = json!({"metadata": {"name": "m", "namespace": "default"}, "spec": spec});
            if let Some(a) = a {
                v["metadata"]["annotations"] = json!({POLICY_FOR: a});
            }
            v
        };
        let good = json!({"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 80}]}]});
        let w =
            validate_multi_network_policy(&mnp(Some("blue"), good.clone()), "default", &l).unwrap();
        assert!(w[0].contains("default/blue"), "{w:?}");
        let w = validate_multi_network_policy(&mnp(None, good.clone()), "default", &l).unwrap();
        assert!(w[0].contains("applies to no network"), "{w:?}");
        let d =
            validate_multi_network_policy(&mnp(Some("a/b/c"), good), "default", &l).unwrap_err();
        assert!(d.message.contains(POLICY_FOR), "{}", d.message);
        let d = validate_multi_network_policy(
            &mnp(Some("blue"), json!({"podSelector": 3})),
            "default",
            &l,
        )
        .unwrap_err();
        assert!(
            d.message.contains("MultiNetworkPolicy default/m: spec"),
            "{}",
            d.message
        );
    }
}
