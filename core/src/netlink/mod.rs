//! Netlink operations on links and VFs, at the level of what the agent and the CNI do: look links
//! up, read and set VF configuration through the PF, rename, re-address, move between namespaces.
//!
//! Layers, one file each:
//! - [`message`]: pure construction of requests (no IO), byte-tested against the kernel UAPI layout;
//! - [`parse`]: pure decoding of the kernel's answers into [`LinkInfo`] and [`VfConfig`];
//! - [`socket`]: a synchronous rtnetlink socket with bounded receives, ACK and dump handling;
//! - [`ops`]: [`Netlink`], the [`LinkOps`] implementation tying the three together.
//!
//! A [`Netlink`] handle talks to the network namespace of the thread that opened it. To work inside
//! another namespace, open the handle inside [`crate::netns::NetNs::run`].

mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod message;
mod ops;
pub mod parse;
mod socket;

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::netns::NetNs;
use crate::types::{IfIndex, MacAddr, VfIndex};

pub(crate) use error::describe_errno;
pub use error::NetlinkError;
pub use ops::Netlink;
pub use ops::DEFAULT_TIMEOUT;

/// A link as the kernel reports it in `RTM_NEWLINK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    pub index: IfIndex,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// The administrative state (`IFF_UP`).
    pub up: bool,
    /// The operational state (RFC 2863), as `ip link` prints it: `UP`, `DOWN`, `UNKNOWN`, ...
    pub oper_state: String,
    pub alt_names: Vec<String>,
    /// `IFLA_INFO_KIND` for virtual links (`veth`, `bridge`, ...); `None` for physical devices.
    pub kind: Option<String>,
}

/// A link's 64-bit counters (`IFLA_STATS64`), as `ip -s link` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// The VLAN protocol of a VF's port VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum VlanProto {
    /// 802.1Q (ethertype 0x8100).
    #[default]
    #[serde(rename = "802.1q")]
    Dot1Q,
    /// 802.1ad, QinQ (ethertype 0x88a8).
    #[serde(rename = "802.1ad")]
    Dot1AD,
}

impl VlanProto {
    pub const fn ethertype(self) -> u16 {
        match self {
            VlanProto::Dot1Q => 0x8100,
            VlanProto::Dot1AD => 0x88a8,
        }
    }

    pub const fn from_ethertype(value: u16) -> Option<Self> {
        match value {
            0x8100 => Some(VlanProto::Dot1Q),
            0x88a8 => Some(VlanProto::Dot1AD),
            _ => None,
        }
    }
}

/// A VF's administrative link state (`ip link set <pf> vf N state ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VfLinkState {
    /// Follow the PF's link.
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

impl VfLinkState {
    pub const fn to_kernel(self) -> u32 {
        match self {
            VfLinkState::Auto => 0,
            VfLinkState::Enable => 1,
            VfLinkState::Disable => 2,
        }
    }

    pub const fn from_kernel(value: u32) -> Option<Self> {
        match value {
            0 => Some(VfLinkState::Auto),
            1 => Some(VfLinkState::Enable),
            2 => Some(VfLinkState::Disable),
            _ => None,
        }
    }
}

/// A VF's configuration as its PF reports it (`IFLA_VF_INFO`). Rates are in Mbps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfConfig {
    pub vf: VfIndex,
    pub mac: MacAddr,
    pub vlan: u16,
    pub qos: u8,
    pub vlan_proto: VlanProto,
    /// `None` when the driver does not report it.
    pub spoofchk: Option<bool>,
    /// `None` when the driver does not report it.
    pub trust: Option<bool>,
    /// `None` when the driver does not report it.
    pub link_state: Option<VfLinkState>,
    pub min_tx_rate: u32,
    pub max_tx_rate: u32,
}

/// VF settings to apply through the PF. Only the fields that are set are sent to the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VfSettings {
    pub mac: Option<MacAddr>,
    /// VLAN ID 0-4094 (0 removes the port VLAN); `qos` and `vlan_proto` go with it.
    pub vlan: Option<u16>,
    /// Priority 0-7; only sent together with `vlan` (defaults to 0 then).
    pub qos: Option<u8>,
    /// Only sent together with `vlan` (defaults to 802.1Q then).
    pub vlan_proto: Option<VlanProto>,
    pub spoofchk: Option<bool>,
    pub trust: Option<bool>,
    pub link_state: Option<VfLinkState>,
    /// Mbps, 0 for no limit. The kernel takes both rates together: [`LinkOps::set_vf`] reads the
    /// one that is not set from the PF.
    pub min_tx_rate: Option<u32>,
    pub max_tx_rate: Option<u32>,
}

impl VfSettings {
    /// The settings that restore `config` exactly.
    pub fn from_config(config: &VfConfig) -> Self {
        Self {
            mac: Some(config.mac),
            vlan: Some(config.vlan),
            qos: Some(config.qos),
            vlan_proto: Some(config.vlan_proto),
            spoofchk: config.spoofchk,
            trust: config.trust,
            link_state: config.link_state,
            min_tx_rate: Some(config.min_tx_rate),
            max_tx_rate: Some(config.max_tx_rate),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.split().is_empty()
    }

    /// One settings value per kernel attribute (MAC, VLAN, rate, spoofchk, trust, link-state), in
    /// the order they are applied, each with the name used in messages.
    pub fn split(&self) -> Vec<(&'static str, VfSettings)> {
        let mut out = Vec::new();
        let none = VfSettings::default();
        if let Some(mac) = self.mac {
            out.push((
                "MAC",
                VfSettings {
                    mac: Some(mac),
                    ..none.clone()
                },
            ));
        }
        if let Some(vlan) = self.vlan {
            out.push((
                "VLAN",
                VfSettings {
                    vlan: Some(vlan),
                    qos: self.qos,
                    vlan_proto: self.vlan_proto,
                    ..none.clone()
                },
            ));
        }
        if self.min_tx_rate.is_some() || self.max_tx_rate.is_some() {
            out.push((
                "tx rate",
                VfSettings {
                    min_tx_rate: self.min_tx_rate,
                    max_tx_rate: self.max_tx_rate,
                    ..none.clone()
                },
            ));
        }
        if let Some(on) = self.spoofchk {
            out.push((
                "spoofchk",
                VfSettings {
                    spoofchk: Some(on),
                    ..none.clone()
                },
            ));
        }
        if let Some(on) = self.trust {
            out.push((
                "trust",
                VfSettings {
                    trust: Some(on),
                    ..none.clone()
                },
            ));
        }
        if let Some(state) = self.link_state {
            out.push((
                "link-state",
                VfSettings {
                    link_state: Some(state),
                    ..none
                },
            ));
        }
        out
    }
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct IfAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// A route to add: `destination` `None` is the default route of the gateway's family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteSpec {
    pub destination: Option<IfAddress>,
    pub gateway: Option<IpAddr>,
    /// The output link; required when there is no gateway.
    pub link: Option<IfIndex>,
}

impl RouteSpec {
    /// `default via <gateway>`.
    pub fn default_via(gateway: IpAddr) -> Self {
        Self {
            destination: None,
            gateway: Some(gateway),
            link: None,
        }
    }
}

/// The link and VF operations the agent and the CNI need, in one namespace.
pub trait LinkOps {
    /// The link with this name or alternative name (up to 127 bytes), `None` when there is none.
    fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfo>, NetlinkError>;
    /// The link with this index, `None` when there is none.
    fn link_by_index(&mut self, index: IfIndex) -> Result<Option<LinkInfo>, NetlinkError>;
    /// Every link in the namespace.
    fn links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError>;
    /// The VF configuration the PF reports; empty for a link without VFs.
    fn vf_configs(&mut self, pf: IfIndex) -> Result<Vec<VfConfig>, NetlinkError>;
    /// Applies the set fields of `settings` to VF `vf` of `pf`, one kernel request per attribute,
    /// so that an error names the setting the driver refused. Settings before it stay applied.
    fn set_vf(
        &mut self,
        pf: IfIndex,
        vf: VfIndex,
        settings: &VfSettings,
    ) -> Result<(), NetlinkError>;
    /// Renames a link, which must be down: older kernels refuse to rename an up link and newer
    /// ones allow it, so this refuses on every kernel ([`NetlinkError::LinkUp`]).
    fn set_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError>;
    fn set_mac(&mut self, link: IfIndex, mac: MacAddr) -> Result<(), NetlinkError>;
    fn set_mtu(&mut self, link: IfIndex, mtu: u32) -> Result<(), NetlinkError>;
    fn set_up(&mut self, link: IfIndex, up: bool) -> Result<(), NetlinkError>;
    /// Moves a link into `netns`; its index may change there, look it up by name afterwards.
    fn move_to_netns(&mut self, link: IfIndex, netns: &NetNs) -> Result<(), NetlinkError>;
    fn add_address(
        &mut self,
        link: IfIndex,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError>;
    fn addresses(&mut self, link: IfIndex) -> Result<Vec<IfAddress>, NetlinkError>;
    fn add_route(&mut self, route: &RouteSpec) -> Result<(), NetlinkError>;
    fn add_alt_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError>;
    fn del_alt_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError>;
    /// The routes of the main table, both families (`destination: None` is a default route).
    fn routes(&mut self) -> Result<Vec<RouteSpec>, NetlinkError>;
    /// Deletes a main-table route (destination, gateway and link as [`LinkOps::routes`] gave them).
    fn del_route(&mut self, route: &RouteSpec) -> Result<(), NetlinkError>;
    /// Waits until a link with this name exists, polling for at most `timeout`.
    fn wait_for_link(&mut self, name: &str, timeout: Duration) -> Result<LinkInfo, NetlinkError>;
}
