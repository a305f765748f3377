//! Golden JSON per version, conversions and merging.

use super::*;

const V020: &str = r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/24","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]},"ip6":{"ip":"fd00::5/64","gateway":"fd00::1","routes":[{"dst":"::/0"}]},"dns":{"nameservers":["10.1.0.1"]}}"#;

const V031: &str = r#"{"cniVersion":"0.3.1","interfaces":[{"name":"cni0","mac":"0a:58:0a:01:00:01"},{"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/x"}],"ips":[{"version":"4","interface":1,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"version":"6","interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],"dns":{"nameservers":["10.1.0.1"],"domain":"example.org","search":["example.org"],"options":["ndots:2"]}}"#;

const V100: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:01:00:01"},{"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/x"}],"ips":[{"interface":1,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],"dns":{"nameservers":["10.1.0.1"],"domain":"example.org","search":["example.org"],"options":["ndots:2"]}}"#;

const V110: &str = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:01:00:01"},{"name":"eth0","mac":"0a:58:0a:01:00:05","mtu":1400,"sandbox":"/var/run/netns/x","socketPath":"/run/vhu.sock","pciID":"0000:03:02.0"}],"ips":[{"interface":1,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"interface":1,"address":"fd00::5/64"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1","mtu":1400,"advmss":1360,"priority":100,"table":50,"scope":0}],"dns":{"nameservers":["10.1.0.1"],"domain":"example.org","search":["example.org"],"options":["ndots:2"]}}"#;

fn parse(s: &str) -> CniResult {
    CniResult::parse(s.as_bytes(), CniVersion::V0_1_0).unwrap()
}

#[test]
fn golden_round_trip_per_version() {
    for golden in [V020, V031, V100, V110] {
        assert_eq!(parse(golden).to_json(), golden);
    }
    let v030 = V031.replace("0.3.1", "0.3.0");
    assert_eq!(parse(&v030).to_json(), v030);
    let v040 = V031.replace("0.3.1", "0.4.0");
    assert_eq!(parse(&v040).to_json(), v040);
    let v010 = V020.replace("0.2.0", "0.1.0");
    assert_eq!(parse(&v010).to_json(), v010);
}

#[test]
fn typed_fields() {
    let r = parse(V110);
    assert_eq!(r.cni_version, CniVersion::V1_1_0);
    assert_eq!(r.interfaces[1].mtu, Some(1400));
    assert_eq!(r.interfaces[1].pci_id, "0000:03:02.0");
    assert_eq!(r.ips[0].interface, Some(1));
    assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
    assert_eq!(r.routes[0].table, Some(50));
    assert_eq!(r.routes[0].scope, Some(0));
    let legacy = parse(V020);
    assert_eq!(legacy.ips.len(), 2);
    assert_eq!(legacy.ips[0].interface, None);
    assert_eq!(legacy.routes.len(), 2);
}

#[test]
fn down_conversions() {
    let r = parse(V110);
    assert_eq!(r.to_version(CniVersion::V1_0_0).to_json(), V100);
    assert_eq!(r.to_version(CniVersion::V0_3_1).to_json(), V031);
    assert_eq!(
        r.to_version(CniVersion::V0_2_0).to_json(),
        r#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/24","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}]},"ip6":{"ip":"fd00::5/64"},"dns":{"nameservers":["10.1.0.1"],"domain":"example.org","search":["example.org"],"options":["ndots:2"]}}"#
    );
}

#[test]
fn up_conversions_keep_interface_indexes() {
    let r = parse(V031).to_version(CniVersion::V1_1_0);
    assert_eq!(r.to_json(), V100.replace("1.0.0", "1.1.0"));
    assert_eq!(r.ips[1].interface, Some(1));
    let from_legacy = parse(V020).to_version(CniVersion::V1_0_0);
    assert_eq!(
        from_legacy.to_json(),
        r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"address":"fd00::5/64","gateway":"fd00::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"::/0"}],"dns":{"nameservers":["10.1.0.1"]}}"#
    );
}

#[test]
fn round_trips_through_every_version() {
    // What survives a trip down to v and back up is what v can carry.
    let r = parse(V100);
    for v in [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_1_0,
    ] {
        let there = CniResult::parse(r.to_version(v).to_json().as_bytes(), v).unwrap();
        assert_eq!(there.to_version(CniVersion::V1_0_0), r, "via {v}");
    }
    let legacy = parse(V020);
    let up = legacy.to_version(CniVersion::V1_1_0);
    assert_eq!(up.to_version(CniVersion::V0_2_0).to_json(), V020);
}

#[test]
fn missing_version_uses_the_default_and_bad_input_is_code_6_or_1() {
    let r = CniResult::parse(
        br#"{"ips":[{"version":"4","address":"10.0.0.2/8"}]}"#,
        CniVersion::V0_4_0,
    )
    .unwrap();
    assert_eq!(r.cni_version, CniVersion::V0_4_0);
    assert_eq!(r.ips.len(), 1);
    let cases: &[(&[u8], u32)] = &[
        (b"not json", 6),
        (br#"{"cniVersion":"7.0.0"}"#, 1),
        (br#"{"cniVersion":1}"#, 6),
        (
            br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2"}]}"#,
            6,
        ),
        (
            br#"{"cniVersion":"0.4.0","ips":[{"version":"6","address":"10.0.0.2/8"}]}"#,
            6,
        ),
        (br#"{"cniVersion":"0.2.0","ip4":{"ip":"nonsense"}}"#, 6),
    ];
    for (input, code) in cases {
        let e = crate::CniError::from(CniResult::parse(input, CniVersion::V1_0_0).unwrap_err());
        assert_eq!(e.code, *code, "{}: {e}", String::from_utf8_lossy(input));
    }
}

#[test]
fn merge_renumbers_interfaces_and_dedups() {
    let a = parse(V100);
    let b = CniResult::parse(
        br#"{"cniVersion":"0.3.1","interfaces":[{"name":"net1","sandbox":"/x"}],"ips":[{"version":"4","interface":0,"address":"192.168.9.3/24"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"192.168.0.0/16","gw":"192.168.9.1"}],"dns":{"nameservers":["10.1.0.1","192.168.9.1"],"domain":"other.org","search":["other.org"]}}"#,
        CniVersion::V0_3_1,
    )
    .unwrap();
    let ipam_only = CniResult::parse(
        br#"{"cniVersion":"1.0.0","ips":[{"address":"172.16.0.9/16"}]}"#,
        CniVersion::V1_0_0,
    )
    .unwrap();
    let m = CniResult::merge(CniVersion::V1_0_0, &[a, b, ipam_only]);
    assert_eq!(
        m.to_json(),
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:01:00:01"},{"name":"eth0","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/x"},{"name":"net1","sandbox":"/x"}],"ips":[{"interface":1,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"interface":1,"address":"fd00::5/64"},{"interface":2,"address":"192.168.9.3/24"},{"address":"172.16.0.9/16"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"192.168.0.0/16","gw":"192.168.9.1"}],"dns":{"nameservers":["10.1.0.1","192.168.9.1"],"domain":"example.org","search":["example.org","other.org"],"options":["ndots:2"]}}"#
    );
    assert_eq!(
        CniResult::merge(CniVersion::V0_4_0, &[]).to_json(),
        r#"{"cniVersion":"0.4.0","dns":{}}"#
    );
}

/// Found by the fuzz target `cni-result`: a result without `cniVersion`, read as 0.3.0, with
/// 1.1.0 fields. The fields were kept in the parsed result but not printed, so reading what we
/// printed gave a different result, and a later conversion to 1.1.0 brought them back.
#[test]
fn fields_of_a_later_version_are_not_kept() {
    let input = br#"{"interfaces":[{"name":"net1","mac":"02:00:00:00:00:01","sandbox":"/p","mtu":1400,"socketPath":"/run/x.sock","pciID":"0000:01:10.2"}],"ips":[{"address":"10.1.0.5/24","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1","mtu":1400,"advmss":1360,"priority":100,"table":10,"scope":253}]}"#;
    let r = CniResult::parse(input, CniVersion::V0_3_0).unwrap();
    assert_eq!(r.interfaces[0].mtu, None);
    assert_eq!(r.interfaces[0].pci_id, "");
    assert_eq!(r.routes[0].table, None);
    let again = CniResult::parse(r.to_json().as_bytes(), CniVersion::V0_3_0).unwrap();
    assert_eq!(again, r);
    assert_eq!(
        r.to_version(CniVersion::V1_1_0).to_json(),
        r#"{"cniVersion":"1.1.0","interfaces":[{"name":"net1","mac":"02:00:00:00:00:01","sandbox":"/p"}],"ips":[{"interface":0,"address":"10.1.0.5/24"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],"dns":{}}"#
    );
    // The same fields in a 1.1.0 result are kept.
    let v110 = CniResult::parse(input, CniVersion::V1_1_0).unwrap();
    assert_eq!(v110.interfaces[0].mtu, Some(1400));
    assert_eq!(v110.routes[0].table, Some(10));
}
