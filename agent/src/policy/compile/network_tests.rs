//! Network level: CNI-Genie's five policy scenarios, and where the rules go.

use std::collections::BTreeSet;

use super::network::disallowed_pairs;
use super::testdata::*;
use super::{compile, sets};
use crate::policy::model::{Inputs, TrafficPath};
use crate::policy::ruleset::Hook;

/// net1..net4 (or the given ones) in `default`, routed through the host: net<i> is
/// `10.<i>0.0.0/16` and `fd00:<i>0::/64` (not adjacent, so set elements stay readable).
fn networks(which: &[u8]) -> Inputs {
    let mut inputs = Inputs::default();
    for i in which {
        add_net(
            &mut inputs,
            net(
                "default",
                &format!("net{i}"),
                &[&format!("10.{i}0.0.0/16"), &format!("fd00:{i}0::/64")],
                TrafficPath::Host,
            ),
        );
    }
    inputs
}

/// The unordered disallowed pairs, as `(1, 3)` for net1–net3.
fn pairs(inputs: &Inputs) -> BTreeSet<(u8, u8)> {
    let num = |k: &crate::policy::model::NetworkKey| -> u8 { k.name[3..].parse().unwrap() };
    let ordered = disallowed_pairs(inputs);
    for (a, b) in &ordered {
        assert!(ordered.contains(&(b.clone(), a.clone())), "not symmetric");
    }
    ordered
        .iter()
        .map(|(a, b)| (num(a), num(b)))
        .filter(|(a, b)| a < b)
        .collect()
}

fn policy(rules: &[(&str, &[&str])]) -> crate::policy::model::GeniePolicy {
    genie("default", "access-nginx", rules)
}

/// The host deny set's v4 elements for the disallowed pairs given, both directions.
fn expected_deny4(disallowed: &[(u8, u8)]) -> Vec<String> {
    let mut out: Vec<String> = disallowed
        .iter()
        .flat_map(|(a, b)| {
            [
                format!("10.{a}0.0.0/16 . 10.{b}0.0.0/16"),
                format!("10.{b}0.0.0/16 . 10.{a}0.0.0/16"),
            ]
        })
        .collect();
    out.sort_by_key(|e| {
        e.split(['.', ' ', '/'])
            .filter_map(|p| p.parse::<u32>().ok())
            .collect::<Vec<_>>()
    });
    out
}

#[test]
fn scenario_1_no_policy_allows_everything() {
    let inputs = networks(&[1, 2, 3, 4]);
    assert!(pairs(&inputs).is_empty());
    let plan = compile(&inputs);
    assert!(plan.host.sets.is_empty());
    assert!(lookups(&plan.host, Hook::Forward).is_empty());
    assert!(plan.problems.is_empty());
}

#[test]
fn scenario_2_net1_talks_only_to_net2() {
    let mut inputs = networks(&[1, 2, 3, 4]);
    inputs.genie.push(policy(&[("net1", &["net2"])]));
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 3), (1, 4)]));
    let plan = compile(&inputs);
    assert_eq!(
        elements(&plan.host, sets::DENY4),
        expected_deny4(&[(1, 3), (1, 4)])
    );
    assert_eq!(
        elements(&plan.host, sets::DENY6),
        [
            "fd00:10::/64 . fd00:30::/64",
            "fd00:10::/64 . fd00:40::/64",
            "fd00:30::/64 . fd00:10::/64",
            "fd00:40::/64 . fd00:10::/64",
        ]
    );
    assert_eq!(
        lookups(&plan.host, Hook::Forward),
        [sets::DENY4, sets::DENY6]
    );
}

#[test]
fn scenario_3_two_rules_for_net1_add_up() {
    let mut inputs = networks(&[1, 2, 3, 4]);
    inputs
        .genie
        .push(policy(&[("net1", &["net2"]), ("net1", &["net3"])]));
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 4)]));
    assert_eq!(
        elements(&compile(&inputs).host, sets::DENY4),
        expected_deny4(&[(1, 4)])
    );
}

#[test]
fn scenario_4_missing_peer_allows_nothing_until_it_exists() {
    let mut inputs = networks(&[1, 2]);
    inputs.genie.push(policy(&[("net1", &["net4"])]));
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 2)]));
    assert_eq!(
        elements(&compile(&inputs).host, sets::DENY4),
        expected_deny4(&[(1, 2)])
    );
    // net4 is created; the policy is unchanged.
    add_net(
        &mut inputs,
        net(
            "default",
            "net4",
            &["10.40.0.0/16", "fd00:40::/64"],
            TrafficPath::Host,
        ),
    );
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 2)]));
    let plan = compile(&inputs);
    assert_eq!(elements(&plan.host, sets::DENY4), expected_deny4(&[(1, 2)]));
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
}

#[test]
fn scenario_5_editing_the_policy_removes_a_peer() {
    let mut inputs = networks(&[1, 2, 3, 4]);
    inputs.genie.push(policy(&[("net1", &["net2", "net3"])]));
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 4)]));
    let before = compile(&inputs).host;
    assert_eq!(elements(&before, sets::DENY4), expected_deny4(&[(1, 4)]));

    inputs.genie[0] = policy(&[("net1", &["net2"])]);
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 3), (1, 4)]));
    let after = compile(&inputs).host;
    assert_eq!(
        elements(&after, sets::DENY4),
        expected_deny4(&[(1, 3), (1, 4)])
    );
    assert_ne!(before, after, "the engine must see the host table changed");
}

#[test]
fn both_sides_must_accept() {
    let mut inputs = networks(&[1, 2, 3]);
    // net1 accepts net2, but net2 only accepts net3.
    inputs.genie.push(policy(&[("net1", &["net2"])]));
    inputs
        .genie
        .push(genie("default", "other", &[("net2", &["net3"])]));
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 2), (1, 3)]));
    // Peers of one network add up across policies of its namespace.
    inputs
        .genie
        .push(genie("default", "third", &[("net2", &["net1"])]));
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 3)]));
}

#[test]
fn names_resolve_in_the_policy_namespace() {
    let mut inputs = networks(&[1, 2]);
    add_net(
        &mut inputs,
        net("other", "net2", &["10.99.0.0/16"], TrafficPath::Host),
    );
    // other/net2 is selected and accepts "net1", which is other/net1 (absent), not default/net1.
    inputs
        .genie
        .push(genie("other", "p", &[("net2", &["net1"])]));
    let got = disallowed_pairs(&inputs);
    let expected: BTreeSet<_> = [
        (key("other", "net2"), key("default", "net1")),
        (key("default", "net1"), key("other", "net2")),
        (key("other", "net2"), key("default", "net2")),
        (key("default", "net2"), key("other", "net2")),
    ]
    .into();
    assert_eq!(got, expected);
    // A selector naming a network that does not exist changes nothing.
    let mut inputs = networks(&[1, 2]);
    inputs.genie.push(policy(&[("net9", &["net1"])]));
    assert!(disallowed_pairs(&inputs).is_empty());
}

#[test]
fn a_network_without_a_subnet_is_reported() {
    let mut inputs = networks(&[1, 2]);
    add_net(&mut inputs, net("default", "net3", &[], TrafficPath::Host));
    inputs.genie.push(policy(&[("net3", &["net1"])]));
    let plan = compile(&inputs);
    assert_eq!(pairs(&inputs), BTreeSet::from([(2, 3)]));
    assert!(plan.host.sets.is_empty(), "no address to put in a set");
    assert_eq!(plan.problems.len(), 1);
    assert_eq!(plan.problems[0].object, "network default/net3");
}

/// Three networks that bypass the host, and a local pod on two of them.
fn in_pod_inputs(path: TrafficPath) -> Inputs {
    let mut inputs = Inputs::default();
    for (name, v4, v6) in [
        ("v1", "10.10.0.0/16", "fd00:10::/64"),
        ("v2", "10.20.0.0/16", "fd00:20::/64"),
        ("v3", "10.30.0.0/16", "fd00:30::/64"),
    ] {
        add_net(&mut inputs, net("default", name, &[v4, v6], path));
    }
    inputs.genie.push(policy(&[("v1", &["v2"])]));
    inputs.pods.push(pod(
        "default",
        "a",
        &[],
        vec![
            iface(key("default", "v1"), "net1", &["10.10.0.5"]),
            iface(key("default", "v3"), "net2", &[]),
        ],
        Some("/run/netns/a"),
    ));
    inputs.pods.push(pod(
        "default",
        "b",
        &[],
        vec![iface(key("default", "v2"), "net1", &["10.20.0.5"])],
        Some("/run/netns/b"),
    ));
    inputs
}

#[test]
fn in_pod_networks_are_enforced_in_the_pods_on_each_interface() {
    let plan = compile(&in_pod_inputs(TrafficPath::InPod));
    assert!(
        plan.host.sets.is_empty(),
        "the host never sees this traffic"
    );
    let a = &plan.pods[&std::path::PathBuf::from("/run/netns/a")];
    assert_eq!(
        elements(a, sets::NETDENY4),
        [r#""net1" . 10.30.0.0/16"#, r#""net2" . 10.10.0.0/16"#]
    );
    assert_eq!(
        elements(a, sets::NETDENY6),
        [r#""net1" . fd00:30::/64"#, r#""net2" . fd00:10::/64"#]
    );
    assert_eq!(
        lookups(a, Hook::Input),
        [sets::NETDENY4, sets::NETDENY6],
        "iifname . saddr"
    );
    assert_eq!(
        lookups(a, Hook::Output),
        [sets::NETDENY4, sets::NETDENY6],
        "oifname . daddr"
    );
    // v2 may talk to everything.
    let b = &plan.pods[&std::path::PathBuf::from("/run/netns/b")];
    assert!(b.sets.is_empty());
    for table in plan.pods.values().chain([&plan.host]) {
        nft_check(table);
    }
}

#[test]
fn host_networks_are_enforced_in_the_host_only() {
    let plan = compile(&in_pod_inputs(TrafficPath::Host));
    assert_eq!(
        elements(&plan.host, sets::DENY4),
        ["10.10.0.0/16 . 10.30.0.0/16", "10.30.0.0/16 . 10.10.0.0/16",]
    );
    assert_eq!(plan.pods.len(), 2, "each local pod still gets its table");
    assert!(plan.pods.values().all(|t| t.sets.is_empty()));
}

#[test]
fn a_pair_with_one_host_network_is_enforced_on_both_sides() {
    let mut inputs = in_pod_inputs(TrafficPath::InPod);
    inputs.networks.get_mut(&key("default", "v3")).unwrap().path = TrafficPath::Host;
    let plan = compile(&inputs);
    // The host forwards v3's traffic; v1's pods filter on their VF.
    assert_eq!(
        elements(&plan.host, sets::DENY4),
        ["10.10.0.0/16 . 10.30.0.0/16", "10.30.0.0/16 . 10.10.0.0/16",]
    );
    let a = &plan.pods[&std::path::PathBuf::from("/run/netns/a")];
    assert_eq!(elements(a, sets::NETDENY4), [r#""net1" . 10.30.0.0/16"#]);
}

#[test]
fn overlapping_subnets_become_disjoint_elements() {
    let mut inputs = Inputs::default();
    add_net(
        &mut inputs,
        net("default", "net1", &["10.0.0.0/16"], TrafficPath::Host),
    );
    add_net(
        &mut inputs,
        net("default", "net2", &["10.0.1.0/24"], TrafficPath::Host),
    );
    add_net(
        &mut inputs,
        net("default", "net3", &["10.5.0.0/16"], TrafficPath::Host),
    );
    inputs.genie.push(policy(&[("net3", &[])]));
    assert_eq!(pairs(&inputs), BTreeSet::from([(1, 3), (2, 3)]));
    let plan = compile(&inputs);
    assert_eq!(
        elements(&plan.host, sets::DENY4),
        ["10.0.0.0/16 . 10.5.0.0/16", "10.5.0.0/16 . 10.0.0.0/16"]
    );
    nft_check(&plan.host);
}

#[test]
fn every_scenario_table_passes_nft_check() {
    let mut inputs = networks(&[1, 2, 3, 4]);
    nft_check(&compile(&inputs).host);
    for rules in [
        &[("net1", &["net2"][..])][..],
        &[("net1", &["net2"][..]), ("net1", &["net3"][..])][..],
        &[("net1", &["net4"][..])][..],
        &[("net1", &["net2", "net3"][..])][..],
    ] {
        inputs.genie = vec![policy(rules)];
        nft_check(&compile(&inputs).host);
    }
}
