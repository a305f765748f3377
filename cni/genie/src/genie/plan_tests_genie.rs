//! CNI-Genie: `cni` plugins, `default_plugin` and LogicalNetworks.

use super::*;

// CNI-Genie.

#[test]
fn genie_cni_plugins_default_first_then_requested_interfaces() {
    let dir = genie_plugins_dir();
    let conf = genie_in(dir.path(), json!({}));
    let p = plan_for(
        &conf,
        &[("cni", "weave,flannel@eth5")],
        &FakeKube::default(),
    )
    .unwrap();
    assert_eq!(networks(&p), ["weave", "flannel-net"]);
    assert_eq!(ifnames(&p), ["eth0", "eth5"]);
    assert_eq!(defaults(&p), [true, false]);
    assert_eq!(p[1].config["plugins"][0]["type"], "flannel");
}

#[test]
fn genie_cni_plugins_are_numbered_eth1_eth2() {
    let dir = genie_plugins_dir();
    let conf = genie_in(dir.path(), json!({}));
    let p = plan_for(
        &conf,
        &[("cni", "weave,flannel,bridge")],
        &FakeKube::default(),
    )
    .unwrap();
    // A plugin is found by its conf's name, else by its type.
    assert_eq!(networks(&p), ["weave", "flannel-net", "br-net"]);
    assert_eq!(ifnames(&p), ["eth0", "eth1", "eth2"]);
}

#[test]
fn the_first_genie_plugin_may_name_its_interface() {
    let dir = genie_plugins_dir();
    let conf = genie_in(dir.path(), json!({}));
    let p = plan_for(&conf, &[("cni", "weave@eth1,bridge")], &FakeKube::default()).unwrap();
    assert_eq!(ifnames(&p), ["eth1", "eth2"]);
    assert_eq!(defaults(&p), [true, false]);
}

#[test]
fn genie_default_plugin_list_applies_without_annotations() {
    let dir = genie_plugins_dir();
    let conf = genie_in(dir.path(), json!({"default_plugin": "weave,bridge"}));
    let p = plan_for(&conf, &[], &FakeKube::default()).unwrap();
    assert_eq!(networks(&p), ["weave", "br-net"]);
    assert_eq!(ifnames(&p), ["eth0", "eth1"]);
    // The annotation replaces the whole list.
    let p = plan_for(&conf, &[("cni", "flannel")], &FakeKube::default()).unwrap();
    assert_eq!(networks(&p), ["flannel-net"]);
}

#[test]
fn genie_plugins_follow_npwg_networks() {
    let dir = genie_plugins_dir();
    let conf = genie_in(dir.path(), json!({}));
    let kube = FakeKube::default().with_nad("default", "blue", bridge("blue"));
    let p = plan_for(&conf, &[("cni", "weave,bridge"), (NETWORKS, "blue")], &kube).unwrap();
    assert_eq!(networks(&p), ["weave", "default/blue", "br-net"]);
    assert_eq!(ifnames(&p), ["eth0", "net1", "eth1"]);
}

#[test]
fn an_unknown_genie_plugin_is_refused_naming_it() {
    let dir = genie_plugins_dir();
    let conf = genie_in(dir.path(), json!({}));
    let e = refused(plan_for(
        &conf,
        &[("cni", "weave,contiv")],
        &FakeKube::default(),
    ));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(e.msg.contains("\"contiv\""), "{}", e.msg);
    // genie's own conf is never a plugin.
    let e = refused(plan_for(&conf, &[("cni", "genie")], &FakeKube::default()));
    assert_eq!(e.code, 7);
}

// LogicalNetworks.

fn ln_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_conf(
        dir.path(),
        "30-bridge.conf",
        json!({"cniVersion": "1.0.0", "name": "br-net",
        "type": "bridge", "ipam": {"type": "host-local", "subnet": "10.10.0.0/16",
        "gateway": "10.10.0.1"}}),
    );
    dir
}

#[test]
fn logical_networks_apply_their_subnet_to_the_plugins_ipam() {
    let dir = ln_dir();
    let conf = genie_in(dir.path(), json!({}));
    let kube = FakeKube::default()
        .with_ln("default", "blue", "bridge", "10.10.1.0/24")
        .with_ln("default", "green", "bridge", "10.10.2.0/24");
    let p = plan_for(&conf, &[("networks", "blue,green@eth3")], &kube).unwrap();
    assert_eq!(networks(&p), ["default/blue", "default/green"]);
    assert_eq!(ifnames(&p), ["eth0", "eth3"]);
    assert_eq!(defaults(&p), [true, false]);
    assert_eq!(p[0].config["ipam"]["subnet"], "10.10.1.0/24");
    assert_eq!(p[1].config["ipam"]["subnet"], "10.10.2.0/24");
    // The plugin's gateway is outside the narrowed subnet and dropped.
    assert!(p[0].config["ipam"].get("gateway").is_none());
}

#[test]
fn a_logical_network_subnet_outside_the_plugins_range_is_refused() {
    let dir = ln_dir();
    let conf = genie_in(dir.path(), json!({}));
    let kube = FakeKube::default().with_ln("default", "blue", "bridge", "192.168.0.0/24");
    let e = refused(plan_for(&conf, &[("networks", "blue")], &kube));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("default/blue"), "{}", e.msg);
    assert!(e.msg.contains("192.168.0.0/24"), "{}", e.msg);
}

#[test]
fn a_missing_logical_network_is_refused_naming_it() {
    let dir = ln_dir();
    let conf = genie_in(dir.path(), json!({}));
    let e = refused(plan_for(
        &conf,
        &[("networks", "blue")],
        &FakeKube::default(),
    ));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(e.msg.contains("LogicalNetwork default/blue"), "{}", e.msg);
}

#[test]
fn a_logical_network_during_an_api_outage_is_try_again_later() {
    let dir = ln_dir();
    let conf = genie_in(dir.path(), json!({}));
    let kube = FakeKube {
        down: true,
        ..FakeKube::default()
    };
    let e = refused(plan_for(&conf, &[("networks", "blue")], &kube));
    assert_eq!(e.code, 11);
    assert!(e.msg.contains("LogicalNetwork default/blue"), "{}", e.msg);
}

#[test]
fn a_logical_network_vlan_is_set_on_a_bridge_and_refused_on_other_types() {
    let dir = ln_dir();
    write_conf(
        dir.path(),
        "40-mv.conf",
        json!({"cniVersion": "1.0.0", "name": "mv", "type": "macvlan", "master": "eth1"}),
    );
    let conf = genie_in(dir.path(), json!({}));
    let mut kube = FakeKube::default()
        .with_ln("default", "blue", "bridge", "10.10.1.0/24")
        .with_ln("default", "red", "mv", "");
    for ln in kube.lns.values_mut() {
        ln.spec.vlan = Some(100);
    }
    let p = plan_for(&conf, &[("networks", "blue")], &kube).unwrap();
    assert_eq!(p[0].config["vlan"], 100);
    assert_eq!(p[0].config["ipam"]["subnet"], "10.10.1.0/24");
    let e = refused(plan_for(&conf, &[("networks", "red")], &kube));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("LogicalNetwork default/red"), "{}", e.msg);
    assert!(e.msg.contains("spec.vlan 100"), "{}", e.msg);
    assert!(e.msg.contains("\"macvlan\""), "{}", e.msg);
}

#[test]
fn a_logical_network_on_plugin_sriov_takes_the_agents_pools_with_its_subnet_and_vlan() {
    let dir = genie_plugins_dir();
    let agent = dir.path().join("agent.config");
    std::fs::write(
        &agent,
        json!({"resourceList": [{"resourcePrefix": "example.com", "resourceName": "igb_net"}]})
            .to_string(),
    )
    .unwrap();
    let conf = genie_in(
        dir.path(),
        json!({"sriov": {"agentConfig": agent.to_str().unwrap(),
        "vlan": 100, "ipam": {"type": "host-local", "subnet": "10.56.217.0/24"}}}),
    );
    let mut kube = FakeKube::default().with_ln("default", "blue", "sriov", "10.56.217.128/25");
    for ln in kube.lns.values_mut() {
        ln.spec.vlan = Some(200);
    }
    let p = plan_for(&conf, &[("cni", ""), ("networks", "blue@eth1")], &kube).unwrap();
    let last = p.last().unwrap();
    assert_eq!(last.ifname, "eth1");
    assert_eq!(last.resources, ["example.com/igb_net"]);
    assert_eq!(last.config["type"], "sriov");
    assert_eq!(last.config["vlan"], 200);
    assert_eq!(last.config["ipam"]["subnet"], "10.56.217.128/25");
    // Outside the key's range: refused, as for any plugin.
    let kube = FakeKube::default().with_ln("default", "red", "sriov", "10.99.0.0/24");
    let e = refused(plan_for(
        &conf,
        &[("cni", ""), ("networks", "red@eth1")],
        &kube,
    ));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("LogicalNetwork default/red"), "{}", e.msg);
}
