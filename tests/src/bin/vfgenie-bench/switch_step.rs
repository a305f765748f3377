//! `hack/bench switch`: the agent's hot-plug as it runs on a node (its pod watch against the
//! API-server stand-in, the real genie binary, Debian's ptp as the delegate): from a pod's
//! annotation change to the interface up with its address in the pod (a network added), and to
//! the interface gone (removed), beside the delegates' own time for the same attachments (genie's
//! audit log); and switches between the two members of a group under a 10 ms ping, counting the
//! packets lost.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use vfagent::hotplug::run;
use vfgenie_tests::runtime::{run as sh, HostLink, Node, Sandbox, NODE_TOKEN};

use crate::{fmt, verdict, Samples};

const NS: &str = "team";
const NETS: &str = "k8s.v1.cni.cncf.io/networks";
const CHANGES: usize = 100;
const SWITCHES: usize = 20;

/// The pod's interface `ifname` and its first IPv4 address, if it has one.
fn address(sb: &Sandbox, ifname: &str) -> Option<String> {
    sb.addresses()
        .ok()?
        .into_iter()
        .find(|(n, _)| n == ifname)
        .and_then(|(_, a)| a.into_iter().next())
}

fn until(what: &str, limit: Duration, f: impl Fn() -> bool) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(t.elapsed())
}

pub(crate) fn switch() -> anyhow::Result<()> {
    let node = Node::new()?;
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.91.0.0/24"),
    )?;
    node.add_ptp_nad(NS, "blue", "10.92.0.0/24", json!([]));
    node.add_ptp_nad(
        NS,
        "fast-a",
        "10.81.0.0/24",
        json!([{"dst": "10.99.0.0/24"}]),
    );
    node.add_ptp_nad(
        NS,
        "fast-b",
        "10.82.0.0/24",
        json!([{"dst": "10.99.0.0/25"}, {"dst": "10.99.0.128/25"}]),
    );
    node.api.add_group(
        "network-attachment-definitions",
        NS,
        "fast",
        "fast-a,fast-b",
        None,
    );
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    node.write_conf("00-genie.conf", &conf)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let opts = node.hotplug_options();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let client = {
        let _g = rt.enter();
        node.api.kube_client_with_token(NODE_TOKEN)?
    };
    let task = rt.spawn(run(client, opts, stop_rx));

    // Hot-add and hot-remove of blue, CHANGES times each.
    node.api.add_pod(NS, "web", &[(NETS, "")]);
    let sb = Sandbox::new()?;
    let add = node.cni("ADD", "web", &sb.path, "eth0", Some((NS, "web")), &conf)?;
    if !add.success {
        bail!("ADD: {}", add.stdout);
    }
    let limit = Duration::from_secs(10);
    let (mut adds, mut removes) = (Vec::new(), Vec::new());
    for i in 0..CHANGES {
        node.api.add_pod(NS, "web", &[(NETS, "blue")]);
        adds.push(until(&format!("hot-add {i}"), limit, || {
            address(&sb, "net1").is_some()
        })?);
        node.api.add_pod(NS, "web", &[(NETS, "")]);
        removes.push(until(&format!("hot-remove {i}"), limit, || {
            address(&sb, "net1").is_none()
        })?);
    }
    // The delegates' own time for those attachments (genie's audit log: ADD and DEL of blue).
    let audit = std::fs::read_to_string(node.audit_log())?;
    let delegate = |verb: &str| -> Samples {
        Samples::new(
            audit
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|r| {
                    r["kind"] == "delegate" && r["verb"] == verb && r["network"] == "team/blue"
                })
                .filter_map(|r| r["durationUs"].as_u64())
                .map(Duration::from_micros)
                .collect(),
        )
    };
    let (a, d_add) = (Samples::new(adds), delegate("ADD"));
    let (r, d_del) = (Samples::new(removes), delegate("DEL"));
    println!(
        "switch.hot_add (annotation written to interface up with its address): p50 {} p99 {} (n={})  delegates' own ADD: p50 {} p99 {}  aim p99 < 1 s + delegates: {}",
        fmt(a.pct(50.0)),
        fmt(a.pct(99.0)),
        a.n(),
        fmt(d_add.pct(50.0)),
        fmt(d_add.pct(99.0)),
        verdict(a.pct(99.0) < Duration::from_secs(1) + d_add.pct(99.0))
    );
    println!(
        "switch.hot_remove (annotation written to interface gone): p50 {} p99 {} (n={})  delegates' own DEL: p50 {} p99 {}",
        fmt(r.pct(50.0)),
        fmt(r.pct(99.0)),
        r.n(),
        fmt(d_del.pct(50.0)),
        fmt(d_del.pct(99.0)),
    );
    let del = node.cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)?;
    if !del.success {
        bail!("DEL: {}", del.stdout);
    }

    // Switches under a ping through the group's routes.
    let target = HostLink::veth("vfdst")?;
    sh("ip", &["addr", "add", "10.99.0.1/32", "dev", &target.0])?;
    node.api.add_pod(NS, "sw", &[(NETS, "fast")]);
    let sb = Sandbox::new()?;
    let add = node.cni("ADD", "sw", &sb.path, "eth0", Some((NS, "sw")), &conf)?;
    if !add.success {
        bail!("ADD: {}", add.stdout);
    }
    let ping_once = || {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &sb.name,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "10.99.0.1",
            ],
        )
        .is_ok()
    };
    if !(0..50).any(|_| ping_once()) {
        bail!("10.99.0.1 never answered the pod");
    }
    let (mut sent, mut lost, mut times) = (0u64, 0u64, Vec::new());
    for i in 0..SWITCHES {
        let to = if i % 2 == 0 { "fast-b" } else { "fast-a" };
        let subnet = if i % 2 == 0 { "10.82." } else { "10.81." };
        let ns = sb.name.clone();
        let pinger = std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "ping",
                    "-n",
                    "-q",
                    "-i",
                    "0.01",
                    "-w",
                    "2",
                    "10.99.0.1",
                ])
                .output()
        });
        std::thread::sleep(Duration::from_millis(300));
        node.api
            .add_pod(NS, "sw", &[(NETS, "fast"), ("vfgenie.io/switch-to", to)]);
        times.push(until(&format!("switch {i}"), limit, || {
            address(&sb, "net1").is_some_and(|a| a.starts_with(subnet))
                && address(&sb, "vfsw0").is_none()
        })?);
        let out = pinger
            .join()
            .map_err(|_| anyhow::anyhow!("ping thread"))??;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let count = |suffix: &str| -> anyhow::Result<u64> {
            text.split([',', '\n'])
                .map(str::trim)
                .find_map(|p| p.strip_suffix(suffix).and_then(|n| n.trim().parse().ok()))
                .with_context(|| format!("no {suffix:?} in {text}"))
        };
        let (tx, rx) = (count("packets transmitted")?, count("received")?);
        sent += tx;
        lost += tx - rx;
    }
    let t = Samples::new(times);
    println!(
        "switch.make_before_break (annotation written to the new member on the same interface name, old gone): p50 {} p99 {} (n={SWITCHES})  packets lost under a 10 ms ping: {lost} of {sent}  aim 0: {}",
        fmt(t.pct(50.0)),
        fmt(t.pct(99.0)),
        verdict(lost == 0)
    );
    let del = node.cni("DEL", "sw", &sb.path, "eth0", Some((NS, "sw")), &conf)?;
    if !del.success {
        bail!("DEL: {}", del.stdout);
    }
    let _ = stop.send(true);
    rt.block_on(task)?;
    Ok(())
}
