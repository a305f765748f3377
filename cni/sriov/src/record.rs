//! An attachment's record, as the state dir keeps it (`attachments/<containerID>-<ifname>.json`,
//! see [`super::state`]): the VF, the pod's netns, the VF's original state, what ADD applied and
//! the config whose IPAM must release the address. Everything DEL needs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vfcore::netlink::{VfConfig, VfLinkState, VfSettings, VlanProto};
use vfcore::{MacAddr, PciAddress, VfIndex};

/// The record kind.
pub const RECORD_KIND: &str = "vfgenieSriovV1";

/// A VF's configuration as its PF reported it, in a form that round-trips through JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedVf {
    pub mac: MacAddr,
    pub vlan: u16,
    pub qos: u8,
    /// `802.1q` or `802.1ad`.
    pub vlan_proto: String,
    pub spoofchk: Option<bool>,
    pub trust: Option<bool>,
    /// `auto`, `enable` or `disable`.
    pub link_state: Option<String>,
    pub min_tx_rate: u32,
    pub max_tx_rate: u32,
}

fn proto_name(p: VlanProto) -> &'static str {
    match p {
        VlanProto::Dot1Q => "802.1q",
        VlanProto::Dot1AD => "802.1ad",
    }
}

fn link_state_name(s: VfLinkState) -> &'static str {
    match s {
        VfLinkState::Auto => "auto",
        VfLinkState::Enable => "enable",
        VfLinkState::Disable => "disable",
    }
}

impl SavedVf {
    pub fn from_config(c: &VfConfig) -> Self {
        Self {
            mac: c.mac,
            vlan: c.vlan,
            qos: c.qos,
            vlan_proto: proto_name(c.vlan_proto).to_string(),
            spoofchk: c.spoofchk,
            trust: c.trust,
            link_state: c.link_state.map(|s| link_state_name(s).to_string()),
            min_tx_rate: c.min_tx_rate,
            max_tx_rate: c.max_tx_rate,
        }
    }

    /// The settings that put back what `applied` changed, and nothing else (a driver may refuse
    /// an attribute ADD never touched, such as igb's link state).
    pub fn restore_settings(&self, applied: &VfSettings) -> VfSettings {
        let proto = match self.vlan_proto.as_str() {
            "802.1ad" => VlanProto::Dot1AD,
            _ => VlanProto::Dot1Q,
        };
        let link_state = match self.link_state.as_deref() {
            Some("enable") => Some(VfLinkState::Enable),
            Some("disable") => Some(VfLinkState::Disable),
            Some("auto") => Some(VfLinkState::Auto),
            _ => None,
        };
        let rates = applied.min_tx_rate.is_some() || applied.max_tx_rate.is_some();
        VfSettings {
            mac: applied.mac.map(|_| self.mac),
            vlan: applied.vlan.map(|_| self.vlan),
            qos: applied.vlan.map(|_| self.qos),
            vlan_proto: applied.vlan.map(|_| proto),
            spoofchk: applied.spoofchk.and(self.spoofchk),
            trust: applied.trust.and(self.trust),
            link_state: applied.link_state.and(link_state),
            min_tx_rate: rates.then_some(self.min_tx_rate),
            max_tx_rate: rates.then_some(self.max_tx_rate),
        }
    }
}

/// The VF's kernel netdev as it was in the host before ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedNetdev {
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    #[serde(default)]
    pub alt_names: Vec<String>,
}

/// How the VF is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A kernel netdev moved into the pod.
    Netdev,
    /// Bound to a userspace driver (vfio-pci, uio): nothing to move, PF-side settings only.
    Userspace,
}

/// How far ADD got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Written before the first change; anything after it may or may not have happened.
    Intent,
    /// ADD finished and returned this record's result.
    Done,
}

/// What the PF-side settings and the netdev were set to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    #[serde(default)]
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub qos: Option<u8>,
    #[serde(default)]
    pub vlan_proto: Option<String>,
    #[serde(default)]
    pub spoofchk: Option<bool>,
    #[serde(default)]
    pub trust: Option<bool>,
    #[serde(default)]
    pub link_state: Option<String>,
    #[serde(default)]
    pub min_tx_rate: Option<u32>,
    #[serde(default)]
    pub max_tx_rate: Option<u32>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl Applied {
    pub fn new(s: &VfSettings, mtu: Option<u32>) -> Self {
        Self {
            mac: s.mac,
            vlan: s.vlan,
            qos: s.qos,
            vlan_proto: s.vlan_proto.map(|p| proto_name(p).to_string()),
            spoofchk: s.spoofchk,
            trust: s.trust,
            link_state: s.link_state.map(|l| link_state_name(l).to_string()),
            min_tx_rate: s.min_tx_rate,
            max_tx_rate: s.max_tx_rate,
            mtu,
        }
    }

    pub fn vf_settings(&self) -> VfSettings {
        VfSettings {
            mac: self.mac,
            vlan: self.vlan,
            qos: self.qos,
            vlan_proto: self.vlan_proto.as_deref().map(|p| match p {
                "802.1ad" => VlanProto::Dot1AD,
                _ => VlanProto::Dot1Q,
            }),
            spoofchk: self.spoofchk,
            trust: self.trust,
            link_state: self.link_state.as_deref().and_then(|l| match l {
                "auto" => Some(VfLinkState::Auto),
                "enable" => Some(VfLinkState::Enable),
                "disable" => Some(VfLinkState::Disable),
                _ => None,
            }),
            min_tx_rate: self.min_tx_rate,
            max_tx_rate: self.max_tx_rate,
        }
    }
}

/// One attachment of a VF to a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub kind: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    /// CNI_NETNS of the ADD.
    pub netns: String,
    /// CNI_ARGS of the ADD (passed to IPAM DEL).
    #[serde(default)]
    pub cni_args: String,
    /// The network name, when the config had one (GC scopes by it).
    #[serde(default)]
    pub network: Option<String>,
    pub pci: PciAddress,
    pub pf: PciAddress,
    pub vf: VfIndex,
    pub mode: Mode,
    pub stage: Stage,
    /// The VF's configuration as its PF reported it before ADD.
    pub original_vf: SavedVf,
    /// The netdev before ADD (netdev mode).
    #[serde(default)]
    pub original_netdev: Option<SavedNetdev>,
    pub applied: Applied,
    /// The named netns (`/run/netns/<name>`) ADD passes the netdev through.
    #[serde(default)]
    pub temp_netns: Option<String>,
    /// The device-info file ADD wrote, removed by DEL.
    #[serde(default)]
    pub device_info_file: Option<PathBuf>,
    /// The network config of the ADD, whole.
    pub config: Value,
    /// The config the IPAM plugin got (ours in the newest CNI version it speaks); IPAM DEL gets
    /// it back. `None`: `config` itself.
    #[serde(default)]
    pub ipam_config: Option<Value>,
    /// The result ADD returned (stage `done`).
    #[serde(default)]
    pub result: Option<Value>,
}

/// A VF's settings as a PF reports them before anyone changed them (tests of this plugin).
#[cfg(test)]
pub(crate) fn untouched_vf(index: u32, mac: vfcore::MacAddr) -> VfConfig {
    VfConfig {
        vf: vfcore::VfIndex(index),
        mac,
        vlan: 0,
        qos: 0,
        vlan_proto: vfcore::netlink::VlanProto::Dot1Q,
        spoofchk: Some(true),
        trust: Some(false),
        link_state: Some(vfcore::netlink::VfLinkState::Auto),
        min_tx_rate: 0,
        max_tx_rate: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VF as a PF reports it before anyone touched it: index 2, no MAC, no VLAN.
    fn original() -> VfConfig {
        untouched_vf(2, MacAddr::ZERO)
    }

    #[test]
    fn restore_settings_touch_only_what_was_applied() {
        let saved = SavedVf::from_config(&original());
        let applied = VfSettings {
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            vlan: Some(100),
            qos: Some(3),
            vlan_proto: Some(VlanProto::Dot1AD),
            spoofchk: Some(false),
            max_tx_rate: Some(50),
            ..VfSettings::default()
        };
        let back = saved.restore_settings(&applied);
        assert_eq!(
            back,
            VfSettings {
                mac: Some(MacAddr::ZERO),
                vlan: Some(0),
                qos: Some(0),
                vlan_proto: Some(VlanProto::Dot1Q),
                spoofchk: Some(true),
                trust: None,
                link_state: None,
                min_tx_rate: Some(0),
                max_tx_rate: Some(0),
            }
        );
        assert!(saved.restore_settings(&VfSettings::default()).is_empty());
        // The applied settings survive the record.
        let a = Applied::new(&applied, None);
        assert_eq!(a.vf_settings(), applied);
    }
}
