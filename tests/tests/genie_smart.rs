//! Host tier: smart network selection. The genie binary exec'd as a runtime does, for pods that
//! ask for no network (`cni: ""`) on a node whose genie conf has `smartSelection` and no
//! `default_plugin`; the node's KPI file (what the agent writes) decides which of three networks
//! each pod gets, and the choice with its figures is on the pod (`vfgenie.io/smart-selection`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use vfgenie_tests::runtime::{require_root, Node, Sandbox};

const NS: &str = "team";
const NETS: [(&str, &str); 3] = [
    ("net-a", "10.94.1.0/24"),
    ("net-b", "10.94.2.0/24"),
    ("net-c", "10.94.3.0/24"),
];

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A node with three ptp networks as conf files, and a genie conf selecting among them.
fn smart_node(strategy: &str) -> (Node, Value, PathBuf) {
    let node = Node::new().unwrap();
    for (i, (name, subnet)) in NETS.iter().enumerate() {
        node.write_conf(
            &format!("3{i}-{name}.conf"),
            &json!({"cniVersion": "1.0.0", "name": name, "type": "ptp", "ipMasq": false,
                    "ipam": node.ipam(subnet)}),
        )
        .unwrap();
    }
    let kpi_file = node.dir.path().join("kpi.json");
    let conf = node.genie_conf(
        "1.0.0",
        json!({"smartSelection": {"strategy": strategy,
            "candidates": ["net-a", "net-b", "net-c"], "maxKpiAgeSeconds": 30,
            "kpiFile": kpi_file.display().to_string()}}),
    );
    (node, conf, kpi_file)
}

/// A KPI file where `quiet` is the least loaded network by every figure, the others busier.
fn write_kpis(path: &PathBuf, quiet: &str, generated_age: f64) {
    let t = now();
    let mut networks = serde_json::Map::new();
    for (n, (name, _)) in NETS.iter().enumerate() {
        let load = if *name == quiet { 0 } else { n as u64 + 1 };
        networks.insert(
            name.to_string(),
            json!({"sampledAt": t - generated_age, "ipUsed": 10 + 50 * load, "ipTotal": 253,
                   "freeVfs": 8 - 2 * load, "rxBytesPerSecond": 1000.0 * load as f64 + 5.0,
                   "txBytesPerSecond": 500.0 * load as f64 + 5.0,
                   "attachLatencyP50Ms": null, "errorRate": null}),
        );
    }
    let file = json!({"generatedAt": t - generated_age, "node": "n1", "networks": networks});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&file).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// ADD of a `cni: ""` pod: the network its eth0 got (by its subnet), the smart-selection
/// annotation written with the network-status, and genie's stderr. The pod is deleted after.
fn attach(node: &Node, conf: &Value, pod: &str) -> (String, Value, String) {
    node.api.add_pod(NS, pod, &[("cni", "")]);
    let sb = Sandbox::new().unwrap();
    let out = node
        .cni("ADD", pod, &sb.path, "eth0", Some((NS, pod)), conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let addrs = sb.addresses().unwrap();
    let eth0 = addrs
        .iter()
        .find(|(n, _)| n == "eth0")
        .map(|(_, a)| a[0].clone())
        .unwrap();
    let net = NETS
        .iter()
        .find(|(_, subnet)| eth0.starts_with(&subnet[..8]))
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| panic!("eth0 {eth0} in none of the networks"));
    let writes = node.api.writes();
    let w = writes
        .iter()
        .rev()
        .find(|w| w.name == pod)
        .expect("no status write");
    let status: Value =
        serde_json::from_str(w.annotation("k8s.v1.cni.cncf.io/network-status").unwrap()).unwrap();
    assert_eq!(status[0]["name"], net.as_str(), "{status}");
    let list: Value =
        serde_json::from_str(w.annotation("vfgenie.io/smart-selection").unwrap()).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let sel = list[0].clone();
    assert!(sel.get("group").is_none(), "{sel}");
    // The audit log's ADD call record for the pod carries the same choice and its figures.
    let audit = std::fs::read_to_string(node.audit_log()).unwrap();
    let call: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .rfind(|r| r["kind"] == "call" && r["verb"] == "ADD" && r["pod"]["name"] == pod)
        .expect("no ADD call record");
    assert_eq!(call["selection"]["chosen"], sel["chosen"], "{call}");
    assert_eq!(call["selection"]["strategy"], sel["strategy"], "{call}");
    let fell_back = call["selection"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("fallback: ");
    assert_eq!(fell_back, sel["fallback"] == true, "{call}");
    assert_eq!(
        call["selection"]["candidates"].as_array().map(Vec::len),
        sel["candidates"].as_array().map(Vec::len),
        "{call}"
    );
    let out_del = node
        .cni("DEL", pod, &sb.path, "eth0", Some((NS, pod)), conf)
        .unwrap();
    assert!(out_del.success, "{}", out_del.stderr);
    // Nothing of this pod is left (other pods of the node may hold leases).
    assert!(sb.links().unwrap().is_empty(), "links left in {pod}");
    let ip = eth0.split('/').next().unwrap().to_string();
    assert!(!node.leases().contains(&ip), "{pod}'s lease {ip} left");
    (net, sel, out.stderr)
}

#[test]
fn each_strategy_picks_the_least_loaded_and_follows_the_file() {
    require_root();
    for strategy in [
        "leastTraffic",
        "leastIpOccupancy",
        "mostFreeVfs",
        "weighted",
    ] {
        let (node, conf, kpi_file) = smart_node(strategy);
        for (n, quiet) in ["net-b", "net-c", "net-a"].iter().enumerate() {
            write_kpis(&kpi_file, quiet, 1.0);
            let (net, sel, _) = attach(&node, &conf, &format!("p{n}"));
            assert_eq!(&net, quiet, "{strategy}: {sel}");
            assert_eq!(sel["strategy"], strategy);
            assert_eq!(sel["chosen"], *quiet);
            assert_eq!(sel["fallback"], false, "{sel}");
            // The figures behind the choice, as the file had them.
            let cands = sel["candidates"].as_array().unwrap();
            assert_eq!(cands.len(), 3);
            let mine = cands.iter().find(|c| c["network"] == *quiet).unwrap();
            assert_eq!(mine["kpis"]["ipUsed"], 10, "{sel}");
            assert_eq!(mine["kpis"]["freeVfs"], 8, "{sel}");
            assert!(mine["ageSeconds"].as_f64().unwrap() < 30.0, "{sel}");
        }
        // The report lists the three selections, oldest first, with their reasons.
        let report = vfaudit::report::report(
            &[node.audit_log()],
            &vfaudit::Query::default(),
            SystemTime::now(),
        );
        assert_eq!(report.selections_total, 3, "{strategy}");
        let seen: Vec<(Option<&str>, &str, &str)> = report
            .selections
            .iter()
            .map(|s| (s.pod.as_deref(), s.strategy.as_str(), s.chosen.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (Some("team/p0"), strategy, "net-b"),
                (Some("team/p1"), strategy, "net-c"),
                (Some("team/p2"), strategy, "net-a"),
            ],
            "{strategy}"
        );
        assert!(report.selections.iter().all(|s| !s.reason.is_empty()));
    }
}

#[test]
fn stale_or_missing_kpis_fall_back_to_the_first_candidate_with_a_warning() {
    require_root();
    let (node, conf, kpi_file) = smart_node("leastTraffic");
    // No file at all.
    let (net, sel, stderr) = attach(&node, &conf, "nofile");
    assert_eq!(net, "net-a");
    assert_eq!(sel["fallback"], true);
    assert!(
        sel["reason"]
            .as_str()
            .unwrap()
            .contains("cannot read the KPI file"),
        "{sel}"
    );
    assert!(
        stderr.contains("WARN") && stderr.contains("team/nofile") && stderr.contains("fell back"),
        "{stderr}"
    );
    // A file older than maxKpiAgeSeconds, whose figures would pick net-c.
    write_kpis(&kpi_file, "net-c", 120.0);
    let (net, sel, stderr) = attach(&node, &conf, "stale");
    assert_eq!(net, "net-a");
    assert_eq!(sel["fallback"], true);
    assert!(sel["reason"].as_str().unwrap().contains("old"), "{sel}");
    assert!(
        stderr.contains("WARN") && stderr.contains("team/stale"),
        "{stderr}"
    );
    // Not a KPI file.
    std::fs::write(&kpi_file, b"{\"generatedAt\": ").unwrap();
    let (net, sel, _) = attach(&node, &conf, "garbled");
    assert_eq!((net.as_str(), &sel["fallback"]), ("net-a", &json!(true)));
    // Fresh again: the choice follows the figures.
    write_kpis(&kpi_file, "net-c", 0.0);
    let (net, sel, stderr) = attach(&node, &conf, "fresh");
    assert_eq!(net, "net-c", "{sel}");
    assert!(!stderr.contains("WARN"), "{stderr}");
}

#[test]
fn an_explicit_plugin_is_not_overridden() {
    require_root();
    let (node, conf, kpi_file) = smart_node("leastTraffic");
    write_kpis(&kpi_file, "net-c", 0.0);
    node.api.add_pod(NS, "explicit", &[("cni", "net-b")]);
    let sb = Sandbox::new().unwrap();
    let out = node
        .cni(
            "ADD",
            "explicit",
            &sb.path,
            "eth0",
            Some((NS, "explicit")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    let w = node.api.writes().last().cloned().unwrap();
    assert!(w.annotation("vfgenie.io/smart-selection").is_none());
    let addrs = sb.addresses().unwrap();
    assert!(
        addrs
            .iter()
            .any(|(n, a)| n == "eth0" && a[0].starts_with("10.94.2.")),
        "{addrs:?}"
    );
    let out = node
        .cni(
            "DEL",
            "explicit",
            &sb.path,
            "eth0",
            Some((NS, "explicit")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{}", out.stderr);
}

/// A KPI file over `names`: `quiet` the least loaded by every figure, the others busier; a name
/// in `absent` is left out (the agent has seen no pod on it).
fn write_group_kpis(path: &PathBuf, names: &[&str], quiet: &str, absent: &[&str]) {
    let t = now();
    let mut networks = serde_json::Map::new();
    for (n, name) in names.iter().enumerate() {
        if absent.contains(name) {
            continue;
        }
        let load = if *name == quiet { 0 } else { n as u64 + 1 };
        networks.insert(
            name.to_string(),
            json!({"sampledAt": t, "ipUsed": 10 + 50 * load, "ipTotal": 253,
                   "freeVfs": 20 - 2 * load, "rxBytesPerSecond": 1000.0 * load as f64 + 5.0,
                   "txBytesPerSecond": 5.0, "attachLatencyP50Ms": null, "errorRate": null}),
        );
    }
    let file = json!({"generatedAt": t, "node": "n1", "networks": networks});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&file).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const MEMBERS: [(&str, &str); 3] = [
    ("fast-a", "10.95.1.0/24"),
    ("fast-b", "10.95.2.0/24"),
    ("fast-c", "10.95.3.0/24"),
];

/// ADD of a pod with `annotations`; on success the interface `ifname`'s address, the pod's
/// smart-selection list and the ADD's delegate records; the pod is deleted after and nothing
/// may be left.
fn attach_group(
    node: &Node,
    conf: &Value,
    pod: &str,
    annotations: &[(&str, &str)],
    ifname: &str,
) -> Result<(String, Value, Vec<Value>), Value> {
    node.api.add_pod(NS, pod, annotations);
    let sb = Sandbox::new().unwrap();
    let out = node
        .cni("ADD", pod, &sb.path, "eth0", Some((NS, pod)), conf)
        .unwrap();
    if !out.success {
        let err: Value = serde_json::from_str(&out.stdout).unwrap();
        node.assert_nothing_left(&sb);
        return Err(err);
    }
    let addrs = sb.addresses().unwrap();
    let addr = addrs
        .iter()
        .find(|(n, _)| n == ifname)
        .map(|(_, a)| a[0].clone())
        .unwrap_or_else(|| panic!("no {ifname}: {addrs:?}"));
    let w = node
        .api
        .writes()
        .into_iter()
        .rev()
        .find(|w| w.name == pod)
        .expect("no status write");
    let list: Value =
        serde_json::from_str(w.annotation("vfgenie.io/smart-selection").unwrap()).unwrap();
    let delegates: Vec<Value> = std::fs::read_to_string(node.audit_log())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["kind"] == "delegate" && r["verb"] == "ADD" && r["pod"]["name"] == pod)
        .collect();
    let del = node
        .cni("DEL", pod, &sb.path, "eth0", Some((NS, pod)), conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
    Ok((addr, list, delegates))
}

#[test]
fn a_selectable_nad_group_gives_the_pod_the_member_the_kpis_pick() {
    require_root();
    let (node, conf, kpi_file) = smart_node("leastTraffic");
    for (name, subnet) in MEMBERS {
        let c = json!({"cniVersion": "1.0.0", "name": name, "type": "ptp", "ipMasq": false,
                       "ipam": node.ipam(subnet)});
        node.api.add_nad(NS, name, &c.to_string(), None);
    }
    // The group's own strategy overrides the conf's leastTraffic.
    node.api.add_group(
        "network-attachment-definitions",
        NS,
        "fast",
        "fast-a, fast-b, fast-c",
        Some("leastIpOccupancy"),
    );
    let names = [
        "team/fast-a",
        "team/fast-b",
        "team/fast-c",
        "net-a",
        "net-b",
        "net-c",
    ];
    let npwg = [("k8s.v1.cni.cncf.io/networks", "fast")];
    for (i, quiet) in ["team/fast-b", "team/fast-c"].iter().enumerate() {
        write_group_kpis(&kpi_file, &names, quiet, &[]);
        let (addr, list, delegates) =
            attach_group(&node, &conf, &format!("g{i}"), &npwg, "net1").unwrap();
        let subnet = MEMBERS.iter().find(|(m, _)| quiet.ends_with(m)).unwrap().1;
        assert!(addr.starts_with(&subnet[..8]), "{addr} not in {subnet}");
        // The default network's selection first, then the group's.
        let sels = list.as_array().unwrap();
        assert_eq!(sels.len(), 2, "{list}");
        assert!(sels[0].get("group").is_none(), "{list}");
        assert_eq!(sels[1]["group"], "team/fast");
        assert_eq!(sels[1]["strategy"], "leastIpOccupancy");
        assert_eq!(sels[1]["chosen"], *quiet);
        assert_eq!(sels[1]["fallback"], false, "{list}");
        // The chosen network's delegate record carries the selection.
        let rec = delegates
            .iter()
            .find(|r| r["network"] == *quiet)
            .unwrap_or_else(|| panic!("no delegate record of {quiet}: {delegates:?}"));
        assert_eq!(rec["selection"]["group"], "team/fast", "{rec}");
        assert_eq!(rec["selection"]["chosen"], *quiet, "{rec}");
    }
    // A member the agent has seen no pod on is idle: leastTraffic (the conf's, once the group
    // names none) picks it.
    node.api.add_group(
        "network-attachment-definitions",
        NS,
        "fast",
        "fast-a,fast-b,fast-c",
        None,
    );
    write_group_kpis(&kpi_file, &names, "team/fast-a", &["team/fast-c"]);
    let (addr, list, _) = attach_group(&node, &conf, "idle", &npwg, "net1").unwrap();
    assert!(addr.starts_with("10.95.3."), "{addr}: {list}");
    assert_eq!(list[1]["strategy"], "leastTraffic");
}

#[test]
fn a_refused_group_fails_the_add_with_code_7_and_leaves_nothing() {
    require_root();
    let (node, conf, kpi_file) = smart_node("leastTraffic");
    write_kpis(&kpi_file, "net-a", 0.0);
    let c = json!({"cniVersion": "1.0.0", "name": "fast-a", "type": "ptp", "ipMasq": false,
                   "ipam": node.ipam("10.95.1.0/24")});
    node.api.add_nad(NS, "fast-a", &c.to_string(), None);
    node.api.add_group(
        "network-attachment-definitions",
        NS,
        "inner",
        "fast-a",
        None,
    );
    let nad = "network-attachment-definitions";
    for (i, (members, strategy, why)) in [
        ("inner", None, "its member team/inner is a group too"),
        ("fast-a", Some("fastest"), "is not one of"),
        ("other/fast-a", None, "not an object name of this namespace"),
        ("../fast-a", None, "not an object name of this namespace"),
        // A member that does not exist, picked as idle (no KPIs): the API's answer names it.
        ("bad,fast-a", None, "team/bad"),
    ]
    .into_iter()
    .enumerate()
    {
        node.api.add_group(nad, NS, "fast", members, strategy);
        let err = attach_group(
            &node,
            &conf,
            &format!("r{i}"),
            &[("k8s.v1.cni.cncf.io/networks", "fast")],
            "net1",
        )
        .map(|_| ())
        .expect_err(members);
        let msg =
            err["msg"].as_str().unwrap().to_string() + " " + err["details"].as_str().unwrap_or("");
        assert_eq!(err["code"], 7, "{members}: {err}");
        assert!(msg.contains(why), "{members}: {msg}");
        if i < 4 {
            assert!(msg.contains("team/fast"), "{members}: {msg}");
        }
    }
}

#[test]
fn a_selectable_logical_network_group() {
    require_root();
    let (node, conf, kpi_file) = smart_node("leastTraffic");
    // Two LogicalNetworks on net-a's plugin conf, each with a part of its range.
    node.api
        .add_logical_network(NS, "ln-a", "p1", "net-a", "10.94.1.0/26");
    node.api
        .add_logical_network(NS, "ln-b", "p1", "net-a", "10.94.1.64/26");
    node.api
        .add_group("logicalnetworks", NS, "ln-fast", "ln-a,ln-b", None);
    let names = ["team/ln-a", "team/ln-b", "net-a", "net-b", "net-c"];
    write_group_kpis(&kpi_file, &names, "team/ln-b", &[]);
    let (addr, list, _) = attach_group(
        &node,
        &conf,
        "ln",
        &[("cni", ""), ("networks", "ln-fast@eth1")],
        "eth1",
    )
    .unwrap();
    let last: u8 = addr.split(['.', '/']).nth(3).unwrap().parse().unwrap();
    assert!(
        addr.starts_with("10.94.1.") && (64..128).contains(&last),
        "{addr}: {list}"
    );
    let sels = list.as_array().unwrap();
    let group = sels.iter().find(|s| s["group"] == "team/ln-fast").unwrap();
    assert_eq!(group["chosen"], "team/ln-b", "{list}");
}

/// End to end: the agent's collector samples the node (host-local leases genie's pods took, the
/// traffic of their interfaces) into the KPI file, and genie's pick follows the real load.
#[test]
fn the_agents_kpis_from_real_pods_steer_genies_pick() {
    use vfagent::kpi::{write_atomic, Collector, KpiOptions, NoAttachStats};
    require_root();
    let node = Node::new().unwrap();
    // Two /28 networks: 13 addresses each for pods.
    for (name, subnet) in [("net-a", "10.94.1.0/28"), ("net-b", "10.94.2.0/28")] {
        node.write_conf(
            &format!("3-{name}.conf"),
            &json!({"cniVersion": "1.0.0", "name": name, "type": "ptp", "ipMasq": false,
                    "ipam": node.ipam(subnet)}),
        )
        .unwrap();
    }
    let kpi_file = node.dir.path().join("run/kpi.json");
    let conf_for = |strategy: &str| {
        node.genie_conf(
            "1.0.0",
            json!({"smartSelection": {"strategy": strategy, "candidates": ["net-a", "net-b"],
                "kpiFile": kpi_file.display().to_string()}}),
        )
    };
    let mut opts = KpiOptions::new(kpi_file.clone());
    opts.cni_conf_dir = node.conf_dir.clone();
    opts.genie_cni_dir = node.cache_dir.clone();
    opts.host_local_dir = node.ipam_dir.clone();
    let mut collector = Collector::new(opts, Box::new(NoAttachStats));
    let sample = |c: &mut Collector| {
        let s = c.sample(&[], &vfagent::podres::Held::NoKubelet, &[]);
        write_atomic(&kpi_file, &s.to_json().unwrap()).unwrap();
        s
    };
    // Pods that stay: 3 on net-a, 1 on net-b.
    let explicit = conf_for("leastIpOccupancy");
    let mut pods: Vec<(String, Sandbox)> = Vec::new();
    let start = |net: &str, pods: &mut Vec<(String, Sandbox)>| {
        let name = format!("{net}-{}", pods.len());
        node.api.add_pod(NS, &name, &[("cni", net)]);
        let sb = Sandbox::new().unwrap();
        let out = node
            .cni("ADD", &name, &sb.path, "eth0", Some((NS, &name)), &explicit)
            .unwrap();
        assert!(out.success, "{}", out.stderr);
        pods.push((name, sb));
    };
    for net in ["net-a", "net-a", "net-a", "net-b"] {
        start(net, &mut pods);
    }
    let pick = |strategy: &str, pod: &str| -> String {
        let (net, sel, _) = attach(&node, &conf_for(strategy), pod);
        assert_eq!(sel["fallback"], false, "{sel}");
        net
    };

    // IP occupancy from the leases: net-b (1 of 13) before net-a (3 of 13).
    let s = sample(&mut collector);
    assert_eq!(
        (s.networks["net-a"].ip_used, s.networks["net-b"].ip_used),
        (Some(3), Some(1))
    );
    assert_eq!(pick("leastIpOccupancy", "occ1"), "net-b");
    // Three more pods on net-b: the pick moves.
    for _ in 0..3 {
        start("net-b", &mut pods);
    }
    sample(&mut collector);
    assert_eq!(pick("leastIpOccupancy", "occ2"), "net-a");

    // Traffic: a pod of net-a sends, so net-b is picked; then a pod of net-b sends more.
    let send = |sb: &Sandbox, gateway: &str, bytes: usize| {
        vfcore::netns::NetNs::open(&sb.path)
            .unwrap()
            .run(|| {
                let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..bytes / 1000 {
                    sock.send_to(&[7u8; 1000], (gateway, 9)).unwrap();
                }
            })
            .unwrap();
    };
    sample(&mut collector);
    send(&pods[0].1, "10.94.1.1", 2_000_000);
    let s = sample(&mut collector);
    let (a, b) = (
        s.networks["net-a"].traffic().unwrap(),
        s.networks["net-b"].traffic().unwrap(),
    );
    assert!(
        a > 100_000.0 && a > 10.0 * b,
        "net-a {a} B/s, net-b {b} B/s"
    );
    assert_eq!(pick("leastTraffic", "tr1"), "net-b");
    sample(&mut collector);
    send(&pods[3].1, "10.94.2.1", 2_000_000);
    send(&pods[4].1, "10.94.2.1", 2_000_000);
    sample(&mut collector);
    assert_eq!(pick("leastTraffic", "tr2"), "net-a");

    for (name, sb) in &pods {
        let out = node
            .cni("DEL", name, &sb.path, "eth0", Some((NS, name)), &explicit)
            .unwrap();
        assert!(out.success, "{}", out.stderr);
    }
    for (_, sb) in &pods {
        node.assert_nothing_left(sb);
    }
}
