//! Golden bytes: every expected array below is written out from the kernel UAPI layouts
//! (`struct nlmsghdr`, `struct ifinfomsg`, `struct ifla_vf_*` in include/uapi/linux/if_link.h),
//! on a little-endian host.

use super::*;
use crate::netlink::VfLinkState;

#[cfg(target_endian = "little")]
#[test]
fn set_vf_with_every_setting_matches_the_uapi_layout() {
    let settings = VfSettings {
        mac: Some("02:11:22:33:44:55".parse().unwrap()),
        vlan: Some(100),
        qos: Some(3),
        vlan_proto: Some(VlanProto::Dot1AD),
        spoofchk: Some(false),
        trust: Some(true),
        link_state: Some(VfLinkState::Disable),
        min_tx_rate: Some(10),
        max_tx_rate: Some(1000),
    };
    let bytes = set_vf(IfIndex(5), VfIndex(2), &settings).unwrap().encode(7);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        // nlmsghdr: len 156, RTM_SETLINK (19), NLM_F_REQUEST|NLM_F_ACK, seq 7, port 0
        &[156, 0, 0, 0, 19, 0, 5, 0, 7, 0, 0, 0, 0, 0, 0, 0][..],
        // ifinfomsg: AF_UNSPEC, pad, type 0, index 5, flags 0, change 0
        &[0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // IFLA_VFINFO_LIST (22), len 124
        &[124, 0, 22, 0],
        // IFLA_VF_INFO (1), len 120
        &[120, 0, 1, 0],
        // IFLA_VF_MAC (1), len 40: struct ifla_vf_mac { u32 vf = 2; u8 mac[32] }
        &[40, 0, 1, 0, 2, 0, 0, 0, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
        &[0; 26],
        // IFLA_VF_VLAN_LIST (12), len 24
        &[24, 0, 12, 0],
        // IFLA_VF_VLAN_INFO (1), len 20: { u32 vf = 2; u32 vlan = 100; u32 qos = 3;
        // __be16 vlan_proto = 0x88a8 } padded to 16 bytes
        &[20, 0, 1, 0, 2, 0, 0, 0, 100, 0, 0, 0, 3, 0, 0, 0, 0x88, 0xa8, 0, 0],
        // IFLA_VF_RATE (6), len 16: { u32 vf = 2; u32 min_tx_rate = 10; u32 max_tx_rate = 1000 }
        &[16, 0, 6, 0, 2, 0, 0, 0, 10, 0, 0, 0, 0xe8, 0x03, 0, 0],
        // IFLA_VF_SPOOFCHK (4), len 12: { u32 vf = 2; u32 setting = 0 }
        &[12, 0, 4, 0, 2, 0, 0, 0, 0, 0, 0, 0],
        // IFLA_VF_TRUST (9), len 12: { u32 vf = 2; u32 setting = 1 }
        &[12, 0, 9, 0, 2, 0, 0, 0, 1, 0, 0, 0],
        // IFLA_VF_LINK_STATE (5), len 12: { u32 vf = 2; u32 link_state = 2 (disable) }
        &[12, 0, 5, 0, 2, 0, 0, 0, 2, 0, 0, 0],
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[cfg(target_endian = "little")]
#[test]
fn set_vf_vlan_alone_defaults_to_dot1q_and_qos_zero() {
    let settings = VfSettings {
        vlan: Some(4094),
        ..Default::default()
    };
    let bytes = set_vf(IfIndex(0x0102), VfIndex(0), &settings)
        .unwrap()
        .encode(1);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        // nlmsghdr: len 16 + 16 + 4 + 4 + 24 = 64, RTM_SETLINK, REQUEST|ACK, seq 1
        &[64, 0, 0, 0, 19, 0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0][..],
        // ifinfomsg, index 0x0102
        &[0, 0, 0, 0, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // IFLA_VFINFO_LIST / IFLA_VF_INFO / IFLA_VF_VLAN_LIST / IFLA_VF_VLAN_INFO
        &[32, 0, 22, 0, 28, 0, 1, 0, 24, 0, 12, 0],
        // vf 0, vlan 4094 (0x0ffe), qos 0, proto 0x8100 big-endian, 2 bytes of padding
        &[20, 0, 1, 0, 0, 0, 0, 0, 0xfe, 0x0f, 0, 0, 0, 0, 0, 0, 0x81, 0x00, 0, 0],
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[cfg(target_endian = "little")]
#[test]
fn vf_configs_request_asks_for_vf_info_without_stats() {
    let bytes = get_vf_configs(IfIndex(5)).encode(3);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        // nlmsghdr: len 40, RTM_GETLINK (18), NLM_F_REQUEST|NLM_F_ACK, seq 3
        &[40, 0, 0, 0, 18, 0, 5, 0, 3, 0, 0, 0, 0, 0, 0, 0][..],
        // ifinfomsg, index 5
        &[0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // IFLA_EXT_MASK (29), u32 RTEXT_FILTER_VF (1) | RTEXT_FILTER_SKIP_STATS (8)
        &[8, 0, 29, 0, 9, 0, 0, 0],
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[cfg(target_endian = "little")]
#[test]
fn del_alt_name_is_a_nested_prop_list() {
    let bytes = del_alt_name(IfIndex(7), "enp1s0v3").encode(9);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        // nlmsghdr: len 52, RTM_DELLINKPROP (109), REQUEST|ACK, seq 9
        &[52, 0, 0, 0, 109, 0, 5, 0, 9, 0, 0, 0, 0, 0, 0, 0][..],
        &[0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // IFLA_PROP_LIST (52) | NLA_F_NESTED (0x8000), len 4 + 16 (the padded name attribute)
        &[20, 0, 52, 0x80],
        // IFLA_ALT_IFNAME (53), "enp1s0v3\0" (len 13, padded to 16)
        &[13, 0, 53, 0], b"enp1s0v3", &[0, 0, 0, 0],
    ]
    .concat();
    assert_eq!(bytes, expected);
}

#[cfg(target_endian = "little")]
#[test]
fn set_up_changes_only_iff_up() {
    let up = set_up(IfIndex(3), true).encode(1);
    let down = set_up(IfIndex(3), false).encode(1);
    // ifinfomsg flags at bytes 24..28, change at 28..32: IFF_UP is 1.
    assert_eq!(&up[24..32], &[1, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&down[24..32], &[0, 0, 0, 0, 1, 0, 0, 0]);
}

#[test]
fn set_vf_rejects_what_the_kernel_would() {
    let cases = [
        (
            VfSettings {
                vlan: Some(4095),
                ..Default::default()
            },
            "VLAN 4095 is out of range 0-4094",
        ),
        (
            VfSettings {
                vlan: Some(10),
                qos: Some(8),
                ..Default::default()
            },
            "VLAN QoS 8 is out of range 0-7",
        ),
        (
            VfSettings {
                qos: Some(1),
                ..Default::default()
            },
            "a VLAN QoS or protocol needs a VLAN",
        ),
        (
            VfSettings {
                max_tx_rate: Some(100),
                ..Default::default()
            },
            "the kernel sets min_tx_rate and max_tx_rate together",
        ),
        (
            VfSettings {
                min_tx_rate: Some(200),
                max_tx_rate: Some(100),
                ..Default::default()
            },
            "min_tx_rate 200 Mbps is above max_tx_rate 100 Mbps",
        ),
        (VfSettings::default(), "no VF setting was given"),
    ];
    for (settings, reason) in cases {
        assert_eq!(
            set_vf(IfIndex(1), VfIndex(0), &settings).unwrap_err(),
            reason
        );
    }
}

#[test]
fn settings_split_one_attribute_per_request() {
    let settings = VfSettings {
        mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        vlan: Some(5),
        qos: Some(1),
        max_tx_rate: Some(100),
        link_state: Some(VfLinkState::Auto),
        ..Default::default()
    };
    let parts = settings.split();
    let names: Vec<&str> = parts.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["MAC", "VLAN", "tx rate", "link-state"]);
    assert_eq!(parts[1].1.qos, Some(1));
    assert_eq!(parts[1].1.mac, None);
}

#[test]
fn routes_need_a_gateway_or_a_link() {
    assert!(add_route(&RouteSpec::default_via("10.0.0.1".parse().unwrap())).is_ok());
    assert_eq!(
        add_route(&RouteSpec {
            destination: Some(crate::netlink::IfAddress {
                addr: "10.1.0.0".parse().unwrap(),
                prefix_len: 16
            }),
            gateway: None,
            link: None
        })
        .unwrap_err(),
        "a route without a gateway needs an output link"
    );
    assert!(add_address(IfIndex(1), "10.0.0.1".parse().unwrap(), 33).is_err());
}

#[cfg(target_endian = "little")]
#[test]
fn del_default_route_matches_the_uapi_layout() {
    let route = RouteSpec {
        destination: None,
        gateway: Some("10.0.0.1".parse().unwrap()),
        link: Some(IfIndex(3)),
    };
    let bytes = del_route(&route).unwrap().encode(4);
    #[rustfmt::skip]
    let expected: Vec<u8> = [
        // nlmsghdr: len 44, RTM_DELROUTE (25), NLM_F_REQUEST|NLM_F_ACK, seq 4, port 0
        &[44, 0, 0, 0, 25, 0, 5, 0, 4, 0, 0, 0, 0, 0, 0, 0][..],
        // rtmsg: AF_INET (2), dst_len 0, src_len 0, tos 0, table MAIN (254), protocol 0,
        // scope NOWHERE (255), type 0, flags 0
        &[2, 0, 0, 0, 254, 0, 255, 0, 0, 0, 0, 0],
        // RTA_GATEWAY (5), len 8: 10.0.0.1
        &[8, 0, 5, 0, 10, 0, 0, 1],
        // RTA_OIF (4), len 8: 3
        &[8, 0, 4, 0, 3, 0, 0, 0],
    ]
    .concat();
    assert_eq!(bytes, expected);
    // The listing request asks for one family as a dump.
    let dump = dump_routes(true).encode(1);
    // RTM_GETROUTE (26) with NLM_F_REQUEST|NLM_F_DUMP (0x301), rtmsg family AF_INET6 (10).
    assert_eq!(&dump[4..8], &[26, 0, 0x01, 0x03]);
    assert_eq!(dump[16], 10);
}
