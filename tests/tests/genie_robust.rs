//! Host tier, robustness of genie against what can go wrong around a pod: a record that cannot be
//! read, a plugin binary that has gone, a DEL racing an ADD (running, or killed with its delegates
//! still running), a pod asking for too many networks, a delegate that stalls. Each test checks
//! what a user would: DEL's answer, and that no link, lease or record is left (or, when something
//! cannot be undone, that it is kept in the quarantine rather than forgotten).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vfcni::cache::CacheDir;
use vfgenie_tests::runtime::{require_root, run, HostLink, Node, Sandbox};

const NS: &str = "team";

fn script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A node with the cluster network (bridge + host-local) and the NAD `team/blue` (ptp).
fn node() -> Node {
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.81.0.0/24"),
    )
    .unwrap();
    let blue = json!({"cniVersion": "1.0.0", "name": "blue", "type": "ptp", "ipMasq": false,
                      "ipam": node.ipam("10.82.0.0/24")});
    node.api.add_nad(NS, "blue", &blue.to_string(), None);
    node
}

fn genie(node: &Node, extra: Value) -> Value {
    let mut e = json!({"clusterNetwork": "cluster"});
    if let (Some(m), Value::Object(x)) = (e.as_object_mut(), extra) {
        m.extend(x);
    }
    node.genie_conf("1.0.0", e)
}

/// Waits for `what` to hold, up to `limit`.
fn await_true(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn quarantine(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(node.cache_dir.join("quarantine"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A truncated or garbled record while the pod is still in the API: DEL plans the pod's networks
/// again and deletes them in the record's place; nothing is left, nothing is quarantined.
#[test]
fn a_corrupt_record_of_a_pod_the_api_still_has_is_torn_down_as_planned() {
    require_root();
    let node = node();
    let conf = genie(&node, json!({}));
    for (n, garble) in [
        (0, &b"{\"kind\": \"vfgeniePodV1\", \"attach"[..]),
        (1, &b"\0\0\0\0"[..]),
        (2, &b"{\"kind\": \"vfgeniePodV1\", \"containerId\": \"other\", \"ifName\": \"eth0\", \"netns\": \"\", \"attachments\": []}"[..]),
    ] {
        let name = format!("g{n}");
        node.api
            .add_pod(NS, &name, &[("k8s.v1.cni.cncf.io/networks", "blue")]);
        let sb = Sandbox::new().unwrap();
        let pod = Some((NS, name.as_str()));
        let add = node.cni("ADD", &name, &sb.path, "eth0", pod, &conf).unwrap();
        assert!(add.success, "{} / {}", add.stdout, add.stderr);
        assert_eq!(sb.links().unwrap().len(), 2);
        let rec = node.cache_dir.join("vfgenie").join(format!("{name}-eth0.json"));
        std::fs::write(&rec, garble).unwrap();

        let del = node.cni("DEL", &name, &sb.path, "eth0", pod, &conf).unwrap();
        assert!(del.success, "{} / {}", del.stdout, del.stderr);
        assert!(
            del.stderr.contains("ERROR") && del.stderr.contains("could not be read"),
            "{}",
            del.stderr
        );
        node.assert_nothing_left(&sb);
        assert!(quarantine(&node).is_empty(), "{:?}", quarantine(&node));
    }
}

/// A corrupt record of a pod the API no longer has (nothing to plan from): one DEL fails naming
/// the file, the next quarantines it and succeeds.
#[test]
fn a_corrupt_record_fails_one_del_then_is_quarantined_and_del_succeeds() {
    require_root();
    let node = node();
    node.api
        .add_pod(NS, "r1", &[("k8s.v1.cni.cncf.io/networks", "blue")]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({}));
    let pod = Some((NS, "r1"));
    let add = node.cni("ADD", "r1", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(add.success, "{} / {}", add.stdout, add.stderr);
    let rec = node.cache_dir.join("vfgenie").join("r1-eth0.json");
    std::fs::write(&rec, b"{\"kind\": \"vfgeniePodV1\", \"attach").unwrap();
    node.api.delete_pod(NS, "r1");

    // The first DEL reports the corrupt record (the runtime shows it on the pod) and says what
    // the next one will do.
    let first = node.cni("DEL", "r1", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(!first.success);
    let err = first.json().unwrap();
    assert_eq!(err["code"], 6, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("quarantine"), "{err}");
    assert!(rec.exists());

    // The runtime's retry: the record is moved aside, DEL succeeds, the error is logged.
    let second = node.cni("DEL", "r1", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(second.success, "{} / {}", second.stdout, second.stderr);
    assert!(!rec.exists());
    let q = quarantine(&node);
    assert_eq!(q.len(), 2, "{q:?}");
    let moved = q.iter().find(|n| n.ends_with(".corrupt")).unwrap();
    assert!(moved.starts_with("r1-eth0."), "{q:?}");
    let kept = std::fs::read(node.cache_dir.join("quarantine").join(moved)).unwrap();
    assert_eq!(kept, b"{\"kind\": \"vfgeniePodV1\", \"attach");
    let reason = std::fs::read_to_string(
        node.cache_dir
            .join("quarantine")
            .join(format!("{moved}.reason")),
    )
    .unwrap();
    assert!(reason.contains("corrupt"), "{reason}");
    assert!(
        second.stderr.contains("ERROR")
            && second.stderr.contains("r1")
            && second.stderr.contains(moved.as_str()),
        "{}",
        second.stderr
    );
    let mode = std::fs::metadata(node.cache_dir.join("quarantine").join(moved))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Nothing was released blindly: the pod's leases stay for an operator.
    assert_eq!(node.leases().len(), 2);
    assert_eq!(
        CacheDir::new(&node.cache_dir).quarantined_count().unwrap(),
        1
    );
    // A later DEL finds nothing and succeeds.
    let third = node.cni("DEL", "r1", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(third.success, "{}", third.stdout);
}

#[test]
fn a_plugin_gone_before_del_is_quarantined_and_gc_replays_it_when_it_is_back() {
    require_root();
    let node = node();
    // The CNI-Genie network `red` runs ptp under another name, installed only in the bin dir.
    let plugin = node.bin_dir.join("redptp");
    std::os::unix::fs::symlink(node.plugin_dir.join("ptp"), &plugin).unwrap();
    node.write_conf(
        "20-red.conf",
        &json!({"cniVersion": "1.0.0", "name": "red", "type": "redptp", "ipMasq": false,
                "ipam": node.ipam("10.83.0.0/24")}),
    )
    .unwrap();
    node.api.add_pod(NS, "r2", &[("cni", "red")]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({}));
    let pod = Some((NS, "r2"));
    let add = node.cni("ADD", "r2", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(add.success, "{} / {}", add.stdout, add.stderr);
    assert_eq!(sb.links().unwrap(), ["eth0", "eth1"]);

    std::fs::remove_file(&plugin).unwrap();
    let del = node.cni("DEL", "r2", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    // The cluster network came down; red's attachment is kept in the quarantine, not forgotten.
    assert_eq!(sb.links().unwrap(), ["eth1"]);
    let leases = node.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert!(leases[0].starts_with("10.83.0."), "{leases:?}");
    assert!(node.cache_records().is_empty());
    let cache = CacheDir::new(&node.cache_dir);
    let q = cache.quarantined().unwrap();
    assert_eq!(q.len(), 1);
    let kept = q[0].replayable().unwrap();
    assert_eq!(kept.container_id, "r2");
    assert_eq!(kept.attachments.len(), 1);
    assert_eq!(kept.attachments[0].network, "red");
    assert!(q[0].reason.contains("redptp"), "{}", q[0].reason);
    let file = q[0]
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        del.stderr.contains("ERROR") && del.stderr.contains(&file),
        "{}",
        del.stderr
    );

    // GC (from the runtime, through the binary) while the plugin is still missing leaves it; once
    // it is back, GC's replay deletes it. No live attachment is listed: the replay runs anyway.
    let mut gc_conf = genie(&node, json!({}));
    gc_conf["cniVersion"] = json!("1.1.0");
    let gc = |conf: &Value| {
        let out = node.cni("GC", "", Path::new(""), "", None, conf).unwrap();
        assert!(out.success, "{} / {}", out.stdout, out.stderr);
    };
    gc(&gc_conf);
    assert_eq!(cache.quarantined_count().unwrap(), 1);
    std::os::unix::fs::symlink(node.plugin_dir.join("ptp"), &plugin).unwrap();
    gc(&gc_conf);
    assert_eq!(cache.quarantined_count().unwrap(), 0);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
}

/// A delegate whose ADD takes `secs` seconds and then takes a lease (a file named after an IP in
/// the node's IPAM dir, as host-local's); its DEL releases it. It notes its start (its parent's
/// pid, genie's, and its own) and its end beside itself.
fn slow_plugin(node: &Node, secs: u32) -> String {
    let lease_dir = node.ipam_dir.join("slow");
    format!(
        r#"#!/bin/sh
dir="$(dirname "$0")"
lease="{lease}/10.84.0.9"
case "$CNI_COMMAND" in
ADD)
    cat >/dev/null
    echo "$PPID $$" > "$dir/slow.tmp" && mv "$dir/slow.tmp" "$dir/slow.started"
    sleep {secs}
    mkdir -p "{lease}" && echo "$CNI_CONTAINERID" > "$lease"
    touch "$dir/slow.done"
    echo '{{"cniVersion":"1.0.0"}}' ;;
DEL) cat >/dev/null; rm -f "$lease" ;;
VERSION) echo '{{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}}' ;;
esac
exit 0
"#,
        lease = lease_dir.display()
    )
}

fn slow_node(secs: u32) -> Node {
    let node = node();
    script(&node.bin_dir.join("slow"), &slow_plugin(&node, secs));
    node.write_conf(
        "20-red.conf",
        &json!({"cniVersion": "1.0.0", "name": "red", "type": "slow"}),
    )
    .unwrap();
    node
}

#[test]
fn a_del_during_a_running_add_waits_for_it_then_removes_everything() {
    require_root();
    let node = slow_node(3);
    node.api.add_pod(NS, "r3", &[("cni", "red")]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({}));
    let pod = Some((NS, "r3"));
    let started = node.bin_dir.join("slow.started");
    let (add, del) = std::thread::scope(|s| {
        let add = s.spawn(|| node.cni("ADD", "r3", &sb.path, "eth0", pod, &conf).unwrap());
        await_true(Duration::from_secs(30), "the slow delegate starts", || {
            started.exists()
        });
        // The runtime gave up on the ADD and sends DEL while it still runs.
        let del = node.cni("DEL", "r3", &sb.path, "eth0", pod, &conf).unwrap();
        (add.join().unwrap(), del)
    });
    assert!(add.success, "{} / {}", add.stdout, add.stderr);
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    // The DEL came last: nothing of the pod is left, and no record came back.
    node.assert_nothing_left(&sb);
}

#[test]
fn a_del_after_genie_was_killed_mid_add_waits_for_its_delegates() {
    require_root();
    let node = slow_node(3);
    node.api.add_pod(NS, "r4", &[("cni", "red")]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({}));
    let pod = Some((NS, "r4"));
    let started = node.bin_dir.join("slow.started");
    let add = std::thread::scope(|s| {
        let add = s.spawn(|| node.cni("ADD", "r4", &sb.path, "eth0", pod, &conf).unwrap());
        await_true(Duration::from_secs(30), "the slow delegate starts", || {
            started.exists()
        });
        // Only genie is killed (its pid is the delegate's parent): the delegate runs on.
        let pids = std::fs::read_to_string(&started).unwrap();
        let genie = pids.split_whitespace().next().unwrap();
        run("kill", &["-KILL", genie]).unwrap();
        add.join().unwrap()
    });
    assert!(!add.success, "a killed ADD reported success");
    let del = node.cni("DEL", "r4", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    // Whatever the delegate did after the DEL would have leaked: let it finish, then look.
    await_true(Duration::from_secs(30), "the slow delegate ends", || {
        node.bin_dir.join("slow.done").exists()
    });
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
    assert!(
        node.cache_records().is_empty(),
        "{:?}",
        node.cache_records()
    );
}

#[test]
fn more_networks_than_the_limit_are_refused_before_anything_is_attached() {
    require_root();
    let node = node();
    // A NAD a pod can use many times over (macvlan on a host link).
    let master = HostLink::veth("grm").unwrap();
    let nad = json!({"cniVersion": "1.0.0", "name": "many", "type": "macvlan", "master": master.0,
                     "mode": "bridge", "ipam": node.ipam("10.86.0.0/24")});
    node.api.add_nad(NS, "many", &nad.to_string(), None);
    // The cluster network and 32 NAD attachments: 33, one over the default limit.
    let many = vec!["many"; 32].join(",");
    node.api
        .add_pod(NS, "r5", &[("k8s.v1.cni.cncf.io/networks", many.as_str())]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({}));
    let out = node
        .cni("ADD", "r5", &sb.path, "eth0", Some((NS, "r5")), &conf)
        .unwrap();
    assert!(!out.success, "33 networks were attached");
    let err = out.json().unwrap();
    assert_eq!(err["code"], 7, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("team/r5") && msg.contains("32") && msg.contains("maxNetworksPerPod"),
        "{msg}"
    );
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty());
    assert!(node.api.writes().is_empty());

    // A lower limit in the genie conf applies the same way; within it the pod attaches.
    node.api
        .add_pod(NS, "r6", &[("k8s.v1.cni.cncf.io/networks", "many,many")]);
    let low = genie(&node, json!({"maxNetworksPerPod": 2}));
    let out = node
        .cni("ADD", "r6", &sb.path, "eth0", Some((NS, "r6")), &low)
        .unwrap();
    assert!(!out.success);
    assert!(
        out.json().unwrap()["msg"]
            .as_str()
            .unwrap()
            .contains("limit of 2"),
        "{}",
        out.stdout
    );
    assert!(node.leases().is_empty());
    let ok = genie(&node, json!({"maxNetworksPerPod": 3}));
    let out = node
        .cni("ADD", "r6", &sb.path, "eth0", Some((NS, "r6")), &ok)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    let del = node
        .cni("DEL", "r6", &sb.path, "eth0", Some((NS, "r6")), &ok)
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    // Out of range is a conf error.
    let bad = genie(&node, json!({"maxNetworksPerPod": 0}));
    let out = node
        .cni("ADD", "r6", &sb.path, "eth0", Some((NS, "r6")), &bad)
        .unwrap();
    assert!(
        !out.success && out.stdout.contains("maxNetworksPerPod"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_stalled_delegate_fails_the_add_within_add_timeout_seconds_and_leaves_nothing() {
    require_root();
    let node = slow_node(60);
    node.api.add_pod(NS, "r7", &[("cni", "red")]);
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({"addTimeoutSeconds": 2}));
    let t0 = Instant::now();
    let out = node
        .cni("ADD", "r7", &sb.path, "eth0", Some((NS, "r7")), &conf)
        .unwrap();
    let took = t0.elapsed();
    assert!(!out.success, "{}", out.stdout);
    // 2 s, plus the undo and a loaded host's slack; the delegate's own bound is 60 s.
    assert!(took < Duration::from_secs(15), "{took:?}");
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("addTimeoutSeconds") && msg.contains("2 s") && msg.contains("r7"),
        "{msg}"
    );
    assert!(sb.links().unwrap().is_empty(), "{:?}", sb.links());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty());
}

/// genie killed during ADD before its first record was in place leaves the record's temporary
/// file; the runtime's DEL (nothing recorded) removes it (found by hack/chaos).
#[test]
fn a_del_with_nothing_recorded_removes_a_killed_writers_temp_file() {
    require_root();
    let node = node();
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({}));
    let dir = node.cache_dir.join("vfgenie");
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(".k9-eth0.json.tmp.26048.0");
    std::fs::write(&tmp, b"{\"kind\": ").unwrap();
    let del = node
        .cni("DEL", "k9", &sb.path, "eth0", Some((NS, "k9")), &conf)
        .unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    assert!(!tmp.exists(), "the temporary file is left");
}

/// A delegate killed mid-ADD (its plugin did its work, then died before answering) whose DEL
/// fails too while the node is in trouble: genie's undo keeps that attachment recorded, so the
/// runtime's DEL retries it and, once the plugin works again, removes what the killed ADD began.
#[test]
fn a_delegate_killed_mid_add_stays_recorded_until_a_del_removes_what_it_began() {
    require_root();
    let node = node();
    let broken = node.bin_dir.join("del-broken");
    let ptp = node.plugin_dir.join("ptp");
    script(
        &node.bin_dir.join("killptp"),
        &format!(
            "#!/bin/sh\nin=$(cat)\ncase \"$CNI_COMMAND\" in\nADD) printf '%s' \"$in\" | '{ptp}' >/dev/null; kill -9 $$ ;;\nDEL) if [ -e '{broken}' ]; then echo '{{\"code\": 11, \"msg\": \"not now\"}}'; exit 1; fi ;;\nesac\nprintf '%s' \"$in\" | exec '{ptp}'\n",
            ptp = ptp.display(),
            broken = broken.display()
        ),
    );
    let green = json!({"cniVersion": "1.0.0", "name": "green", "type": "killptp", "ipMasq": false,
                       "ipam": node.ipam("10.83.0.0/24")});
    node.api.add_nad(NS, "green", &green.to_string(), None);
    node.api
        .add_pod(NS, "k1", &[("k8s.v1.cni.cncf.io/networks", "green")]);
    std::fs::write(&broken, b"").unwrap();
    let sb = Sandbox::new().unwrap();
    let conf = genie(&node, json!({}));
    let pod = Some((NS, "k1"));

    let add = node.cni("ADD", "k1", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(!add.success, "{}", add.stdout);
    // eth0 is undone; what the killed plugin made is still there, and recorded.
    assert_eq!(sb.links().unwrap(), ["net1"], "{}", add.stderr);
    assert_eq!(node.leases().len(), 1, "{:?}", node.leases());
    assert_eq!(node.cache_records(), ["k1-eth0.json"], "{}", add.stderr);
    let rec: Value = serde_json::from_slice(
        &std::fs::read(node.cache_dir.join("vfgenie/k1-eth0.json")).unwrap(),
    )
    .unwrap();
    let recorded: Vec<&str> = rec["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["network"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, ["team/green"], "{rec}");

    // The runtime's DEL while the plugin still fails: an error, the record stays.
    let del = node.cni("DEL", "k1", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(!del.success);
    assert_eq!(del.json().unwrap()["code"], 11, "{}", del.stdout);
    assert_eq!(node.cache_records().len(), 1);
    // Its retry once the plugin works: nothing left.
    std::fs::remove_file(&broken).unwrap();
    let del = node.cni("DEL", "k1", &sb.path, "eth0", pod, &conf).unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    node.assert_nothing_left(&sb);
}
