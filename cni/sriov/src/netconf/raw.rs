//! The sriov-cni config as it is written, decoded with serde: keys matched case-insensitively
//! (Go's `encoding/json`, which sriov-cni decodes with, does) and unknown keys ignored. No value
//! fails the decoding: each field says whether it was absent, of the expected JSON type, or of
//! another one, and the validation ([`super::SriovConf::from_netconf`]) words the refusal.

use serde::Deserialize;
use serde_json::{Map, Number, Value};
use vfcore::gojson::keys::{canonical, Keys};
pub use vfcore::gojson::{Loose, Obj, Present};

/// The keys of the config object this plugin reads, and of the objects it reads inside it.
const TREE: Keys = Keys {
    known: KEYS,
    nested: &[("runtimeConfig", &RUNTIME), ("ipam", &IPAM)],
};
const RUNTIME: Keys = Keys {
    known: RUNTIME_KEYS,
    nested: &[],
};
const IPAM: Keys = Keys {
    known: IPAM_KEYS,
    nested: &[],
};

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
/// takes, or of another type (kept for the message).
pub type Field<T> = Loose<T>;

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

/// `ipam`: only its `type` matters here (the IPAM plugin reads the rest).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIpam {
    #[serde(rename = "type")]
    pub plugin_type: Field<String>,
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
    pub ipam: Field<Obj<RawIpam>>,
    #[serde(rename = "logLevel")]
    pub log_level: Field<String>,
    #[serde(rename = "logFile")]
    pub log_file: Field<String>,
    #[serde(rename = "runtimeConfig")]
    pub runtime_config: Field<Obj<RawRuntime>>,
    #[serde(rename = "stateDir")]
    pub state_dir: Present,
}

impl RawConf {
    /// Decodes the config object (keys matched case-insensitively, unknown ones ignored).
    pub fn decode(m: &Map<String, Value>) -> Result<Self, serde_json::Error> {
        serde_json::from_value(canonical(&Value::Object(m.clone()), &TREE))
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
        assert_eq!(c.vlan, Loose::Ok(Number::from(5)));
        assert_eq!(c.device_id, Loose::Ok("x".into()));
        assert_eq!(c.link_state, Loose::Ok("auto".into()));
        let Loose::Ok(Obj(rc)) = c.runtime_config else {
            panic!("no runtimeConfig")
        };
        assert_eq!(rc.mac, Loose::Ok("m".into()));
        let Loose::Ok(Obj(ipam)) = c.ipam else {
            panic!("no ipam")
        };
        assert_eq!(ipam.plugin_type, Loose::Ok("host-local".into()));
        // The exact spelling wins over a folded one.
        let c = decode(json!({"vlan": 1, "Vlan": 2}));
        assert_eq!(c.vlan, Loose::Ok(Number::from(1)));
    }

    #[test]
    fn no_value_fails_the_decoding() {
        let c = decode(
            json!({"vlan": "100", "mac": 7, "ipam": "x", "runtimeConfig": 3,
            "trust": null, "stateDir": null}),
        );
        assert_eq!(c.vlan, Loose::Wrong(json!("100")));
        assert_eq!(c.mac, Loose::Wrong(json!(7)));
        assert!(matches!(c.ipam, Loose::Wrong(Value::String(_))));
        assert!(matches!(c.runtime_config, Loose::Wrong(Value::Number(_))));
        assert_eq!(c.trust, Loose::Absent);
        assert_eq!(c.state_dir, Present(true));
        assert_eq!(decode(json!({})).state_dir, Present(false));
    }
}
