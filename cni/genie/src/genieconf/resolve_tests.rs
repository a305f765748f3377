use super::*;
use crate::annotations::IpCidr;
use crate::k8s::objects::{LogicalNetworkSpec, ObjectMeta};
use serde_json::json;
use vfkube::logical::contains;

fn write(dir: &Path, file: &str, v: Value) {
    std::fs::write(dir.join(file), v.to_string()).unwrap();
}

#[test]
fn plugin_confs_are_found_by_name_then_type_and_never_genie() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "00-genie.conf", json!({"name":"weave","type":"genie"}));
    write(
        d,
        "10-flannel.conflist",
        json!({"name":"cbr0","plugins":[{"type":"flannel"},{"type":"portmap"}]}),
    );
    write(
        d,
        "20-weave.conflist",
        json!({"name":"weave","plugins":[{"type":"weave-net"}]}),
    );
    write(d, "30-bridge.conf", json!({"name":"mynet","type":"bridge"}));
    let found = |p: &str| find_plugin_conf(d, p).unwrap().map(|r| r.source);
    assert_eq!(
        found("weave"),
        Some(ConfigSource::File(d.join("20-weave.conflist")))
    );
    assert_eq!(
        found("flannel"),
        Some(ConfigSource::File(d.join("10-flannel.conflist")))
    );
    assert_eq!(
        found("bridge"),
        Some(ConfigSource::File(d.join("30-bridge.conf")))
    );
    assert_eq!(found("genie"), None);
    assert_eq!(
        found("portmap"),
        None,
        "only the first plugin of a conflist names it"
    );
    assert!(matches!(
        find_plugin_conf(d, "../../bin/sh"),
        Err(ResolveError::PluginName { .. })
    ));
}

fn ln(subnet: &str) -> LogicalNetwork {
    LogicalNetwork {
        metadata: ObjectMeta {
            name: "net1".into(),
            namespace: "default".into(),
            ..ObjectMeta::default()
        },
        spec: LogicalNetworkSpec {
            physical_net: "phys1".into(),
            plugin: "bridge".into(),
            subnet: subnet.into(),
            vlan: None,
        },
        status: None,
    }
}

fn resolved(v: Value) -> ResolvedConfig {
    let Value::Object(config) = v else { panic!() };
    ResolvedConfig {
        config,
        source: ConfigSource::SpecConfig,
    }
}

#[test]
fn a_logical_network_subnet_narrows_the_plugin_range() {
    let mut r = resolved(
        json!({"name":"b","type":"bridge","ipam":{"type":"host-local","subnet":"10.10.0.0/16","gateway":"10.10.0.1","rangeStart":"10.10.0.10"}}),
    );
    apply_logical_network(&mut r, &ln("10.10.5.0/24")).unwrap();
    assert_eq!(
        r.config["ipam"],
        json!({"type":"host-local","subnet":"10.10.5.0/24"})
    );

    let mut r = resolved(
        json!({"name":"b","plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"fd00::/48"}],[{"subnet":"10.10.0.0/16","gateway":"10.10.0.1"}]]}}]}),
    );
    apply_logical_network(&mut r, &ln("10.10.7.0/24")).unwrap();
    assert_eq!(
        r.config["plugins"][0]["ipam"]["ranges"],
        json!([[{"subnet":"fd00::/48"}],[{"subnet":"10.10.7.0/24"}]])
    );

    let mut same = resolved(json!({"type":"bridge","ipam":{"subnet":"10.10.0.0/16"}}));
    apply_logical_network(&mut same, &ln("")).unwrap();
    assert_eq!(same.config["ipam"]["subnet"], "10.10.0.0/16");
}

#[test]
fn a_logical_network_subnet_outside_the_range_is_refused() {
    let cases = [
        (
            json!({"type":"bridge","ipam":{"subnet":"10.10.0.0/16"}}),
            "10.11.0.0/24",
            "not inside the range 10.10.0.0/16",
        ),
        (
            json!({"type":"bridge","ipam":{"subnet":"10.10.0.0/16"}}),
            "10.0.0.0/8",
            "not inside",
        ),
        (
            json!({"type":"bridge","ipam":{"subnet":"10.10.0.0/16"}}),
            "fd00::/64",
            "not inside",
        ),
        (
            json!({"type":"bridge","ipam":{"ranges":[[{"subnet":"10.10.0.0/16"}]]}}),
            "10.12.0.0/24",
            "not inside the ranges",
        ),
        (
            json!({"type":"bridge","ipam":{"type":"dhcp"}}),
            "10.10.0.0/24",
            "no subnet",
        ),
        (json!({"type":"bridge"}), "10.10.0.0/24", "no ipam section"),
        (
            json!({"type":"bridge","ipam":{"subnet":"10.10.0.0/16"}}),
            "10.10.0.0",
            "spec.subnet",
        ),
    ];
    for (config, subnet, problem) in cases {
        let e = apply_logical_network(&mut resolved(config.clone()), &ln(subnet)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("LogicalNetwork default/net1: "), "{msg}");
        assert!(msg.contains(problem), "{config} {subnet}: {msg}");
    }
}

#[test]
fn containment() {
    let c = |s: &str| s.parse::<IpCidr>().unwrap();
    assert!(contains(c("0.0.0.0/0"), c("10.0.0.0/8")));
    assert!(contains(c("10.0.0.0/8"), c("10.255.0.0/16")));
    assert!(contains(c("10.0.0.0/8"), c("10.0.0.0/8")));
    assert!(!contains(c("10.0.0.0/8"), c("11.0.0.0/16")));
    assert!(contains(c("fd00::/8"), c("fd12::/64")));
    assert!(!contains(c("fd00::/16"), c("fd01::/64")));
    assert!(contains(c("::/0"), c("fd01::/64")));
}
