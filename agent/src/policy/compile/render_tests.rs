//! Rendering: every table compiles to a document nft accepts, replacing the old table in one
//! transaction.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use super::ranges::{Family, Span};
use super::testdata::*;
use super::{compile, sets};
use crate::policy::model::{Inputs, TrafficPath};
use crate::policy::ruleset::{Element, Field, Hook, KeyType, Selector, Set, Table, Verdict};

#[test]
fn an_empty_plan_still_replaces_the_table() {
    let plan = compile(&Inputs::default());
    assert!(plan.pods.is_empty());
    assert!(plan.problems.is_empty());
    let doc = plan.host.to_nft_json();
    let cmds = doc["nftables"].as_array().unwrap();
    let table = json!({"table": {"family": "inet", "name": "vfgenie"}});
    assert_eq!(cmds[0], json!({"add": table}));
    assert_eq!(cmds[1], json!({"delete": table}));
    assert_eq!(cmds[2], json!({"add": table}));
    assert_eq!(
        cmds[3],
        json!({"add": {"chain": {"family": "inet", "table": "vfgenie", "name": "forward",
            "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}})
    );
    // Established/related, then neighbour discovery; nothing else.
    assert_eq!(cmds.len(), 6);
    assert_eq!(
        cmds[4]["add"]["rule"]["expr"][0]["match"]["right"],
        json!(["established", "related"])
    );
    assert_eq!(
        cmds[5]["add"]["rule"]["expr"][0]["match"]["right"]["set"],
        json!([
            "nd-router-solicit",
            "nd-router-advert",
            "nd-neighbor-solicit",
            "nd-neighbor-advert",
            "nd-redirect"
        ])
    );
    nft_check(&plan.host);
}

#[test]
fn the_check_catches_what_the_kernel_refuses() {
    // Overlapping elements in an interval set, which the compiler never generates.
    let mut table = Table::with_chains(&[Hook::Input]);
    let addr = |lo, hi| Field::Addr(Family::V4, Span { lo, hi });
    table.add_lookup(
        Hook::Input,
        vec![Selector::Iifname, Selector::Saddr(Family::V4)],
        Set {
            name: sets::IN_ALL4,
            key: vec![KeyType::Ifname, KeyType::Addr(Family::V4)],
            interval: true,
            elements: vec![
                Element(vec![Field::Ifname("net1".into()), addr(0, 10)]),
                Element(vec![Field::Ifname("net1".into()), addr(5, 20)]),
            ],
        },
        Verdict::Accept,
    );
    let refused = nft_verdict(&table).unwrap_err();
    assert!(refused.contains("File exists"), "{refused}");
}

#[test]
fn a_pod_without_policy_gets_a_table_with_only_the_common_rules() {
    let mut inputs = Inputs::default();
    add_net(
        &mut inputs,
        net("ns", "vf", &["10.9.0.0/16"], TrafficPath::InPod),
    );
    inputs.pods.push(pod(
        "ns",
        "p",
        &[],
        vec![iface(key("ns", "vf"), "net1", &[])],
        Some("/run/netns/p"),
    ));
    let plan = compile(&inputs);
    let t = &plan.pods[&PathBuf::from("/run/netns/p")];
    assert_eq!(*t, Table::with_chains(&[Hook::Input, Hook::Output]));
    nft_check(t);
}

#[test]
fn rules_and_sets_render_as_nft_json() {
    let mut inputs = Inputs::default();
    add_net(
        &mut inputs,
        net("ns", "vf", &["10.9.0.0/16"], TrafficPath::InPod),
    );
    inputs.pods.push(pod(
        "ns",
        "p",
        &[],
        vec![iface(key("ns", "vf"), "net1", &[])],
        Some("/run/netns/p"),
    ));
    inputs.multi.push(multi(
        "ns",
        "web",
        &[key("ns", "vf")],
        json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.9.0.0/16", "except": ["10.9.0.0/24"]}}],
                            "ports": [{"port": 80, "endPort": 81}]}]}),
    ));
    let doc = compile(&inputs).pods[&PathBuf::from("/run/netns/p")].to_nft_json();
    let cmds = doc["nftables"].as_array().unwrap();
    let set = cmds
        .iter()
        .find(|c| c["add"]["set"]["name"] == sets::IN_PORTS4)
        .unwrap();
    assert_eq!(
        set["add"]["set"]["type"],
        json!(["ifname", "ipv4_addr", "inet_proto", "inet_service"])
    );
    assert_eq!(set["add"]["set"]["flags"], json!(["interval"]));
    assert_eq!(
        set["add"]["set"]["elem"],
        json!([{"concat": ["net1", {"range": ["10.9.1.0", "10.9.255.255"]}, "tcp",
            {"range": [80, 81]}]}])
    );
    let rule = cmds
        .iter()
        .find(|c| c["add"]["rule"]["expr"][0]["match"]["right"] == "@in_ports4")
        .unwrap();
    assert_eq!(rule["add"]["rule"]["chain"], "input");
    assert_eq!(
        rule["add"]["rule"]["expr"][0]["match"]["left"],
        json!({"concat": [{"meta": {"key": "iifname"}},
            {"payload": {"protocol": "ip", "field": "saddr"}},
            {"meta": {"key": "l4proto"}},
            {"payload": {"protocol": "th", "field": "dport"}}]})
    );
    assert_eq!(rule["add"]["rule"]["expr"][1], json!({"accept": null}));
}

/// 200 pods on three networks (two VF networks, one routed by the host), with network-level
/// and pod-level policies whose rules overlap.
fn large() -> Inputs {
    let mut inputs = Inputs::default();
    let nets = [
        ("vf-a", "10.100.0.0/16", "fd64:a::/64", TrafficPath::InPod),
        ("vf-b", "10.101.0.0/16", "fd64:b::/64", TrafficPath::InPod),
        ("bridge", "10.102.0.0/16", "fd64:c::/64", TrafficPath::Host),
    ];
    for (name, v4, v6, path) in nets {
        add_net(&mut inputs, net("load", name, &[v4, v6], path));
    }
    add_net(
        &mut inputs,
        net("load", "inner", &["10.100.7.0/24"], TrafficPath::Host),
    );
    inputs
        .genie
        .push(genie("load", "g", &[("vf-a", &["bridge"]), ("inner", &[])]));
    for i in 0..200u32 {
        let interfaces = nets
            .iter()
            .enumerate()
            .map(|(n, (name, ..))| {
                iface(
                    key("load", name),
                    &format!("net{n}"),
                    &[
                        &format!("10.{}.{}.{}", 100 + n, i / 200, i % 200 + 1),
                        &format!("fd64:{}::{:x}", ["a", "b", "c"][n], i + 1),
                    ],
                )
            })
            .collect();
        let tier = format!("t{}", i % 4);
        inputs.pods.push(pod(
            "load",
            &format!("p{i}"),
            &[("tier", &tier)],
            interfaces,
            Some(&format!("/run/netns/p{i}")),
        ));
    }
    for t in 0..4 {
        inputs.multi.push(multi(
            "load",
            &format!("tier{t}"),
            &[key("load", "vf-a"), key("load", "vf-b")],
            json!({
                "podSelector": {"matchLabels": {"tier": format!("t{t}")}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"tier": format!("t{}", (t + 1) % 4)}}}],
                     "ports": [{"port": 8000, "endPort": 8100}, {"protocol": "UDP", "port": 53}]},
                    {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.100.0.0/24"]}}],
                     "ports": [{"port": 8050, "endPort": 9000}]},
                    {"from": [{"podSelector": {"matchExpressions": [
                        {"key": "tier", "operator": "NotIn", "values": ["t0"]}]}}]},
                ],
                "egress": [{"to": [{"ipBlock": {"cidr": "::/0", "except": ["fd64:a::/64"]}}]}],
            }),
        ));
    }
    inputs
}

#[test]
fn a_large_plan_passes_nft_check() {
    let inputs = large();
    let started = Instant::now();
    let plan = compile(&inputs);
    let took = started.elapsed();
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert_eq!(plan.pods.len(), 200);
    // Deterministic.
    assert_eq!(plan, compile(&inputs));
    // The tables do not depend on a pod's own address: one per label set here.
    let mut distinct: Vec<&Table> = Vec::new();
    for t in plan.pods.values() {
        if !distinct.contains(&t) {
            distinct.push(t);
        }
    }
    assert_eq!(distinct.len(), 4);
    let t0 = &plan.pods[&PathBuf::from("/run/netns/p0")];
    // Pod level on net0 (vf-a) and net1 (vf-b); the bridge is not a policy's network.
    assert_eq!(elements(t0, sets::IN_ISOLATED), [r#""net0""#, r#""net1""#]);
    // Network level on the VF network vf-a only: it may not talk to inner (or vf-b).
    assert_eq!(
        elements(t0, sets::NETDENY4),
        [
            r#""net0" . 10.100.7.0/24"#,
            r#""net0" . 10.101.0.0/16"#,
            r#""net1" . 10.100.0.0/16"#
        ]
    );
    assert_eq!(
        lookups(t0, Hook::Input)[..2],
        [sets::NETDENY4, sets::NETDENY6]
    );
    for t in distinct {
        nft_check(t);
    }
    nft_check(&plan.host);
    println!("compiled 200 pods x 3 networks in {took:?}");
}
