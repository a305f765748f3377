//! `vfgenie-bench policy`: the network policy engine on one node with 200 pod namespaces, three
//! networks each (bridges routed through a node namespace), ten namespaces and 200
//! MultiNetworkPolicies plus a genieNetworkpolicy. Figures:
//!
//! - the time from a policy change to its enforcement in every namespace it affects: one
//!   reconcile of the agent's engine (compile the model, compare each namespace's table with the
//!   applied one, replace the changed ones with `nft`, several namespaces at once), p50/p99 over
//!   60 changes, and the CPU time (ours and nft's) per change; the watches' part (an API event
//!   and a 30 ms debounce) comes on top;
//! - the size of a pod's table (rules, set elements);
//! - the packet path: TCP throughput between two pods (iperf3) with every table in place against
//!   none, in the same run.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use vfagent::policy::compile::compile;
use vfagent::policy::engine::Engine;
use vfagent::policy::model::{
    GeniePolicy, Inputs, Interface, IpCidr, MultiPolicy, Network, NetworkKey, Pod, TrafficPath,
};
use vfagent::policy::nft::{Family, Nft};
use vfagent::policy::ruleset::TABLE_NAME;
use vfgenie_tests::policynet::{PodId, Topology};

use super::{fmt, verdict, Samples};

const PODS: usize = 200;
const NETWORKS: usize = 3;
const NAMESPACES: usize = 10;
const POLICIES: usize = 200;
const CHANGES: usize = 60;
const IPERF_SECONDS: u32 = 3;

fn ns_of(i: usize) -> String {
    format!("team-{}", i % NAMESPACES)
}

fn app_of(i: usize) -> String {
    format!("app-{}", i % 20)
}

fn net_key(k: usize) -> NetworkKey {
    // LogicalNetworks of the first namespace; the MultiNetworkPolicies of every namespace name
    // them with their namespace.
    NetworkKey::new("team-0", format!("net{k}"))
}

/// Policy `j` (in namespace `j % 10`): pods `app-(j % 20)` take ingress on net1 and net2 from
/// `app-((j + 10) % 20)` (the other app of that namespace) on TCP 8000 + `port_shift`, and from
/// 10.91.3.0/24 except one address.
fn mnp(j: usize, port_shift: u16) -> MultiPolicy {
    let spec = json!({
        "podSelector": {"matchLabels": {"app": app_of(j)}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": app_of(j + 10)}}}],
             "ports": [{"protocol": "TCP", "port": 8000 + port_shift}]},
            {"from": [{"ipBlock": {"cidr": "10.91.3.0/24", "except": [format!("10.91.3.{}/32", 10 + j % 200)]}}]}
        ]
    });
    MultiPolicy {
        namespace: ns_of(j),
        name: format!("policy-{j}"),
        policy_for: vec![net_key(1), net_key(2)],
        spec: serde_json::from_value(spec).unwrap_or_default(),
    }
}

fn inputs(topo: &Topology, pods: &[PodId], shifts: &[u16]) -> anyhow::Result<Inputs> {
    let mut inputs = Inputs::default();
    for k in 1..=NETWORKS {
        let n = Network {
            key: net_key(k),
            subnets: vec![
                format!("10.91.{k}.0/24")
                    .parse::<IpCidr>()
                    .map_err(anyhow::Error::msg)?,
                format!("fd00:91:{k}::/64")
                    .parse::<IpCidr>()
                    .map_err(anyhow::Error::msg)?,
            ],
            path: TrafficPath::Host,
        };
        inputs.networks.insert(n.key.clone(), n);
    }
    for n in 0..NAMESPACES {
        inputs.namespaces.insert(
            format!("team-{n}"),
            BTreeMap::from([("tier".to_string(), (n % 2).to_string())]),
        );
    }
    for (i, id) in pods.iter().enumerate() {
        let p = topo.pod(*id);
        let interfaces = p
            .ifaces
            .iter()
            .enumerate()
            .map(|(k, f)| Interface {
                network: net_key(k + 1),
                ifname: f.ifname.clone(),
                ips: vec![f.v4.into(), f.v6.into()],
            })
            .collect();
        inputs.pods.push(Pod {
            namespace: ns_of(i),
            name: format!("pod-{i}"),
            labels: BTreeMap::from([("app".to_string(), app_of(i))]),
            interfaces,
            netns: Some(p.netns_path().to_path_buf()),
        });
    }
    for (j, shift) in shifts.iter().enumerate() {
        inputs.multi.push(mnp(j, *shift));
    }
    inputs.genie.push(GeniePolicy {
        namespace: "team-0".into(),
        name: "isolate-net3".into(),
        rules: vfkube::policy::parse_genie_policy("[{networkSelector: net3, peerNetworks: net1}]")
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    });
    Ok(inputs)
}

/// Runs one reconcile of `engine`; returns how many tables it replaced.
fn reconcile(engine: &mut Engine, inputs: &Inputs) -> anyhow::Result<usize> {
    let r = engine.reconcile(inputs);
    if let Some(f) = r.failed.first() {
        bail!(
            "a table was not applied: {}",
            vfcore::error::chain(&f.error)
        );
    }
    if !r.problems.is_empty() {
        bail!("the bench's policies have problems: {:?}", r.problems);
    }
    Ok(r.applied.len())
}

/// CPU time of this process and its waited-for children.
fn cpu() -> Duration {
    let total = |who| {
        nix::sys::resource::getrusage(who)
            .map(|u| {
                let t = |tv: nix::sys::time::TimeVal| {
                    Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
                };
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or_default()
    };
    total(nix::sys::resource::UsageWho::RUSAGE_SELF)
        + total(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

fn iperf(topo: &Topology, server: PodId, client: PodId) -> anyhow::Result<f64> {
    let ip = topo.pod(server).v4();
    let mut srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            topo.pod(server).netns_name(),
            "iperf3",
            "-s",
            "-1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run iperf3 (Debian package iperf3)")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            topo.pod(client).netns_name(),
            "iperf3",
            "-J",
            "-c",
        ])
        .arg(ip.to_string())
        .args(["-t", &IPERF_SECONDS.to_string()])
        .output()?;
    let _ = srv.kill();
    let _ = srv.wait();
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3: {}", String::from_utf8_lossy(&out.stderr)))?;
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .context("iperf3 printed no throughput")
}

pub fn policy() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut topo = Topology::new()?;
    let nets: Vec<_> = (0..NETWORKS)
        .map(|_| topo.add_network())
        .collect::<anyhow::Result<_>>()?;
    let mut pods = Vec::new();
    for i in 0..PODS {
        let id = topo.add_pod(&format!("p{i}"), nets[0])?;
        for net in &nets[1..] {
            topo.attach(id, *net)?;
        }
        pods.push(id);
    }
    println!(
        "policy: {PODS} pod namespaces with {NETWORKS} networks each, {NAMESPACES} namespaces, {POLICIES} MultiNetworkPolicies and a genieNetworkpolicy (set up in {})",
        fmt(t0.elapsed())
    );
    let node = topo.node_netns().path().to_path_buf();
    let new_engine = || -> anyhow::Result<Engine> {
        Ok(Engine::new(Nft::new(None)?).with_host_netns(node.clone()))
    };
    let mut engine = new_engine()?;
    let mut shifts = vec![0u16; POLICIES];

    let plan = compile(&inputs(&topo, &pods, &shifts)?);
    let sizes: Vec<(usize, usize)> = plan
        .pods
        .values()
        .map(|t| {
            let rules = t.chains.iter().map(|c| c.rules.len()).sum();
            let elements = t.sets.iter().map(|s| s.elements.len()).sum();
            (rules, elements)
        })
        .collect();
    let c0 = cpu();
    let t = Instant::now();
    let n = reconcile(&mut engine, &inputs(&topo, &pods, &shifts)?)?;
    println!(
        "policy.initial_apply: {} for {n} tables (the node's and {PODS} pods'; the engine's first reconcile), CPU {}",
        fmt(t.elapsed()),
        fmt(cpu() - c0)
    );
    let max_rules = sizes.iter().map(|s| s.0).max().unwrap_or(0);
    let max_elements = sizes.iter().map(|s| s.1).max().unwrap_or(0);
    let avg_elements = sizes.iter().map(|s| s.1).sum::<usize>() as f64 / sizes.len().max(1) as f64;
    println!(
        "policy.table_size: at most {max_rules} rules per pod table whatever the number of policies (set lookups), set elements per pod table avg {avg_elements:.0} max {max_elements}"
    );

    // Changes: one policy's port each time.
    let mut samples = Vec::new();
    let mut touched = Vec::new();
    let c1 = cpu();
    for i in 0..CHANGES {
        let j = (i * 37) % POLICIES;
        shifts[j] = shifts[j].wrapping_add(1) % 50;
        let inp = inputs(&topo, &pods, &shifts)?;
        let t = Instant::now();
        let n = reconcile(&mut engine, &inp)?;
        samples.push(t.elapsed());
        touched.push(n);
    }
    let per_change = (cpu() - c1) / CHANGES as u32;
    let s = Samples::new(samples);
    touched.sort_unstable();
    println!(
        "policy.change_to_enforced: p50 {} p99 {} (n={CHANGES}; one reconcile of the engine: compile, compare, replace the affected tables {} at a time; {}-{} namespaces per change)  aim p99 < 200 ms: {}",
        fmt(s.pct(50.0)),
        fmt(s.pct(99.0)),
        vfagent::policy::engine::APPLY_WORKERS,
        touched.first().copied().unwrap_or(0),
        touched.last().copied().unwrap_or(0),
        verdict(s.pct(99.0) < Duration::from_millis(200))
    );
    println!(
        "policy.cpu_per_change: {} (the engine's and nft's CPU time)",
        fmt(per_change)
    );

    // The packet path: pod 0 (app-0, selected by 10 policies) serves iperf3 to pod 1; port 5201
    // is allowed from everywhere by a policy of its own.
    let (server, client) = (pods[0], pods[1]);
    let mut with_rules = Vec::new();
    let mut without = Vec::new();
    for round in 0..2 {
        // With every table in place, plus one policy letting iperf3 in.
        let mut inp = inputs(&topo, &pods, &shifts)?;
        inp.multi.push(MultiPolicy {
            namespace: ns_of(0),
            name: "iperf".into(),
            policy_for: vec![net_key(1)],
            spec: serde_json::from_value(json!({
                "podSelector": {"matchLabels": {"app": app_of(0)}},
                "ingress": [{"ports": [{"protocol": "TCP", "port": 5201}]}]
            }))?,
        });
        reconcile(&mut engine, &inp)?;
        with_rules.push(iperf(&topo, server, client)?);
        // No tables at all.
        let nft = Nft::new(None)?;
        nft.remove(Some(&node), Family::Inet, TABLE_NAME)?;
        for (_, p) in topo.pods() {
            nft.remove(Some(p.netns_path()), Family::Inet, TABLE_NAME)?;
        }
        engine = new_engine()?;
        without.push(iperf(&topo, server, client)?);
        let _ = round;
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (w, wo) = (best(&with_rules), best(&without));
    let ratio = if wo > 0.0 { w / wo } else { 0.0 };
    println!(
        "policy.tcp_throughput: {:.2} Gbit/s with every table in place, {:.2} Gbit/s with none (iperf3 -t {IPERF_SECONDS}, best of 2 each, interleaved), ratio {ratio:.3}  aim within 5%: {}",
        w / 1e9,
        wo / 1e9,
        verdict(ratio >= 0.95)
    );
    drop(topo);
    Ok(())
}
