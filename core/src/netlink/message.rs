//! Pure construction of rtnetlink requests: each function returns a [`Request`], whose
//! [`Request::encode`] gives the bytes sent to the kernel. No IO here.

use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, LinkVfInfo, Prop, VfInfo, VfInfoMac,
    VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfVlan, VfVlanInfo, VlanProtocol,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{RouteSpec, VfSettings, VlanProto};
use crate::types::{IfIndex, MacAddr, VfIndex};

/// The highest VLAN ID a VF accepts (4095 is reserved).
pub const VLAN_MAX: u16 = 4094;
/// The highest 802.1p priority.
pub const QOS_MAX: u8 = 7;

/// One request: the rtnetlink message and the `nlmsghdr` flags to send it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub message: RouteNetlinkMessage,
}

impl Request {
    fn ack(message: RouteNetlinkMessage) -> Self {
        Self {
            flags: NLM_F_REQUEST | NLM_F_ACK,
            message,
        }
    }

    fn create(message: RouteNetlinkMessage) -> Self {
        Self {
            flags: NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            message,
        }
    }

    fn dump(message: RouteNetlinkMessage) -> Self {
        Self {
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            message,
        }
    }

    /// Whether the kernel answers with a multipart dump ending in `NLMSG_DONE` (otherwise the
    /// answer ends with the ACK).
    pub fn is_dump(&self) -> bool {
        self.flags & NLM_F_DUMP == NLM_F_DUMP
    }

    /// The bytes of this request with sequence number `seq` (port 0: the kernel fills it in).
    pub fn encode(&self, seq: u32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.flags = self.flags;
        header.sequence_number = seq;
        let mut msg =
            NetlinkMessage::new(header, NetlinkPayload::InnerMessage(self.message.clone()));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }
}

fn link_message(index: IfIndex) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index.0;
    msg
}

/// `RTM_GETLINK` for one link by index.
pub fn get_link_by_index(index: IfIndex) -> Request {
    Request::ack(RouteNetlinkMessage::GetLink(link_message(index)))
}

/// `IFLA_ALT_IFNAME`, which netlink-packet-route has only inside `IFLA_PROP_LIST`.
const IFLA_ALT_IFNAME: u16 = 53;

/// The longest alternative name (`ALTIFNAMSIZ` less the NUL).
pub const ALT_IFNAME_MAX: usize = 127;

/// `RTM_GETLINK` for one link by name: `IFLA_IFNAME` for names of up to 15 bytes (the kernel
/// matches alternative names there too), `IFLA_ALT_IFNAME` for longer alternative names.
pub fn get_link_by_name(name: &str) -> Request {
    let mut msg = LinkMessage::default();
    if name.len() <= crate::types::IFNAME_MAX {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    } else {
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        msg.attributes.push(LinkAttribute::Other(DefaultNla::new(
            IFLA_ALT_IFNAME,
            value,
        )));
    }
    Request::ack(RouteNetlinkMessage::GetLink(msg))
}

/// `RTM_GETLINK` dump of every link.
pub fn dump_links() -> Request {
    Request::dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
}

/// `RTM_GETLINK` for the PF with `IFLA_EXT_MASK` = `RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS`, so
/// the answer carries `IFLA_VFINFO_LIST` without per-VF counters.
pub fn get_vf_configs(pf: IfIndex) -> Request {
    let mut msg = link_message(pf);
    msg.attributes.push(LinkAttribute::ExtMask(vec![
        LinkExtentMask::Vf,
        LinkExtentMask::SkipStats,
    ]));
    Request::ack(RouteNetlinkMessage::GetLink(msg))
}

/// `RTM_SETLINK` on the PF with one `IFLA_VFINFO_LIST` / `IFLA_VF_INFO` holding an attribute per
/// set field of `settings`: `IFLA_VF_MAC`, `IFLA_VF_VLAN_LIST` (one `IFLA_VF_VLAN_INFO`, which the
/// kernel accepts for both 802.1Q and 802.1ad), `IFLA_VF_RATE`, `IFLA_VF_SPOOFCHK`,
/// `IFLA_VF_TRUST`, `IFLA_VF_LINK_STATE`.
///
/// Rejects values the kernel would reject (VLAN above 4094, QoS above 7, QoS or protocol without a
/// VLAN) and a rate with only one of min/max (the kernel sets both at once).
pub fn set_vf(pf: IfIndex, vf: VfIndex, settings: &VfSettings) -> Result<Request, String> {
    let id = vf.0;
    let mut attrs = Vec::new();
    if let Some(mac) = settings.mac {
        attrs.push(VfInfo::Mac(VfInfoMac::new(id, &mac.0)));
    }
    match settings.vlan {
        Some(vlan) => {
            if vlan > VLAN_MAX {
                return Err(format!("VLAN {vlan} is out of range 0-{VLAN_MAX}"));
            }
            let qos = settings.qos.unwrap_or(0);
            if qos > QOS_MAX {
                return Err(format!("VLAN QoS {qos} is out of range 0-{QOS_MAX}"));
            }
            let proto = match settings.vlan_proto.unwrap_or_default() {
                VlanProto::Dot1Q => VlanProtocol::Ieee8021Q,
                VlanProto::Dot1AD => VlanProtocol::Ieee8021Ad,
            };
            attrs.push(VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                id,
                u32::from(vlan),
                u32::from(qos),
                proto,
            ))]));
        }
        None => {
            if settings.qos.is_some() || settings.vlan_proto.is_some() {
                return Err("a VLAN QoS or protocol needs a VLAN".to_string());
            }
        }
    }
    match (settings.min_tx_rate, settings.max_tx_rate) {
        (Some(min), Some(max)) => {
            if max != 0 && min > max {
                return Err(format!(
                    "min_tx_rate {min} Mbps is above max_tx_rate {max} Mbps"
                ));
            }
            attrs.push(VfInfo::Rate(VfInfoRate::new(id, min, max)));
        }
        (None, None) => {}
        _ => return Err("the kernel sets min_tx_rate and max_tx_rate together".to_string()),
    }
    if let Some(on) = settings.spoofchk {
        attrs.push(VfInfo::SpoofCheck(VfInfoSpoofCheck::new(id, on)));
    }
    if let Some(on) = settings.trust {
        attrs.push(VfInfo::Trust(VfInfoTrust::new(id, on)));
    }
    if let Some(state) = settings.link_state {
        attrs.push(VfInfo::LinkState(
            netlink_packet_route::link::VfInfoLinkState::new(id, state.to_kernel().into()),
        ));
    }
    if attrs.is_empty() {
        return Err("no VF setting was given".to_string());
    }
    let mut msg = link_message(pf);
    msg.attributes
        .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(attrs)]));
    Ok(Request::ack(RouteNetlinkMessage::SetLink(msg)))
}

/// `RTM_SETLINK` with `IFLA_IFNAME`.
pub fn set_name(link: IfIndex, name: &str) -> Request {
    let mut msg = link_message(link);
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    Request::ack(RouteNetlinkMessage::SetLink(msg))
}

/// `RTM_SETLINK` with `IFLA_ADDRESS`.
pub fn set_mac(link: IfIndex, mac: MacAddr) -> Request {
    let mut msg = link_message(link);
    msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    Request::ack(RouteNetlinkMessage::SetLink(msg))
}

/// `RTM_SETLINK` with `IFLA_MTU`.
pub fn set_mtu(link: IfIndex, mtu: u32) -> Request {
    let mut msg = link_message(link);
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    Request::ack(RouteNetlinkMessage::SetLink(msg))
}

/// `RTM_SETLINK` changing only `IFF_UP` (`ifi_change` = `IFF_UP`).
pub fn set_up(link: IfIndex, up: bool) -> Request {
    let mut msg = link_message(link);
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
    }
    Request::ack(RouteNetlinkMessage::SetLink(msg))
}

/// `RTM_SETLINK` with `IFLA_NET_NS_FD`: moves the link into the namespace behind `netns_fd`.
pub fn move_to_netns(link: IfIndex, netns_fd: RawFd) -> Request {
    let mut msg = link_message(link);
    msg.attributes.push(LinkAttribute::NetNsFd(netns_fd));
    Request::ack(RouteNetlinkMessage::SetLink(msg))
}

/// `RTM_NEWLINKPROP` adding an alternative name (`IFLA_PROP_LIST` / `IFLA_ALT_IFNAME`).
pub fn add_alt_name(link: IfIndex, name: &str) -> Request {
    let mut msg = link_message(link);
    msg.attributes
        .push(LinkAttribute::PropList(vec![Prop::AltIfName(
            name.to_string(),
        )]));
    Request::create(RouteNetlinkMessage::NewLinkProp(msg))
}

/// `RTM_DELLINKPROP` removing an alternative name (`IFLA_PROP_LIST` / `IFLA_ALT_IFNAME`).
pub fn del_alt_name(link: IfIndex, name: &str) -> Request {
    let mut msg = link_message(link);
    msg.attributes
        .push(LinkAttribute::PropList(vec![Prop::AltIfName(
            name.to_string(),
        )]));
    Request::ack(RouteNetlinkMessage::DelLinkProp(msg))
}

fn family_of(addr: &IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `RTM_NEWADDR` (create, exclusive) with `IFA_LOCAL` and `IFA_ADDRESS` both the address, as
/// `ip addr add` sends for an address without a peer.
pub fn add_address(link: IfIndex, addr: IpAddr, prefix_len: u8) -> Result<Request, String> {
    if prefix_len > max_prefix(&addr) {
        return Err(format!(
            "prefix length /{prefix_len} is too long for {addr}"
        ));
    }
    let mut msg = AddressMessage::default();
    msg.header.family = family_of(&addr);
    msg.header.prefix_len = prefix_len;
    msg.header.index = link.0;
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    Ok(Request::create(RouteNetlinkMessage::NewAddress(msg)))
}

/// `RTM_GETADDR` dump of every address (filtered by link on our side).
pub fn dump_addresses() -> Request {
    Request::dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
}

fn route_address(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

/// `RTM_NEWROUTE` (create, exclusive) in the main table, protocol `boot` as `ip route add` uses;
/// scope universe with a gateway, link without.
pub fn add_route(route: &RouteSpec) -> Result<Request, String> {
    let family_addr = match (&route.destination, &route.gateway) {
        (Some(dst), Some(gw)) if family_of(&dst.addr) != family_of(gw) => {
            return Err(format!(
                "destination {} and gateway {gw} are of different families",
                dst.addr
            ))
        }
        (Some(dst), _) => dst.addr,
        (None, Some(gw)) => *gw,
        (None, None) => return Err("a default route needs a gateway".to_string()),
    };
    if route.gateway.is_none() && route.link.is_none() {
        return Err("a route without a gateway needs an output link".to_string());
    }
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(&family_addr);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    route_attributes(&mut msg, route)?;
    Ok(Request::create(RouteNetlinkMessage::NewRoute(msg)))
}

/// Destination (with its prefix length), gateway and output link of `route`, as attributes.
fn route_attributes(msg: &mut RouteMessage, route: &RouteSpec) -> Result<(), String> {
    if let Some(dst) = &route.destination {
        if dst.prefix_len > max_prefix(&dst.addr) {
            return Err(format!(
                "prefix length /{} is too long for {}",
                dst.prefix_len, dst.addr
            ));
        }
        msg.header.destination_prefix_length = dst.prefix_len;
        msg.attributes
            .push(RouteAttribute::Destination(route_address(dst.addr)));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(link) = route.link {
        msg.attributes.push(RouteAttribute::Oif(link.0));
    }
    Ok(())
}

/// `RTM_GETROUTE` dump of one address family (filtered to the main table on our side).
pub fn dump_routes(ipv6: bool) -> Request {
    let mut msg = RouteMessage::default();
    msg.header.address_family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    Request::dump(RouteNetlinkMessage::GetRoute(msg))
}

/// `RTM_DELROUTE` of a main-table route as [`add_route`] describes it; the kernel deletes the
/// route that matches destination, gateway and output link.
pub fn del_route(route: &RouteSpec) -> Result<Request, String> {
    let family_addr = match (&route.destination, &route.gateway) {
        (Some(dst), _) => dst.addr,
        (None, Some(gw)) => *gw,
        (None, None) => return Err("a default route to delete needs its gateway".to_string()),
    };
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(&family_addr);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.scope = RouteScope::NoWhere;
    route_attributes(&mut msg, route)?;
    Ok(Request::ack(RouteNetlinkMessage::DelRoute(msg)))
}

#[cfg(test)]
mod tests;
