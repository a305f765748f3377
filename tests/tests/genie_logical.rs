//! Host tier: CNI-Genie LogicalNetworks end to end. The genie binary is exec'd as a container
//! runtime execs it, for pods (`cni: ""`, `networks: "<ln>@eth1"`) in real network namespaces,
//! with Debian's containernetworking-plugins as delegates and the API-server stand-in serving the
//! pods and LogicalNetworks. Checked as a user would: the pod's eth1 address is in the
//! LogicalNetwork's subnet, `spec.vlan` tags the pod's bridge port (read back with iproute2's
//! `bridge -j vlan show`), refusals are CNI code 7 naming the field, and DEL leaves nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use vfgenie_tests::runtime::{require_root, run, unique, HostLink, Node, Sandbox};

const NS: &str = "team";
/// The range of the `lnbr` plugin conf the LogicalNetworks narrow.
const PLUGIN_RANGE: &str = "10.94.0.0/16";

/// A host link deleted when dropped (the LogicalNetworks' bridge, made by the bridge plugin).
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.0]);
    }
}

/// A node with the cluster network (eth0) and the plugin conf `lnbr`: the bridge plugin on its own
/// bridge with host-local over [`PLUGIN_RANGE`].
fn ln_node() -> (Node, Bridge) {
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.91.0.0/24"),
    )
    .unwrap();
    let bridge = Bridge(unique("glb"));
    node.write_conf(
        "30-lnbr.conf",
        &json!({"cniVersion": "1.0.0", "name": "lnbr", "type": "bridge", "bridge": bridge.0,
                "ipMasq": false, "ipam": node.ipam(PLUGIN_RANGE)}),
    )
    .unwrap();
    (node, bridge)
}

fn genie(node: &Node) -> Value {
    node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}))
}

/// Stores a LogicalNetwork with `spec.vlan` (the stand-in's helper has no vlan).
fn add_vlan_ln(node: &Node, name: &str, plugin: &str, subnet: &str, vlan: u16) {
    node.api
        .create(json!({
            "apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"physicalNet": "p1", "plugin": plugin, "subnet": subnet, "vlan": vlan}
        }))
        .unwrap();
}

/// A pod asking, CNI-Genie style, for LogicalNetwork `ln` on eth1.
fn add_pod(node: &Node, pod: &str, ln: &str) {
    node.api
        .add_pod(NS, pod, &[("cni", ""), ("networks", &format!("{ln}@eth1"))]);
}

fn add(node: &Node, pod: &str, sb: &Sandbox) -> vfgenie_tests::runtime::CniOutput {
    node.cni("ADD", pod, &sb.path, "eth0", Some((NS, pod)), &genie(node))
        .unwrap()
}

fn del(node: &Node, pod: &str, sb: &Sandbox) {
    let out = node
        .cni("DEL", pod, &sb.path, "eth0", Some((NS, pod)), &genie(node))
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
}

/// The IPv4 address (without prefix) of `ifname` in the pod.
fn address_of(sb: &Sandbox, ifname: &str) -> Ipv4Addr {
    let addrs = sb.addresses().unwrap();
    let (_, a) = addrs
        .iter()
        .find(|(n, _)| n == ifname)
        .unwrap_or_else(|| panic!("{ifname} missing in {addrs:?}"));
    a.iter()
        .find_map(|a| a.split('/').next().and_then(|ip| ip.parse().ok()))
        .unwrap_or_else(|| panic!("{ifname} has no IPv4 address: {a:?}"))
}

/// Whether `ip` is inside the IPv4 CIDR `cidr`.
fn inside(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, prefix) = cidr.split_once('/').unwrap();
    let net: Ipv4Addr = net.parse().unwrap();
    let prefix: u32 = prefix.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The host ports of bridge `bridge`.
fn ports_of(bridge: &str) -> Vec<String> {
    let out = run("ip", &["-j", "link", "show", "master", bridge]).unwrap_or_default();
    let links: Value = serde_json::from_str(out.trim()).unwrap_or(json!([]));
    links
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A refused ADD: CNI code 7, the message naming the LogicalNetwork and `expect`, nothing left.
fn assert_refused(node: &Node, pod: &str, ln: &str, expect: &str) -> String {
    let sb = Sandbox::new().unwrap();
    let out = add(node, pod, &sb);
    assert!(!out.success, "accepted: {}", out.stdout);
    let err = out.json().unwrap();
    assert_eq!(err["code"], 7, "{err}");
    let msg = err["msg"].as_str().unwrap().to_string();
    assert!(msg.contains(&format!("LogicalNetwork {NS}/{ln}")), "{msg}");
    assert!(msg.contains(expect), "{msg}");
    node.assert_nothing_left(&sb);
    msg
}

#[test]
fn a_pod_on_a_logical_network_gets_an_address_in_its_subnet_and_del_leaves_nothing() {
    require_root();
    let (node, bridge) = ln_node();
    node.api
        .add_logical_network(NS, "blue", "p1", "lnbr", "10.94.5.0/24");
    add_pod(&node, "web", "blue");
    let sb = Sandbox::new().unwrap();
    let out = add(&node, "web", &sb);
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(sb.links().unwrap(), vec!["eth0", "eth1"]);
    assert!(inside(address_of(&sb, "eth0"), "10.91.0.0/24"));
    let eth1 = address_of(&sb, "eth1");
    assert!(inside(eth1, "10.94.5.0/24"), "{eth1}");
    // network-status names the LogicalNetwork with that address.
    let writes = node.api.writes();
    let w = writes.last().expect("no status write");
    let status: Value =
        serde_json::from_str(w.annotation("k8s.v1.cni.cncf.io/network-status").unwrap()).unwrap();
    let entry = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == "eth1")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(entry["name"], "team/blue");
    assert_eq!(entry["ips"][0].as_str(), Some(eth1.to_string().as_str()));
    assert_eq!(ports_of(&bridge.0).len(), 1, "{:?}", ports_of(&bridge.0));

    del(&node, "web", &sb);
    node.assert_nothing_left(&sb);
    assert!(ports_of(&bridge.0).is_empty(), "{:?}", ports_of(&bridge.0));
}

#[test]
fn two_logical_networks_over_one_plugin_give_addresses_in_their_own_subnets() {
    require_root();
    let (node, _bridge) = ln_node();
    node.api
        .add_logical_network(NS, "blue", "p1", "lnbr", "10.94.1.0/24");
    node.api
        .add_logical_network(NS, "green", "p1", "lnbr", "10.94.2.0/24");
    add_pod(&node, "a", "blue");
    add_pod(&node, "b", "green");
    let (sa, sb) = (Sandbox::new().unwrap(), Sandbox::new().unwrap());
    for (pod, s) in [("a", &sa), ("b", &sb)] {
        let out = add(&node, pod, s);
        assert!(out.success, "{pod}: {} / {}", out.stdout, out.stderr);
    }
    let (a, b) = (address_of(&sa, "eth1"), address_of(&sb, "eth1"));
    assert!(inside(a, "10.94.1.0/24"), "{a}");
    assert!(inside(b, "10.94.2.0/24"), "{b}");
    del(&node, "a", &sa);
    del(&node, "b", &sb);
    node.assert_nothing_left(&sa);
    node.assert_nothing_left(&sb);
}

#[test]
fn a_logical_network_subnet_outside_the_plugins_range_is_code_7_and_leaves_nothing() {
    require_root();
    let (node, _bridge) = ln_node();
    node.api
        .add_logical_network(NS, "far", "p1", "lnbr", "10.95.0.0/24");
    add_pod(&node, "web", "far");
    let msg = assert_refused(&node, "web", "far", "spec.subnet 10.95.0.0/24");
    assert!(msg.contains(PLUGIN_RANGE), "{msg}");
}

/// Whether this kernel's bridges can filter VLANs (`CONFIG_BRIDGE_VLAN_FILTERING`).
fn kernel_has_bridge_vlans() -> bool {
    let probe = Bridge(unique("gvp"));
    run(
        "ip",
        &[
            "link",
            "add",
            &probe.0,
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ],
    )
    .is_ok()
}

/// Puts a `bridge` before Debian's in the node's binDir that logs each call's `CNI_COMMAND` and
/// config (one line each) to the returned file, then execs Debian's bridge with the same stdin.
fn record_bridge_calls(node: &Node) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log = node.dir.path().join("bridge-calls.log");
    let script = node.bin_dir.join("bridge");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nconf=$(cat)\nprintf '%s %s\\n' \"$CNI_COMMAND\" \"$conf\" >> '{}'\nprintf '%s' \"$conf\" | exec '{}'\n",
            log.display(),
            node.plugin_dir.join("bridge").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    log
}

/// The configs `bridge` got for `command` on bridge `bridge`, from [`record_bridge_calls`]' log.
fn bridge_calls(log: &std::path::Path, command: &str, bridge: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(command)?.strip_prefix(' '))
        .filter_map(|c| serde_json::from_str::<Value>(c).ok())
        .filter(|c| c["bridge"] == bridge)
        .collect()
}

/// `spec.vlan` on a bridge LogicalNetwork reaches the bridge plugin as `"vlan": 100` (read from a
/// recording wrapper in front of Debian's bridge). Where the kernel filters bridge VLANs, the
/// pod's veth peer is then read back with `bridge -j vlan show` as the bridge's port with PVID
/// 100; where it cannot (this host's kernel: `ip link add ... vlan_filtering 1` is not supported),
/// the bridge plugin's own refusal must come back and leave nothing.
#[test]
fn a_bridge_logical_network_with_a_vlan_tags_the_pods_bridge_port() {
    require_root();
    let (node, bridge) = ln_node();
    let log = record_bridge_calls(&node);
    add_vlan_ln(&node, "tagged", "lnbr", "10.94.7.0/24", 100);
    add_pod(&node, "web", "tagged");
    let sb = Sandbox::new().unwrap();
    let out = add(&node, "web", &sb);

    let calls = bridge_calls(&log, "ADD", &bridge.0);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["vlan"], 100, "{}", calls[0]);
    assert_eq!(calls[0]["ipam"]["subnet"], "10.94.7.0/24", "{}", calls[0]);

    if !kernel_has_bridge_vlans() {
        assert!(!out.success, "{}", out.stdout);
        let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
        assert!(msg.contains("network team/tagged (eth1)"), "{msg}");
        node.assert_nothing_left(&sb);
        assert!(ports_of(&bridge.0).is_empty());
        eprintln!("this kernel has no bridge VLAN filtering: checked the delegate's config only");
        return;
    }
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert!(inside(address_of(&sb, "eth1"), "10.94.7.0/24"));
    // The pod's veth peer is the bridge's only port, and carries VLAN 100 (PVID, untagged).
    let ports = ports_of(&bridge.0);
    assert_eq!(ports.len(), 1, "{ports:?}");
    let shown: Value = serde_json::from_str(
        run("bridge", &["-j", "vlan", "show", "dev", &ports[0]])
            .unwrap()
            .trim(),
    )
    .unwrap();
    let port = shown
        .as_array()
        .and_then(|a| a.iter().find(|p| p["ifname"] == ports[0].as_str()))
        .unwrap_or_else(|| panic!("{} not in {shown}", ports[0]));
    let vlans = port["vlans"].as_array().unwrap();
    assert_eq!(vlans.len(), 1, "{port}");
    assert_eq!(vlans[0]["vlan"], 100, "{port}");
    let flags: Vec<&str> = vlans[0]["flags"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(flags.contains(&"PVID"), "{port}");

    del(&node, "web", &sb);
    node.assert_nothing_left(&sb);
    assert!(ports_of(&bridge.0).is_empty());
}

#[test]
fn a_vlan_on_a_plugin_that_cannot_carry_it_is_code_7_naming_spec_vlan() {
    require_root();
    let (node, _bridge) = ln_node();
    let master = HostLink::veth("glm").unwrap();
    node.write_conf(
        "40-mv.conf",
        &json!({"cniVersion": "1.0.0", "name": "mv", "type": "macvlan", "master": master.0,
                "mode": "bridge", "ipam": node.ipam("10.96.0.0/16")}),
    )
    .unwrap();
    add_vlan_ln(&node, "mvlan", "mv", "10.96.1.0/24", 100);
    add_pod(&node, "web", "mvlan");
    let msg = assert_refused(&node, "web", "mvlan", "spec.vlan 100");
    assert!(msg.contains("\"macvlan\""), "{msg}");
}
