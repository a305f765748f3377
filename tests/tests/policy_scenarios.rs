//! CNI-Genie's five network policy scenarios (the seeds' "Network Policy Engine"), each proven
//! with real traffic: four logical networks routed through a node (real namespaces, bridges,
//! veths), one pod on each, the policy compiled by the agent's policy engine and applied with
//! `nft` in the node, then a full connectivity matrix (ping and a TCP connect, IPv4 and IPv6,
//! every pod to every other pod, so both directions) compared with what the scenario expects.
//! Scenarios 4 (a peer network created later) and 5 (the policy edited) change live: the new
//! table replaces the old one in one transaction while the pods keep running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use vfagent::policy::compile::compile;
use vfagent::policy::model::{GeniePolicy, Inputs, IpCidr, Network, NetworkKey, TrafficPath};
use vfagent::policy::nft::Nft;
use vfgenie_tests::policynet::{PodId, Probe, Topology};
use vfgenie_tests::runtime::require_root;

const NS: &str = "default";
const PROBES: [Probe; 2] = [Probe::Ping, Probe::Tcp(8080)];
const TIMEOUT: Duration = Duration::from_millis(400);

/// The four networks and their pods: network `net<K>` is the topology's bridge K, its pod the
/// K-th.
struct Cluster {
    topo: Topology,
    pods: Vec<PodId>,
    nft: Nft,
}

impl Cluster {
    fn new() -> Self {
        require_root();
        let (topo, pods) = Topology::with_pods(4).unwrap();
        Self {
            topo,
            pods,
            nft: Nft::new(None).unwrap(),
        }
    }

    fn network(k: usize) -> Network {
        Network {
            key: NetworkKey::new(NS, format!("net{k}")),
            subnets: vec![
                format!("10.91.{k}.0/24").parse::<IpCidr>().unwrap(),
                format!("fd00:91:{k}::/64").parse::<IpCidr>().unwrap(),
            ],
            path: TrafficPath::Host,
        }
    }

    /// Compiles the networks that exist (by number) and the policy (the annotation's text, as a
    /// NetworkPolicy `access-nginx` carries it) and applies the node's table.
    fn enforce(&self, present: &[usize], policy: Option<&str>) {
        let mut inputs = Inputs::default();
        for &k in present {
            let n = Self::network(k);
            inputs.networks.insert(n.key.clone(), n);
        }
        if let Some(text) = policy {
            inputs.genie.push(GeniePolicy {
                namespace: NS.into(),
                name: "access-nginx".into(),
                rules: vfkube::policy::parse_genie_policy(text).unwrap(),
            });
        }
        let plan = compile(&inputs);
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        self.nft
            .apply(
                Some(self.topo.node_netns().path()),
                &plan.host.to_nft_json(),
            )
            .unwrap();
    }

    /// Probes every pod of the networks `among` against the others and checks each result
    /// against `allowed` (pairs of network numbers, either order; a network always reaches
    /// itself).
    fn expect(&self, scenario: &str, among: &[usize], allowed: &[(usize, usize)]) {
        let allowed: BTreeSet<(usize, usize)> = allowed
            .iter()
            .flat_map(|&(a, b)| [(a, b), (b, a)])
            .collect();
        let m = self.topo.matrix(&PROBES, TIMEOUT);
        let mut wrong = Vec::new();
        let mut checked = 0;
        for &a in among {
            for &b in among {
                if a == b {
                    continue;
                }
                let (src, dst) = (self.pods[a - 1], self.topo.pod(self.pods[b - 1]));
                for ip in [dst.v4(), dst.v6()] {
                    for probe in PROBES {
                        let got = m.get(src, ip, probe).unwrap();
                        checked += 1;
                        if got != allowed.contains(&(a, b)) {
                            wrong.push(format!(
                                "net{a} -> net{b} {ip} {probe:?}: {}",
                                if got { "passed" } else { "blocked" }
                            ));
                        }
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{scenario}: unexpected results:\n{}\n{m}",
            wrong.join("\n")
        );
        println!("{scenario}: {checked} probes as expected\n{m}");
    }
}

const ALL: [usize; 4] = [1, 2, 3, 4];

/// Every pair of distinct networks of `nets`.
fn all_pairs(nets: &[usize]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for (i, &a) in nets.iter().enumerate() {
        for &b in &nets[i + 1..] {
            v.push((a, b));
        }
    }
    v
}

#[test]
fn scenario_1_without_a_policy_every_network_reaches_every_network() {
    let c = Cluster::new();
    c.enforce(&ALL, None);
    c.expect("scenario 1", &ALL, &all_pairs(&ALL));
}

#[test]
fn scenario_2_a_selected_network_talks_only_with_its_peer() {
    let c = Cluster::new();
    c.enforce(
        &ALL,
        Some("[\n  {\n    networkSelector: net1\n    peerNetworks: net2\n  }\n]\n"),
    );
    c.expect("scenario 2", &ALL, &[(1, 2), (2, 3), (2, 4), (3, 4)]);
}

#[test]
fn scenario_3_entries_for_the_same_network_add_up() {
    let c = Cluster::new();
    c.enforce(
        &ALL,
        Some(
            "[\n  {\n    networkSelector: net1\n    peerNetworks: net2\n  },\n  {\n    networkSelector: net1\n    peerNetworks: net3 \n  }\n]\n",
        ),
    );
    c.expect(
        "scenario 3",
        &ALL,
        &[(1, 2), (1, 3), (2, 3), (2, 4), (3, 4)],
    );
}

#[test]
fn scenario_4_a_peer_created_later_is_allowed_without_touching_the_policy() {
    let c = Cluster::new();
    let policy = "[\n  {\n    networkSelector: net1\n    peerNetworks: net4\n  }\n]\n";
    // net1 and net2 exist; net1's only peer, net4, does not: net1 talks to nobody.
    c.enforce(&[1, 2], Some(policy));
    c.expect("scenario 4, before net4", &[1, 2], &[]);
    // net4 is created; the policy is the same.
    c.enforce(&[1, 2, 4], Some(policy));
    c.expect("scenario 4, after net4", &[1, 2, 4], &[(1, 4), (2, 4)]);
}

#[test]
fn scenario_5_an_edit_of_the_policy_takes_effect() {
    let c = Cluster::new();
    c.enforce(
        &ALL,
        Some("[\n  {\n    networkSelector: net1\n    peerNetworks: net2,net3\n  }\n]\n"),
    );
    c.expect(
        "scenario 5, before the edit",
        &ALL,
        &[(1, 2), (1, 3), (2, 3), (2, 4), (3, 4)],
    );
    // The edit removes net3 (with the seed's comment on the line).
    c.enforce(
        &ALL,
        Some(
            "[\n  {\n    networkSelector: net1\n    peerNetworks: net2    # Removed net3\n  }\n]\n",
        ),
    );
    c.expect(
        "scenario 5, after the edit",
        &ALL,
        &[(1, 2), (2, 3), (2, 4), (3, 4)],
    );
}
