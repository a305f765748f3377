//! Decoding configs written for Go programs (sriov-cni, the SR-IOV network device plugin,
//! CNI-Genie) with serde derives, as Go's `encoding/json` reads them, and with every problem still
//! reported by field:
//!
//! - [`keys`]: Go matches object keys to fields case-insensitively (an exact match first) and
//!   ignores keys it does not know. Before a typed decode, objects are brought to our spelling.
//! - [`Loose`]: a field that keeps a value of the wrong JSON type instead of failing the whole
//!   decode, so the validation step can name the field (and go on to the next one). `null` reads
//!   as absent, as in Go.
//! - [`Obj`]: a struct that only a JSON object decodes into (serde's derive also takes an array,
//!   by position, which a config never means).
//! - [`Present`]: whether a key is there at all, whatever its value.

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

/// A field as the config has it: absent (or `null`), a value of the type asked for, or some
/// other JSON value, kept for the message.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Loose<T> {
    #[default]
    Absent,
    Ok(T),
    Wrong(Value),
}

impl<T> Loose<T> {
    /// The value, when it is there and of the right type.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Loose::Ok(t) => Some(t),
            _ => None,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        if v.is_null() {
            return Ok(Loose::Absent);
        }
        Ok(match T::deserialize(&v) {
            Ok(t) => Loose::Ok(t),
            Err(_) => Loose::Wrong(v),
        })
    }
}

/// A struct decoded only from a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        if !v.is_object() {
            return Err(D::Error::custom("not an object"));
        }
        T::deserialize(&v).map(Obj).map_err(D::Error::custom)
    }
}

/// Whether a key is there at all, whatever its value (`null` included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// The kind of a JSON value, for messages (`"a string"`, `"an object"`).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub mod keys {
    //! Go's key matching, before a typed decode.

    use serde_json::{Map, Value};

    /// Renames the keys of `obj` that match one of `known` case-insensitively to that spelling
    /// and removes the keys that match none, returning the removed keys. An exact match wins over
    /// a case-insensitive one, as in Go.
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

    /// The keys of one kind of object, and the kinds of the objects under some of them (an
    /// object, or a list of objects).
    #[derive(Debug)]
    pub struct Keys {
        pub known: &'static [&'static str],
        pub nested: &'static [(&'static str, &'static Keys)],
    }

    /// [`canonicalize`] of `v` and of every object below it that `keys` describes; returns each
    /// key dropped with its field (`resourceList[0].selectors.colour`), for a warning.
    pub fn canonicalize_tree(v: &mut Value, keys: &Keys, at: &str) -> Vec<String> {
        let mut dropped = Vec::new();
        walk(v, keys, at, &mut dropped);
        dropped
    }

    fn walk(v: &mut Value, keys: &Keys, at: &str, dropped: &mut Vec<String>) {
        let Value::Object(obj) = v else { return };
        let field = |key: &str| {
            if at.is_empty() {
                key.to_string()
            } else {
                format!("{at}.{key}")
            }
        };
        for key in canonicalize(obj, keys.known) {
            dropped.push(field(&key));
        }
        for (key, inner) in keys.nested {
            let at = field(key);
            match obj.get_mut(*key) {
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        walk(item, inner, &format!("{at}[{i}]"), dropped);
                    }
                }
                Some(o @ Value::Object(_)) => walk(o, inner, &at, dropped),
                _ => {}
            }
        }
    }

    /// [`canonicalize_tree`] of a copy, for a typed decode that must leave the original as it is.
    pub fn canonical(v: &Value, keys: &Keys) -> Value {
        let mut copy = v.clone();
        canonicalize_tree(&mut copy, keys, "");
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::keys::*;
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct S {
        n: Loose<u32>,
        s: Loose<String>,
        o: Loose<Obj<Inner>>,
        p: Present,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        a: Loose<bool>,
    }

    #[test]
    fn wrong_types_are_kept_and_nulls_are_absent() {
        let s: S =
            serde_json::from_value(json!({"n": "x", "s": null, "o": [true], "p": null})).unwrap();
        assert_eq!(s.n, Loose::Wrong(json!("x")));
        assert_eq!(s.s, Loose::Absent);
        assert_eq!(s.o, Loose::Wrong(json!([true])));
        assert_eq!(s.p, Present(true));
        let s: S = serde_json::from_value(json!({"n": 3, "o": {"a": true}})).unwrap();
        assert_eq!(s.n, Loose::Ok(3));
        assert_eq!(s.o.ok(), Some(&Obj(Inner { a: Loose::Ok(true) })));
        assert_eq!(s.p, Present(false));
        assert_eq!(kind(&json!({})), "an object");
    }

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
    }

    const INNER: Keys = Keys {
        known: &["vendors", "pfNames"],
        nested: &[],
    };
    const ITEM: Keys = Keys {
        known: &["resourceName", "selectors"],
        nested: &[("selectors", &INNER)],
    };
    const TOP: Keys = Keys {
        known: &["resourceList"],
        nested: &[("resourceList", &ITEM)],
    };

    #[test]
    fn nested_objects_and_lists_of_objects_are_canonical_too() {
        let v = json!({"ResourceList": [
            {"RESOURCENAME": "a", "Selectors": {"VENDORS": ["8086"], "x": 1}},
            {"resourceName": "b", "selectors": [{"pfnames": ["p0"]}, 7]},
            "not an object"
        ], "colour": 2});
        let mut w = v.clone();
        let dropped = canonicalize_tree(&mut w, &TOP, "");
        assert_eq!(dropped, vec!["colour", "resourceList[0].selectors.x"]);
        assert_eq!(
            w,
            json!({"resourceList": [
                {"resourceName": "a", "selectors": {"vendors": ["8086"]}},
                {"resourceName": "b", "selectors": [{"pfNames": ["p0"]}, 7]},
                "not an object"
            ]})
        );
        assert_eq!(canonical(&v, &TOP), w);
    }
}
