//! Go's `encoding/json`, which the plugins we stand in for decode their configs with, matches
//! object keys to struct fields case-insensitively and ignores keys it does not know. Configs
//! written for them rely on both, so before typed decoding an object is brought to our canonical
//! key spelling here.

use serde_json::{Map, Value};

/// Renames the keys of `obj` that match one of `known` case-insensitively to that spelling and
/// removes the keys that match none, returning the removed keys (for a warning). An exact match
/// wins over a case-insensitive one.
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

/// [`canonicalize`] of a copy of `obj`, for a typed decoding that must not change the original.
pub fn canonical(obj: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    let mut copy = obj.clone();
    canonicalize(&mut copy, known);
    copy
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
    fn exact_spelling_wins_over_a_folded_one() {
        let mut v = json!({"resourceName": "exact", "resourcename": "folded"});
        let obj = v.as_object_mut().unwrap();
        canonicalize(obj, &["resourceName"]);
        assert_eq!(v, json!({"resourceName": "exact"}));
        let original = json!({"ResourceName": "a"});
        let copy = canonical(original.as_object().unwrap(), &["resourceName"]);
        assert_eq!(Value::Object(copy), json!({"resourceName": "a"}));
        assert_eq!(original, json!({"ResourceName": "a"}));
    }
}
