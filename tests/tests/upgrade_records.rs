//! Upgrades: a pod attached by an older genie is deleted cleanly by this one. genie's record of a
//! pod (`<cniDir>/vfgenie/<containerID>-<ifname>.json`, kind `vfgeniePodV1`) is what DEL undoes
//! the attachments from, after an upgrade as before; release 0.1.0's record is kept under
//! tests/fixtures/upgrade/ (its per-run values as @PLACEHOLDERS@).
//!
//! The fixture is filled with this run's sandbox, bridge and IPAM dir, put in place of the record
//! this genie wrote on ADD, and this genie's DEL must then leave nothing: no link, no lease, no
//! record. And today's writer writes the same keys: a change of format needs a new kind and a
//! reader for the old one, and this test says so. (`VFGENIE_PRINT_RECORD=1` prints the record this
//! genie writes: the starting point of the next release's fixture.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use vfgenie_tests::runtime::{require_root, Node, Sandbox};

const NS: &str = "upgrade";
const CID: &str = "0d1e2f3a4b5c";
const FIXTURE: &str = include_str!("../fixtures/upgrade/genie-pod-record-v1-0.1.0.json");

/// Every object key of `v` as a path, not descending into the free-form parts (the delegated
/// conf, the delegate's result, `extra`).
fn keys(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let path = format!("{at}/{k}");
                out.push(path.clone());
                if !matches!(k.as_str(), "conf" | "result" | "extra") {
                    keys(v, &path, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| keys(v, &format!("{at}[]"), out)),
        _ => {}
    }
    out.sort();
    out.dedup();
}

#[test]
fn a_pod_attached_by_release_0_1_0_is_deleted_cleanly() {
    require_root();
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.97.0.0/24"),
    )
    .unwrap();
    let uid = node.api.add_pod(NS, "old", &[]);
    let sb = Sandbox::new().unwrap();
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    let out = node
        .cni("ADD", CID, &sb.path, "eth0", Some((NS, "old")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(node.cache_records(), vec![format!("{CID}-eth0.json")]);
    let record_path = node
        .cache_dir
        .join("vfgenie")
        .join(format!("{CID}-eth0.json"));
    let written: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    if std::env::var_os("VFGENIE_PRINT_RECORD").is_some() {
        println!("RECORD{}", serde_json::to_string_pretty(&written).unwrap());
    }

    let old_text = FIXTURE
        .replace("@NETNS@", sb.path.to_str().unwrap())
        .replace("@BRIDGE@", &node.bridge)
        .replace("@IPAM_DIR@", node.ipam_dir.to_str().unwrap())
        .replace("@POD_UID@", &uid);
    assert!(!old_text.contains('@'), "a placeholder left: {old_text}");
    let old: Value = serde_json::from_str(&old_text).unwrap();
    assert_eq!(old["kind"], "vfgeniePodV1");
    let (mut k_old, mut k_now) = (Vec::new(), Vec::new());
    keys(&old, "", &mut k_old);
    keys(&written, "", &mut k_now);
    assert_eq!(
        k_now, k_old,
        "genie's record format changed: give it a new kind"
    );

    std::fs::write(&record_path, old_text).unwrap();
    assert_eq!(node.leases().len(), 1, "the pod's lease is held");
    let out = node
        .cni("DEL", CID, &sb.path, "eth0", Some((NS, "old")), &conf)
        .unwrap();
    assert!(out.success, "DEL: {} / {}", out.stdout, out.stderr);
    node.assert_nothing_left(&sb);
}
