//! Host tier: the genie binary exec'd as a container runtime execs it, for pods in real network
//! namespaces, with Debian's containernetworking-plugins as delegates and the API-server stand-in
//! serving pods and NetworkAttachmentDefinitions. Each test checks what a user would: interfaces
//! and addresses in the pod, the network-status written on it, and that DEL leaves no link, lease
//! or cache record behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use vfgenie_tests::runtime::{require_root, run, unique, HostLink, Node, Sandbox};

const NS: &str = "team";

/// A NAD config: ptp (a veth pair to the host, /32 style routes) with host-local on `subnet`.
fn ptp_nad(node: &Node, name: &str, subnet: &str) -> String {
    json!({"cniVersion": "1.0.0", "name": name, "type": "ptp", "ipMasq": false, "ipam": node.ipam(subnet)})
        .to_string()
}

fn macvlan_conf(node: &Node, name: &str, master: &str, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": master, "mode": "bridge",
           "ipam": node.ipam(subnet)})
}

/// The standard node of these tests: cluster network (bridge), NAD `team/blue` (ptp), and a
/// CNI-Genie plugin conf `red` (macvlan on a dummy master).
fn three_network_node() -> (Node, HostLink) {
    let node = Node::new().unwrap();
    let dummy = HostLink::veth("gdm").unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.91.0.0/24"),
    )
    .unwrap();
    node.write_conf(
        "20-red.conf",
        &macvlan_conf(&node, "red", &dummy.0, "10.93.0.0/24"),
    )
    .unwrap();
    node.api
        .add_nad(NS, "blue", &ptp_nad(&node, "blue", "10.92.0.0/24"), None);
    (node, dummy)
}

fn genie(node: &Node, version: &str) -> Value {
    node.genie_conf(version, json!({"clusterNetwork": "cluster"}))
}

#[test]
fn one_pod_three_networks_from_both_annotation_styles() {
    require_root();
    let (node, _dummy) = three_network_node();
    let uid = node.api.add_pod(
        NS,
        "web",
        &[("k8s.v1.cni.cncf.io/networks", "blue"), ("cni", "red")],
    );
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, "1.0.0");
    let out = node
        .cni("ADD", "c1", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let result = out.json().unwrap();
    assert_eq!(result["cniVersion"], "1.0.0");

    // In the pod: eth0 from the cluster network, net1 from the NAD, eth1 from the CNI-Genie plugin.
    let addrs = sb.addresses().unwrap();
    let find = |n: &str| {
        addrs
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("{n} missing in {addrs:?}"))
    };
    assert!(find("eth0")[0].starts_with("10.91.0."), "{addrs:?}");
    assert!(find("net1")[0].starts_with("10.92.0."), "{addrs:?}");
    assert!(find("eth1")[0].starts_with("10.93.0."), "{addrs:?}");
    assert_eq!(sb.links().unwrap(), vec!["eth0", "eth1", "net1"]);
    // One default route, through the cluster network.
    let defaults = sb.default_routes().unwrap();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].2, "eth0");

    // The merged result lists the three pod interfaces with their addresses.
    let sandboxed: Vec<&str> = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(sandboxed, vec!["eth0", "net1", "eth1"]);
    assert_eq!(result["ips"].as_array().unwrap().len(), 3);

    // network-status and multi-ip-preferences written through pods/status.
    let writes = node.api.writes();
    let w = writes.last().expect("no status write");
    assert_eq!((w.namespace.as_str(), w.name.as_str()), (NS, "web"));
    assert!(
        node.api
            .requests()
            .iter()
            .any(|r| r.starts_with("PUT") && r.ends_with("/namespaces/team/pods/web/status")),
        "{:?}",
        node.api.requests()
    );
    let status: Value =
        serde_json::from_str(w.annotation("k8s.v1.cni.cncf.io/network-status").unwrap()).unwrap();
    let entries = status.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(
        (
            entries[0]["name"].as_str(),
            entries[0]["interface"].as_str(),
            entries[0]["default"].as_bool()
        ),
        (Some("cluster"), Some("eth0"), Some(true))
    );
    assert_eq!(entries[1]["name"], "team/blue");
    assert_eq!(entries[1]["interface"], "net1");
    assert_eq!(entries[1]["default"], false);
    assert_eq!(entries[2]["name"], "red");
    let net1_ip = find("net1")[0].split('/').next().unwrap().to_string();
    assert_eq!(entries[1]["ips"][0].as_str(), Some(net1_ip.as_str()));
    assert!(entries[2]["mac"].as_str().is_some_and(|m| m.len() == 17));
    let multi: Value = serde_json::from_str(w.annotation("multi-ip-preferences").unwrap()).unwrap();
    assert_eq!(multi["multi_entry"], 3);

    // The cache record names the pod.
    let records = node.cache_records();
    assert_eq!(records, vec!["c1-eth0.json"]);
    let rec: Value = serde_json::from_slice(
        &std::fs::read(node.cache_dir.join("vfgenie").join(&records[0])).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["podUid"], uid.as_str());

    // CHECK passes on the attached pod.
    let chk = node
        .cni("CHECK", "c1", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(chk.success, "{} / {}", chk.stdout, chk.stderr);

    // DEL: nothing left in the pod, no lease, no record; a second DEL is fine too.
    assert_eq!(node.leases().len(), 3);
    let del = node
        .cni("DEL", "c1", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    assert!(del.stdout.is_empty());
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty());
    let again = node
        .cni("DEL", "c1", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(again.success, "{}", again.stdout);
}

#[test]
fn default_plugins_apply_when_the_pod_asks_for_nothing() {
    require_root();
    let node = Node::new().unwrap();
    let dummy = HostLink::veth("gdm").unwrap();
    node.write_conf(
        "20-red.conf",
        &macvlan_conf(&node, "red", &dummy.0, "10.94.0.0/24"),
    )
    .unwrap();
    node.api.add_pod(NS, "plain", &[]);
    let sb = Sandbox::new().unwrap();
    // CNI-Genie: a plugin may repeat to give the pod two addresses from it.
    let conf = node.genie_conf("1.0.0", json!({"default_plugin": "red,red"}));
    let out = node
        .cni("ADD", "c2", &sb.path, "eth0", Some((NS, "plain")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(sb.links().unwrap(), vec!["eth0", "eth1"]);
    let addrs = sb.addresses().unwrap();
    assert!(addrs
        .iter()
        .filter(|(n, _)| n != "lo")
        .all(|(_, a)| a[0].starts_with("10.94.0.")));
    let del = node
        .cni("DEL", "c2", &sb.path, "eth0", Some((NS, "plain")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    assert!(node.leases().is_empty());
}

#[test]
fn a_delegate_failing_mid_add_tears_down_what_was_added() {
    require_root();
    let (node, _dummy) = three_network_node();
    // The CNI-Genie plugin's master link does not exist: the third attachment fails.
    node.write_conf(
        "20-red.conf",
        &macvlan_conf(&node, "red", "nosuchlink0", "10.93.0.0/24"),
    )
    .unwrap();
    node.api.add_pod(
        NS,
        "web",
        &[("k8s.v1.cni.cncf.io/networks", "blue"), ("cni", "red")],
    );
    let sb = Sandbox::new().unwrap();
    let out = node
        .cni(
            "ADD",
            "c3",
            &sb.path,
            "eth0",
            Some((NS, "web")),
            &genie(&node, "1.0.0"),
        )
        .unwrap();
    assert!(!out.success);
    let err = out.json().unwrap();
    assert!(err["code"].as_u64().unwrap() > 0);
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("network red (eth1)"), "{msg}");
    // eth0 and net1 were removed again, their addresses released, nothing cached.
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty(), "{}", out.stderr);
    assert!(
        node.api.writes().is_empty(),
        "status written for a failed ADD"
    );
}

#[test]
fn a_status_write_that_keeps_failing_undoes_the_add() {
    require_root();
    let (node, _dummy) = three_network_node();
    node.api.add_pod(
        NS,
        "web",
        &[("k8s.v1.cni.cncf.io/networks", "blue"), ("cni", "red")],
    );
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, "1.0.0");
    // Every status write meets a conflict: the client gives up after its bounded retries, while
    // the routes and the results' record were being written beside it.
    node.api.inject_conflicts(1000);
    let out = node
        .cni("ADD", "c5", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(!out.success, "{}", out.stdout);
    let err = out.json().unwrap();
    assert_eq!(err["code"], 11, "try again later: {err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(msg.contains("network-status of pod team/web"), "{msg}");
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty(), "{}", out.stderr);
    assert!(node.api.writes().is_empty(), "{:?}", node.api.writes());

    // The runtime's retry, with the API server answering again, attaches the pod.
    node.api.inject_conflicts(0);
    let out = node
        .cni("ADD", "c5", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(sb.links().unwrap(), vec!["eth0", "eth1", "net1"]);
    assert_eq!(node.cache_records().len(), 1);
    let del = node
        .cni("DEL", "c5", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    assert!(node.leases().is_empty() && node.cache_records().is_empty());
}

/// A delegate that stalls in ADD (it writes its parent's pid, genie's, and its own, then sleeps)
/// and succeeds at everything else: a stand-in for a plugin that hangs, so that the test can kill
/// genie while a delegate runs.
const STALLING_PLUGIN: &str = r#"#!/bin/sh
case "$CNI_COMMAND" in
ADD)
    echo "$PPID $$" > "$(dirname "$0")/stalled.tmp" && mv "$(dirname "$0")/stalled.tmp" "$(dirname "$0")/stalled"
    exec sleep 60 ;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}' ;;
esac
exit 0
"#;

#[test]
fn genie_killed_mid_add_leaves_a_record_that_del_cleans_up_from() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let (node, _dummy) = three_network_node();
    let plugin = node.bin_dir.join("stall");
    std::fs::write(&plugin, STALLING_PLUGIN).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The third network's delegate stalls: bridge (eth0) and ptp (net1) are done by then.
    node.write_conf(
        "20-red.conf",
        &json!({"cniVersion": "1.0.0", "name": "red", "type": "stall"}),
    )
    .unwrap();
    node.api.add_pod(
        NS,
        "crashy",
        &[("k8s.v1.cni.cncf.io/networks", "blue"), ("cni", "red")],
    );
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, "1.0.0");
    let pod = Some((NS, "crashy"));
    let stalled = node.bin_dir.join("stalled");
    let add = std::thread::scope(|scope| {
        let add = scope.spawn(|| node.cni("ADD", "c9", &sb.path, "eth0", pod, &conf).unwrap());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !stalled.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the delegate never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let pids = std::fs::read_to_string(&stalled).unwrap();
        for pid in pids.split_whitespace() {
            run("kill", &["-KILL", pid]).unwrap();
        }
        add.join().unwrap()
    });
    assert!(
        !add.success,
        "a killed ADD reported success: {}",
        add.stdout
    );
    // What the crash left: the two finished attachments and the record naming all three.
    let mut links = sb.links().unwrap();
    links.sort();
    assert_eq!(links, ["eth0", "net1"]);
    assert_eq!(node.leases().len(), 2);
    assert_eq!(node.cache_records().len(), 1);
    assert!(
        node.api.writes().is_empty(),
        "status written by a killed ADD"
    );

    // The runtime's DEL, from the record alone, takes down everything.
    let del = node.cni("DEL", "c9", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty());
}

/// ADD a pod with the cluster network and `team/blue`, then return what DEL needs.
fn attached_pod(node: &Node, container: &str) -> (Sandbox, Value) {
    node.api
        .add_pod(NS, container, &[("k8s.v1.cni.cncf.io/networks", "blue")]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(node, "1.0.0");
    let out = node
        .cni(
            "ADD",
            container,
            &sb.path,
            "eth0",
            Some((NS, container)),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(node.leases().len(), 2);
    (sb, conf)
}

#[test]
fn del_works_from_the_cache_when_the_api_is_down_or_the_pod_is_gone() {
    require_root();
    let (node, _dummy) = three_network_node();
    let (sb, conf) = attached_pod(&node, "p1");
    node.api.set_available(false);
    let del = node
        .cni("DEL", "p1", &sb.path, "eth0", Some((NS, "p1")), &conf)
        .unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    assert!(sb.links().unwrap().is_empty());
    assert!(node.leases().is_empty());
    node.api.set_available(true);

    let (sb2, conf) = attached_pod(&node, "p2");
    node.api.delete_pod(NS, "p2");
    let del = node
        .cni("DEL", "p2", &sb2.path, "eth0", Some((NS, "p2")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    assert!(node.leases().is_empty());
    assert!(node.cache_records().is_empty());
}

#[test]
fn del_succeeds_and_releases_addresses_when_the_netns_is_gone() {
    require_root();
    let (node, _dummy) = three_network_node();
    let (mut sb, conf) = attached_pod(&node, "p3");
    let path = sb.path.clone();
    sb.destroy();
    let del = node
        .cni("DEL", "p3", &path, "eth0", Some((NS, "p3")), &conf)
        .unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty());
}

/// A corrupt record, and the API's pod of that name is not the one the runtime deletes (another
/// UID): its networks cannot be planned again, so DEL fails naming the record and releases
/// nothing (genie_robust has the pod the API still has, and the second DEL's quarantine).
#[test]
fn a_corrupt_record_of_a_replaced_pod_is_an_error_and_nothing_is_released() {
    require_root();
    let (node, _dummy) = three_network_node();
    let (sb, conf) = attached_pod(&node, "p4");
    let rec = node.cache_dir.join("vfgenie").join("p4-eth0.json");
    std::fs::write(&rec, b"{\"kind\": \"vfgeniePodV1\", \"attach").unwrap();
    let del = node
        .cni_with_args(
            "DEL",
            "p4",
            &sb.path,
            "eth0",
            Some((NS, "p4")),
            "K8S_POD_UID=uid-of-an-earlier-p4",
            &conf,
        )
        .unwrap();
    assert!(!del.success);
    let err = del.json().unwrap();
    assert_eq!(err["code"], 6, "{err}");
    assert!(
        err["msg"].as_str().unwrap().contains("p4-eth0.json"),
        "{err}"
    );
    assert!(
        del.stderr.contains("uid-of-an-earlier-p4")
            && del.stderr.contains("cannot be planned again"),
        "{}",
        del.stderr
    );
    assert!(rec.exists(), "the corrupt record must stay for an operator");
    assert_eq!(node.leases().len(), 2, "nothing may be released blindly");
    std::fs::remove_file(&rec).unwrap();
}

#[test]
fn bad_annotations_and_traversal_attempts_are_refused_and_leave_nothing() {
    require_root();
    let (node, _dummy) = three_network_node();
    let cases: &[(&str, &str, &str)] = &[
        (
            "k8s.v1.cni.cncf.io/networks",
            "../x",
            "k8s.v1.cni.cncf.io/networks",
        ),
        (
            "k8s.v1.cni.cncf.io/networks",
            "a/b/c",
            "k8s.v1.cni.cncf.io/networks",
        ),
        (
            "k8s.v1.cni.cncf.io/networks",
            r#"[{"name": "blue", "interface": "../../etc"}]"#,
            "interface",
        ),
        (
            "k8s.v1.cni.cncf.io/networks",
            r#"[{"name": "blue""#,
            "k8s.v1.cni.cncf.io/networks",
        ),
        ("cni", "../../bin/sh", "cni"),
        ("k8s.v1.cni.cncf.io/networks", "missing", "team/missing"),
    ];
    for (i, (key, value, expect)) in cases.iter().enumerate() {
        let pod = format!("bad{i}");
        node.api.add_pod(NS, &pod, &[(key, value)]);
        let sb = Sandbox::new().unwrap();
        let out = node
            .cni(
                "ADD",
                &pod,
                &sb.path,
                "eth0",
                Some((NS, &pod)),
                &genie(&node, "1.0.0"),
            )
            .unwrap();
        assert!(!out.success, "{value:?} accepted");
        let err = out.json().unwrap();
        let msg = err["msg"].as_str().unwrap();
        assert!(
            msg.contains(&format!("{NS}/{pod}")) || msg.contains(expect),
            "{value:?}: {msg}"
        );
        assert!(msg.contains(expect), "{value:?}: {msg}");
        assert!(sb.links().unwrap().is_empty());
        assert!(
            node.leases().is_empty(),
            "{value:?} leaked {:?}",
            node.leases()
        );
        assert!(node.cache_records().is_empty());
    }
    // Two attachments on one interface name.
    node.api
        .add_pod(NS, "clash", &[("k8s.v1.cni.cncf.io/networks", "blue@eth0")]);
    let sb = Sandbox::new().unwrap();
    let out = node
        .cni(
            "ADD",
            "clash",
            &sb.path,
            "eth0",
            Some((NS, "clash")),
            &genie(&node, "1.0.0"),
        )
        .unwrap();
    assert!(!out.success);
    assert!(out.json().unwrap()["msg"]
        .as_str()
        .unwrap()
        .contains("eth0 is requested twice"));
    assert!(node.leases().is_empty());
}

#[test]
fn results_come_back_in_the_version_the_runtime_speaks() {
    require_root();
    let (node, _dummy) = three_network_node();
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let pod = format!("v{i}");
        node.api
            .add_pod(NS, &pod, &[("k8s.v1.cni.cncf.io/networks", "blue")]);
        let sb = Sandbox::new().unwrap();
        let conf = genie(&node, version);
        let out = node
            .cni("ADD", &pod, &sb.path, "eth0", Some((NS, &pod)), &conf)
            .unwrap();
        assert!(out.success, "{version}: {} / {}", out.stdout, out.stderr);
        let r = out.json().unwrap();
        assert_eq!(r["cniVersion"], *version);
        let ip0 = &r["ips"][0];
        // 0.3.x and 0.4.0 results carry "version" per address; 1.x dropped it.
        assert_eq!(
            ip0.get("version").is_some(),
            version.starts_with("0."),
            "{version}: {r}"
        );
        assert!(ip0["interface"].as_u64().is_some());
        let del = node
            .cni("DEL", &pod, &sb.path, "eth0", Some((NS, &pod)), &conf)
            .unwrap();
        assert!(del.success, "{version}: {}", del.stdout);
    }
    assert!(node.leases().is_empty());
    let v = node
        .cni(
            "VERSION",
            "",
            std::path::Path::new(""),
            "",
            None,
            &json!({"cniVersion": "1.1.0"}),
        )
        .unwrap();
    let info = v.json().unwrap();
    let versions: Vec<&str> = info["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
    ] {
        assert!(versions.contains(&want), "{versions:?}");
    }
}

#[test]
fn fifty_concurrent_pods_leave_nothing_behind() {
    require_root();
    let (node, _dummy) = three_network_node();
    let conf = genie(&node, "1.0.0");
    let pods: Vec<(String, Sandbox)> = (0..50)
        .map(|i| {
            let name = format!("load{i}");
            node.api
                .add_pod(NS, &name, &[("k8s.v1.cni.cncf.io/networks", "blue")]);
            (name, Sandbox::new().unwrap())
        })
        .collect();
    std::thread::scope(|s| {
        for (name, sb) in &pods {
            let (node, conf) = (&node, &conf);
            s.spawn(move || {
                let out = node
                    .cni("ADD", name, &sb.path, "eth0", Some((NS, name)), conf)
                    .unwrap();
                assert!(out.success, "{name}: {} / {}", out.stdout, out.stderr);
            });
        }
    });
    assert_eq!(node.leases().len(), 100);
    for (_, sb) in &pods {
        assert_eq!(sb.links().unwrap(), vec!["eth0", "net1"]);
    }
    std::thread::scope(|s| {
        for (name, sb) in &pods {
            let (node, conf) = (&node, &conf);
            s.spawn(move || {
                let out = node
                    .cni("DEL", name, &sb.path, "eth0", Some((NS, name)), conf)
                    .unwrap();
                assert!(out.success, "{name}: {}", out.stdout);
            });
        }
    });
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty());
    for (_, sb) in &pods {
        assert!(sb.links().unwrap().is_empty());
    }
    // No host-side veth of a ptp attachment is left (their names start with "veth").
    let host_links = run("ip", &["-j", "link"]).unwrap();
    let v: Value = serde_json::from_str(&host_links).unwrap();
    let peers_of_ours = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["master"].as_str() == Some(node.bridge.as_str()))
        .count();
    assert_eq!(peers_of_ours, 0, "bridge ports left behind");
}

/// A NAD config: a bridge of its own with host-local on `subnet` (gateway .1 on the bridge).
struct GreenBridge(String);
impl Drop for GreenBridge {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.0]);
    }
}

fn green_nad(node: &Node, name: &str, subnet: &str, default_gw: bool) -> (String, GreenBridge) {
    let br = unique("ggr");
    let conf = json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": br,
        "isGateway": true, "isDefaultGateway": default_gw, "ipMasq": false, "ipam": node.ipam(subnet)});
    (conf.to_string(), GreenBridge(br))
}

#[test]
fn one_default_route_per_family_where_the_pod_asks_for_it() {
    require_root();
    let (node, _dummy) = three_network_node();
    let (green, _br) = green_nad(&node, "green", "10.95.0.0/24", false);
    node.api.add_nad(NS, "green", &green, None);
    node.api.add_pod(
        NS,
        "router",
        &[(
            "k8s.v1.cni.cncf.io/networks",
            r#"[{"name": "green", "default-route": ["10.95.0.1"]}]"#,
        )],
    );
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, "1.0.0");
    let out = node
        .cni("ADD", "r1", &sb.path, "eth0", Some((NS, "router")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let defaults = sb.default_routes().unwrap();
    assert_eq!(
        defaults,
        vec![(
            "-4".to_string(),
            "10.95.0.1".to_string(),
            "net1".to_string()
        )]
    );
    let r = out.json().unwrap();
    let default_gws: Vec<&str> = r["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rt| rt["dst"] == "0.0.0.0/0")
        .map(|rt| rt["gw"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(default_gws, vec!["10.95.0.1"]);
    let del = node
        .cni("DEL", "r1", &sb.path, "eth0", Some((NS, "router")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    assert!(node.leases().is_empty());
}

#[test]
fn a_secondary_network_does_not_take_the_default_route() {
    require_root();
    let (node, _dummy) = three_network_node();
    // This NAD's bridge plugin would install a default route of its own.
    let (green, _br) = green_nad(&node, "green", "10.96.0.0/24", true);
    node.api.add_nad(NS, "green", &green, None);
    node.api
        .add_pod(NS, "side", &[("k8s.v1.cni.cncf.io/networks", "green")]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, "1.0.0");
    let out = node
        .cni("ADD", "s1", &sb.path, "eth0", Some((NS, "side")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let defaults = sb.default_routes().unwrap();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].2, "eth0");
    assert!(defaults[0].1.starts_with("10.91.0."));
    let del = node
        .cni("DEL", "s1", &sb.path, "eth0", Some((NS, "side")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    assert!(node.leases().is_empty());
}

#[test]
fn gc_removes_attachments_not_in_the_valid_list_and_status_follows_readiness() {
    require_root();
    let (node, _dummy) = three_network_node();
    let conf = genie(&node, "1.1.0");
    let mut sandboxes = Vec::new();
    for name in ["keep", "stale"] {
        node.api
            .add_pod(NS, name, &[("k8s.v1.cni.cncf.io/networks", "blue")]);
        let sb = Sandbox::new().unwrap();
        let out = node
            .cni("ADD", name, &sb.path, "eth0", Some((NS, name)), &conf)
            .unwrap();
        assert!(out.success, "{} / {}", out.stdout, out.stderr);
        sandboxes.push(sb);
    }
    assert_eq!(node.leases().len(), 4);
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let gc = node
        .cni("GC", "", std::path::Path::new(""), "", None, &gc_conf)
        .unwrap();
    assert!(gc.success, "{} / {}", gc.stdout, gc.stderr);
    assert_eq!(node.cache_records(), vec!["keep-eth0.json"]);
    assert_eq!(node.leases().len(), 2);
    assert!(sandboxes[1].links().unwrap().is_empty());
    assert_eq!(sandboxes[0].links().unwrap(), vec!["eth0", "net1"]);

    // STATUS: not ready until the default network's readiness indicator file exists.
    let indicator = node.dir.path().join("ready");
    let mut st_conf = conf.clone();
    st_conf["readinessindicatorfile"] = json!(indicator.display().to_string());
    let st = node
        .cni("STATUS", "", std::path::Path::new(""), "", None, &st_conf)
        .unwrap();
    assert!(!st.success);
    assert_eq!(st.json().unwrap()["code"], 50);
    std::fs::write(&indicator, b"").unwrap();
    let st = node
        .cni("STATUS", "", std::path::Path::new(""), "", None, &st_conf)
        .unwrap();
    assert!(st.success, "{}", st.stdout);

    let del = node
        .cni(
            "DEL",
            "keep",
            &sandboxes[0].path,
            "eth0",
            Some((NS, "keep")),
            &conf,
        )
        .unwrap();
    assert!(del.success);
    assert!(node.leases().is_empty());
}

#[test]
fn namespace_isolation_and_status_write_conflicts() {
    require_root();
    let (node, _dummy) = three_network_node();
    node.api.add_nad(
        "other",
        "shared",
        &ptp_nad(&node, "shared", "10.97.0.0/24"),
        None,
    );
    node.api.add_pod(
        NS,
        "nosy",
        &[("k8s.v1.cni.cncf.io/networks", "other/shared")],
    );
    let sb = Sandbox::new().unwrap();
    let isolated = node.genie_conf(
        "1.0.0",
        json!({"clusterNetwork": "cluster", "namespaceIsolation": true}),
    );
    let out = node
        .cni("ADD", "n1", &sb.path, "eth0", Some((NS, "nosy")), &isolated)
        .unwrap();
    assert!(!out.success);
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("team/nosy") && msg.contains("other/shared"),
        "{msg}"
    );
    assert!(node.leases().is_empty() && node.cache_records().is_empty());

    // A global namespace is allowed; the status write meets two conflicts and still lands.
    let global = node.genie_conf(
        "1.0.0",
        json!({"clusterNetwork": "cluster", "namespaceIsolation": true, "globalNamespaces": "other"}),
    );
    node.api.inject_conflicts(2);
    let out = node
        .cni("ADD", "n1", &sb.path, "eth0", Some((NS, "nosy")), &global)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let pod = node.api.pod(NS, "nosy").unwrap();
    let status = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(status.contains("other/shared"), "{status}");
    let del = node
        .cni("DEL", "n1", &sb.path, "eth0", Some((NS, "nosy")), &global)
        .unwrap();
    assert!(del.success);
    assert!(node.leases().is_empty());
}
