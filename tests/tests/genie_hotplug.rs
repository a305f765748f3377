//! Host tier: networks added to and removed from running pods (genie `CNI_COMMAND=UPDATE`, what
//! the node agent runs when a pod's network annotation changes). The genie binary exec'd with
//! real network namespaces, Debian's plugins as delegates and the API-server stand-in. Each test
//! checks what a user would: the pod's interfaces and addresses, its network-status, that eth0 is
//! untouched, and that DEL after the changes leaves nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use serde_json::{json, Value};
use vfgenie_tests::runtime::{require_root, run, CniOutput, HostLink, Node, Sandbox};

const NS: &str = "team";
const NETS: &str = "k8s.v1.cni.cncf.io/networks";

/// A node with the cluster network (bridge, eth0) and ptp NADs blue, green and red; `broken`, a
/// macvlan NAD on a master that does not exist (its ADD fails in the plugin).
fn node() -> (Node, Value) {
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.91.0.0/24"),
    )
    .unwrap();
    for (name, subnet) in [
        ("blue", "10.92.0.0/24"),
        ("green", "10.95.0.0/24"),
        ("red", "10.96.0.0/24"),
    ] {
        node.add_ptp_nad(NS, name, subnet, json!([]));
    }
    let broken = json!({"cniVersion": "1.0.0", "name": "broken", "type": "macvlan",
                        "master": "nosuchlink0", "ipam": node.ipam("10.97.0.0/24")});
    node.api.add_nad(NS, "broken", &broken.to_string(), None);
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    (node, conf)
}

/// Interface name to its IPv4 addresses, in the pod.
fn interfaces(sb: &Sandbox) -> BTreeMap<String, Vec<String>> {
    sb.addresses()
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "lo")
        .collect()
}

/// The last network-status written for the pod: (network, interface) pairs.
fn status(node: &Node, pod: &str) -> Vec<(String, String)> {
    let w = node
        .api
        .writes()
        .into_iter()
        .rev()
        .find(|w| w.name == pod)
        .expect("no status write");
    let v: Value =
        serde_json::from_str(w.annotation("k8s.v1.cni.cncf.io/network-status").unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["interface"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Pod `web` asking for `networks`, attached by genie's ADD as the runtime runs it.
fn running_pod(node: &Node, conf: &Value, networks: &str) -> Sandbox {
    node.api.add_pod(NS, "web", &[(NETS, networks)]);
    let sb = Sandbox::new().unwrap();
    let add = node
        .cni("ADD", "web", &sb.path, "eth0", Some((NS, "web")), conf)
        .unwrap();
    assert!(add.success, "{}", add.stderr);
    sb
}

fn update(node: &Node, conf: &Value, sb: &Sandbox, pod: &str) -> CniOutput {
    node.cni("UPDATE", pod, &sb.path, "eth0", Some((NS, pod)), conf)
        .unwrap()
}

fn link_of(sb: &Sandbox, name: &str) -> Value {
    let out = run("ip", &["-n", &sb.name, "-j", "link", "show", name]).unwrap();
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

#[test]
fn networks_come_and_go_while_eth0_carries_a_ping() {
    require_root();
    let (node, conf) = node();
    let sb = running_pod(&node, &conf, "blue");
    let eth0 = link_of(&sb, "eth0");
    // A ping on eth0 to the cluster bridge runs through every change (once the path answers:
    // the bridge's new port may take a moment).
    let answered = (0..50).any(|_| {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &sb.name,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "10.91.0.1",
            ],
        )
        .is_ok()
    });
    assert!(answered, "eth0 never answered");
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &sb.name,
            "ping",
            "-n",
            "-i",
            "0.01",
            "-c",
            "300",
            "10.91.0.1",
        ])
        .output();
    let pinger = std::thread::spawn(move || ping);

    // Added: green as net2.
    node.api.add_pod(NS, "web", &[(NETS, "blue,green")]);
    let out = update(&node, &conf, &sb, "web");
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let done: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(done["added"], json!(["team/green@net2"]), "{done}");
    assert_eq!(done["removed"], json!([]), "{done}");
    let ifs = interfaces(&sb);
    assert!(ifs["net2"][0].starts_with("10.95.0."), "{ifs:?}");
    assert!(ifs["net1"][0].starts_with("10.92.0."), "{ifs:?}");
    assert_eq!(
        status(&node, "web"),
        [
            ("cluster".to_string(), "eth0".to_string()),
            ("team/blue".to_string(), "net1".to_string()),
            ("team/green".to_string(), "net2".to_string()),
        ]
    );
    // The same annotation again: nothing to do.
    let out = update(&node, &conf, &sb, "web");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        json!({"added": [], "removed": []})
    );

    // Removed: blue. green is now the first NPWG network, net1: its interface is renamed (the old
    // one removed, a new one added).
    node.api.add_pod(NS, "web", &[(NETS, "green")]);
    let out = update(&node, &conf, &sb, "web");
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let done: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(done["added"], json!(["team/green@net1"]), "{done}");
    let mut removed: Vec<String> = serde_json::from_value(done["removed"].clone()).unwrap();
    removed.sort();
    assert_eq!(removed, ["team/blue@net1", "team/green@net2"]);
    let ifs = interfaces(&sb);
    assert_eq!(ifs.keys().collect::<Vec<_>>(), ["eth0", "net1"], "{ifs:?}");
    assert!(ifs["net1"][0].starts_with("10.95.0."), "{ifs:?}");
    // A name of our choosing: green@fast.
    node.api.add_pod(NS, "web", &[(NETS, "green@fast")]);
    let out = update(&node, &conf, &sb, "web");
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let ifs = interfaces(&sb);
    assert_eq!(ifs.keys().collect::<Vec<_>>(), ["eth0", "fast"], "{ifs:?}");
    // Only green's lease and eth0's are held: nothing of blue or of the old net1 is left.
    let leases = node.leases();
    assert_eq!(leases.len(), 2, "{leases:?}");

    // eth0 is the same link, and the ping lost nothing.
    let after = link_of(&sb, "eth0");
    assert_eq!(
        (&after["ifindex"], &after["address"]),
        (&eth0["ifindex"], &eth0["address"])
    );
    let ping = pinger.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("300 packets transmitted, 300 received"),
        "{text}"
    );

    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

#[test]
fn a_failing_hot_add_leaves_the_pod_exactly_as_it_was() {
    require_root();
    let (node, conf) = node();
    let sb = running_pod(&node, &conf, "blue,green");
    let before = (interfaces(&sb), node.leases(), status(&node, "web"));
    let record = std::fs::read_dir(node.cache_dir.join("vfgenie"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .unwrap()
        .path();
    let record_before = std::fs::read(&record).unwrap();
    let writes_before = node.api.writes().len();

    // red is added (net3) before broken (net4) fails: red goes again.
    node.api
        .add_pod(NS, "web", &[(NETS, "blue,green,red,broken")]);
    let out = update(&node, &conf, &sb, "web");
    assert!(!out.success);
    let err: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        err["msg"].as_str().unwrap().contains("team/broken"),
        "{err}"
    );
    // Nothing changed at all, genie's record and the pod's status included.
    assert_eq!(
        (interfaces(&sb), node.leases()),
        (before.0.clone(), before.1.clone())
    );
    assert_eq!(std::fs::read(&record).unwrap(), record_before);
    assert_eq!(node.api.writes().len(), writes_before, "no status written");
    // A rename that fails on its new side: green's old net2 comes back.
    node.api.add_pod(NS, "web", &[(NETS, "blue,broken,green")]);
    let out = update(&node, &conf, &sb, "web");
    assert!(!out.success, "{}", out.stdout);

    let after = (interfaces(&sb), node.leases(), status(&node, "web"));
    assert_eq!(
        after.0.keys().collect::<Vec<_>>(),
        before.0.keys().collect::<Vec<_>>()
    );
    assert_eq!(after.0["net1"], before.0["net1"]);
    assert_eq!(after.2, before.2);
    assert_eq!(
        after.1.len(),
        before.1.len(),
        "{:?} / {:?}",
        after.1,
        before.1
    );
    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

#[test]
fn concurrent_updates_of_one_pod_are_serialized() {
    require_root();
    let (node, conf) = node();
    let sb = running_pod(&node, &conf, "blue");
    node.api.add_pod(NS, "web", &[(NETS, "blue,green,red")]);
    let outs: Vec<CniOutput> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| update(&node, &conf, &sb, "web")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut added: Vec<String> = Vec::new();
    for o in &outs {
        assert!(o.success, "{} / {}", o.stdout, o.stderr);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        added.extend(serde_json::from_value::<Vec<String>>(v["added"].clone()).unwrap());
    }
    added.sort();
    // Each network added once, by whichever UPDATE came first.
    assert_eq!(added, ["team/green@net2", "team/red@net3"]);
    let ifs = interfaces(&sb);
    assert_eq!(
        ifs.keys().collect::<Vec<_>>(),
        ["eth0", "net1", "net2", "net3"]
    );
    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

#[test]
fn pods_being_deleted_unknown_or_replaced_are_left_alone() {
    require_root();
    let (node, conf) = node();
    let sb = running_pod(&node, &conf, "blue");

    // Being deleted: nothing is done.
    let mut pod = node.api.pod(NS, "web").unwrap();
    pod["metadata"]["annotations"][NETS] = json!("blue,green");
    pod["metadata"]["deletionTimestamp"] = json!("2026-12-05T01:00:00Z");
    node.api.update(pod).unwrap();
    let out = update(&node, &conf, &sb, "web");
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap()["deleting"],
        true
    );
    assert!(!interfaces(&sb).contains_key("net2"));

    // A container genie has no record of: code 3.
    let other = Sandbox::new().unwrap();
    let out = node
        .cni(
            "UPDATE",
            "nope",
            &other.path,
            "eth0",
            Some((NS, "web")),
            &conf,
        )
        .unwrap();
    assert_eq!(out.json().unwrap()["code"], 3, "{}", out.stdout);

    // The record is of another pod (a newer one of the same name): refused, code 4.
    node.api.delete_pod(NS, "web");
    let mut newer = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": NS, "uid": "uid-newer",
                     "annotations": {NETS: "blue,green"}},
        "spec": {"nodeName": "node-1"}});
    newer["status"] = json!({"phase": "Pending"});
    node.api.create(newer).unwrap();
    let out = update(&node, &conf, &sb, "web");
    let err = out.json().unwrap();
    assert_eq!(err["code"], 4, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("uid-newer"), "{err}");
    assert!(!interfaces(&sb).contains_key("net2"));

    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

/// A host address the pods reach through either member of the group `fast` (routed networks:
/// ptp, the host at the other end), on a host veth (this kernel has no dummy driver). Removed on
/// drop.
fn host_target(addr: &str) -> HostLink {
    let link = HostLink::veth("vfdst").unwrap();
    run("ip", &["addr", "add", addr, "dev", &link.0]).unwrap();
    link
}

/// The group `fast` of two ptp NADs; each routes 10.99.0.0/24 from the pod, fast-b with two /25s
/// so that both can be in place at once during a switch (the same prefix twice would clash).
fn group_node(node: &Node) {
    for (name, subnet, routes) in [
        ("fast-a", "10.81.0.0/24", json!([{"dst": "10.99.0.0/24"}])),
        (
            "fast-b",
            "10.82.0.0/24",
            json!([{"dst": "10.99.0.0/25"}, {"dst": "10.99.0.128/25"}]),
        ),
    ] {
        node.add_ptp_nad(NS, name, subnet, routes);
    }
    node.api.add_group(
        "network-attachment-definitions",
        NS,
        "fast",
        "fast-a,fast-b",
        None,
    );
}

#[test]
fn a_switch_is_make_before_break_and_keeps_the_interface_name() {
    require_root();
    let (node, conf) = node();
    group_node(&node);
    let _target = host_target("10.99.0.1/32");
    let sb = running_pod(&node, &conf, "fast");
    // No KPI file: the first member.
    assert!(interfaces(&sb)["net1"][0].starts_with("10.81.0."));
    let ping_ok = |sb: &Sandbox| {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &sb.name,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "10.99.0.1",
            ],
        )
        .is_ok()
    };
    assert!((0..50).any(|_| ping_ok(&sb)), "10.99.0.1 never answered");

    // An UPDATE without a switch request keeps the member (whatever the KPIs say now).
    node.api
        .add_pod(NS, "web", &[(NETS, "fast"), ("other", "x")]);
    let out = update(&node, &conf, &sb, "web");
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout).unwrap(),
        json!({"added": [], "removed": []}),
        "{}",
        out.stderr
    );

    // The switch, under traffic.
    let ns = sb.name.clone();
    let pinger = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "ping",
                "-n",
                "-i",
                "0.01",
                "-c",
                "200",
                "10.99.0.1",
            ])
            .output()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    node.api.add_pod(
        NS,
        "web",
        &[(NETS, "fast"), ("vfgenie.io/switch-to", "fast-b")],
    );
    let out = update(&node, &conf, &sb, "web");
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let done: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        done["switched"],
        json!(["team/fast-a@net1 -> team/fast-b"]),
        "{done}"
    );
    let ifs = interfaces(&sb);
    assert_eq!(ifs.keys().collect::<Vec<_>>(), ["eth0", "net1"], "{ifs:?}");
    assert!(ifs["net1"][0].starts_with("10.82.0."), "{ifs:?}");
    assert_eq!(
        status(&node, "web"),
        [
            ("cluster".to_string(), "eth0".to_string()),
            ("team/fast-b".to_string(), "net1".to_string()),
        ]
    );
    let w = node
        .api
        .writes()
        .into_iter()
        .rev()
        .find(|w| w.name == "web")
        .unwrap();
    let sels: Value =
        serde_json::from_str(w.annotation("vfgenie.io/smart-selection").unwrap()).unwrap();
    let g = sels
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["group"] == "team/fast")
        .unwrap();
    assert_eq!(g["chosen"], "team/fast-b");
    assert_eq!(g["reason"], "requested by vfgenie.io/switch-to");
    let ping = pinger.join().unwrap().unwrap();
    let text = String::from_utf8_lossy(&ping.stdout).to_string();
    let received: u32 = text
        .split(", ")
        .find_map(|p| p.strip_suffix(" received").map(|n| n.parse().unwrap()))
        .unwrap_or_else(|| panic!("{text}"));
    eprintln!("switch under a 10 ms ping: {} of 200 lost", 200 - received);
    assert!(received >= 197, "{text}");
    // Still reachable through the new member.
    assert!(ping_ok(&sb));

    // The pod then trades the group for red: net1 (the switched link, recorded under its
    // temporary name) is removed before red's delegate creates net1.
    node.api.add_pod(NS, "web", &[(NETS, "red")]);
    let out = update(&node, &conf, &sb, "web");
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let ifs = interfaces(&sb);
    assert_eq!(ifs.keys().collect::<Vec<_>>(), ["eth0", "net1"], "{ifs:?}");
    assert!(ifs["net1"][0].starts_with("10.96.0."), "{ifs:?}");
    assert_eq!(node.leases().len(), 2, "{:?}", node.leases());

    // DEL names the interface back for its delegate: nothing is left.
    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

/// An UPDATE cut off after it recorded an attachment and its delegate began (the interface and
/// lease exist, no result recorded): the next UPDATE removes what was begun and adds it again.
#[test]
fn an_update_cut_off_mid_add_converges_at_the_next() {
    require_root();
    let (node, conf) = node();
    let sb = running_pod(&node, &conf, "blue");
    // What a cut-off UPDATE leaves: green@net2 recorded without a result, its delegate's work
    // half there (the plugin ran, genie did not record its result).
    let green = json!({"cniVersion": "1.0.0", "name": "green", "type": "ptp", "ipMasq": false,
                       "ipam": node.ipam("10.95.0.0/24")});
    let ptp = node.plugin_dir.join("ptp");
    let begun = node
        .exec_plugin(
            &ptp,
            "ADD",
            "web",
            &sb.path,
            "net2",
            Some((NS, "web")),
            "",
            &green,
        )
        .unwrap();
    assert!(begun.success, "{}", begun.stdout);
    let record = node.cache_dir.join("vfgenie/web-eth0.json");
    let mut r: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    r["attachments"]
        .as_array_mut()
        .unwrap()
        .push(json!({"network": "team/green", "ifName": "net2", "conf": green}));
    std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
    assert_eq!(node.leases().len(), 3);

    node.api.add_pod(NS, "web", &[(NETS, "blue,green")]);
    let out = update(&node, &conf, &sb, "web");
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let ifs = interfaces(&sb);
    assert_eq!(ifs.keys().collect::<Vec<_>>(), ["eth0", "net1", "net2"]);
    assert!(ifs["net2"][0].starts_with("10.95.0."), "{ifs:?}");
    // One lease per interface: the begun one was released.
    assert_eq!(node.leases().len(), 3, "{:?}", node.leases());
    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

/// `vfgenie.io/switch-to` is written by whoever may patch the pod: a value that names no member
/// of the group (a path, another namespace's network, a network outside the group) moves nothing,
/// and one that is not a network name at all is named in a warning.
#[test]
fn a_switch_to_naming_no_member_of_the_group_changes_nothing() {
    require_root();
    let (node, conf) = node();
    group_node(&node);
    let sb = running_pod(&node, &conf, "fast");
    let before = interfaces(&sb);
    assert!(before["net1"][0].starts_with("10.81.0."), "{before:?}");
    for (value, warned) in [
        ("../fast-b", true),
        ("other/fast-b", true),
        ("/etc/passwd", true),
        ("fast-b/../../x", true),
        ("blue", false),
        ("fast-c", false),
    ] {
        node.api.add_pod(
            NS,
            "web",
            &[(NETS, "fast"), ("vfgenie.io/switch-to", value)],
        );
        let out = update(&node, &conf, &sb, "web");
        assert_eq!(
            serde_json::from_str::<Value>(&out.stdout).unwrap(),
            json!({"added": [], "removed": []}),
            "{value}: {}",
            out.stderr
        );
        assert_eq!(interfaces(&sb), before, "{value}");
        assert_eq!(
            out.stderr.contains("is not a network name"),
            warned,
            "{value}: {}",
            out.stderr
        );
        if warned {
            assert!(out.stderr.contains("team/web"), "{}", out.stderr);
        }
    }
    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}
