//! Pod level: MultiNetworkPolicy semantics as seen in a local pod's table.

use std::path::PathBuf;

use serde_json::json;

use super::testdata::*;
use super::{compile, sets, Plan};
use crate::policy::model::{Inputs, NetworkKey, TrafficPath};
use crate::policy::ruleset::{Hook, Table};

const SERVER_NETNS: &str = "/run/netns/server";

fn blue() -> NetworkKey {
    key("prod", "blue")
}

fn green() -> NetworkKey {
    key("prod", "green")
}

/// Namespaces prod (team=a) and dev (team=b); networks prod/blue and prod/green (VFs); the
/// local pod prod/server and remote peers.
fn cluster() -> Inputs {
    let mut inputs = Inputs::default();
    inputs.namespaces.insert(
        "prod".into(),
        [("team".to_string(), "a".to_string())].into(),
    );
    inputs
        .namespaces
        .insert("dev".into(), [("team".to_string(), "b".to_string())].into());
    add_net(
        &mut inputs,
        net(
            "prod",
            "blue",
            &["10.1.0.0/16", "fd01::/64"],
            TrafficPath::InPod,
        ),
    );
    add_net(
        &mut inputs,
        net("prod", "green", &["10.2.0.0/16"], TrafficPath::InPod),
    );
    inputs.pods = vec![
        pod(
            "prod",
            "server",
            &[("app", "server")],
            vec![
                iface(blue(), "net1", &["10.1.0.10", "fd01::10"]),
                iface(green(), "net2", &["10.2.0.10"]),
            ],
            Some(SERVER_NETNS),
        ),
        pod(
            "prod",
            "client",
            &[("app", "client")],
            vec![
                iface(blue(), "net1", &["10.1.0.20", "fd01::20"]),
                // Not on the policies' network: never a peer address.
                iface(green(), "net2", &["10.2.0.20"]),
            ],
            None,
        ),
        pod(
            "prod",
            "other",
            &[("app", "other")],
            vec![iface(blue(), "net1", &["10.1.0.30"])],
            None,
        ),
        pod(
            "dev",
            "client",
            &[("app", "client")],
            vec![iface(blue(), "net1", &["10.1.0.40"])],
            None,
        ),
    ];
    inputs
}

/// A policy for prod/blue selecting the server.
fn server_policy(name: &str, spec: serde_json::Value) -> crate::policy::model::MultiPolicy {
    let mut spec = spec;
    spec["podSelector"] = json!({"matchLabels": {"app": "server"}});
    multi("prod", name, &[blue()], spec)
}

fn server(plan: &Plan) -> &Table {
    &plan.pods[&PathBuf::from(SERVER_NETNS)]
}

fn compile_with(policies: Vec<crate::policy::model::MultiPolicy>) -> Plan {
    let mut inputs = cluster();
    inputs.multi = policies;
    let plan = compile(&inputs);
    nft_check(server(&plan));
    plan
}

fn ingress_from(peers: serde_json::Value) -> Plan {
    compile_with(vec![server_policy(
        "p",
        json!({"ingress": [{"from": peers}]}),
    )])
}

#[test]
fn ingress_from_a_pod_selector_allows_those_pods_in_the_namespace_on_the_network() {
    let plan = ingress_from(json!([{"podSelector": {"matchLabels": {"app": "client"}}}]));
    let t = server(&plan);
    assert_eq!(elements(t, sets::IN_ISOLATED), [r#""net1""#]);
    assert_eq!(elements(t, sets::IN_ALL4), [r#""net1" . 10.1.0.20"#]);
    assert_eq!(elements(t, sets::IN_ALL6), [r#""net1" . fd01::20"#]);
    assert_eq!(
        lookups(t, Hook::Input),
        [sets::IN_ALL4, sets::IN_ALL6, sets::IN_ISOLATED],
        "allows before the default deny"
    );
    assert!(
        lookups(t, Hook::Output).is_empty(),
        "egress is not restricted"
    );
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
}

#[test]
fn ingress_from_a_namespace_selector_allows_every_pod_there() {
    let plan = ingress_from(json!([{"namespaceSelector": {"matchLabels": {"team": "b"}}}]));
    assert_eq!(
        elements(server(&plan), sets::IN_ALL4),
        [r#""net1" . 10.1.0.40"#]
    );
    // The name label every namespace has.
    let plan = ingress_from(json!([{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "dev"}}}]));
    assert_eq!(
        elements(server(&plan), sets::IN_ALL4),
        [r#""net1" . 10.1.0.40"#]
    );
}

#[test]
fn ingress_from_both_selectors_allows_matching_pods_in_matching_namespaces() {
    let plan = ingress_from(json!([{
        "namespaceSelector": {"matchExpressions": [
            {"key": "team", "operator": "In", "values": ["a", "b"]}]},
        "podSelector": {"matchLabels": {"app": "client"}},
    }]));
    assert_eq!(
        elements(server(&plan), sets::IN_ALL4),
        [r#""net1" . 10.1.0.20"#, r#""net1" . 10.1.0.40"#]
    );
}

#[test]
fn ingress_from_an_ip_block_excludes_its_excepts() {
    let plan = ingress_from(json!([
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.1.2.0/24"]}},
        {"ipBlock": {"cidr": "fd00::/8", "except": ["fd01::/16"]}},
        {"ipBlock": {"cidr": "192.168.0.0/24", "except": ["192.168.0.0/24"]}},
    ]));
    let t = server(&plan);
    assert_eq!(
        elements(t, sets::IN_ALL4),
        [
            r#""net1" . 10.0.0.0/16"#,
            r#""net1" . 10.2.0.0-10.255.255.255"#
        ]
    );
    assert_eq!(
        elements(t, sets::IN_ALL6),
        [
            r#""net1" . fd00::/16"#,
            r#""net1" . fd02::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"#
        ]
    );
}

#[test]
fn ports_end_ports_and_protocols() {
    let plan = compile_with(vec![server_policy(
        "p",
        json!({"ingress": [{
            "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
            "ports": [
                {"port": 80},
                {"protocol": "UDP", "port": 8000, "endPort": 8080},
                {"protocol": "SCTP", "port": 9},
                {"protocol": "UDP"},
            ],
        }]}),
    )]);
    let t = server(&plan);
    assert_eq!(
        elements(t, sets::IN_PORTS4),
        [
            r#""net1" . 10.1.0.20 . tcp . 80"#,
            r#""net1" . 10.1.0.20 . udp . 0-65535"#,
            r#""net1" . 10.1.0.20 . sctp . 9"#,
        ],
        "UDP 8000-8080 is inside all UDP ports"
    );
    assert_eq!(elements(t, sets::IN_PORTS6).len(), 3);
    assert!(t.set(sets::IN_ALL4).is_none(), "no rule without ports");
    assert_eq!(
        lookups(t, Hook::Input),
        [sets::IN_PORTS4, sets::IN_PORTS6, sets::IN_ISOLATED]
    );
}

#[test]
fn overlapping_port_rules_are_split_into_disjoint_elements() {
    let plan = compile_with(vec![
        server_policy(
            "web",
            json!({"ingress": [{
                "from": [{"ipBlock": {"cidr": "10.1.0.0/24"}}],
                "ports": [{"port": 80, "endPort": 90}],
            }]}),
        ),
        server_policy(
            "more",
            json!({"ingress": [{
                "from": [{"ipBlock": {"cidr": "10.1.0.0/23"}}],
                "ports": [{"port": 85, "endPort": 100}],
            }]}),
        ),
    ]);
    assert_eq!(
        elements(server(&plan), sets::IN_PORTS4),
        [
            r#""net1" . 10.1.0.0/24 . tcp . 80-84"#,
            r#""net1" . 10.1.0.0/23 . tcp . 85-100"#,
        ],
        "85-90 is allowed from both blocks, so from the larger one"
    );
}

#[test]
fn egress_only_policy_denies_egress_and_leaves_ingress_open() {
    let plan = compile_with(vec![server_policy("p", json!({"policyTypes": ["Egress"]}))]);
    let t = server(&plan);
    assert_eq!(elements(t, sets::OUT_ISOLATED), [r#""net1""#]);
    assert_eq!(lookups(t, Hook::Output), [sets::OUT_ISOLATED]);
    assert!(lookups(t, Hook::Input).is_empty());
}

#[test]
fn egress_to_anywhere_on_a_port() {
    let plan = compile_with(vec![server_policy(
        "dns",
        json!({"egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
    )]);
    let t = server(&plan);
    // policyTypes absent with egress present: both directions.
    assert_eq!(elements(t, sets::IN_ISOLATED), [r#""net1""#]);
    assert_eq!(elements(t, sets::OUT_ISOLATED), [r#""net1""#]);
    assert_eq!(
        elements(t, sets::OUT_PORTS4),
        [r#""net1" . 0.0.0.0/0 . udp . 53"#]
    );
    assert_eq!(
        elements(t, sets::OUT_PORTS6),
        [r#""net1" . ::/0 . udp . 53"#]
    );
}

#[test]
fn without_policy_types_an_empty_egress_list_does_not_isolate_egress() {
    let plan = compile_with(vec![server_policy("p", json!({"egress": []}))]);
    let t = server(&plan);
    assert_eq!(elements(t, sets::IN_ISOLATED), [r#""net1""#]);
    assert!(lookups(t, Hook::Output).is_empty());
}

#[test]
fn default_deny_for_every_pod_of_the_namespace() {
    let mut inputs = cluster();
    inputs.pods[1].netns = Some("/run/netns/client".into());
    inputs.pods[3].netns = Some("/run/netns/devclient".into());
    inputs
        .multi
        .push(multi("prod", "deny", &[blue()], json!({"podSelector": {}})));
    let plan = compile(&inputs);
    for ns in [SERVER_NETNS, "/run/netns/client"] {
        let t = &plan.pods[&PathBuf::from(ns)];
        assert_eq!(elements(t, sets::IN_ISOLATED), [r#""net1""#], "{ns}");
        assert_eq!(lookups(t, Hook::Input), [sets::IN_ISOLATED], "{ns}");
        assert!(lookups(t, Hook::Output).is_empty(), "{ns}");
    }
    let dev = &plan.pods[&PathBuf::from("/run/netns/devclient")];
    assert!(dev.sets.is_empty(), "another namespace's policy");
}

#[test]
fn a_policy_for_another_network_leaves_the_interface_alone() {
    let plan = compile_with(vec![multi(
        "prod",
        "green-only",
        &[green()],
        json!({"ingress": [{"from": [{"podSelector": {}}]}]}),
    )]);
    let t = server(&plan);
    assert_eq!(elements(t, sets::IN_ISOLATED), [r#""net2""#]);
    // Peers' addresses on green only.
    assert_eq!(
        elements(t, sets::IN_ALL4),
        [r#""net2" . 10.2.0.10"#, r#""net2" . 10.2.0.20"#]
    );
}

#[test]
fn policies_add_up() {
    let plan = compile_with(vec![
        server_policy(
            "a",
            json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        ),
        server_policy(
            "b",
            json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "other"}}}]}]}),
        ),
    ]);
    assert_eq!(
        elements(server(&plan), sets::IN_ALL4),
        [r#""net1" . 10.1.0.20"#, r#""net1" . 10.1.0.30"#]
    );
}

#[test]
fn a_named_port_is_reported_and_allows_nothing() {
    let plan = compile_with(vec![server_policy(
        "p",
        json!({"ingress": [
            {"from": [{"podSelector": {}}], "ports": [{"port": "http"}]},
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
             "ports": [{"port": "http"}, {"port": 443}]},
        ]}),
    )]);
    let t = server(&plan);
    assert_eq!(elements(t, sets::IN_ISOLATED), [r#""net1""#]);
    assert!(t.set(sets::IN_ALL4).is_none(), "never all ports");
    assert_eq!(
        elements(t, sets::IN_PORTS4),
        [r#""net1" . 10.1.0.20 . tcp . 443"#]
    );
    assert_eq!(plan.problems.len(), 2, "{:?}", plan.problems);
    for p in &plan.problems {
        assert_eq!(p.object, "MultiNetworkPolicy prod/p");
        assert!(p.problem.contains("named port"), "{p}");
    }
    assert!(plan.problems[0]
        .problem
        .starts_with("spec.ingress[0].ports[0].port"));
}

#[test]
fn a_bad_pod_selector_is_reported_and_isolates_the_namespace() {
    let plan = compile_with(vec![multi(
        "prod",
        "bad",
        &[blue()],
        json!({
            "podSelector": {"matchExpressions": [
                {"key": "app", "operator": "Equals", "values": ["nothing"]}]},
            "ingress": [{}],
        }),
    )]);
    let t = server(&plan);
    assert_eq!(elements(t, sets::IN_ISOLATED), [r#""net1""#]);
    assert!(t.set(sets::IN_ALL4).is_none(), "the rule is not read");
    assert_eq!(plan.problems.len(), 1);
    assert_eq!(plan.problems[0].object, "MultiNetworkPolicy prod/bad");
    assert!(plan.problems[0].problem.contains("\"Equals\""));
}

#[test]
fn a_bad_peer_selector_allows_nothing_and_other_peers_still_count() {
    let plan = ingress_from(json!([
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
        {"podSelector": {"matchLabels": {"app": "other"}}},
    ]));
    assert_eq!(
        elements(server(&plan), sets::IN_ALL4),
        [r#""net1" . 10.1.0.30"#]
    );
    assert_eq!(plan.problems.len(), 1);
    assert!(plan.problems[0]
        .problem
        .starts_with("spec.ingress[0].from[0].podSelector"));
}

#[test]
fn a_policy_for_a_missing_network_is_reported() {
    let plan = compile_with(vec![multi("prod", "p", &[key("prod", "red")], json!({}))]);
    assert!(server(&plan).sets.is_empty());
    assert_eq!(plan.problems.len(), 1);
    assert!(plan.problems[0].problem.contains("prod/red"));
}

#[test]
fn a_pod_table_does_not_depend_on_its_own_addresses() {
    let policies = vec![server_policy(
        "p",
        json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )];
    let mut inputs = cluster();
    inputs.multi = policies;
    let with_addresses = compile(&inputs);
    for i in &mut inputs.pods[0].interfaces {
        i.ips.clear();
    }
    let before_interfaces_exist = compile(&inputs);
    assert_eq!(server(&with_addresses), server(&before_interfaces_exist));
}

#[test]
fn an_interface_name_nft_would_read_as_a_pattern_is_reported() {
    let mut inputs = cluster();
    inputs.pods[0].interfaces[0].ifname = "net*".into();
    inputs.multi.push(server_policy("p", json!({})));
    let plan = compile(&inputs);
    assert!(server(&plan).sets.is_empty());
    assert_eq!(plan.problems.len(), 1);
    assert_eq!(plan.problems[0].object, "pod prod/server");
}

#[test]
fn interface_names_are_values_not_syntax() {
    let mut inputs = cluster();
    inputs.pods[0].interfaces[0].ifname = r#"a"b;{c}@d"#.into();
    inputs.multi.push(server_policy("p", json!({})));
    let plan = compile(&inputs);
    assert_eq!(
        elements(server(&plan), sets::IN_ISOLATED),
        [r#""a\"b;{c}@d""#]
    );
    nft_check(server(&plan));
}

#[test]
fn compile_pod_makes_the_table_compile_makes_for_that_namespace() {
    let mut inputs = cluster();
    inputs.multi = vec![
        server_policy(
            "in",
            json!({"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                "ports": [{"protocol": "TCP", "port": 80}]}]}),
        ),
        server_policy(
            "out",
            json!({"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.1.0.0/24"}}]}]}),
        ),
    ];
    // A network-level policy too, so netdeny sets are filled (the green VF network may not reach
    // blue), and a second local pod whose table must not leak into the server's.
    inputs
        .genie
        .push(genie("prod", "g", &[("green", &["green"])]));
    inputs.pods.push(pod(
        "prod",
        "local2",
        &[("app", "client")],
        vec![iface(blue(), "net1", &[])],
        Some("/run/netns/local2"),
    ));
    let plan = compile(&inputs);
    for (netns, table) in &plan.pods {
        let (alone, problems) = super::compile_pod(&inputs, netns);
        assert_eq!(&alone, table, "{}", netns.display());
        assert_eq!(problems, plan.problems);
    }
    assert!(!elements(server(&plan), sets::NETDENY4).is_empty());
    // A namespace no pod is in gets the empty table.
    let (empty, _) = super::compile_pod(&inputs, std::path::Path::new("/run/netns/none"));
    assert_eq!(empty, super::pod_table(Default::default()));
}

#[test]
fn two_pods_claiming_one_network_namespace_fail_closed_and_are_reported_by_name() {
    let mut inputs = cluster();
    // Allow everything into the server, so a merge would show as allows.
    inputs.multi.push(server_policy(
        "open",
        json!({"podSelector": {}, "ingress": [{}]}),
    ));
    inputs.pods.push(pod(
        "dev",
        "intruder",
        &[("app", "x")],
        vec![iface(green(), "net7", &["10.2.0.77"])],
        Some(SERVER_NETNS),
    ));
    let plan = compile(&inputs);
    let shared: Vec<_> = plan
        .problems
        .iter()
        .filter(|p| p.object == "pods dev/intruder, prod/server")
        .collect();
    assert_eq!(shared.len(), 1, "{:?}", plan.problems);
    assert!(shared[0].problem.contains(SERVER_NETNS), "{}", shared[0]);
    let table = server(&plan);
    // Both pods' interfaces isolated both ways, nothing allowed, in that namespace only.
    let isolated_in = elements(table, sets::IN_ISOLATED);
    let isolated_out = elements(table, sets::OUT_ISOLATED);
    for ifname in ["net1", "net7"] {
        assert!(
            isolated_in.iter().any(|e| e.contains(ifname)),
            "{isolated_in:?}"
        );
        assert!(
            isolated_out.iter().any(|e| e.contains(ifname)),
            "{isolated_out:?}"
        );
    }
    for set in [
        sets::IN_ALL4,
        sets::IN_PORTS4,
        sets::OUT_ALL4,
        sets::OUT_PORTS4,
    ] {
        assert!(
            elements(table, set).is_empty(),
            "{set}: {:?}",
            elements(table, set)
        );
    }
    // compile_pod (the socket's) makes the same table.
    let (alone, problems) = super::compile_pod(&inputs, std::path::Path::new(SERVER_NETNS));
    assert_eq!(&alone, table);
    assert_eq!(problems, plan.problems);
    // Once one pod claims it again, policies hold there as before.
    inputs.pods.retain(|p| p.name != "intruder");
    let plan = compile(&inputs);
    assert!(plan.problems.iter().all(|p| !p.object.starts_with("pods ")));
    assert!(!elements(server(&plan), sets::IN_ALL4).is_empty());
}

#[test]
fn a_peer_address_outside_its_networks_subnets_is_ignored_and_reported() {
    let mut inputs = cluster();
    inputs.pods.push(pod(
        "prod",
        "liar",
        &[("app", "liar")],
        vec![iface(blue(), "net1", &["10.1.9.9", "192.168.7.7"])],
        None,
    ));
    inputs.multi.push(server_policy(
        "from-liar",
        json!({"podSelector": {}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "liar"}}}]}]}),
    ));
    let plan = compile(&inputs);
    let all = elements(server(&plan), sets::IN_ALL4).join(" ");
    assert!(all.contains("10.1.9.9"), "{all}");
    assert!(!all.contains("192.168.7.7"), "{all}");
    assert!(
        plan.problems.iter().any(|p| p.object == "pod prod/liar"
            && p.problem.contains("192.168.7.7")
            && p.problem.contains("prod/blue")),
        "{:?}",
        plan.problems
    );
}
