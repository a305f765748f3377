//! A NetworkAttachmentDefinition's `spec.config`: the checks genie applies before a tenant's
//! config reaches any plugin, shared with the controller's admission so both refuse the same.

use serde_json::{Map, Value};

use crate::annotations::is_plugin_name;
use crate::untrusted::{check_config, Refused, TenantPaths};

/// A `spec.config` genie will not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecConfigError {
    #[error("NetworkAttachmentDefinition {namespace}/{name}: spec.config is not a valid CNI config: {problem}")]
    Invalid {
        namespace: String,
        name: String,
        problem: String,
    },
    #[error("NetworkAttachmentDefinition {namespace}/{name}: spec.config is refused: {refused}")]
    Untrusted {
        namespace: String,
        name: String,
        refused: Refused,
    },
}

/// Parses and checks a NAD's `spec.config` (not empty): a JSON object of the shape of a conf or a
/// conflist ([`check_shape`]), a string `name` (set to the NAD's `name` when absent), and nothing
/// [`check_config`] refuses.
pub fn parse_spec_config(
    namespace: &str,
    name: &str,
    spec: &str,
    allowed: &TenantPaths,
) -> Result<Map<String, Value>, SpecConfigError> {
    let invalid = |problem: String| SpecConfigError::Invalid {
        namespace: namespace.to_string(),
        name: name.to_string(),
        problem,
    };
    let v: Value = serde_json::from_str(spec.trim()).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(mut config) = v else {
        return Err(invalid("it is not a JSON object".into()));
    };
    check_shape(&config).map_err(invalid)?;
    match config.get("name") {
        None | Some(Value::Null) => {
            config.insert("name".into(), Value::String(name.to_string()));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(invalid("\"name\" must be a string".into())),
    }
    check_config(&config, allowed).map_err(|refused| SpecConfigError::Untrusted {
        namespace: namespace.to_string(),
        name: name.to_string(),
        refused,
    })?;
    Ok(config)
}

/// A conf needs a plain `type`; a conflist needs a non-empty `plugins` list of such confs.
pub fn check_shape(config: &Map<String, Value>) -> Result<(), String> {
    let check_type = |c: &Map<String, Value>| -> Result<(), String> {
        match c.get("type").and_then(Value::as_str) {
            Some(t) if is_plugin_name(t) => Ok(()),
            Some(t) => Err(format!("plugin type {t:?} is not a plain file name")),
            None => Err("it has no \"type\"".into()),
        }
    };
    match config.get("plugins") {
        Some(Value::Array(plugins)) => {
            if plugins.is_empty() {
                return Err("\"plugins\" is empty".into());
            }
            for p in plugins {
                check_type(
                    p.as_object()
                        .ok_or("an element of \"plugins\" is not an object")?,
                )?;
            }
            Ok(())
        }
        Some(_) => Err("\"plugins\" is not a list".into()),
        None => check_type(config),
    }
}

/// Whether a conf (or any plugin of a conflist) is genie's own (`"type": "genie"`).
pub fn is_genie(c: &Map<String, Value>) -> bool {
    let genie = |c: &Map<String, Value>| {
        c.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("genie"))
    };
    match c.get("plugins") {
        Some(Value::Array(p)) => p.iter().filter_map(Value::as_object).any(genie),
        _ => genie(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Map<String, Value>, SpecConfigError> {
        parse_spec_config("ns", "blue", spec, &TenantPaths::default())
    }

    #[test]
    fn confs_and_conflists_pass_and_get_the_nads_name() {
        let c = parse(r#"{"cniVersion":"1.0.0","type":"macvlan"}"#).unwrap();
        assert_eq!(c["name"], "blue");
        let c = parse(r#"{"name":"x","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#).unwrap();
        assert_eq!(c["name"], "x");
    }

    #[test]
    fn bad_shapes_and_refused_keys_name_the_nad() {
        for (spec, needle) in [
            ("not json", "not a valid CNI config"),
            ("[1]", "not a JSON object"),
            (r#"{"name":"x"}"#, "no \\\"type\\\""),
            (r#"{"plugins":[]}"#, "\\\"plugins\\\" is empty"),
            (r#"{"plugins":{}}"#, "not a list"),
            (r#"{"plugins":[{"type":"a/b"}]}"#, "plain file name"),
            (r#"{"type":"bridge","name":3}"#, "must be a string"),
            (r#"{"type":"genie"}"#, "spec.config is refused"),
            (
                r#"{"type":"bridge","ipam":{"dataDir":"/etc"}}"#,
                "ipam.dataDir",
            ),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains("NetworkAttachmentDefinition ns/blue"), "{e}");
            assert!(
                e.contains(needle) || format!("{e:?}").contains(needle),
                "{spec}: {e}"
            );
        }
    }

    #[test]
    fn genie_is_recognised_in_confs_and_conflists() {
        let m = |v: Value| v.as_object().cloned().unwrap();
        assert!(is_genie(&m(serde_json::json!({"type": "Genie"}))));
        assert!(is_genie(&m(
            serde_json::json!({"plugins": [{"type": "a"}, {"type": "genie"}]})
        )));
        assert!(!is_genie(&m(serde_json::json!({"type": "bridge"}))));
    }
}
