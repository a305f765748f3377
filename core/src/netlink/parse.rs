//! Pure decoding of the kernel's answers: `nlmsghdr` framing, `NLMSG_ERROR` payloads (with the
//! extended ACK message), `RTM_NEWLINK` into [`LinkInfo`], and `IFLA_VFINFO_LIST` into
//! [`VfConfig`].
//!
//! The VF list is decoded here from the raw attribute bytes rather than through
//! netlink-packet-route, because that crate folds the kernel's "not reported" value (`-1`) of
//! spoofchk and trust into `true`.

use netlink_packet_core::Parseable;
use netlink_packet_core::{NLM_F_ACK_TLVS, NLM_F_CAPPED};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, Prop,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};

use super::{IfAddress, LinkInfo, RouteSpec, VfConfig, VfLinkState, VlanProto};
use crate::types::{IfIndex, MacAddr, VfIndex};

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_NEWROUTE: u16 = 24;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSGERR_ATTR_MSG: u16 = 1;

const IFLA_VFINFO_LIST: u16 = 22;
const IFLA_VF_INFO: u16 = 1;
const IFLA_VF_MAC: u16 = 1;
const IFLA_VF_VLAN: u16 = 2;
const IFLA_VF_TX_RATE: u16 = 3;
const IFLA_VF_SPOOFCHK: u16 = 4;
const IFLA_VF_LINK_STATE: u16 = 5;
const IFLA_VF_RATE: u16 = 6;
const IFLA_VF_TRUST: u16 = 9;
const IFLA_VF_VLAN_LIST: u16 = 12;
const IFLA_VF_VLAN_INFO: u16 = 1;

const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// A `nlmsghdr` as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub length: u32,
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub port: u32,
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Splits a received datagram into its netlink messages: each header with its payload.
pub fn split_messages(datagram: &[u8]) -> Result<Vec<(Header, &[u8])>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while datagram.len().saturating_sub(at) >= NLMSG_HDRLEN {
        let field = |off: usize| u32_at(datagram, at + off);
        let (Some(length), Some(kind), Some(flags), Some(seq), Some(port)) = (
            field(0),
            u16_at(datagram, at + 4),
            u16_at(datagram, at + 6),
            field(8),
            field(12),
        ) else {
            return Err("truncated netlink header".to_string());
        };
        let len = length as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            return Err(format!(
                "netlink message length {len} does not fit the {} bytes received",
                datagram.len() - at
            ));
        }
        let header = Header {
            length,
            kind,
            flags,
            seq,
            port,
        };
        out.push((header, &datagram[at + NLMSG_HDRLEN..at + len]));
        at += align4(len);
    }
    Ok(out)
}

/// Splits a run of attributes into (type without flags, value) pairs.
pub fn split_attributes(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len().saturating_sub(at) >= NLA_HDRLEN {
        let (Some(len), Some(kind)) = (u16_at(buf, at), u16_at(buf, at + 2)) else {
            return Err("truncated attribute header".to_string());
        };
        let len = len as usize;
        if len < NLA_HDRLEN || at + len > buf.len() {
            return Err(format!(
                "attribute {kind} of length {len} overruns its {} byte container",
                buf.len() - at
            ));
        }
        out.push((kind & NLA_TYPE_MASK, &buf[at + NLA_HDRLEN..at + len]));
        at += align4(len);
    }
    Ok(out)
}

/// An `NLMSG_ERROR` payload: the error code (0 for an ACK, a negative errno otherwise) and the
/// kernel's extended ACK message if it sent one.
pub fn parse_error(header: &Header, payload: &[u8]) -> Result<(i32, Option<String>), String> {
    let code = u32_at(payload, 0).ok_or("truncated NLMSG_ERROR")? as i32;
    let mut msg = None;
    if header.flags & NLM_F_ACK_TLVS != 0 {
        // The echoed request: its header only when capped, otherwise the whole message.
        let echoed = if header.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            u32_at(payload, 4).map_or(NLMSG_HDRLEN, |l| align4(l as usize))
        };
        if let Some(tlvs) = payload.get(4 + echoed..) {
            for (kind, value) in split_attributes(tlvs)? {
                if kind == NLMSGERR_ATTR_MSG {
                    let text = value.split(|b| *b == 0).next().unwrap_or_default();
                    let text = String::from_utf8_lossy(text).trim().to_string();
                    if !text.is_empty() {
                        msg = Some(text);
                    }
                }
            }
        }
    }
    Ok((code, msg))
}

/// The `RTM_NEWLINK` payload as netlink-packet-route's message.
pub fn parse_link_message(payload: &[u8]) -> Result<LinkMessage, String> {
    if payload.len() < IFINFOMSG_LEN {
        return Err(format!(
            "RTM_NEWLINK of {} bytes is shorter than its ifinfomsg",
            payload.len()
        ));
    }
    LinkMessage::parse(payload).map_err(|e| e.to_string())
}

/// The link's `IFLA_STATS64` counters, when the message carries them.
pub fn link_stats(msg: &LinkMessage) -> Option<super::LinkStats> {
    msg.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Stats64(s) => Some(super::LinkStats {
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
        }),
        _ => None,
    })
}

/// A [`LinkInfo`] from an `RTM_NEWLINK` message.
pub fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: IfIndex(msg.header.index),
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        oper_state: "UNKNOWN".to_string(),
        alt_names: Vec::new(),
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Address(bytes) => {
                if let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice()) {
                    info.mac = Some(MacAddr(mac));
                }
            }
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::OperState(state) => info.oper_state = state.to_string(),
            LinkAttribute::PropList(props) => {
                for prop in props {
                    if let Prop::AltIfName(alt) = prop {
                        info.alt_names.push(alt.clone());
                    }
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(kind) = i {
                        info.kind = Some(kind.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// The address from an `RTM_NEWADDR` payload, with the link it is on.
pub fn address(payload: &[u8]) -> Result<Option<(IfIndex, IfAddress)>, String> {
    if payload.len() < IFADDRMSG_LEN {
        return Err(format!(
            "RTM_NEWADDR of {} bytes is shorter than its ifaddrmsg",
            payload.len()
        ));
    }
    let msg = AddressMessage::parse(payload).map_err(|e| e.to_string())?;
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on point-to-point).
    let mut local = None;
    let mut addr = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => addr = Some(*a),
            _ => {}
        }
    }
    Ok(local.or(addr).map(|a| {
        (
            IfIndex(msg.header.index),
            IfAddress {
                addr: a,
                prefix_len: msg.header.prefix_len,
            },
        )
    }))
}

/// A main-table route from an `RTM_NEWROUTE` payload; `None` for other tables.
pub fn route(payload: &[u8]) -> Result<Option<RouteSpec>, String> {
    let msg = RouteMessage::parse(payload).map_err(|e| e.to_string())?;
    let mut table = u32::from(msg.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut link = None;
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(std::net::IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(std::net::IpAddr::V6(*v6)),
        _ => None,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = ip(a),
            RouteAttribute::Gateway(a) => gateway = ip(a),
            RouteAttribute::Oif(i) => link = Some(IfIndex(*i)),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return Ok(None);
    }
    Ok(Some(RouteSpec {
        destination: match dst {
            Some(addr) => Some(IfAddress {
                addr,
                prefix_len: msg.header.destination_prefix_length,
            }),
            // No RTA_DST: the default route (a prefix length of 0).
            None if msg.header.destination_prefix_length == 0 => None,
            None => return Err("a route with a prefix length but no destination".to_string()),
        },
        gateway,
        link,
    }))
}

/// The VF list of an `RTM_NEWLINK` payload (`ifinfomsg` followed by attributes); empty when the
/// link reports no `IFLA_VFINFO_LIST`.
pub fn vf_configs(newlink_payload: &[u8]) -> Result<Vec<VfConfig>, String> {
    let attrs = newlink_payload
        .get(IFINFOMSG_LEN..)
        .ok_or("RTM_NEWLINK shorter than its ifinfomsg")?;
    let mut out = Vec::new();
    for (kind, value) in split_attributes(attrs)? {
        if kind != IFLA_VFINFO_LIST {
            continue;
        }
        for (kind, info) in split_attributes(value)? {
            if kind == IFLA_VF_INFO {
                out.push(vf_config(info)?);
            }
        }
    }
    Ok(out)
}

fn field(value: &[u8], at: usize, attr: &str) -> Result<u32, String> {
    u32_at(value, at).ok_or_else(|| format!("{attr} is truncated ({} bytes)", value.len()))
}

/// The kernel's "not reported" value for spoofchk and trust.
const NOT_REPORTED: u32 = u32::MAX;

fn optional_bool(v: u32) -> Option<bool> {
    (v != NOT_REPORTED).then_some(v != 0)
}

/// One `IFLA_VF_INFO`'s attributes.
fn vf_config(info: &[u8]) -> Result<VfConfig, String> {
    let mut vf = None;
    let mut cfg = VfConfig {
        vf: VfIndex(0),
        mac: MacAddr::ZERO,
        vlan: 0,
        qos: 0,
        vlan_proto: VlanProto::Dot1Q,
        spoofchk: None,
        trust: None,
        link_state: None,
        min_tx_rate: 0,
        max_tx_rate: 0,
    };
    let mut have_rate = false;
    let mut have_vlan_list = false;
    for (kind, value) in split_attributes(info)? {
        match kind {
            IFLA_VF_MAC => {
                vf = Some(field(value, 0, "IFLA_VF_MAC")?);
                let mac = value.get(4..10).ok_or("IFLA_VF_MAC is truncated")?;
                let mut bytes = [0u8; 6];
                bytes.copy_from_slice(mac);
                cfg.mac = MacAddr(bytes);
            }
            IFLA_VF_VLAN if !have_vlan_list => {
                vf = Some(field(value, 0, "IFLA_VF_VLAN")?);
                cfg.vlan = field(value, 4, "IFLA_VF_VLAN")? as u16;
                cfg.qos = field(value, 8, "IFLA_VF_VLAN")? as u8;
            }
            IFLA_VF_VLAN_LIST => {
                if let Some((_, vi)) = split_attributes(value)?
                    .into_iter()
                    .find(|(k, _)| *k == IFLA_VF_VLAN_INFO)
                {
                    vf = Some(field(vi, 0, "IFLA_VF_VLAN_INFO")?);
                    cfg.vlan = field(vi, 4, "IFLA_VF_VLAN_INFO")? as u16;
                    cfg.qos = field(vi, 8, "IFLA_VF_VLAN_INFO")? as u8;
                    let proto = vi.get(12..14).ok_or("IFLA_VF_VLAN_INFO is truncated")?;
                    let proto = u16::from_be_bytes([proto[0], proto[1]]);
                    // A VF without a VLAN may report protocol 0.
                    cfg.vlan_proto = VlanProto::from_ethertype(proto).unwrap_or_default();
                    have_vlan_list = true;
                }
            }
            IFLA_VF_RATE => {
                vf = Some(field(value, 0, "IFLA_VF_RATE")?);
                cfg.min_tx_rate = field(value, 4, "IFLA_VF_RATE")?;
                cfg.max_tx_rate = field(value, 8, "IFLA_VF_RATE")?;
                have_rate = true;
            }
            IFLA_VF_TX_RATE if !have_rate => {
                vf = Some(field(value, 0, "IFLA_VF_TX_RATE")?);
                cfg.max_tx_rate = field(value, 4, "IFLA_VF_TX_RATE")?;
            }
            IFLA_VF_SPOOFCHK => {
                vf = Some(field(value, 0, "IFLA_VF_SPOOFCHK")?);
                cfg.spoofchk = optional_bool(field(value, 4, "IFLA_VF_SPOOFCHK")?);
            }
            IFLA_VF_TRUST => {
                vf = Some(field(value, 0, "IFLA_VF_TRUST")?);
                cfg.trust = optional_bool(field(value, 4, "IFLA_VF_TRUST")?);
            }
            IFLA_VF_LINK_STATE => {
                vf = Some(field(value, 0, "IFLA_VF_LINK_STATE")?);
                cfg.link_state = VfLinkState::from_kernel(field(value, 4, "IFLA_VF_LINK_STATE")?);
            }
            _ => {}
        }
    }
    cfg.vf = VfIndex(vf.ok_or("IFLA_VF_INFO without any attribute naming its VF")?);
    Ok(cfg)
}

#[cfg(test)]
mod tests;
