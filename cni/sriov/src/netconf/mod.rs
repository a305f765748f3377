//! The sriov-cni network config (`"type": "sriov"`), accepted as sriov-cni accepts it.
//!
//! Keys: `deviceID` (or `runtimeConfig.deviceID`; Multus also writes `pciBusID`), `vlan` 0-4094,
//! `vlanQoS` 0-7, `vlanProto` `802.1q|802.1ad`, `mac`, `spoofchk` and `trust` `on|off`,
//! `link_state` `auto|enable|disable`, `min_tx_rate` and `max_tx_rate` (Mbps), `mtu`, `ipam`,
//! `logLevel`, `logFile`. Keys match case-insensitively and unknown keys are ignored, as Go's
//! decoder (sriov-cni's) does: [`raw`] decodes them with serde, [`SriovConf::from_netconf`]
//! validates. A value of the wrong type or out of range is
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

use serde_json::Number;
use vfcore::netlink::{VfLinkState, VfSettings, VlanProto};
use vfcore::{MacAddr, ParseError, PciAddress};

use crate::spec::conf::{validate_plugin_type, ConfError, NetConf};
use crate::spec::env::CniArgs;

use super::node::{DeviceInfoRefusal, NodeDirs, STATE_DIR_ENV};

mod raw;

use raw::{Field, Obj, RawConf, RawIpam, RawRuntime};
use vfcore::gojson::kind;

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

/// What is wrong with a config. All but [`NetconfError::Conf`] are CNI code 7.
#[derive(Debug, thiserror::Error)]
pub enum NetconfError {
    /// Not a network config at all (the protocol's reading of it: not JSON, no `type`, ...).
    #[error(transparent)]
    Conf(ConfError),
    /// A key's value is refused.
    #[error("sriov: \"{key}\" is invalid: {why}")]
    Invalid { key: &'static str, why: Invalid },
    /// ADD without a VF.
    #[error("sriov: \"deviceID\" is missing: name the VF by its PCI address (in the config or in runtimeConfig.deviceID)")]
    NoDevice,
    /// The typed decoding failed (it takes any value, so this does not happen).
    #[error("sriov: the network config cannot be decoded")]
    Decode(#[source] serde_json::Error),
}

/// Why a key's value is refused.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("{expected} is expected, not {found}")]
    Type {
        expected: &'static str,
        found: &'static str,
    },
    #[error("a string is expected")]
    NotAString,
    #[error("{value} is not in the range {min}-{max}")]
    Range { value: Number, min: i64, max: i64 },
    /// A word that is not one of the key's choices (`choices` says which, as a phrase).
    #[error("{value:?} {choices}")]
    Choice {
        value: String,
        choices: &'static str,
    },
    #[error("{0}")]
    Address(ParseError),
    #[error("{input} is not a unicast MAC address")]
    NotUnicast { input: String },
    #[error("a non-zero QoS needs a non-zero \"vlan\"")]
    QosWithoutVlan,
    #[error("802.1ad needs a non-zero \"vlan\"")]
    QinqWithoutVlan,
    #[error("{max} is below min_tx_rate {min}")]
    RateBelowMin { max: u32, min: u32 },
    #[error("{0}")]
    PluginType(ConfError),
    #[error("the state dir is set by the node (the plugin's environment, {STATE_DIR_ENV}), not by a network config; remove the key")]
    StateDir,
    /// The device-info file is not one the node lets a config name.
    #[error("{0}")]
    DeviceInfoFile(DeviceInfoRefusal),
}

fn invalid(key: &'static str, why: Invalid) -> NetconfError {
    NetconfError::Invalid { key, why }
}

fn string(f: Field<String>, key: &'static str) -> Result<Option<String>, NetconfError> {
    match f {
        Field::Absent => Ok(None),
        Field::Ok(s) => Ok(Some(s)),
        Field::Wrong(v) => Err(invalid(
            key,
            Invalid::Type {
                expected: "a string",
                found: kind(&v),
            },
        )),
    }
}

/// A non-empty string (an empty string reads as absent, as Go's zero value does).
fn nonempty(f: Field<String>, key: &'static str) -> Result<Option<String>, NetconfError> {
    Ok(string(f, key)?.filter(|s| !s.is_empty()))
}

fn integer(
    f: Field<Number>,
    key: &'static str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, NetconfError> {
    match f {
        Field::Absent => Ok(None),
        Field::Ok(n) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(invalid(key, Invalid::Range { value: n, min, max })),
        },
        Field::Wrong(v) => Err(invalid(
            key,
            Invalid::Type {
                expected: "an integer",
                found: kind(&v),
            },
        )),
    }
}

/// A word of `choices` (case-insensitive), `phrase` wording them for the refusal.
fn choice<T: Copy>(
    f: Field<String>,
    key: &'static str,
    choices: &[(&str, T)],
    phrase: &'static str,
) -> Result<Option<T>, NetconfError> {
    let Some(s) = nonempty(f, key)? else {
        return Ok(None);
    };
    let lower = s.to_ascii_lowercase();
    match choices.iter().find(|(word, _)| *word == lower) {
        Some((_, v)) => Ok(Some(*v)),
        None => Err(invalid(
            key,
            Invalid::Choice {
                value: s,
                choices: phrase,
            },
        )),
    }
}

fn on_off(f: Field<String>, key: &'static str) -> Result<Option<bool>, NetconfError> {
    choice(
        f,
        key,
        &[("on", true), ("off", false)],
        "is neither \"on\" nor \"off\"",
    )
}

fn mac(key: &'static str, s: &str) -> Result<MacAddr, NetconfError> {
    let m: MacAddr = s.parse().map_err(|e| invalid(key, Invalid::Address(e)))?;
    if !m.is_valid_unicast() {
        return Err(invalid(
            key,
            Invalid::NotUnicast {
                input: s.to_string(),
            },
        ));
    }
    Ok(m)
}

fn pci(key: &'static str, s: &str) -> Result<PciAddress, NetconfError> {
    s.parse().map_err(|e| invalid(key, Invalid::Address(e)))
}

/// The log levels sriov-cni knows.
const LOG_LEVELS: [&str; 8] = [
    "panic", "fatal", "error", "warning", "warn", "info", "debug", "verbose",
];

impl SriovConf {
    /// Parses the config on stdin; `args` is CNI_ARGS (for `MAC=`).
    pub fn parse(stdin: &[u8], args: &CniArgs) -> Result<Self, NetconfError> {
        let netconf = NetConf::from_bytes(stdin).map_err(NetconfError::Conf)?;
        Self::from_netconf(&netconf, args)
    }

    /// The sriov reading of a config the protocol has read (`name` is the protocol's).
    pub fn from_netconf(netconf: &NetConf, args: &CniArgs) -> Result<Self, NetconfError> {
        let raw = RawConf::decode(netconf.raw()).map_err(NetconfError::Decode)?;
        let rc = match raw.runtime_config {
            Field::Absent => RawRuntime::default(),
            Field::Ok(Obj(rc)) => rc,
            Field::Wrong(v) => {
                return Err(invalid(
                    "runtimeConfig",
                    Invalid::Type {
                        expected: "an object",
                        found: kind(&v),
                    },
                ))
            }
        };

        // The first given wins; the ones after it are not even read (as sriov-cni).
        let device_id = if let Some(s) = nonempty(rc.device_id, "deviceID")? {
            Some(pci("runtimeConfig.deviceID", &s)?)
        } else if let Some(s) = nonempty(raw.device_id, "deviceID")? {
            Some(pci("deviceID", &s)?)
        } else if let Some(s) = nonempty(raw.pci_bus_id, "pciBusID")? {
            Some(pci("pciBusID", &s)?)
        } else {
            None
        };

        let vlan = integer(raw.vlan, "vlan", 0, 4094)?.map(|v| v as u16);
        let vlan_qos = integer(raw.vlan_qos, "vlanQoS", 0, 7)?.map(|v| v as u8);
        let vlan_proto = choice(
            raw.vlan_proto,
            "vlanProto",
            &[("802.1q", VlanProto::Dot1Q), ("802.1ad", VlanProto::Dot1AD)],
            "is neither \"802.1q\" nor \"802.1ad\"",
        )?;
        // As sriov-cni: a QoS or a protocol other than 802.1Q means nothing without a VLAN.
        if vlan.unwrap_or(0) == 0 {
            if vlan_qos.unwrap_or(0) != 0 {
                return Err(invalid("vlanQoS", Invalid::QosWithoutVlan));
            }
            if vlan_proto == Some(VlanProto::Dot1AD) {
                return Err(invalid("vlanProto", Invalid::QinqWithoutVlan));
            }
        }

        let mac = if let Some(s) = nonempty(rc.mac, "mac")? {
            Some(mac("runtimeConfig.mac", &s)?)
        } else if let Some(s) = args.get("MAC").filter(|s| !s.is_empty()) {
            Some(mac("CNI_ARGS MAC", s)?)
        } else if let Some(s) = nonempty(raw.mac, "mac")? {
            Some(mac("mac", &s)?)
        } else {
            None
        };

        let spoofchk = on_off(raw.spoofchk, "spoofchk")?;
        let trust = on_off(raw.trust, "trust")?;
        let link_state = choice(
            raw.link_state,
            "link_state",
            &[
                ("auto", VfLinkState::Auto),
                ("enable", VfLinkState::Enable),
                ("disable", VfLinkState::Disable),
            ],
            "is not one of \"auto\", \"enable\", \"disable\"",
        )?;
        let max_rate = i64::from(u32::MAX);
        let min_tx_rate = integer(raw.min_tx_rate, "min_tx_rate", 0, max_rate)?.map(|v| v as u32);
        let max_tx_rate = integer(raw.max_tx_rate, "max_tx_rate", 0, max_rate)?.map(|v| v as u32);
        if let (Some(min), Some(max)) = (min_tx_rate, max_tx_rate) {
            if max != 0 && max < min {
                return Err(invalid("max_tx_rate", Invalid::RateBelowMin { max, min }));
            }
        }
        let mtu = integer(raw.mtu, "mtu", 68, 65535)?.map(|v| v as u32);
        let ipam_type = ipam_type(raw.ipam)?;

        let log_level = nonempty(raw.log_level, "logLevel")?;
        if let Some(l) = &log_level {
            if !LOG_LEVELS.contains(&l.to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    "logLevel",
                    Invalid::Choice {
                        value: l.clone(),
                        choices: "is not one of panic, error, warning, info, debug",
                    },
                ));
            }
        }
        let log_file = nonempty(raw.log_file, "logFile")?;
        let device_info_file = nonempty(rc.device_info_file, "CNIDeviceInfoFile")?;
        if raw.state_dir.0 {
            return Err(invalid(STATE_DIR_KEY, Invalid::StateDir));
        }

        Ok(Self {
            name: netconf.name.clone(),
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
    pub fn device_info_path(&self, node: &NodeDirs) -> Result<Option<PathBuf>, NetconfError> {
        self.device_info_file
            .as_deref()
            .map(|raw| {
                node.confine_device_info_file(raw).map_err(|why| {
                    invalid(
                        "runtimeConfig.CNIDeviceInfoFile",
                        Invalid::DeviceInfoFile(why),
                    )
                })
            })
            .transpose()
    }

    /// The VF the config names; ADD needs one (code 7 without).
    pub fn require_device(&self) -> Result<PciAddress, NetconfError> {
        self.device_id.ok_or(NetconfError::NoDevice)
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

/// `ipam.type`, validated like a plugin type (the IPAM plugin is run from CNI_PATH).
fn ipam_type(ipam: Field<Obj<RawIpam>>) -> Result<Option<String>, NetconfError> {
    match ipam {
        Field::Absent => Ok(None),
        Field::Ok(Obj(ipam)) => match ipam.plugin_type {
            Field::Ok(t) if !t.is_empty() => {
                validate_plugin_type(&t)
                    .map_err(|e| invalid("ipam.type", Invalid::PluginType(e)))?;
                Ok(Some(t))
            }
            Field::Ok(_) | Field::Absent => Ok(None),
            Field::Wrong(_) => Err(invalid("ipam.type", Invalid::NotAString)),
        },
        Field::Wrong(v) => Err(invalid(
            "ipam",
            Invalid::Type {
                expected: "an object",
                found: kind(&v),
            },
        )),
    }
}

#[cfg(test)]
mod tests;
