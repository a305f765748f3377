//! Host tier: genie's audit log, through the real binary exec'd as a runtime execs it. Each
//! record a user would grep for carries its fields: the pod, the container, the network, the
//! plugin, the interface, the duration, the addresses handed out or released, or the error with
//! the CNI code and message the runtime saw. A log that cannot be written does not fail ADD.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use vfgenie_tests::runtime::{require_root, HostLink, Node, Sandbox};

const NS: &str = "audit";

fn lines(node: &Node) -> Vec<Value> {
    std::fs::read_to_string(node.audit_log())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn records<'a>(all: &'a [Value], kind: &str, verb: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|r| r["kind"] == kind && r["verb"] == verb)
        .collect()
}

/// cluster (bridge) + `red` (macvlan on `master`) through CNI-Genie's `cni` annotation.
fn node_with(master: &str) -> Node {
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.97.0.0/24"),
    )
    .unwrap();
    let red = json!({"cniVersion": "1.0.0", "name": "red", "type": "macvlan", "master": master,
                     "mode": "bridge", "ipam": node.ipam("10.98.0.0/24")});
    node.write_conf("20-red.conf", &red).unwrap();
    node
}

fn assert_common(r: &Value, uid: &str, container: &str) {
    assert_eq!(r["source"], "cni", "{r}");
    assert_eq!(r["pod"]["namespace"], NS, "{r}");
    assert_eq!(r["pod"]["name"], "web", "{r}");
    assert_eq!(r["pod"]["uid"], uid, "{r}");
    assert_eq!(r["containerId"], container, "{r}");
    assert!(r["durationUs"].as_u64().is_some_and(|d| d > 0), "{r}");
    let t = r["time"].as_str().unwrap();
    assert!(
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
        "{t}"
    );
}

#[test]
fn add_and_del_records_carry_every_field_and_the_addresses() {
    require_root();
    let dummy = HostLink::veth("adm").unwrap();
    let node = node_with(&dummy.0);
    let uid = node.api.add_pod(NS, "web", &[("cni", "red")]);
    let sb = Sandbox::new().unwrap();
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    let out = node
        .cni(
            "ADD",
            "c-audit-1",
            &sb.path,
            "eth0",
            Some((NS, "web")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let mut handed: Vec<String> = out.json().unwrap()["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().to_string())
        .collect();
    handed.sort();
    assert_eq!(handed.len(), 2);

    let all = lines(&node);
    let calls = records(&all, "call", "ADD");
    assert_eq!(calls.len(), 1, "{all:?}");
    let call = calls[0];
    assert_common(call, &uid, "c-audit-1");
    assert_eq!(call["plugin"], "genie");
    assert_eq!(call["ifname"], "eth0");
    assert!(call.get("error").is_none());
    let mut got: Vec<String> = serde_json::from_value(call["result"]["addresses"].clone()).unwrap();
    got.sort();
    assert_eq!(got, handed);

    let delegates = records(&all, "delegate", "ADD");
    let by_net = |recs: &[&Value], n: &str| -> Value {
        recs.iter()
            .find(|r| r["network"] == n)
            .map(|r| (*r).clone())
            .unwrap_or_else(|| panic!("no record of {n}: {recs:?}"))
    };
    assert_eq!(delegates.len(), 2, "{all:?}");
    for (net, plugin, ifname, prefix) in [
        ("cluster", "bridge", "eth0", "10.97.0."),
        ("red", "macvlan", "eth1", "10.98.0."),
    ] {
        let d = by_net(&delegates, net);
        assert_common(&d, &uid, "c-audit-1");
        assert_eq!(d["plugin"], plugin, "{d}");
        assert_eq!(d["ifname"], ifname, "{d}");
        let a = d["result"]["addresses"].as_array().unwrap();
        assert_eq!(a.len(), 1, "{d}");
        assert!(a[0].as_str().unwrap().starts_with(prefix), "{d}");
        assert!(handed.contains(&a[0].as_str().unwrap().to_string()));
    }

    // CHECK and STATUS are on record too: CHECK once per network, without addresses.
    let out = node
        .cni(
            "CHECK",
            "c-audit-1",
            &sb.path,
            "eth0",
            Some((NS, "web")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let conf_11 = node.genie_conf("1.1.0", json!({"clusterNetwork": "cluster"}));
    let out = node
        .cni("STATUS", "", &sb.path, "", None, &conf_11)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let all = lines(&node);
    let checks = records(&all, "delegate", "CHECK");
    assert_eq!(checks.len(), 2, "{all:?}");
    assert!(checks
        .iter()
        .all(|r| r.get("result").is_none() && r.get("error").is_none()));
    assert_eq!(records(&all, "call", "CHECK").len(), 1);
    let status = records(&all, "call", "STATUS");
    assert_eq!(status.len(), 1, "{all:?}");
    assert!(status[0].get("error").is_none() && status[0].get("pod").is_none());

    // DEL: the addresses released, from the cache record.
    let out = node
        .cni(
            "DEL",
            "c-audit-1",
            &sb.path,
            "eth0",
            Some((NS, "web")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let all = lines(&node);
    let dels = records(&all, "delegate", "DEL");
    assert_eq!(dels.len(), 2, "{all:?}");
    let mut released: Vec<String> = dels
        .iter()
        .flat_map(|d| {
            assert_common(d, &uid, "c-audit-1");
            serde_json::from_value::<Vec<String>>(d["result"]["addresses"].clone()).unwrap()
        })
        .collect();
    released.sort();
    assert_eq!(released, handed);
    let call = records(&all, "call", "DEL");
    assert_eq!(call.len(), 1);
    assert_eq!(
        call[0]["result"]["addresses"].as_array().map(Vec::len),
        Some(2)
    );
    node.assert_nothing_left(&sb);

    // The log is the node's private file.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(node.audit_log())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(node.audit_log().parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
}

#[test]
fn a_failing_delegate_is_on_its_record_and_on_the_call_with_the_runtimes_code() {
    require_root();
    let node = node_with("no-such-master0");
    let uid = node.api.add_pod(NS, "web", &[("cni", "red")]);
    let sb = Sandbox::new().unwrap();
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    let out = node
        .cni(
            "ADD",
            "c-audit-2",
            &sb.path,
            "eth0",
            Some((NS, "web")),
            &conf,
        )
        .unwrap();
    assert!(!out.success, "{}", out.stdout);
    let err = out.json().unwrap();
    let code = err["code"].as_u64().unwrap();
    let msg = err["msg"].as_str().unwrap();

    let all = lines(&node);
    let failed: Vec<&Value> = records(&all, "delegate", "ADD")
        .into_iter()
        .filter(|r| r.get("error").is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{all:?}");
    let d = failed[0];
    assert_common(d, &uid, "c-audit-2");
    assert_eq!(d["network"], "red");
    assert_eq!(d["plugin"], "macvlan");
    assert_eq!(d["ifname"], "eth1");
    assert_eq!(d["error"]["code"].as_u64(), Some(code));
    assert!(d.get("result").is_none());
    let dmsg = d["error"]["msg"].as_str().unwrap();
    assert!(
        dmsg.contains("no-such-master0") || msg.contains(dmsg),
        "{dmsg} / {msg}"
    );

    let call = records(&all, "call", "ADD");
    assert_eq!(call.len(), 1);
    assert_common(call[0], &uid, "c-audit-2");
    assert_eq!(call[0]["error"]["code"].as_u64(), Some(code));
    assert_eq!(call[0]["error"]["msg"], msg);
    // The cluster network was undone: its DEL is on record too.
    let undone = records(&all, "delegate", "DEL");
    assert!(undone.iter().any(|r| r["network"] == "cluster"), "{all:?}");
    node.assert_nothing_left(&sb);
}

#[test]
fn an_unwritable_log_does_not_fail_add_and_is_logged() {
    require_root();
    let node = node_with("unused0");
    node.api.add_pod(NS, "plain", &[]);
    // A directory where the file should be.
    let log = node.audit_log();
    std::fs::create_dir_all(&log).unwrap();
    let sb = Sandbox::new().unwrap();
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    let out = node
        .cni(
            "ADD",
            "c-audit-3",
            &sb.path,
            "eth0",
            Some((NS, "plain")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert!(sb.addresses().unwrap().iter().any(|(n, _)| n == "eth0"));
    assert!(
        out.stderr.contains("audit record not written")
            && out.stderr.contains(&log.display().to_string()),
        "{}",
        out.stderr
    );
    let out = node
        .cni(
            "DEL",
            "c-audit-3",
            &sb.path,
            "eth0",
            Some((NS, "plain")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    node.assert_nothing_left(&sb);
}

#[test]
fn audit_log_false_writes_nothing() {
    require_root();
    let node = node_with("unused0");
    node.api.add_pod(NS, "plain", &[]);
    let sb = Sandbox::new().unwrap();
    let conf = node.genie_conf(
        "1.0.0",
        json!({"clusterNetwork": "cluster", "auditLog": false}),
    );
    let out = node
        .cni(
            "ADD",
            "c-audit-4",
            &sb.path,
            "eth0",
            Some((NS, "plain")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{}", out.stderr);
    assert!(!node.audit_log().exists());
    let out = node
        .cni(
            "DEL",
            "c-audit-4",
            &sb.path,
            "eth0",
            Some((NS, "plain")),
            &conf,
        )
        .unwrap();
    assert!(out.success, "{}", out.stderr);
}

#[test]
fn fifty_concurrent_adds_give_fifty_whole_call_lines() {
    require_root();
    let node = node_with("unused0");
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    let sandboxes: Vec<Sandbox> = (0..50).map(|_| Sandbox::new().unwrap()).collect();
    for i in 0..50 {
        node.api.add_pod(NS, &format!("p{i}"), &[]);
    }
    let names: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = sandboxes
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(i, (sb, name))| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || {
                    node.cni(
                        "ADD",
                        &format!("c-many-{i}"),
                        &sb.path,
                        "eth0",
                        Some((NS, name)),
                        conf,
                    )
                    .unwrap()
                })
            })
            .collect();
        for h in handles {
            let out = h.join().unwrap();
            assert!(out.success, "{} / {}", out.stdout, out.stderr);
        }
    });
    let text = std::fs::read_to_string(node.audit_log()).unwrap();
    // Every line decodes whole: none torn, none interleaved.
    let all: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let calls = records(&all, "call", "ADD");
    assert_eq!(calls.len(), 50);
    assert_eq!(records(&all, "delegate", "ADD").len(), 50);
    let mut ids: Vec<&str> = calls
        .iter()
        .map(|r| r["containerId"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    for (i, (sb, name)) in sandboxes.iter().zip(&names).enumerate() {
        let out = node
            .cni(
                "DEL",
                &format!("c-many-{i}"),
                &sb.path,
                "eth0",
                Some((NS, name)),
                &conf,
            )
            .unwrap();
        assert!(out.success, "{}", out.stderr);
    }
    assert!(node.leases().is_empty());
}
