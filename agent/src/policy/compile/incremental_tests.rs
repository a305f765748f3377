//! The incremental compiler against the full one, over random sequences of changes.

use serde_json::{json, Value};

use super::compile;
use super::incremental::{Incremental, Scope};
use super::testdata::*;
use crate::policy::model::{Inputs, Interface, MultiPolicy, NetworkKey, Pod, TrafficPath};

/// A small deterministic generator (xorshift64*), so a failure can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NAMESPACES: [&str; 2] = ["team", "other"];
const APPS: [&str; 3] = ["a", "b", "c"];

fn networks() -> Vec<NetworkKey> {
    vec![
        key("team", "red"),
        key("team", "blue"),
        key("other", "green"),
    ]
}

fn base() -> Inputs {
    let mut inputs = Inputs::default();
    add_net(
        &mut inputs,
        net("team", "red", &["10.1.0.0/16"], TrafficPath::Host),
    );
    add_net(
        &mut inputs,
        net("team", "blue", &["10.2.0.0/16"], TrafficPath::InPod),
    );
    add_net(
        &mut inputs,
        net(
            "other",
            "green",
            &["10.3.0.0/16", "fd00:3::/64"],
            TrafficPath::InPod,
        ),
    );
    for ns in NAMESPACES {
        inputs
            .namespaces
            .insert(ns.into(), [("env".to_string(), ns.to_string())].into());
    }
    inputs
}

fn random_pod(rng: &mut Rng, ns: &str, name: &str) -> Pod {
    let mut interfaces: Vec<Interface> = Vec::new();
    for (i, network) in networks().into_iter().enumerate() {
        if !rng.chance(60) {
            continue;
        }
        let ifname = if rng.chance(3) {
            "bad*".to_string()
        } else {
            format!("net{}", i + 1)
        };
        let ips: Vec<String> = match rng.below(12) {
            0..=2 => vec![],
            // Outside the network's subnets: reported, no peer.
            4 => vec![format!("192.168.0.{}", rng.below(8))],
            3 if i == 2 => vec![
                format!("10.3.0.{}", rng.below(8)),
                format!("fd00:3::{}", rng.below(8)),
            ],
            _ => vec![format!("10.{}.0.{}", i + 1, rng.below(8))],
        };
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        interfaces.push(iface(network, &ifname, &ips));
    }
    let netns = match rng.below(20) {
        0..=4 => None,
        // Claimed by another pod too, now and then: fails closed, reported.
        5 => Some("/run/netns/shared".to_string()),
        _ => Some(format!("/run/netns/{ns}-{name}-{}", rng.below(2))),
    };
    let app = *rng.pick(&APPS);
    pod(ns, name, &[("app", app)], interfaces, netns.as_deref())
}

fn random_peer(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!({"podSelector": {"matchLabels": {"app": rng.pick(&APPS)}}}),
        1 => json!({"namespaceSelector": {"matchLabels": {"env": rng.pick(&NAMESPACES)}}}),
        2 => {
            json!({"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": rng.pick(&APPS)}}})
        }
        3 => {
            json!({"ipBlock": {"cidr": "10.2.0.0/24", "except": [format!("10.2.0.{}/32", rng.below(8))]}})
        }
        // Refused: reported as a problem.
        _ => json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
    }
}

fn random_rules(rng: &mut Rng, peers: &str) -> Value {
    let rules: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let mut rule = json!({ peers: [random_peer(rng)] });
            if rng.chance(50) {
                let port = 8000 + rng.below(3) as i32;
                rule["ports"] = json!([{"protocol": "TCP", "port": port, "endPort": port + 5}]);
            }
            rule
        })
        .collect();
    Value::Array(rules)
}

fn random_policy(rng: &mut Rng, ns: &str, name: &str) -> MultiPolicy {
    let nets = networks();
    let mut policy_for: Vec<NetworkKey> = nets.iter().filter(|_| rng.chance(50)).cloned().collect();
    if rng.chance(10) {
        // A network that does not exist: reported.
        policy_for.push(key(ns, "missing"));
    }
    let mut types = Vec::new();
    let mut spec = json!({"podSelector": {"matchLabels": {"app": rng.pick(&APPS)}}});
    if rng.chance(70) {
        types.push("Ingress");
        spec["ingress"] = random_rules(rng, "from");
    }
    if rng.chance(50) {
        types.push("Egress");
        spec["egress"] = random_rules(rng, "to");
    }
    spec["policyTypes"] = json!(types);
    multi(ns, name, &policy_for, spec)
}

/// One random change to `inputs`.
fn mutate(rng: &mut Rng, inputs: &mut Inputs) {
    let ns = *rng.pick(&NAMESPACES);
    match rng.below(100) {
        0..=39 => {
            let name = format!("p{}", rng.below(6));
            inputs
                .pods
                .retain(|p| !(p.namespace == ns && p.name == name));
            if rng.chance(85) {
                let p = random_pod(rng, ns, &name);
                inputs.pods.push(p);
            }
        }
        40..=79 => {
            let name = format!("m{}", rng.below(5));
            let at = inputs
                .multi
                .iter()
                .position(|m| m.namespace == ns && m.name == name);
            let new = random_policy(rng, ns, &name);
            match (at, rng.chance(80)) {
                (Some(i), true) => inputs.multi[i] = new,
                (Some(i), false) => {
                    inputs.multi.remove(i);
                }
                (None, _) => inputs.multi.push(new),
            }
        }
        80..=84 => {
            let labels = inputs.namespaces.entry(ns.into()).or_default();
            labels.insert("env".into(), rng.pick(&NAMESPACES).to_string());
        }
        85..=89 => {
            inputs.genie = if rng.chance(50) {
                vec![genie("team", "g", &[("blue", &["red"])])]
            } else {
                vec![]
            };
        }
        90..=94 => {
            let k = key("team", "blue");
            let subnet = format!("10.2.{}.0/24", rng.below(2));
            if let Some(n) = inputs.networks.get_mut(&k) {
                n.subnets = vec![subnet.parse().unwrap()];
            }
        }
        _ => {
            // A pod unchanged but moved in the list (order must not matter).
            if inputs.pods.len() > 1 {
                let p = inputs.pods.remove(0);
                inputs.pods.push(p);
            }
        }
    }
}

#[test]
fn incremental_compile_equals_the_full_compile_over_random_changes() {
    let mut partial = 0;
    let mut full = 0;
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut inputs = base();
        let mut inc = Incremental::new();
        for step in 0..40 {
            mutate(&mut rng, &mut inputs);
            let expected = compile(&inputs);
            let (plan, scope) = inc.compile(&inputs);
            match scope {
                Scope::Full => full += 1,
                Scope::Some(_) => partial += 1,
            }
            assert_eq!(
                plan.host, expected.host,
                "seed {seed} step {step}: host table"
            );
            assert_eq!(
                plan.pods.keys().collect::<Vec<_>>(),
                expected.pods.keys().collect::<Vec<_>>(),
                "seed {seed} step {step}: namespaces"
            );
            for (path, table) in &expected.pods {
                assert_eq!(
                    plan.pods.get(path),
                    Some(table),
                    "seed {seed} step {step}: table of {}",
                    path.display()
                );
            }
            assert_eq!(
                plan.problems, expected.problems,
                "seed {seed} step {step}: problems"
            );
        }
    }
    // The test exercises the incremental path, not only the fallback.
    assert!(partial > full * 2, "partial {partial}, full {full}");
}

#[test]
fn a_policy_change_rebuilds_only_the_namespaces_of_its_namespace_on_its_networks() {
    let mut inputs = base();
    let red = key("team", "red");
    let green = key("other", "green");
    inputs.pods = vec![
        pod(
            "team",
            "a",
            &[("app", "a")],
            vec![iface(red.clone(), "net1", &["10.1.0.1"])],
            Some("/run/netns/a"),
        ),
        pod(
            "team",
            "b",
            &[("app", "b")],
            vec![iface(green.clone(), "net1", &["10.3.0.1"])],
            Some("/run/netns/b"),
        ),
        pod(
            "other",
            "c",
            &[("app", "a")],
            vec![iface(red.clone(), "net1", &["10.1.0.2"])],
            Some("/run/netns/c"),
        ),
    ];
    let spec = |port: i32| json!({"podSelector": {}, "ingress": [{"ports": [{"port": port}]}]});
    inputs.multi = vec![multi("team", "m", std::slice::from_ref(&red), spec(80))];
    let mut inc = Incremental::new();
    assert_eq!(inc.compile(&inputs).1, Scope::Full);
    inputs.multi[0] = multi("team", "m", &[red], spec(81));
    let (plan, scope) = inc.compile(&inputs);
    assert_eq!(scope, Scope::Some(["/run/netns/a".into()].into()));
    assert_eq!(plan, &compile(&inputs));
    // Nothing changed: nothing rebuilt.
    assert_eq!(inc.compile(&inputs).1, Scope::Some(Default::default()));
    // A network changed: everything.
    inputs.networks.get_mut(&green).unwrap().subnets = vec!["10.4.0.0/16".parse().unwrap()];
    assert_eq!(inc.compile(&inputs).1, Scope::Full);
}
