//! NetworkAttachmentDefinitions: a DNS-1123 name, a `spec.config` genie would use (a conf or
//! conflist of plain plugin types, never genie, nothing [`vfkube::untrusted`] refuses with the
//! default `TenantPaths`), and a valid `k8s.v1.cni.cncf.io/resourceName`.

use serde_json::{Map, Value};
use vfkube::netconf::{parse_spec_config, SpecConfigError};
use vfkube::objects::{is_dns_label, NetworkAttachmentDefinition, RESOURCE_NAME_ANNOTATION};
use vfkube::resource::validate_resource_name;
use vfkube::untrusted::TenantPaths;

use super::{decode, namespace_of, Denial, Outcome, Reason};

/// The checks of a NAD's `spec.config` and resourceName that genie applies when a pod uses it.
/// Returns the parsed config, `None` when it is empty (the node's conf file of that name).
pub fn check_usable(
    nad: &NetworkAttachmentDefinition,
) -> Result<Option<Map<String, Value>>, Denial> {
    let (ns, name) = (&nad.metadata.namespace, &nad.metadata.name);
    if let Some(r) = nad.resource_name() {
        validate_resource_name(r).map_err(|e| {
            Denial::new(
                Reason::Invalid,
                format!(
                    "NetworkAttachmentDefinition {ns}/{name}: annotation {RESOURCE_NAME_ANNOTATION} is invalid: {e}"
                ),
            )
        })?;
    }
    if nad.spec.config.trim().is_empty() {
        return Ok(None);
    }
    parse_spec_config(ns, name, &nad.spec.config, &TenantPaths::default())
        .map(Some)
        .map_err(|e| {
            let reason = match e {
                SpecConfigError::Invalid { .. } => Reason::Invalid,
                SpecConfigError::Untrusted { .. } => Reason::Refused,
            };
            Denial::new(reason, e.to_string())
        })
}

/// Validates a NetworkAttachmentDefinition being created or updated.
pub fn validate_nad(nad: &NetworkAttachmentDefinition) -> Outcome {
    let (ns, name) = (&nad.metadata.namespace, &nad.metadata.name);
    if !is_dns_label(name) {
        return Err(Denial::new(
            Reason::Invalid,
            format!(
                "NetworkAttachmentDefinition {ns}/{name}: metadata.name {name:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63); pods could not name it"
            ),
        ));
    }
    let mut warnings = Vec::new();
    match check_usable(nad)? {
        None => warnings.push(format!(
            "NetworkAttachmentDefinition {ns}/{name}: spec.config is empty, so each node uses its conf file whose name is {name:?}"
        )),
        Some(config) => match config.get("cniVersion") {
            None => warnings.push(format!(
                "NetworkAttachmentDefinition {ns}/{name}: spec.config has no cniVersion"
            )),
            Some(Value::String(_)) => {}
            Some(_) => {
                return Err(Denial::new(
                    Reason::Invalid,
                    format!(
                        "NetworkAttachmentDefinition {ns}/{name}: spec.config is not a valid CNI config: \"cniVersion\" must be a string"
                    ),
                ))
            }
        },
    }
    Ok(warnings)
}

/// Decodes the request's object and validates it.
pub fn validate_nad_object(object: &Value, request_namespace: &str) -> Outcome {
    let mut nad: NetworkAttachmentDefinition =
        decode("NetworkAttachmentDefinition", object, request_namespace)?;
    nad.metadata.namespace = namespace_of(&nad.metadata.namespace, request_namespace);
    validate_nad(&nad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nad(name: &str, config: &str, resource: Option<&str>) -> NetworkAttachmentDefinition {
        let mut v =
            json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"config": config}});
        if let Some(r) = resource {
            v["metadata"]["annotations"] = json!({RESOURCE_NAME_ANNOTATION: r});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn good_nads_pass_with_warnings_where_useful() {
        let w = validate_nad(&nad(
            "blue",
            r#"{"cniVersion":"1.0.0","type":"macvlan"}"#,
            None,
        ))
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let w = validate_nad(&nad("blue", "", Some("intel.com/sriov_a"))).unwrap();
        assert!(w[0].contains("spec.config is empty"), "{w:?}");
        let w = validate_nad(&nad("blue", r#"{"type":"bridge"}"#, None)).unwrap();
        assert!(w[0].contains("cniVersion"), "{w:?}");
    }

    #[test]
    fn bad_nads_are_denied_naming_object_and_field() {
        for (n, reason, field) in [
            (nad("../x", "", None), Reason::Invalid, "metadata.name"),
            (nad("Blue", "", None), Reason::Invalid, "metadata.name"),
            (nad("blue", "{", None), Reason::Invalid, "spec.config"),
            (
                nad("blue", r#"{"type":"a/b"}"#, None),
                Reason::Invalid,
                "spec.config",
            ),
            (
                nad("blue", r#"{"type":"genie"}"#, None),
                Reason::Refused,
                "spec.config",
            ),
            (
                nad(
                    "blue",
                    r#"{"plugins":[{"type":"bridge"},{"type":"genie"}]}"#,
                    None,
                ),
                Reason::Refused,
                "plugins[1].type",
            ),
            (
                nad(
                    "blue",
                    r#"{"type":"bridge","ipam":{"type":"host-local","dataDir":"/etc"}}"#,
                    None,
                ),
                Reason::Refused,
                "ipam.dataDir",
            ),
            (
                nad("blue", r#"{"type":"x","kubeconfig":"/a"}"#, None),
                Reason::Refused,
                "kubeconfig",
            ),
            (
                nad("blue", r#"{"type":"x","cniVersion":1}"#, None),
                Reason::Invalid,
                "cniVersion",
            ),
            (
                nad("blue", "", Some("../x/y")),
                Reason::Invalid,
                RESOURCE_NAME_ANNOTATION,
            ),
        ] {
            let d = validate_nad(&n).unwrap_err();
            assert_eq!(d.reason, reason, "{}", d.message);
            assert!(
                d.message.contains("NetworkAttachmentDefinition default/"),
                "{}",
                d.message
            );
            assert!(d.message.contains(field), "{}", d.message);
        }
    }
}
