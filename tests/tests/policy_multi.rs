//! NPWG MultiNetworkPolicy enforced at pod level, proven with real traffic: four pods on one
//! secondary network (a bridge in a node namespace), the policies compiled by the agent's policy
//! engine into each pod's own table (`inet vfgenie` in the pod's namespace), and probes that
//! must pass or be blocked: ingress from a podSelector, a namespaceSelector, an ipBlock with an
//! except, a port range, egress deny, default deny.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};
use vfagent::policy::compile::compile;
use vfagent::policy::model::{
    Inputs, Interface, IpCidr, MultiPolicy, Network, NetworkKey, Pod, TrafficPath,
};
use vfagent::policy::nft::Nft;
use vfgenie_tests::policynet::{PodId, Topology};
use vfgenie_tests::runtime::require_root;

const TIMEOUT: Duration = Duration::from_millis(400);

/// Pods of the test: (label, namespace, app label). `db` is the one the policies protect.
const PODS: [(&str, &str, &str); 4] = [
    ("db", "prod", "db"),
    ("web", "prod", "web"),
    ("batch", "prod", "batch"),
    ("devweb", "dev", "web"),
];

struct Cluster {
    topo: Topology,
    ids: BTreeMap<&'static str, PodId>,
    nft: Nft,
}

impl Cluster {
    fn new() -> Self {
        require_root();
        let mut topo = Topology::new().unwrap();
        let net = topo.add_network().unwrap();
        let ids = PODS
            .iter()
            .map(|(label, _, _)| (*label, topo.add_pod(label, net).unwrap()))
            .collect();
        Self {
            topo,
            ids,
            nft: Nft::new(None).unwrap(),
        }
    }

    fn ip(&self, pod: &str) -> IpAddr {
        self.topo.pod(self.ids[pod]).v4()
    }

    fn key() -> NetworkKey {
        NetworkKey::new("prod", "net1")
    }

    /// Compiles `policies` (name, namespace, spec) for network `prod/net1` and applies every
    /// pod's table.
    fn enforce(&self, policies: &[(&str, &str, Value)]) {
        let mut inputs = Inputs::default();
        let n = Network {
            key: Self::key(),
            subnets: vec!["10.91.1.0/24".parse::<IpCidr>().unwrap()],
            path: TrafficPath::Host,
        };
        inputs.networks.insert(n.key.clone(), n);
        inputs.namespaces.insert(
            "prod".into(),
            BTreeMap::from([("team".to_string(), "a".to_string())]),
        );
        inputs.namespaces.insert(
            "dev".into(),
            BTreeMap::from([("team".to_string(), "b".to_string())]),
        );
        for (label, ns, app) in PODS {
            let p = self.topo.pod(self.ids[label]);
            inputs.pods.push(Pod {
                namespace: ns.into(),
                name: label.into(),
                labels: BTreeMap::from([("app".to_string(), app.to_string())]),
                interfaces: vec![Interface {
                    network: Self::key(),
                    ifname: "eth0".into(),
                    ips: vec![p.v4(), p.v6()],
                }],
                netns: Some(p.netns_path().to_path_buf()),
            });
        }
        for (name, ns, spec) in policies {
            inputs.multi.push(MultiPolicy {
                namespace: (*ns).into(),
                name: (*name).into(),
                policy_for: vec![Self::key()],
                spec: serde_json::from_value(spec.clone()).unwrap(),
            });
        }
        let plan = compile(&inputs);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        for (netns, table) in &plan.pods {
            self.nft.apply(Some(netns), &table.to_nft_json()).unwrap();
        }
    }

    fn tcp(&self, from: &str, to: &str, port: u16) -> bool {
        self.topo
            .tcp_connect(self.ids[from], self.ip(to), port, TIMEOUT)
    }

    fn ping(&self, from: &str, to: &str) -> bool {
        self.topo.ping_within(self.ids[from], self.ip(to), TIMEOUT)
    }

    /// Checks each `(from, to, port or None for ping, expected)`.
    fn expect(&self, case: &str, probes: &[(&str, &str, Option<u16>, bool)]) {
        let wrong: Vec<String> = probes
            .iter()
            .filter_map(|&(from, to, port, want)| {
                let got = match port {
                    Some(p) => self.tcp(from, to, p),
                    None => self.ping(from, to),
                };
                (got != want).then(|| {
                    format!(
                        "{from} -> {to} {}: {}",
                        port.map_or("ping".to_string(), |p| format!("tcp/{p}")),
                        if got { "passed" } else { "blocked" }
                    )
                })
            })
            .collect();
        assert!(wrong.is_empty(), "{case}:\n{}", wrong.join("\n"));
    }
}

fn protect_db(ingress: Value) -> (&'static str, &'static str, Value) {
    (
        "protect-db",
        "prod",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
            "ingress": ingress}),
    )
}

#[test]
fn ingress_from_a_pod_selector_admits_only_matching_pods_of_the_policys_namespace() {
    let c = Cluster::new();
    c.expect(
        "no policy",
        &[
            ("web", "db", Some(5432), true),
            ("batch", "db", Some(5432), true),
        ],
    );
    c.enforce(&[protect_db(
        json!([{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]),
    )]);
    c.expect(
        "podSelector app=web",
        &[
            ("web", "db", Some(5432), true),
            ("web", "db", None, true),
            ("batch", "db", Some(5432), false),
            ("batch", "db", None, false),
            // Same label, another namespace: a podSelector alone means the policy's namespace.
            ("devweb", "db", Some(5432), false),
            // Pods the policy does not select are not isolated.
            ("batch", "web", Some(5432), true),
            // Replies to db's own connections pass (established).
            ("db", "batch", Some(80), true),
        ],
    );
}

#[test]
fn ingress_from_a_namespace_selector_admits_the_namespaces_pods() {
    let c = Cluster::new();
    c.enforce(&[protect_db(
        json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]),
    )]);
    c.expect(
        "namespaceSelector team=b",
        &[
            ("devweb", "db", Some(5432), true),
            ("web", "db", Some(5432), false),
            ("batch", "db", Some(5432), false),
        ],
    );
    // Both selectors in one peer: web pods of team b's namespaces only.
    c.enforce(&[protect_db(json!([{"from": [{
        "namespaceSelector": {"matchLabels": {"team": "a"}},
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]}
    }]}]))]);
    c.expect(
        "namespaceSelector team=a and app in (web, x)",
        &[
            ("web", "db", Some(5432), true),
            ("devweb", "db", Some(5432), false),
            ("batch", "db", Some(5432), false),
        ],
    );
}

#[test]
fn an_ip_block_with_an_except_and_a_port_range() {
    let c = Cluster::new();
    let batch: IpAddr = c.ip("batch");
    c.enforce(&[protect_db(json!([{
        "from": [{"ipBlock": {"cidr": "10.91.1.0/24", "except": [format!("{batch}/32")]}}],
        "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]
    }]))]);
    c.expect(
        "ipBlock 10.91.1.0/24 except batch, tcp 8000-8100",
        &[
            ("web", "db", Some(8000), true),
            ("web", "db", Some(8080), true),
            ("web", "db", Some(8100), true),
            ("devweb", "db", Some(8050), true),
            ("web", "db", Some(8101), false),
            ("web", "db", Some(7999), false),
            ("web", "db", None, false),
            ("batch", "db", Some(8080), false),
        ],
    );
}

#[test]
fn egress_deny_and_default_deny() {
    let c = Cluster::new();
    // web may not open connections; others may still reach it.
    c.enforce(&[(
        "web-no-egress",
        "prod",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"]}),
    )]);
    c.expect(
        "egress deny for web",
        &[
            ("web", "db", Some(5432), false),
            ("web", "db", None, false),
            ("batch", "web", Some(80), true),
            ("batch", "db", Some(5432), true),
        ],
    );
    // Default deny of ingress for every pod of prod; dev is not touched.
    c.enforce(&[(
        "default-deny",
        "prod",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )]);
    c.expect(
        "default deny in prod",
        &[
            ("web", "db", Some(5432), false),
            ("devweb", "batch", Some(80), false),
            ("db", "web", None, false),
            ("web", "devweb", Some(80), true),
            ("db", "devweb", None, true),
        ],
    );
    // The policy goes: all open again.
    c.enforce(&[]);
    c.expect(
        "no policy",
        &[
            ("web", "db", Some(5432), true),
            ("devweb", "batch", Some(80), true),
        ],
    );
}
