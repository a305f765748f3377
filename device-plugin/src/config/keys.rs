//! Go's JSON decoder, which the SR-IOV network device plugin uses, matches object keys to struct
//! fields case-insensitively and ignores keys it does not know. Existing config files rely on both,
//! so before typed decoding each object is brought to our canonical key spelling here.

use serde_json::{Map, Value};

/// The keys of one kind of object, and the kinds of the objects under some of them (an object, or
/// a list of objects).
#[derive(Debug)]
pub struct Keys {
    pub known: &'static [&'static str],
    pub nested: &'static [(&'static str, &'static Keys)],
}

/// A device-plugin config file as genie reads it (the agent's `provisioning` is known, unread).
pub const POOLS_FILE: Keys = Keys {
    known: &["resourceList", "provisioning"],
    nested: &[("resourceList", &super::resource::RESOURCE)],
};

/// [`canonicalize`] of `v` and of every object below it that `keys` describes; each key dropped
/// is logged with its field (`resourceList[0].selectors.colour`).
pub fn canonicalize_tree(v: &mut Value, keys: &Keys, at: &str) {
    let Value::Object(obj) = v else { return };
    for key in canonicalize(obj, keys.known) {
        let field = if at.is_empty() {
            key
        } else {
            format!("{at}.{key}")
        };
        tracing::warn!(%field, "unknown config key ignored");
    }
    for (key, inner) in keys.nested {
        let field = if at.is_empty() {
            (*key).to_string()
        } else {
            format!("{at}.{key}")
        };
        match obj.get_mut(*key) {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    canonicalize_tree(item, inner, &format!("{field}[{i}]"));
                }
            }
            Some(o @ Value::Object(_)) => canonicalize_tree(o, inner, &field),
            _ => {}
        }
    }
}

/// Renames the keys of `obj` that match one of `known` case-insensitively to that spelling and
/// removes the keys that match none, returning the removed keys (for a warning). An exact match wins
/// over a case-insensitive one, as in Go.
pub fn canonicalize(obj: &mut Map<String, Value>, known: &[&str]) -> Vec<String> {
    let mut ignored = Vec::new();
    let keys: Vec<String> = obj.keys().cloned().collect();
    for key in keys {
        if known.contains(&key.as_str()) {
            continue;
        }
        match known.iter().find(|k| k.eq_ignore_ascii_case(&key)) {
            Some(canonical) if !obj.contains_key(*canonical) => {
                if let Some(v) = obj.remove(&key) {
                    obj.insert((*canonical).to_string(), v);
                }
            }
            _ => {
                obj.remove(&key);
                ignored.push(key);
            }
        }
    }
    ignored
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_match_case_insensitively_and_unknown_ones_go() {
        let mut v = json!({"ResourceName": "a", "RESOURCEPREFIX": "b", "colour": 1});
        let obj = v.as_object_mut().unwrap();
        let ignored = canonicalize(obj, &["resourceName", "resourcePrefix"]);
        assert_eq!(ignored, vec!["colour".to_string()]);
        assert_eq!(v, json!({"resourceName": "a", "resourcePrefix": "b"}));
    }

    #[test]
    fn nested_objects_and_lists_of_objects_are_canonical_too() {
        let mut v = json!({"ResourceList": [
            {"RESOURCENAME": "a", "Selectors": {"VENDORS": ["8086"], "x": 1}},
            {"resourceName": "b", "selectors": [{"pfnames": ["p0"]}, 7]},
            "not an object"
        ], "colour": 2});
        canonicalize_tree(&mut v, &POOLS_FILE, "");
        assert_eq!(
            v,
            json!({"resourceList": [
                {"resourceName": "a", "selectors": {"vendors": ["8086"]}},
                {"resourceName": "b", "selectors": [{"pfNames": ["p0"]}, 7]},
                "not an object"
            ]})
        );
    }

    #[test]
    fn exact_spelling_wins_over_a_folded_one() {
        let mut v = json!({"resourceName": "exact", "resourcename": "folded"});
        let obj = v.as_object_mut().unwrap();
        canonicalize(obj, &["resourceName"]);
        assert_eq!(v, json!({"resourceName": "exact"}));
    }
}
