//! Fields that keep a wrong value instead of failing the whole decode, so that every problem of
//! a config file is reported at once, each with its field.

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;
use serde_json::Value;

/// A field as the file has it: absent (or `null`, which Go's decoder treats the same), a value of
/// the type asked for, or some other JSON value, kept for the error message.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Loose<T> {
    #[default]
    Absent,
    Ok(T),
    Wrong(Value),
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

/// A struct that only a JSON object decodes into (serde's derive also takes an array, by position).
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, Default, Debug)]
    #[serde(default)]
    struct S {
        n: Loose<u32>,
        s: Loose<String>,
        o: Loose<Obj<Inner>>,
    }

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(default)]
    struct Inner {
        a: Loose<bool>,
    }

    #[test]
    fn wrong_types_are_kept_and_nulls_are_absent() {
        let s: S = serde_json::from_value(json!({"n": "x", "s": null, "o": [true]})).unwrap();
        assert_eq!(s.n, Loose::Wrong(json!("x")));
        assert_eq!(s.s, Loose::Absent);
        assert_eq!(s.o, Loose::Wrong(json!([true])));
        let s: S = serde_json::from_value(json!({"n": 3, "o": {"a": true}})).unwrap();
        assert_eq!(s.n, Loose::Ok(3));
        assert_eq!(s.o, Loose::Ok(Obj(Inner { a: Loose::Ok(true) })));
    }
}
