//! Host tier: the agent's hot-plug (`vfagent::hotplug`) against the API-server stand-in and the
//! real genie binary: a running pod's annotation changes, and its interfaces follow; a change
//! that cannot be made leaves the pod as it was and is an Event on it; changes made while the
//! agent was down converge when it starts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vfagent::hotplug::{run, HotplugOptions, REASON};
use vfgenie_tests::runtime::{require_root, Node, Sandbox, NODE_TOKEN};

const NS: &str = "team";
const NETS: &str = "k8s.v1.cni.cncf.io/networks";

fn interfaces(sb: &Sandbox) -> BTreeMap<String, Vec<String>> {
    sb.addresses()
        .unwrap()
        .into_iter()
        .filter(|(n, _)| n != "lo")
        .collect()
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pods_networks_follow_its_annotation() {
    require_root();
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.91.0.0/24"),
    )
    .unwrap();
    for (name, subnet) in [("blue", "10.92.0.0/24"), ("green", "10.95.0.0/24")] {
        node.add_ptp_nad(NS, name, subnet, json!([]));
    }
    let broken = json!({"cniVersion": "1.0.0", "name": "broken", "type": "macvlan",
                        "master": "nosuchlink0", "ipam": node.ipam("10.97.0.0/24")});
    node.api.add_nad(NS, "broken", &broken.to_string(), None);
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    node.write_conf("00-genie.conf", &conf).unwrap();

    node.api.add_pod(NS, "web", &[(NETS, "blue")]);
    let sb = Sandbox::new().unwrap();
    let add = node
        .cni("ADD", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(add.success, "{}", add.stderr);

    let opts = node.hotplug_options();
    let start = |opts: HotplugOptions| {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let client = node.api.kube_client_with_token(NODE_TOKEN).unwrap();
        let task = tokio::spawn(run(client, opts, stop_rx));
        (stop_tx, task)
    };
    let (stop, task) = start(opts.clone());

    // Added.
    node.api.add_pod(NS, "web", &[(NETS, "blue,green")]);
    wait_for("net2 with its address", || {
        interfaces(&sb).get("net2").is_some_and(|a| !a.is_empty())
    });
    let ifs = interfaces(&sb);
    assert!(ifs["net2"][0].starts_with("10.95.0."), "{ifs:?}");

    // A change that cannot be made: the pod keeps what it has, and is told.
    let events = |node: &Node| -> Vec<Value> {
        node.api
            .list("events", Some(NS))
            .into_iter()
            .filter(|e| e["reason"] == REASON && e["involvedObject"]["name"] == "web")
            .collect()
    };
    node.api.add_pod(NS, "web", &[(NETS, "blue,green,broken")]);
    wait_for("the Event", || !events(&node).is_empty());
    let ev = &events(&node)[0];
    assert!(
        ev["message"].as_str().unwrap().contains("team/broken"),
        "{ev}"
    );
    assert_eq!(ev["involvedObject"]["kind"], "Pod");
    assert_eq!(
        interfaces(&sb).keys().collect::<Vec<_>>(),
        ifs.keys().collect::<Vec<_>>()
    );

    // The agent stops; the pod changes meanwhile; the agent starts and converges.
    stop.send(true).unwrap();
    task.await.unwrap();
    node.api.add_pod(NS, "web", &[(NETS, "green")]);
    let (stop, task) = start(opts);
    wait_for("blue gone", || {
        let ifs = interfaces(&sb);
        ifs.len() == 2
            && ifs
                .get("net1")
                .is_some_and(|a| a.first().is_some_and(|x| x.starts_with("10.95.0.")))
    });
    stop.send(true).unwrap();
    task.await.unwrap();

    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

/// `vfgenie-agent switch` asks; the hot-plug on the node moves the pod to the other member of
/// its group, keeping the interface name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vfgenie_agent_switch_moves_a_pod_within_its_group() {
    require_root();
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.91.0.0/24"),
    )
    .unwrap();
    for (name, subnet) in [("fast-a", "10.81.0.0/24"), ("fast-b", "10.82.0.0/24")] {
        node.add_ptp_nad(NS, name, subnet, json!([]));
    }
    node.api.add_group(
        "network-attachment-definitions",
        NS,
        "fast",
        "fast-a,fast-b",
        None,
    );
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    node.write_conf("00-genie.conf", &conf).unwrap();
    node.api.add_pod(NS, "web", &[(NETS, "fast")]);
    let sb = Sandbox::new().unwrap();
    let add = node
        .cni("ADD", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(add.success, "{}", add.stderr);
    assert!(interfaces(&sb)["net1"][0].starts_with("10.81.0."));

    let opts = node.hotplug_options();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let client = node.api.kube_client_with_token(NODE_TOKEN).unwrap();
    let task = tokio::spawn(run(client, opts, stop_rx));

    // The agent binary of this build, as an operator runs it.
    let exe = std::env::current_exe().unwrap();
    let agent = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("vfgenie-agent");
    let cli = |args: &[&str]| {
        std::process::Command::new(&agent)
            .args(args)
            .env("KUBECONFIG", &node.kubeconfig)
            .output()
            .unwrap()
    };
    let bad = cli(&["switch", "team/web", "--to", "../fast-b"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not the name of a network"));
    let out = cli(&["switch", "team/web", "--to", "fast-b"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the switch", || {
        interfaces(&sb)
            .get("net1")
            .is_some_and(|a| a.first().is_some_and(|x| x.starts_with("10.82.0.")))
    });
    assert_eq!(interfaces(&sb).keys().collect::<Vec<_>>(), ["eth0", "net1"]);
    stop.send(true).unwrap();
    task.await.unwrap();
    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}

/// A pod annotated `vfgenie.io/switch-when: errorRate > 0.2` is moved off its group member when
/// the node's KPIs show that member over the threshold, to the other member below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crossed_threshold_switches_the_pod_to_the_other_member() {
    require_root();
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.91.0.0/24"),
    )
    .unwrap();
    for (name, subnet) in [("fast-a", "10.81.0.0/24"), ("fast-b", "10.82.0.0/24")] {
        node.add_ptp_nad(NS, name, subnet, json!([]));
    }
    node.api.add_group(
        "network-attachment-definitions",
        NS,
        "fast",
        "fast-a,fast-b",
        None,
    );
    let kpi_file = node.dir.path().join("kpi.json");
    let conf = node.genie_conf(
        "1.0.0",
        json!({"clusterNetwork": "cluster",
               "smartSelection": {"strategy": "leastTraffic", "candidates": ["cluster"],
                                  "kpiFile": kpi_file.display().to_string()}}),
    );
    node.write_conf("00-genie.conf", &conf).unwrap();
    let write_kpis = |a_errors: f64, b_errors: f64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let net = |e: f64| {
            json!({"sampledAt": now, "ipUsed": 1, "ipTotal": 253, "freeVfs": null,
                   "rxBytesPerSecond": 10.0, "txBytesPerSecond": 10.0,
                   "attachLatencyP50Ms": 20.0, "errorRate": e})
        };
        let f = json!({"generatedAt": now, "node": "node-1",
                       "networks": {"team/fast-a": net(a_errors), "team/fast-b": net(b_errors)}});
        std::fs::write(&kpi_file, f.to_string()).unwrap();
    };
    // fast-a is the better one at first.
    write_kpis(0.0, 0.1);
    node.api.add_pod(
        NS,
        "web",
        &[
            (NETS, "fast"),
            ("vfgenie.io/switch-when", "errorRate > 0.2"),
        ],
    );
    let sb = Sandbox::new().unwrap();
    let add = node
        .cni("ADD", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(add.success, "{}", add.stderr);
    assert!(interfaces(&sb)["net1"][0].starts_with("10.81.0."));

    let mut opts = node.hotplug_options();
    opts.kpi_file = Some(kpi_file.clone());
    opts.threshold_interval = Duration::from_millis(100);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let client = node.api.kube_client_with_token(NODE_TOKEN).unwrap();
    let task = tokio::spawn(run(client, opts, stop_rx));

    // Below the threshold: it stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(interfaces(&sb)["net1"][0].starts_with("10.81.0."));
    // fast-a's error rate crosses it: the agent asks, hot-plug switches.
    write_kpis(0.5, 0.1);
    wait_for("the threshold switch", || {
        interfaces(&sb)
            .get("net1")
            .is_some_and(|a| a.first().is_some_and(|x| x.starts_with("10.82.0.")))
    });
    let pod = node.api.pod(NS, "web").unwrap();
    let a = &pod["metadata"]["annotations"];
    assert_eq!(a["vfgenie.io/switch-to"], "fast-b");
    assert!(
        a["vfgenie.io/switch-reason"]
            .as_str()
            .unwrap()
            .contains("team/fast-a: ErrorRate 0.5 crossed 0.2"),
        "{a}"
    );
    // The pod's selection says why (written when the UPDATE finishes, after the interface).
    let group_reason = || -> Option<String> {
        let w = node
            .api
            .writes()
            .into_iter()
            .rev()
            .find(|w| w.name == "web")?;
        let sels: Value = serde_json::from_str(w.annotation("vfgenie.io/smart-selection")?).ok()?;
        sels.as_array()?
            .iter()
            .find(|s| s["group"] == "team/fast")
            .and_then(|g| g["reason"].as_str().map(str::to_string))
    };
    wait_for("the switch's status", || {
        group_reason().is_some_and(|r| r.contains("crossed"))
    });
    stop.send(true).unwrap();
    task.await.unwrap();
    let del = node
        .cni("DEL", "web", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stderr);
    node.assert_nothing_left(&sb);
}
