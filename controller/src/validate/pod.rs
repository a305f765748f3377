//! Pods (CREATE): the network annotations of both styles parse ([`vfkube::annotations`]), no
//! interface name is requested twice, every NetworkAttachmentDefinition and LogicalNetwork named
//! exists where genie will look for it (the namespace named, else the pod's: genie does not fall
//! back to the global namespaces), namespace isolation as genie applies it, and the pod's
//! containers request at least as many devices of each NAD resource as it has attachments to
//! NADs of that resource.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use vfkube::annotations::{
    parse_pod_annotations, NetworkSelection, PodRef, DEFAULT_NETWORK, GENIE_NETWORKS, NETWORKS,
    NETWORK_STATUS,
};
use vfkube::interfaces::check_requested_interfaces;
use vfkube::objects::{ObjectMeta, RESOURCE_NAME_ANNOTATION};

use super::{decode, nad::check_usable, namespace_of, Denial, Outcome, Reason};
use crate::lookup::{Lookup, Settings};

/// The parts of a pod admission reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodObject {
    #[serde(default)]
    pub metadata: PodMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMeta {
    #[serde(flatten)]
    pub meta: ObjectMeta,
    #[serde(default)]
    pub generate_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub resources: Resources,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, Value>,
    #[serde(default)]
    pub limits: BTreeMap<String, Value>,
}

impl PodObject {
    fn pod_ref(&self, request_namespace: &str) -> PodRef {
        let m = &self.metadata;
        let name = if !m.meta.name.is_empty() {
            m.meta.name.clone()
        } else if !m.generate_name.is_empty() {
            format!("{}*", m.generate_name)
        } else {
            "(unnamed)".to_string()
        };
        PodRef::new(namespace_of(&m.meta.namespace, request_namespace), name)
    }

    /// How many devices of `resource` the pod's containers request (requests, else limits).
    fn requested(&self, resource: &str) -> Result<u64, String> {
        let mut total: u64 = 0;
        for c in &self.spec.containers {
            let q = c
                .resources
                .requests
                .get(resource)
                .or_else(|| c.resources.limits.get(resource));
            let n = match q {
                None => 0,
                Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad_quantity(c, resource))?,
                Some(Value::String(s)) => s
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| bad_quantity(c, resource))?,
                Some(_) => return Err(bad_quantity(c, resource)),
            };
            total = total.saturating_add(n);
        }
        Ok(total)
    }
}

fn bad_quantity(c: &Container, resource: &str) -> String {
    format!(
        "container {:?}: spec.containers[].resources of {resource} is not a whole number of devices",
        c.name
    )
}

/// Validates a pod being created.
pub fn validate_pod(
    pod: &PodObject,
    request_namespace: &str,
    lookup: &dyn Lookup,
    settings: &Settings,
) -> Outcome {
    let pod_ref = pod.pod_ref(request_namespace);
    // The node's policy engine takes peers' addresses from network-status: a pod that came with
    // one of its own could claim another pod's addresses and be let through as that pod.
    if pod.metadata.meta.annotations.contains_key(NETWORK_STATUS) {
        return Err(Denial::new(
            Reason::Refused,
            format!(
                "pod {pod_ref}: annotation {NETWORK_STATUS} is written by the node's CNI plugin once the pod's interfaces exist; a pod cannot be created with one"
            ),
        ));
    }
    let req = parse_pod_annotations(&pod_ref, &pod.metadata.meta.annotations)
        .map_err(|e| Denial::new(Reason::Annotation, e.to_string()))?;
    check_requested_interfaces(&pod_ref, &req)
        .map_err(|e| Denial::new(Reason::Annotation, e.to_string()))?;
    let mut warnings = Vec::new();
    // Attachments per device-plugin resource.
    let mut needed: BTreeMap<String, u64> = BTreeMap::new();
    let selections = req
        .default_network
        .iter()
        .map(|s| (DEFAULT_NETWORK, s))
        .chain(req.networks.iter().map(|s| (NETWORKS, s)));
    for (annotation, sel) in selections {
        if let Some(r) = check_selection(&pod_ref, annotation, sel, lookup, settings)? {
            *needed.entry(r).or_default() += 1;
        }
    }
    match &req.genie_plugins {
        Some(_) => {
            if !req.logical_networks.is_empty() {
                warnings.push(format!(
                    "pod {pod_ref}: annotation {GENIE_NETWORKS} is ignored because annotation cni names plugins"
                ));
            }
        }
        None => {
            for l in &req.logical_networks {
                if lookup
                    .logical_network(&pod_ref.namespace, &l.name)
                    .is_none()
                {
                    return Err(Denial::new(
                        Reason::NotFound,
                        format!(
                            "pod {pod_ref}: annotation {GENIE_NETWORKS} names LogicalNetwork {}/{}, which does not exist",
                            pod_ref.namespace, l.name
                        ),
                    ));
                }
            }
        }
    }
    for (resource, n) in needed {
        let have = pod
            .requested(&resource)
            .map_err(|e| Denial::new(Reason::Invalid, format!("pod {pod_ref}: {e}")))?;
        if have < n {
            return Err(Denial::new(
                Reason::Resources,
                format!(
                    "pod {pod_ref}: its network annotations attach {n} network(s) of resource {resource} ({RESOURCE_NAME_ANNOTATION}), but its containers request {have} in spec.containers[].resources"
                ),
            ));
        }
    }
    Ok(warnings)
}

/// One NPWG selection: isolation, existence, a config genie would use. Returns the NAD's
/// resource name, when it has one.
fn check_selection(
    pod: &PodRef,
    annotation: &str,
    sel: &NetworkSelection,
    lookup: &dyn Lookup,
    settings: &Settings,
) -> Result<Option<String>, Denial> {
    let ns = sel.namespace_or(&pod.namespace);
    settings
        .isolation
        .check(&pod.namespace, &pod.name, ns, &sel.name)
        .map_err(|e| Denial::new(Reason::Isolation, format!("{e} (annotation {annotation})")))?;
    let Some(nad) = lookup.nad(ns, &sel.name) else {
        let why = if lookup.namespace_exists(ns) {
            "which does not exist".to_string()
        } else {
            format!("but namespace {ns} does not exist")
        };
        return Err(Denial::new(
            Reason::NotFound,
            format!(
                "pod {pod}: annotation {annotation} names NetworkAttachmentDefinition {ns}/{}, {why}",
                sel.name
            ),
        ));
    };
    check_usable(&nad).map_err(|d| {
        Denial::new(
            d.reason,
            format!(
                "pod {pod}: annotation {annotation} names a network genie would refuse: {}",
                d.message
            ),
        )
    })?;
    Ok(nad.resource_name().map(str::to_string))
}

/// Decodes the request's object and validates it.
pub fn validate_pod_object(
    object: &Value,
    request_namespace: &str,
    lookup: &dyn Lookup,
    settings: &Settings,
) -> Outcome {
    let pod: PodObject = decode("pod", object, request_namespace)?;
    validate_pod(&pod, request_namespace, lookup, settings)
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
