//! Host tier: an agent restart converges without a flush gap. A new engine (the restarted
//! agent: it remembers nothing) finds the tables the previous one installed, reads them back and
//! replaces them in place; a stream through an allowed path loses nothing and a stream through
//! a denied path gets nothing through across many restarts.
//! Privileged: every test asserts it runs as root and fails otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use vfagent::policy::engine::Engine;
use vfagent::policy::model::{
    Inputs, Interface, IpCidr, MultiPolicy, Network, NetworkKey, Pod, TrafficPath,
};
use vfagent::policy::nft::Nft;
use vfgenie_tests::policynet::{PodId, Topology};
use vfgenie_tests::runtime::{require_root, run};

const RESTARTS: usize = 100;

fn key() -> NetworkKey {
    NetworkKey::new("prod", "net1")
}

/// db admits web (every port) and, when `port` is set, anyone on that TCP port; batch is kept
/// out. The genie policy keeps net1 apart from a second, unused network (so the host's table
/// has elements too).
fn inputs(t: &Topology, pods: &[(&str, PodId)], port: Option<u16>) -> Inputs {
    let mut inputs = Inputs::default();
    for (name, subnet) in [("net1", "10.91.1.0/24"), ("net9", "10.99.0.0/16")] {
        let n = Network {
            key: NetworkKey::new("prod", name),
            subnets: vec![subnet.parse::<IpCidr>().unwrap()],
            path: TrafficPath::Host,
        };
        inputs.networks.insert(n.key.clone(), n);
    }
    inputs.genie = vec![vfagent::policy::model::GeniePolicy {
        namespace: "prod".into(),
        name: "g".into(),
        rules: vec![vfagent::policy::model::GeniePolicyRule {
            network_selector: "net1".into(),
            peer_networks: vec![],
        }],
    }];
    for (name, id) in pods {
        let p = t.pod(*id);
        inputs.pods.push(Pod {
            namespace: "prod".into(),
            name: (*name).into(),
            labels: BTreeMap::from([("app".to_string(), (*name).to_string())]),
            interfaces: vec![Interface {
                network: key(),
                ifname: p.ifaces[0].ifname.clone(),
                ips: vec![p.v4(), p.v6()],
            }],
            netns: Some(p.netns_path().to_path_buf()),
        });
    }
    let mut ingress = vec![json!({"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]})];
    if let Some(port) = port {
        ingress.push(json!({"ports": [{"protocol": "TCP", "port": port}]}));
    }
    inputs.multi.push(MultiPolicy {
        namespace: "prod".into(),
        name: "protect-db".into(),
        policy_for: vec![key()],
        spec: serde_json::from_value(json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        }))
        .unwrap(),
    });
    inputs
}

/// Our table in a namespace as nft prints it (no handles).
fn listed(netns: &str) -> String {
    run(
        "ip",
        &[
            "netns", "exec", netns, "nft", "list", "table", "inet", "vfgenie",
        ],
    )
    .unwrap()
}

#[test]
fn a_restarted_engine_replaces_the_tables_in_place_without_a_gap() {
    require_root();
    let mut t = Topology::new().unwrap();
    let net = t.add_network().unwrap();
    let pods: Vec<(&str, PodId)> = ["db", "web", "batch"]
        .into_iter()
        .map(|n| (n, t.add_pod(n, net).unwrap()))
        .collect();
    let (db, web, batch) = (pods[0].1, pods[1].1, pods[2].1);
    let node = t.node_netns().path().to_path_buf();
    let engine = || Engine::new(Nft::new(None).unwrap()).with_host_netns(node.clone());
    assert!(t.ping_within(web, t.pod(db).v4(), Duration::from_secs(3)));

    let first = engine().reconcile(&inputs(&t, &pods, None));
    assert!(first.converged(), "{:?}", first.failed);
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    // A fresh node: nothing to adopt, every table installed whole.
    assert!(first.adopted.is_empty(), "{:?}", first.adopted);
    assert_eq!(first.applied.len(), 4, "the node's table and three pods'");
    let db_ns = t.pod(db).netns_name().to_string();
    let installed_whole = listed(&db_ns);

    let allowed = t
        .udp_stream(web, t.pod(db).v4(), 7100, Duration::from_micros(200))
        .unwrap();
    let denied = t
        .udp_stream(batch, t.pod(db).v4(), 7101, Duration::from_micros(200))
        .unwrap();
    let t0 = Instant::now();
    while allowed.received() < 50 || denied.sent() < 50 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "streams did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut wanted: Vec<Option<PathBuf>> = vec![None];
    wanted.extend(
        pods.iter()
            .map(|(_, id)| Some(t.pod(*id).netns_path().to_path_buf())),
    );
    wanted.sort();
    for i in 0..RESTARTS {
        // Every other restart comes with a change (a port opened or closed), so the replacement
        // also has different content to put in place.
        let port = (i % 2 == 1).then_some(9000 + i as u16);
        let mut restarted = engine();
        let r = restarted.reconcile(&inputs(&t, &pods, port));
        assert!(r.converged(), "restart {i}: {:?}", r.failed);
        let mut adopted = r.adopted.clone();
        adopted.sort();
        assert_eq!(
            adopted, wanted,
            "restart {i}: every table replaced in place"
        );
        assert_eq!(r.applied.len(), wanted.len(), "restart {i}");
        // The restarted engine remembers what it applied.
        let again = restarted.reconcile(&inputs(&t, &pods, port));
        assert!(again.applied.is_empty(), "restart {i}: {:?}", again.applied);
    }
    let allowed = allowed.stop();
    let denied = denied.stop();
    assert!(
        allowed.lost().is_empty() && allowed.sent.len() > 100,
        "web -> db across {RESTARTS} restarts: {}",
        allowed.summary()
    );
    assert!(denied.sent.len() > 100, "{}", denied.summary());
    assert!(
        denied.received.is_empty(),
        "batch -> db got {} of {} datagrams through across {RESTARTS} restarts",
        denied.received.len(),
        denied.sent.len()
    );
    println!(
        "{RESTARTS} restarts: web -> db {}; batch -> db {} sent, none through",
        allowed.summary(),
        denied.sent.len()
    );

    // What the replacement left is what a whole install makes of the same inputs (the last
    // restart had no open port, as the first install).
    let last = engine().reconcile(&inputs(&t, &pods, None));
    assert!(last.converged());
    assert_eq!(listed(&db_ns), installed_whole);
    // And the policy holds: web reaches db, batch does not.
    assert!(t.ping_within(web, t.pod(db).v4(), Duration::from_secs(2)));
    assert!(!t.ping_within(batch, t.pod(db).v4(), Duration::from_millis(300)));
}
