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
    let sel: Value =
        serde_json::from_str(w.annotation("vfgenie.io/smart-selection").unwrap()).unwrap();
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
        Some(3),
        "{call}"
    );
    let out_del = node
        .cni("DEL", pod, &sb.path, "eth0", Some((NS, pod)), conf)
        .unwrap();
    assert!(out_del.success, "{}", out_del.stderr);
    node.assert_nothing_left(&sb);
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
