//! Decoding tests on hand-made bytes laid out as the kernel sends them (rtnl_fill_vfinfo with
//! RTEXT_FILTER_SKIP_STATS: MAC, BROADCAST, VLAN, VLAN_LIST, TX_RATE, RATE, SPOOFCHK, LINK_STATE,
//! RSS_QUERY_EN, TRUST), little-endian host.

use super::*;

fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align4(len) + out.len() - len, 0);
    out
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn ifinfomsg(index: u32) -> Vec<u8> {
    let mut out = vec![0, 0, 1, 0]; // AF_UNSPEC, pad, ARPHRD_ETHER
    out.extend_from_slice(&index.to_ne_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// VF 0 exactly as the kernel encodes it: MAC 02:00:00:00:00:10, VLAN 100 QoS 2 802.1Q, rates
/// 0/500, spoofchk on, link-state enable, trust off.
#[cfg(target_endian = "little")]
#[rustfmt::skip]
fn vf0_literal() -> Vec<u8> {
    [
        &[196, 0, 1, 0][..], // IFLA_VF_INFO, len 196
        // IFLA_VF_MAC { vf 0, mac[32] }
        &[40, 0, 1, 0, 0, 0, 0, 0, 0x02, 0, 0, 0, 0, 0x10], &[0; 26],
        // IFLA_VF_BROADCAST { u8 broadcast[32] }
        &[36, 0, 13, 0], &[0xff; 6], &[0; 26],
        // IFLA_VF_VLAN { vf 0, vlan 100, qos 2 }
        &[16, 0, 2, 0, 0, 0, 0, 0, 100, 0, 0, 0, 2, 0, 0, 0],
        // IFLA_VF_VLAN_LIST { IFLA_VF_VLAN_INFO { vf 0, vlan 100, qos 2, proto 0x8100, pad } }
        &[24, 0, 12, 0, 20, 0, 1, 0, 0, 0, 0, 0, 100, 0, 0, 0, 2, 0, 0, 0, 0x81, 0x00, 0, 0],
        // IFLA_VF_TX_RATE { vf 0, rate 500 }
        &[12, 0, 3, 0, 0, 0, 0, 0, 0xf4, 0x01, 0, 0],
        // IFLA_VF_RATE { vf 0, min 0, max 500 }
        &[16, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf4, 0x01, 0, 0],
        // IFLA_VF_SPOOFCHK { vf 0, 1 }
        &[12, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        // IFLA_VF_LINK_STATE { vf 0, 1 = enable }
        &[12, 0, 5, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        // IFLA_VF_RSS_QUERY_EN { vf 0, -1 }
        &[12, 0, 7, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        // IFLA_VF_TRUST { vf 0, 0 }
        &[12, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ]
    .concat()
}

/// VF 1 from a driver that reports neither spoofchk nor trust (-1), on an 802.1ad VLAN.
fn vf1() -> Vec<u8> {
    let mut mac = u32s(&[1]);
    mac.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x11]);
    mac.resize(36, 0);
    let mut vlan_info = u32s(&[1, 300, 0]);
    vlan_info.extend_from_slice(&[0x88, 0xa8, 0, 0]);
    let attrs = [
        nla(1, &mac),
        nla(13, &[0xff; 32]),
        nla(2, &u32s(&[1, 300, 0])),
        nla(12, &nla(1, &vlan_info)),
        nla(3, &u32s(&[1, 0])),
        nla(6, &u32s(&[1, 0, 0])),
        nla(4, &u32s(&[1, u32::MAX])),
        nla(5, &u32s(&[1, 2])),
        nla(7, &u32s(&[1, u32::MAX])),
        nla(9, &u32s(&[1, u32::MAX])),
    ]
    .concat();
    nla(1, &attrs)
}

#[cfg(target_endian = "little")]
#[test]
fn vf_info_list_decodes_into_vf_configs() {
    let mut payload = ifinfomsg(5);
    payload.extend(nla(3, b"enp1s0\0")); // IFLA_IFNAME
    payload.extend(nla(21, &u32s(&[2]))); // IFLA_NUM_VF
    payload.extend(nla(22, &[vf0_literal(), vf1()].concat())); // IFLA_VFINFO_LIST
    let vfs = vf_configs(&payload).unwrap();
    assert_eq!(
        vfs,
        vec![
            VfConfig {
                vf: VfIndex(0),
                mac: "02:00:00:00:00:10".parse().unwrap(),
                vlan: 100,
                qos: 2,
                vlan_proto: VlanProto::Dot1Q,
                spoofchk: Some(true),
                trust: Some(false),
                link_state: Some(VfLinkState::Enable),
                min_tx_rate: 0,
                max_tx_rate: 500,
            },
            VfConfig {
                vf: VfIndex(1),
                mac: "02:00:00:00:00:11".parse().unwrap(),
                vlan: 300,
                qos: 0,
                vlan_proto: VlanProto::Dot1AD,
                spoofchk: None,
                trust: None,
                link_state: Some(VfLinkState::Disable),
                min_tx_rate: 0,
                max_tx_rate: 0,
            },
        ]
    );
}

#[test]
fn old_kernels_without_vlan_list_or_rate_still_decode() {
    let mut mac = u32s(&[3]);
    mac.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x33]);
    mac.resize(36, 0);
    let info = [
        nla(1, &mac),
        nla(2, &u32s(&[3, 7, 1])),
        nla(3, &u32s(&[3, 250])),
        nla(4, &u32s(&[3, 0])),
    ]
    .concat();
    let mut payload = ifinfomsg(9);
    payload.extend(nla(22, &nla(1, &info)));
    let vfs = vf_configs(&payload).unwrap();
    assert_eq!(vfs.len(), 1);
    assert_eq!(vfs[0].vf, VfIndex(3));
    assert_eq!((vfs[0].vlan, vfs[0].qos), (7, 1));
    assert_eq!(vfs[0].vlan_proto, VlanProto::Dot1Q);
    assert_eq!(vfs[0].max_tx_rate, 250);
    assert_eq!(vfs[0].spoofchk, Some(false));
    assert_eq!(vfs[0].trust, None);
}

#[test]
fn a_link_without_vfs_has_an_empty_list() {
    let mut payload = ifinfomsg(2);
    payload.extend(nla(3, b"veth0\0"));
    assert_eq!(vf_configs(&payload).unwrap(), vec![]);
}

#[test]
fn malformed_vf_lists_are_errors_not_panics() {
    let mut payload = ifinfomsg(2);
    // IFLA_VF_MAC claiming 40 bytes inside a 12-byte IFLA_VF_INFO.
    payload.extend(nla(22, &nla(1, &[40, 0, 1, 0, 0, 0, 0, 0])));
    assert!(vf_configs(&payload).is_err());
    // A truncated IFLA_VF_RATE.
    let mut payload = ifinfomsg(2);
    payload.extend(nla(22, &nla(1, &nla(6, &u32s(&[0, 1])))));
    assert!(vf_configs(&payload).is_err());
    // Shorter than an ifinfomsg.
    assert!(vf_configs(&[0; 8]).is_err());
    assert!(parse_link_message(&[0; 8]).is_err());
}

#[cfg(target_endian = "little")]
#[test]
fn error_messages_carry_errno_and_extended_ack() {
    // NLMSG_ERROR, flags NLM_F_CAPPED|NLM_F_ACK_TLVS: error -22, the echoed request header,
    // NLMSGERR_ATTR_MSG "Invalid VLAN".
    let mut msg = Vec::new();
    msg.extend_from_slice(&(-22i32).to_ne_bytes());
    msg.extend_from_slice(&[40, 0, 0, 0, 19, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
    msg.extend(nla(1, b"Invalid VLAN\0"));
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&((16 + msg.len()) as u32).to_ne_bytes());
    datagram.extend_from_slice(&[2, 0, 0x00, 0x03, 7, 0, 0, 0, 0x2a, 0, 0, 0]);
    datagram.extend(&msg);
    // A second message in the same datagram: an ACK for seq 8.
    datagram.extend_from_slice(&[36, 0, 0, 0, 2, 0, 0, 1, 8, 0, 0, 0, 0x2a, 0, 0, 0]);
    datagram.extend_from_slice(&[0, 0, 0, 0]);
    datagram.extend_from_slice(&[36, 0, 0, 0, 19, 0, 5, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
    let msgs = split_messages(&datagram).unwrap();
    assert_eq!(msgs.len(), 2);
    let (h, payload) = msgs[0];
    assert_eq!((h.kind, h.seq, h.port), (NLMSG_ERROR, 7, 42));
    assert_eq!(
        parse_error(&h, payload).unwrap(),
        (-22, Some("Invalid VLAN".to_string()))
    );
    let (h, payload) = msgs[1];
    assert_eq!(h.seq, 8);
    assert_eq!(parse_error(&h, payload).unwrap(), (0, None));
}

#[test]
fn truncated_datagrams_are_errors() {
    assert!(split_messages(&[200, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(split_messages(&[8, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert_eq!(split_messages(&[]).unwrap().len(), 0);
}
