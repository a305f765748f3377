//! The sriov-cni network config (`"type": "sriov"`), accepted as sriov-cni accepts it.
//!
//! Keys: `deviceID` (or `runtimeConfig.deviceID`; Multus also writes `pciBusID`), `vlan` 0-4094,
//! `vlanQoS` 0-7, `vlanProto` `802.1q|802.1ad`, `mac`, `spoofchk` and `trust` `on|off`,
//! `link_state` `auto|enable|disable`, `min_tx_rate` and `max_tx_rate` (Mbps), `mtu`, `ipam`,
//! `logLevel`, `logFile`. Unknown keys are ignored. A value of the wrong type or out of range is
//! CNI error 7 naming the key.
//!
//! No key chooses a host path on its own: a tenant may have written the config. The state dir is
//! the node's ([`super::node`]); a config that still carries our old `stateDir` key is error 7.
//! `runtimeConfig.CNIDeviceInfoFile` is checked against the node's device-info dir by ADD
//! ([`SriovConf::device_info_path`]); `logFile` is confined by the binary's logging setup
//! ([`super::logfile`]).
//!
//! The MAC a pod gets: `runtimeConfig.mac` over `CNI_ARGS` `MAC=` over `mac`.

use std::path::PathBuf;

use serde_json::{Map, Value};
use vfcore::netlink::{VfLinkState, VfSettings, VlanProto};
use vfcore::{MacAddr, PciAddress};

use crate::spec::conf::validate_plugin_type;
use crate::spec::env::CniArgs;
use crate::spec::error::CniError;

use super::node::{NodeDirs, STATE_DIR_ENV};

/// The key that once moved the state dir; refused now (the node sets the state dir).
pub const STATE_DIR_KEY: &str = "stateDir";

/// The parsed and validated config of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct SriovConf {
    /// `name` (may be absent for a delegate conf; used only to scope GC).
    pub name: Option<String>,
    /// The VF: `runtimeConfig.deviceID` over `deviceID` over `pciBusID`.
    pub device_id: Option<PciAddress>,
    pub vlan: Option<u16>,
    pub vlan_qos: Option<u8>,
    pub vlan_proto: Option<VlanProto>,
    /// The MAC after applying the priority rule.
    pub mac: Option<MacAddr>,
    pub spoofchk: Option<bool>,
    pub trust: Option<bool>,
    pub link_state: Option<VfLinkState>,
    pub min_tx_rate: Option<u32>,
    pub max_tx_rate: Option<u32>,
    pub mtu: Option<u32>,
    /// `ipam.type`, when there is an IPAM section.
    pub ipam_type: Option<String>,
    pub log_level: Option<String>,
    pub log_file: Option<String>,
    /// `runtimeConfig.CNIDeviceInfoFile` as given: where Multus wants the NPWG device-info
    /// (unchecked; see [`SriovConf::device_info_path`]).
    pub device_info_file: Option<String>,
}

use crate::spec::conf::kind;

fn invalid(key: &str, why: impl std::fmt::Display) -> CniError {
    CniError::invalid_config(format!("sriov: \"{key}\" is invalid: {why}"))
}

fn string<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            key,
            format!("a string is expected, not {}", kind(other)),
        )),
    }
}

/// A non-empty string (an empty string reads as absent, as Go's zero value does).
fn nonempty<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    Ok(string(m, key)?.filter(|s| !s.is_empty()))
}

fn integer(m: &Map<String, Value>, key: &str, min: i64, max: i64) -> Result<Option<i64>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(invalid(key, format!("{n} is not in the range {min}-{max}"))),
        },
        Some(other) => Err(invalid(
            key,
            format!("an integer is expected, not {}", kind(other)),
        )),
    }
}

fn on_off(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, CniError> {
    match nonempty(m, key)? {
        None => Ok(None),
        Some(s) => match s.to_ascii_lowercase().as_str() {
            "on" => Ok(Some(true)),
            "off" => Ok(Some(false)),
            _ => Err(invalid(key, format!("{s:?} is neither \"on\" nor \"off\""))),
        },
    }
}

fn mac(key: &str, s: &str) -> Result<MacAddr, CniError> {
    let m: MacAddr = s.parse().map_err(|e| invalid(key, e))?;
    if !m.is_valid_unicast() {
        return Err(invalid(key, format!("{s} is not a unicast MAC address")));
    }
    Ok(m)
}

fn pci(key: &str, s: &str) -> Result<PciAddress, CniError> {
    s.parse().map_err(|e| invalid(key, e))
}

impl SriovConf {
    /// Parses the config on stdin; `args` is CNI_ARGS (for `MAC=`).
    pub fn parse(stdin: &[u8], args: &CniArgs) -> Result<Self, CniError> {
        let v: Value = serde_json::from_slice(stdin)
            .map_err(|e| CniError::decode(format!("the network config is not JSON: {e}")))?;
        let Value::Object(m) = v else {
            return Err(CniError::decode(format!(
                "the network config is not a JSON object but {}",
                kind(&v)
            )));
        };
        Self::from_map(&m, args)
    }

    pub fn from_map(m: &Map<String, Value>, args: &CniArgs) -> Result<Self, CniError> {
        let empty = Map::new();
        let rc = match m.get("runtimeConfig") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(rc)) => rc,
            Some(other) => {
                return Err(invalid(
                    "runtimeConfig",
                    format!("an object is expected, not {}", kind(other)),
                ))
            }
        };

        let device_id = if let Some(s) = nonempty(rc, "deviceID")? {
            Some(pci("runtimeConfig.deviceID", s)?)
        } else if let Some(s) = nonempty(m, "deviceID")? {
            Some(pci("deviceID", s)?)
        } else if let Some(s) = nonempty(m, "pciBusID")? {
            Some(pci("pciBusID", s)?)
        } else {
            None
        };

        let vlan = integer(m, "vlan", 0, 4094)?.map(|v| v as u16);
        let vlan_qos = integer(m, "vlanQoS", 0, 7)?.map(|v| v as u8);
        let vlan_proto = match nonempty(m, "vlanProto")? {
            None => None,
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "802.1q" => Some(VlanProto::Dot1Q),
                "802.1ad" => Some(VlanProto::Dot1AD),
                _ => {
                    return Err(invalid(
                        "vlanProto",
                        format!("{s:?} is neither \"802.1q\" nor \"802.1ad\""),
                    ))
                }
            },
        };
        // As sriov-cni: a QoS or a protocol other than 802.1Q means nothing without a VLAN.
        if vlan.unwrap_or(0) == 0 {
            if vlan_qos.unwrap_or(0) != 0 {
                return Err(invalid(
                    "vlanQoS",
                    "a non-zero QoS needs a non-zero \"vlan\"",
                ));
            }
            if vlan_proto == Some(VlanProto::Dot1AD) {
                return Err(invalid("vlanProto", "802.1ad needs a non-zero \"vlan\""));
            }
        }

        let mac = if let Some(s) = nonempty(rc, "mac")? {
            Some(mac("runtimeConfig.mac", s)?)
        } else if let Some(s) = args.get("MAC").filter(|s| !s.is_empty()) {
            Some(mac("CNI_ARGS MAC", s)?)
        } else if let Some(s) = nonempty(m, "mac")? {
            Some(mac("mac", s)?)
        } else {
            None
        };

        let spoofchk = on_off(m, "spoofchk")?;
        let trust = on_off(m, "trust")?;
        let link_state = match nonempty(m, "link_state")? {
            None => None,
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "auto" => Some(VfLinkState::Auto),
                "enable" => Some(VfLinkState::Enable),
                "disable" => Some(VfLinkState::Disable),
                _ => {
                    return Err(invalid(
                        "link_state",
                        format!("{s:?} is not one of \"auto\", \"enable\", \"disable\""),
                    ))
                }
            },
        };
        let max_rate = i64::from(u32::MAX);
        let min_tx_rate = integer(m, "min_tx_rate", 0, max_rate)?.map(|v| v as u32);
        let max_tx_rate = integer(m, "max_tx_rate", 0, max_rate)?.map(|v| v as u32);
        if let (Some(min), Some(max)) = (min_tx_rate, max_tx_rate) {
            if max != 0 && max < min {
                return Err(invalid(
                    "max_tx_rate",
                    format!("{max} is below min_tx_rate {min}"),
                ));
            }
        }
        let mtu = integer(m, "mtu", 68, 65535)?.map(|v| v as u32);

        let ipam_type = match m.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(ipam)) => match nonempty(ipam, "type") {
                Ok(Some(t)) => {
                    validate_plugin_type(t).map_err(|e| invalid("ipam.type", e.msg))?;
                    Some(t.to_string())
                }
                Ok(None) => None,
                Err(_) => return Err(invalid("ipam.type", "a string is expected")),
            },
            Some(other) => {
                return Err(invalid(
                    "ipam",
                    format!("an object is expected, not {}", kind(other)),
                ))
            }
        };

        let log_level = nonempty(m, "logLevel")?.map(str::to_string);
        if let Some(l) = &log_level {
            if !matches!(
                l.to_ascii_lowercase().as_str(),
                "panic" | "fatal" | "error" | "warning" | "warn" | "info" | "debug" | "verbose"
            ) {
                return Err(invalid(
                    "logLevel",
                    format!("{l:?} is not one of panic, error, warning, info, debug"),
                ));
            }
        }
        let log_file = nonempty(m, "logFile")?.map(str::to_string);
        let device_info_file = nonempty(rc, "CNIDeviceInfoFile")?.map(str::to_string);
        if m.contains_key(STATE_DIR_KEY) {
            return Err(invalid(
                STATE_DIR_KEY,
                format!(
                    "the state dir is set by the node (the plugin's environment, {STATE_DIR_ENV}), not by a network config; remove the key"
                ),
            ));
        }
        let name = string(m, "name")?.map(str::to_string);

        Ok(Self {
            name,
            device_id,
            vlan,
            vlan_qos,
            vlan_proto,
            mac,
            spoofchk,
            trust,
            link_state,
            min_tx_rate,
            max_tx_rate,
            mtu,
            ipam_type,
            log_level,
            log_file,
            device_info_file,
        })
    }

    /// The device-info file ADD may write: `runtimeConfig.CNIDeviceInfoFile` when it names a
    /// plain file directly in the node's `<device-info dir>/cni/`; anything else is code 7.
    pub fn device_info_path(&self, node: &NodeDirs) -> Result<Option<PathBuf>, CniError> {
        self.device_info_file
            .as_deref()
            .map(|raw| {
                node.confine_device_info_file(raw)
                    .map_err(|why| invalid("runtimeConfig.CNIDeviceInfoFile", why))
            })
            .transpose()
    }

    /// The VF the config names; ADD needs one (code 7 without).
    pub fn require_device(&self) -> Result<PciAddress, CniError> {
        self.device_id.ok_or_else(|| {
            CniError::invalid_config(
                "sriov: \"deviceID\" is missing: name the VF by its PCI address (in the config or in runtimeConfig.deviceID)",
            )
        })
    }

    /// What ADD sets through the PF. The VLAN's QoS and protocol go with it (0 and 802.1Q when
    /// not given, as `ip link set ... vf N vlan V` does).
    pub fn vf_settings(&self) -> VfSettings {
        VfSettings {
            mac: self.mac,
            vlan: self.vlan,
            qos: self.vlan.map(|_| self.vlan_qos.unwrap_or(0)),
            vlan_proto: self.vlan.map(|_| self.vlan_proto.unwrap_or_default()),
            spoofchk: self.spoofchk,
            trust: self.trust,
            link_state: self.link_state,
            min_tx_rate: self.min_tx_rate,
            max_tx_rate: self.max_tx_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<SriovConf, CniError> {
        SriovConf::parse(v.to_string().as_bytes(), &CniArgs::default())
    }

    fn parse_args(v: Value, args: &str) -> Result<SriovConf, CniError> {
        SriovConf::parse(v.to_string().as_bytes(), &CniArgs::parse(args).unwrap())
    }

    fn err(v: Value) -> CniError {
        parse(v).unwrap_err()
    }

    #[test]
    fn a_full_sriov_cni_config() {
        let c = parse(json!({
            "cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov",
            "deviceID": "0000:01:10.1", "vlan": 100, "vlanQoS": 3, "vlanProto": "802.1AD",
            "mac": "02:00:00:00:00:01", "spoofchk": "off", "trust": "ON",
            "link_state": "enable", "min_tx_rate": 10, "max_tx_rate": 100, "mtu": 1400,
            "ipam": {"type": "host-local", "subnet": "10.56.217.0/24"},
            "logLevel": "debug", "logFile": "/tmp/sriov.log", "someUnknown": [1]
        }))
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("sriov-net"));
        assert_eq!(c.device_id, Some("0000:01:10.1".parse().unwrap()));
        assert_eq!(c.vlan, Some(100));
        assert_eq!(c.vlan_qos, Some(3));
        assert_eq!(c.vlan_proto, Some(VlanProto::Dot1AD));
        assert_eq!(c.mac, Some("02:00:00:00:00:01".parse().unwrap()));
        assert_eq!(c.spoofchk, Some(false));
        assert_eq!(c.trust, Some(true));
        assert_eq!(c.link_state, Some(VfLinkState::Enable));
        assert_eq!((c.min_tx_rate, c.max_tx_rate), (Some(10), Some(100)));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.ipam_type.as_deref(), Some("host-local"));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.log_file.as_deref(), Some("/tmp/sriov.log"));
        let s = c.vf_settings();
        assert_eq!(s.vlan, Some(100));
        assert_eq!(s.qos, Some(3));
        assert_eq!(s.vlan_proto, Some(VlanProto::Dot1AD));
        assert_eq!(s.mac, c.mac);
    }

    #[test]
    fn a_minimal_config_sets_nothing() {
        let c = parse(json!({"type": "sriov", "deviceID": "01:10.0"})).unwrap();
        assert_eq!(c.device_id, Some(PciAddress::new(0, 1, 0x10, 0)));
        assert!(c.vf_settings().is_empty());
        assert_eq!(c.mac, None);
        assert_eq!(c.ipam_type, None);
        // Empty strings read as absent, as Go's zero values.
        let c =
            parse(json!({"type": "sriov", "mac": "", "spoofchk": "", "vlanProto": ""})).unwrap();
        assert_eq!((c.mac, c.spoofchk, c.vlan_proto), (None, None, None));
        assert!(c.require_device().is_err());
    }

    #[test]
    fn vlan_alone_defaults_qos_and_protocol() {
        let s = parse(json!({"type": "sriov", "vlan": 0}))
            .unwrap()
            .vf_settings();
        assert_eq!(
            (s.vlan, s.qos, s.vlan_proto),
            (Some(0), Some(0), Some(VlanProto::Dot1Q))
        );
    }

    #[test]
    fn device_id_priority() {
        let c = parse(
            json!({"type": "sriov", "deviceID": "0000:01:10.0", "pciBusID": "0000:01:10.2",
            "runtimeConfig": {"deviceID": "0000:01:10.1"}}),
        )
        .unwrap();
        assert_eq!(c.device_id, Some("0000:01:10.1".parse().unwrap()));
        let c =
            parse(json!({"type": "sriov", "deviceID": "0000:01:10.0", "pciBusID": "0000:01:10.2"}))
                .unwrap();
        assert_eq!(c.device_id, Some("0000:01:10.0".parse().unwrap()));
        let c = parse(json!({"type": "sriov", "pciBusID": "0000:01:10.2"})).unwrap();
        assert_eq!(c.device_id, Some("0000:01:10.2".parse().unwrap()));
    }

    #[test]
    fn mac_priority_runtime_config_then_cni_args_then_conf() {
        let conf = json!({"type": "sriov", "mac": "02:00:00:00:00:03",
            "runtimeConfig": {"mac": "02:00:00:00:00:01"}});
        let all = parse_args(conf.clone(), "IgnoreUnknown=1;MAC=02:00:00:00:00:02").unwrap();
        assert_eq!(all.mac, Some("02:00:00:00:00:01".parse().unwrap()));
        let mut no_rc = conf.clone();
        no_rc.as_object_mut().unwrap().remove("runtimeConfig");
        let args = parse_args(no_rc.clone(), "IgnoreUnknown=1;MAC=02:00:00:00:00:02").unwrap();
        assert_eq!(args.mac, Some("02:00:00:00:00:02".parse().unwrap()));
        let only_conf = parse_args(no_rc, "IgnoreUnknown=1").unwrap();
        assert_eq!(only_conf.mac, Some("02:00:00:00:00:03".parse().unwrap()));
    }

    fn assert_invalid(v: Value, key: &str) {
        let e = err(v.clone());
        assert_eq!(e.code, 7, "{v}: {e:?}");
        assert!(
            e.msg.contains(&format!("\"{key}\"")),
            "{v}: {} does not name {key}",
            e.msg
        );
    }

    #[test]
    fn every_invalid_value_is_code_7_naming_its_key() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"deviceID": "nope"}), "deviceID"),
            (json!({"deviceID": 5}), "deviceID"),
            (
                json!({"runtimeConfig": {"deviceID": "0000:zz:00.0"}}),
                "runtimeConfig.deviceID",
            ),
            (json!({"runtimeConfig": 3}), "runtimeConfig"),
            (json!({"pciBusID": "x"}), "pciBusID"),
            (json!({"vlan": 4095}), "vlan"),
            (json!({"vlan": -1}), "vlan"),
            (json!({"vlan": "100"}), "vlan"),
            (json!({"vlan": 1.5}), "vlan"),
            (json!({"vlan": 10, "vlanQoS": 8}), "vlanQoS"),
            (json!({"vlan": 10, "vlanQoS": -1}), "vlanQoS"),
            (json!({"vlanQoS": 2}), "vlanQoS"),
            (json!({"vlan": 0, "vlanQoS": 2}), "vlanQoS"),
            (json!({"vlan": 10, "vlanProto": "802.1x"}), "vlanProto"),
            (json!({"vlanProto": "802.1ad"}), "vlanProto"),
            (json!({"mac": "02:00:00:00:00"}), "mac"),
            (json!({"mac": "01:00:5e:00:00:01"}), "mac"),
            (json!({"mac": 7}), "mac"),
            (json!({"runtimeConfig": {"mac": "zz"}}), "runtimeConfig.mac"),
            (json!({"spoofchk": "yes"}), "spoofchk"),
            (json!({"spoofchk": true}), "spoofchk"),
            (json!({"trust": "enabled"}), "trust"),
            (json!({"link_state": "up"}), "link_state"),
            (json!({"min_tx_rate": -5}), "min_tx_rate"),
            (json!({"max_tx_rate": "100"}), "max_tx_rate"),
            (
                json!({"min_tx_rate": 100, "max_tx_rate": 10}),
                "max_tx_rate",
            ),
            (json!({"mtu": 20}), "mtu"),
            (json!({"mtu": 70000}), "mtu"),
            (json!({"ipam": "host-local"}), "ipam"),
            (json!({"ipam": {"type": "../bin/x"}}), "ipam.type"),
            (json!({"ipam": {"type": 1}}), "ipam.type"),
            (json!({"logLevel": "loud"}), "logLevel"),
            (json!({"logFile": 1}), "logFile"),
            (json!({"stateDir": "relative"}), "stateDir"),
        ];
        for (mut v, key) in cases {
            v.as_object_mut()
                .unwrap()
                .insert("type".into(), json!("sriov"));
            assert_invalid(v, key);
        }
        let e = parse_args(json!({"type": "sriov"}), "IgnoreUnknown=1;MAC=bad").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("CNI_ARGS MAC"), "{}", e.msg);
    }

    #[test]
    fn a_state_dir_in_the_config_is_refused_whatever_its_value() {
        for dir in [json!("/tmp/elsewhere"), json!(""), json!(null)] {
            let e = err(json!({"type": "sriov", "stateDir": dir}));
            assert_eq!(e.code, 7);
            assert!(e.msg.contains("\"stateDir\""), "{}", e.msg);
            assert!(e.msg.contains("set by the node"), "{}", e.msg);
            assert!(e.msg.contains(STATE_DIR_ENV), "{}", e.msg);
        }
    }

    #[test]
    fn the_device_info_file_must_be_in_the_nodes_cni_dir() {
        let node = NodeDirs {
            state_dir: "/s".into(),
            device_info_dir: "/nonexistent/devinfo".into(),
        };
        let with = |f: &str| {
            parse(json!({"type": "sriov", "runtimeConfig": {"CNIDeviceInfoFile": f}})).unwrap()
        };
        assert_eq!(
            with("/nonexistent/devinfo/cni/n-c-net1-device.json")
                .device_info_path(&node)
                .unwrap(),
            Some(PathBuf::from(
                "/nonexistent/devinfo/cni/n-c-net1-device.json"
            ))
        );
        for bad in [
            "x.json",
            "/etc/passwd",
            "/nonexistent/devinfo/cni/../../../etc/passwd",
            "/nonexistent/devinfo/dp/x.json",
        ] {
            // Parsing (DEL too) accepts it; ADD's check refuses it naming the key.
            let e = with(bad).device_info_path(&node).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(
                e.msg.contains("\"runtimeConfig.CNIDeviceInfoFile\""),
                "{bad}: {}",
                e.msg
            );
        }
        assert_eq!(
            parse(json!({"type": "sriov"}))
                .unwrap()
                .device_info_path(&node)
                .unwrap(),
            None
        );
    }

    #[test]
    fn rates_zero_max_means_no_limit() {
        let c = parse(json!({"type": "sriov", "min_tx_rate": 100, "max_tx_rate": 0})).unwrap();
        assert_eq!((c.min_tx_rate, c.max_tx_rate), (Some(100), Some(0)));
    }

    #[test]
    fn not_json_is_decode_error() {
        let e = SriovConf::parse(b"{", &CniArgs::default()).unwrap_err();
        assert_eq!(e.code, 6);
        let e = SriovConf::parse(b"[1]", &CniArgs::default()).unwrap_err();
        assert_eq!(e.code, 6);
    }

    #[test]
    fn missing_device_is_code_7() {
        let c = parse(json!({"type": "sriov"})).unwrap();
        let e = c.require_device().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("deviceID"));
    }
}
