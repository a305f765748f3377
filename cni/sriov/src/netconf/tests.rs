//! The config as sriov-cni accepts it, and every refusal naming its key.
use super::*;
use crate::spec::error::CniError;
use serde_json::{json, Value};

/// The CNI error the runtime would read.
fn cni(e: NetconfError) -> CniError {
    CniError::from(crate::SriovError::from(e))
}

fn parse(v: Value) -> Result<SriovConf, CniError> {
    SriovConf::parse(v.to_string().as_bytes(), &CniArgs::default()).map_err(cni)
}

fn parse_args(v: Value, args: &str) -> Result<SriovConf, CniError> {
    SriovConf::parse(v.to_string().as_bytes(), &CniArgs::parse(args).unwrap()).map_err(cni)
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
    let c = parse(json!({"type": "sriov", "mac": "", "spoofchk": "", "vlanProto": ""})).unwrap();
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
    let c = parse(json!({"type": "sriov", "deviceID": "0000:01:10.0", "pciBusID": "0000:01:10.2"}))
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
        let e = cni(with(bad).device_info_path(&node).unwrap_err());
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
    let e = cni(SriovConf::parse(b"{", &CniArgs::default()).unwrap_err());
    assert_eq!(e.code, 6);
    let e = cni(SriovConf::parse(b"[1]", &CniArgs::default()).unwrap_err());
    assert_eq!(e.code, 6);
}

#[test]
fn missing_device_is_code_7() {
    let c = parse(json!({"type": "sriov"})).unwrap();
    let e = cni(c.require_device().unwrap_err());
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("deviceID"));
}
