//! The sriov-cni config as it is written, decoded with serde: keys matched case-insensitively
//! (Go's `encoding/json`, which sriov-cni decodes with, does) and unknown keys ignored. No value
//! fails the decoding: each field says whether it was absent, of the expected JSON type, or of
//! another one, and the validation ([`super::SriovConf::from_netconf`]) words the refusal.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

use crate::spec::conf::keys::canonical;
use crate::spec::conf::kind;

/// The keys of the config object this plugin reads.
pub const KEYS: &[&str] = &[
    "deviceID",
    "pciBusID",
    "vlan",
    "vlanQoS",
    "vlanProto",
    "mac",
    "spoofchk",
    "trust",
    "link_state",
    "min_tx_rate",
    "max_tx_rate",
    "mtu",
    "ipam",
    "logLevel",
    "logFile",
    "runtimeConfig",
    super::STATE_DIR_KEY,
];
/// The keys of `runtimeConfig` this plugin reads.
pub const RUNTIME_KEYS: &[&str] = &["deviceID", "mac", "CNIDeviceInfoFile"];
/// The keys of `ipam` this plugin reads.
pub const IPAM_KEYS: &[&str] = &["type"];

/// One value of the config: absent (or null, which Go reads as absent), of the JSON type the key
/// takes, or of another type (its kind, for the message).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Absent,
    Given(T),
    Wrong(&'static str),
}

/// A JSON type a key takes.
pub trait Expect: Sized {
    /// The value when it is of this type, else the value back.
    fn take(v: Value) -> Result<Self, Value>;
}

impl Expect for String {
    fn take(v: Value) -> Result<Self, Value> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(other),
        }
    }
}

impl Expect for Number {
    fn take(v: Value) -> Result<Self, Value> {
        match v {
            Value::Number(n) => Ok(n),
            other => Err(other),
        }
    }
}

/// An object section, its keys brought to our spelling first.
fn section<T: for<'de> Deserialize<'de>>(v: Value, keys: &[&str]) -> Result<T, Value> {
    match v {
        Value::Object(m) => {
            // Every field is a `Field` or a `Present`, which take any value: this cannot fail.
            serde_json::from_value(Value::Object(canonical(&m, keys))).map_err(|_| Value::Object(m))
        }
        other => Err(other),
    }
}

impl<'de, T: Expect> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => Field::Absent,
            v => match T::take(v) {
                Ok(t) => Field::Given(t),
                Err(v) => Field::Wrong(kind(&v)),
            },
        })
    }
}

/// Whether a key is there at all, whatever its value (null included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Present(pub bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// `runtimeConfig`: what the runtime (Multus) adds per attachment.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRuntime {
    #[serde(rename = "deviceID")]
    pub device_id: Field<String>,
    pub mac: Field<String>,
    #[serde(rename = "CNIDeviceInfoFile")]
    pub device_info_file: Field<String>,
}

impl Expect for RawRuntime {
    fn take(v: Value) -> Result<Self, Value> {
        section(v, RUNTIME_KEYS)
    }
}

/// `ipam`: only its `type` matters here (the IPAM plugin reads the rest).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIpam {
    #[serde(rename = "type")]
    pub plugin_type: Field<String>,
}

impl Expect for RawIpam {
    fn take(v: Value) -> Result<Self, Value> {
        section(v, IPAM_KEYS)
    }
}

/// The config object, as sriov-cni's `NetConf` reads it (and our `mtu`, `pciBusID`, and the old
/// `stateDir`, which is refused).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConf {
    #[serde(rename = "deviceID")]
    pub device_id: Field<String>,
    #[serde(rename = "pciBusID")]
    pub pci_bus_id: Field<String>,
    pub vlan: Field<Number>,
    #[serde(rename = "vlanQoS")]
    pub vlan_qos: Field<Number>,
    #[serde(rename = "vlanProto")]
    pub vlan_proto: Field<String>,
    pub mac: Field<String>,
    pub spoofchk: Field<String>,
    pub trust: Field<String>,
    pub link_state: Field<String>,
    pub min_tx_rate: Field<Number>,
    pub max_tx_rate: Field<Number>,
    pub mtu: Field<Number>,
    pub ipam: Field<RawIpam>,
    #[serde(rename = "logLevel")]
    pub log_level: Field<String>,
    #[serde(rename = "logFile")]
    pub log_file: Field<String>,
    #[serde(rename = "runtimeConfig")]
    pub runtime_config: Field<RawRuntime>,
    #[serde(rename = "stateDir")]
    pub state_dir: Present,
}

impl RawConf {
    /// Decodes the config object (keys matched case-insensitively, unknown ones ignored).
    pub fn decode(m: &Map<String, Value>) -> Result<Self, serde_json::Error> {
        serde_json::from_value(Value::Object(canonical(m, KEYS)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: Value) -> RawConf {
        RawConf::decode(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn keys_are_matched_as_go_matches_them() {
        let c = decode(json!({"VLAN": 5, "DeviceId": "x", "Link_State": "auto",
            "runtimeconfig": {"MAC": "m"}, "IPAM": {"Type": "host-local"}, "colour": 1}));
        assert_eq!(c.vlan, Field::Given(Number::from(5)));
        assert_eq!(c.device_id, Field::Given("x".into()));
        assert_eq!(c.link_state, Field::Given("auto".into()));
        let Field::Given(rc) = c.runtime_config else {
            panic!("no runtimeConfig")
        };
        assert_eq!(rc.mac, Field::Given("m".into()));
        let Field::Given(ipam) = c.ipam else {
            panic!("no ipam")
        };
        assert_eq!(ipam.plugin_type, Field::Given("host-local".into()));
        // The exact spelling wins over a folded one.
        let c = decode(json!({"vlan": 1, "Vlan": 2}));
        assert_eq!(c.vlan, Field::Given(Number::from(1)));
    }

    #[test]
    fn no_value_fails_the_decoding() {
        let c = decode(
            json!({"vlan": "100", "mac": 7, "ipam": "x", "runtimeConfig": 3,
            "trust": null, "stateDir": null}),
        );
        assert_eq!(c.vlan, Field::Wrong("a string"));
        assert_eq!(c.mac, Field::Wrong("a number"));
        assert!(matches!(c.ipam, Field::Wrong("a string")));
        assert!(matches!(c.runtime_config, Field::Wrong("a number")));
        assert_eq!(c.trust, Field::Absent);
        assert_eq!(c.state_dir, Present(true));
        assert_eq!(decode(json!({})).state_dir, Present(false));
    }
}
