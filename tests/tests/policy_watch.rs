//! The policy engine's watches ([`vfagent::policy::watch::PolicyWatch`]) against the
//! watch-capable API-server stand-in: they sync; a snapshot holds the networks (subnets, paths),
//! namespaces' and pods' labels, peers' addresses, local pods' netns from genie's records, and
//! the policies; edits fire the change notification; a policy version that does not parse keeps
//! the last good one and is reported (Event, log line, counter); the pod watch of this node
//! really sends its field selector; a restart of the API server mid-watch (and a 410) converges.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vfagent::policy::model::IpCidr;
use vfagent::policy::model::{Inputs, NetworkKey, TrafficPath};
use vfagent::policy::watch::{PolicyWatch, WatchConfig};
use vfgenie_tests::apiserver::ApiServer;
use vfmeta::cache::{CacheDir, PodAttachment, PodKey, PodRecord};

/// kube's watcher backs off up to a few seconds after the server went away.
const WAIT: Duration = Duration::from_secs(30);
const NODE: &str = "node-1";

// --- log capture: one global subscriber per test binary, tests look for their own objects ---

#[derive(Clone)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = Buf(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .try_init();
        buf
    })
}

fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

// --- objects ---

fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// Creates `object`, or replaces the stored one (unconditionally).
fn upsert(server: &ApiServer, object: Value) {
    if server.create(object.clone()).is_err() {
        server.update(object).unwrap();
    }
}

fn namespace(server: &ApiServer, name: &str, labels: Value) {
    upsert(
        server,
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": labels}}),
    );
}

fn nad(server: &ApiServer, ns: &str, name: &str, config: &str) {
    server.add_nad(ns, name, config, None);
}

fn pod(server: &ApiServer, ns: &str, name: &str, node: &str, labels: Value, status: Option<Value>) {
    let mut annotations = serde_json::Map::new();
    if let Some(s) = status {
        annotations.insert(
            "k8s.v1.cni.cncf.io/network-status".into(),
            json!(s.to_string()),
        );
    }
    upsert(
        server,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels,
                            "annotations": annotations},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}),
    );
}

fn network_policy(server: &ApiServer, ns: &str, name: &str, genie: Option<&str>) {
    let annotations = match genie {
        Some(g) => json!({"genieNetworkpolicy": g}),
        None => json!({}),
    };
    upsert(
        server,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": ns, "annotations": annotations},
               "spec": {"podSelector": {}}}),
    );
}

fn multi_policy(
    server: &ApiServer,
    version: &str,
    ns: &str,
    name: &str,
    policy_for: &str,
    spec: Value,
) {
    upsert(
        server,
        json!({"apiVersion": format!("k8s.cni.cncf.io/{version}"), "kind": "MultiNetworkPolicy",
               "metadata": {"name": name, "namespace": ns,
                            "annotations": {"k8s.v1.cni.cncf.io/policy-for": policy_for}},
               "spec": spec}),
    );
}

fn record(
    cache: &Path,
    cid: &str,
    ns: &str,
    name: &str,
    attachments: &[(&str, &str, Option<&str>)],
) {
    let mut r = PodRecord::new(
        &PodKey::new(cid, "eth0").unwrap(),
        format!("/var/run/netns/cni-{cid}"),
    );
    r.pod_namespace = Some(ns.into());
    r.pod_name = Some(name.into());
    r.attachments = attachments
        .iter()
        .map(|(network, ifname, ip)| PodAttachment {
            network: network.to_string(),
            if_name: ifname.to_string(),
            conf: json!({"type": "x"}),
            result: ip.map(|a| json!({"cniVersion": "1.0.0", "ips": [{"address": a}]})),
            extra: Default::default(),
        })
        .collect();
    CacheDir::new(cache).write_pod(&r).unwrap();
}

fn start(server: &ApiServer, cache: &Path) -> PolicyWatch {
    log_buffer();
    let config = WatchConfig::new(NODE, cache);
    PolicyWatch::start(client(server), config).unwrap()
}

async fn synced(w: &PolicyWatch) {
    tokio::time::timeout(WAIT, w.synced())
        .await
        .expect("the watches did not sync");
}

/// Polls the snapshot until `cond` holds.
async fn until(w: &PolicyWatch, what: &str, cond: impl Fn(&Inputs) -> bool) -> Inputs {
    let t0 = Instant::now();
    loop {
        let s = w.snapshot();
        if cond(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < WAIT,
            "timed out waiting until {what}: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_server(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < WAIT, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Events on `name` in `ns`.
fn events_on(server: &ApiServer, ns: &str, name: &str) -> Vec<Value> {
    server
        .list("events", Some(ns))
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name)
        .collect()
}

fn cidr(s: &str) -> IpCidr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key(ns: &str, name: &str) -> NetworkKey {
    NetworkKey::new(ns, name)
}

fn genie_peers(s: &Inputs, ns: &str, name: &str) -> Option<Vec<String>> {
    s.genie
        .iter()
        .find(|p| p.namespace == ns && p.name == name)
        .map(|p| {
            p.rules
                .iter()
                .flat_map(|r| r.peer_networks.clone())
                .collect()
        })
}

const SRIOV: &str =
    r#"{"cniVersion":"1.0.0","type":"sriov","ipam":{"type":"host-local","subnet":"10.50.0.0/24"}}"#;
const BRIDGE_LIST: &str = r#"{"cniVersion":"1.0.0","name":"br","plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.60.0.0/16"}]]}},{"type":"portmap"}]}"#;
const MACVLAN: &str = r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth1","ipam":{"type":"whereabouts","range":"10.70.0.0/24"}}"#;

/// The cluster of the first test: two namespaces, NADs of every path, LogicalNetworks, pods on
/// this node and another, genie records, and policies of both kinds.
fn cluster(server: &ApiServer, cache: &Path) {
    namespace(server, "pw-a", json!({"team": "red"}));
    namespace(server, "pw-b", json!({"team": "blue"}));
    nad(server, "pw-a", "sriov-a", SRIOV);
    nad(server, "pw-a", "br", BRIDGE_LIST);
    nad(server, "pw-a", "mv", MACVLAN);
    nad(server, "pw-a", "broken", "not json");
    server.add_logical_network("pw-a", "ln1", "p1", "sriov", "10.80.0.0/24");
    server.add_logical_network("pw-a", "ln2", "p1", "br", "");
    pod(
        server,
        "pw-a",
        "web",
        NODE,
        json!({"app": "web"}),
        Some(json!([
            {"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.5"], "default": true},
            {"name": "pw-a/sriov-a", "interface": "net1", "ips": ["10.50.0.5"]}
        ])),
    );
    pod(
        server,
        "pw-a",
        "db",
        "node-2",
        json!({"app": "db"}),
        Some(json!([{"name": "pw-a/sriov-a", "interface": "net1", "ips": ["10.50.0.6"]}])),
    );
    pod(server, "pw-b", "pending", NODE, json!({"app": "new"}), None);
    record(
        cache,
        "cweb",
        "pw-a",
        "web",
        &[
            ("cbr0", "eth0", Some("10.244.0.5/24")),
            ("pw-a/sriov-a", "net1", Some("10.50.0.5/24")),
        ],
    );
    record(
        cache,
        "cpending",
        "pw-b",
        "pending",
        &[("pw-a/mv", "net1", None)],
    );
    record(cache, "cgone", "pw-a", "gone", &[("pw-a/mv", "net1", None)]);
    network_policy(
        server,
        "pw-a",
        "allow-ln",
        Some("[{networkSelector: ln1, peerNetworks: ln2,sriov-a}]"),
    );
    network_policy(server, "pw-a", "plain", None);
    multi_policy(
        server,
        "v1beta1",
        "pw-a",
        "m1",
        "sriov-a",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                            "ports": [{"protocol": "TCP", "port": 5432}]}]}),
    );
    multi_policy(
        server,
        "v1beta2",
        "pw-b",
        "m2",
        "pw-a/mv",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.70.0.0/24"}}]}]}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_holds_networks_pods_and_policies() {
    let server = ApiServer::start().unwrap();
    let cache = tempfile::tempdir().unwrap();
    cluster(&server, cache.path());
    let w = start(&server, cache.path());
    synced(&w).await;
    assert!(w.is_synced());
    let s = w.snapshot();

    assert_eq!(s.namespaces["pw-a"]["team"], "red");
    assert_eq!(s.namespaces["pw-b"]["team"], "blue");

    let net = |ns: &str, n: &str| s.networks.get(&key(ns, n)).cloned();
    let sriov = net("pw-a", "sriov-a").unwrap();
    assert_eq!(
        (sriov.path, sriov.subnets),
        (TrafficPath::InPod, vec![cidr("10.50.0.0/24")])
    );
    let br = net("pw-a", "br").unwrap();
    assert_eq!(
        (br.path, br.subnets),
        (TrafficPath::Host, vec![cidr("10.60.0.0/16")])
    );
    let mv = net("pw-a", "mv").unwrap();
    assert_eq!(
        (mv.path, mv.subnets),
        (TrafficPath::InPod, vec![cidr("10.70.0.0/24")])
    );
    assert!(
        net("pw-a", "broken").is_none(),
        "an unparsable NAD is skipped"
    );
    let ln1 = net("pw-a", "ln1").unwrap();
    assert_eq!(
        (ln1.path, ln1.subnets),
        (TrafficPath::InPod, vec![cidr("10.80.0.0/24")])
    );
    let ln2 = net("pw-a", "ln2").unwrap();
    assert_eq!(
        (ln2.path, ln2.subnets),
        (TrafficPath::Host, vec![cidr("10.60.0.0/16")])
    );
    assert!(logs().contains("NetworkAttachmentDefinition pw-a/broken: spec.config is not JSON"));

    let pod = |ns: &str, n: &str| {
        s.pods
            .iter()
            .find(|p| p.namespace == ns && p.name == n)
            .cloned()
            .unwrap_or_else(|| panic!("no pod {ns}/{n} in {:#?}", s.pods))
    };
    let web = pod("pw-a", "web");
    assert_eq!(web.labels["app"], "web");
    assert_eq!(web.netns, Some(PathBuf::from("/var/run/netns/cni-cweb")));
    assert_eq!(web.interfaces.len(), 1, "{:?}", web.interfaces);
    assert_eq!(
        (
            &web.interfaces[0].network,
            web.interfaces[0].ifname.as_str(),
            &web.interfaces[0].ips
        ),
        (&key("pw-a", "sriov-a"), "net1", &vec![ip("10.50.0.5")])
    );
    let db = pod("pw-a", "db");
    assert_eq!(db.netns, None, "a pod on another node is only a peer");
    assert_eq!(db.interfaces[0].ips, vec![ip("10.50.0.6")]);
    let pending = pod("pw-b", "pending");
    assert_eq!(
        pending.netns,
        Some(PathBuf::from("/var/run/netns/cni-cpending"))
    );
    assert_eq!(pending.interfaces[0].network, key("pw-a", "mv"));
    assert!(pending.interfaces[0].ips.is_empty());
    assert!(
        !s.pods.iter().any(|p| p.name == "gone"),
        "a record without a pod is not a pod"
    );
    assert_eq!(s.pods.len(), 3);

    assert_eq!(s.genie.len(), 1, "{:?}", s.genie);
    assert_eq!(
        genie_peers(&s, "pw-a", "allow-ln").unwrap(),
        vec!["ln2", "sriov-a"]
    );
    assert_eq!(s.genie[0].rules[0].network_selector, "ln1");
    assert_eq!(s.multi.len(), 2);
    let m1 = s.multi.iter().find(|m| m.name == "m1").unwrap();
    assert_eq!(m1.policy_for, vec![key("pw-a", "sriov-a")]);
    assert_eq!(
        m1.spec.ingress.as_ref().unwrap()[0]
            .ports
            .as_ref()
            .unwrap()
            .len(),
        1
    );
    let m2 = s.multi.iter().find(|m| m.name == "m2").unwrap();
    assert_eq!(m2.policy_for, vec![key("pw-a", "mv")]);
    assert_eq!(
        m2.spec.policy_types.as_deref(),
        Some(&["Egress".to_string()][..])
    );
    assert_eq!(w.counters().policy_problems, 0);

    // The pod watch of this node asks the API server for this node's pods only. Synced means
    // listed; the WATCH follows the LIST, so it is waited for.
    let list_and_watch = |uris: &[String]| {
        let selected: Vec<&String> = uris
            .iter()
            .filter(|u| {
                u.contains("/api/v1/pods?") && u.contains("fieldSelector=spec.nodeName%3Dnode-1")
            })
            .collect();
        selected.iter().any(|u| u.contains("watch=true"))
            && selected.iter().any(|u| !u.contains("watch=true"))
    };
    let t0 = Instant::now();
    while !list_and_watch(&server.request_uris()) && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let uris = server.request_uris();
    assert!(
        list_and_watch(&uris),
        "no LIST and WATCH with the field selector in {uris:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_fire_the_change_notification() {
    let server = ApiServer::start().unwrap();
    let cache = tempfile::tempdir().unwrap();
    namespace(&server, "pw-e", json!({}));
    network_policy(
        &server,
        "pw-e",
        "p",
        Some("[{networkSelector: a, peerNetworks: b}]"),
    );
    let w = start(&server, cache.path());
    synced(&w).await;
    let mut changes = w.changes();
    assert_eq!(genie_peers(&w.snapshot(), "pw-e", "p").unwrap(), vec!["b"]);

    network_policy(
        &server,
        "pw-e",
        "p",
        Some("[{networkSelector: a, peerNetworks: c}]"),
    );
    tokio::time::timeout(WAIT, changes.changed()).await.unwrap();
    until(&w, "the edit shows", |s| {
        genie_peers(s, "pw-e", "p") == Some(vec!["c".into()])
    })
    .await;

    server.delete("networkpolicies", "pw-e", "p").unwrap();
    tokio::time::timeout(WAIT, changes.changed()).await.unwrap();
    until(&w, "the delete shows", |s| s.genie.is_empty()).await;

    // Other stores fire it too: a new NAD, then a namespace's labels.
    let mut changes = w.changes();
    nad(&server, "pw-e", "n1", SRIOV);
    while !w.snapshot().networks.contains_key(&key("pw-e", "n1")) {
        tokio::time::timeout(WAIT, changes.changed()).await.unwrap();
    }
    let mut changes = w.changes();
    namespace(&server, "pw-e", json!({"x": "y"}));
    while !w.snapshot().namespaces["pw-e"].contains_key("x") {
        tokio::time::timeout(WAIT, changes.changed()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_keeps_the_last_good_one_and_is_reported() {
    let server = ApiServer::start().unwrap();
    let cache = tempfile::tempdir().unwrap();
    namespace(&server, "pw-c", json!({}));
    network_policy(
        &server,
        "pw-c",
        "flappy",
        Some("[{networkSelector: a, peerNetworks: b}]"),
    );
    let spec = json!({"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]});
    multi_policy(&server, "v1beta1", "pw-c", "mbad", "n1", spec);
    network_policy(&server, "pw-c", "never-good", Some("not a list"));
    let w = start(&server, cache.path());
    synced(&w).await;
    let s = w.snapshot();
    assert_eq!(genie_peers(&s, "pw-c", "flappy").unwrap(), vec!["b"]);
    assert!(
        genie_peers(&s, "pw-c", "never-good").is_none(),
        "never good: ignored"
    );
    assert_eq!(s.multi.len(), 1);

    // Bad from the start: an Event on it and a log line.
    wait_server("an Event on never-good", || {
        !events_on(&server, "pw-c", "never-good").is_empty()
    })
    .await;
    let e = &events_on(&server, "pw-c", "never-good")[0];
    assert_eq!(e["reason"], "PolicyInvalid");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["involvedObject"]["kind"], "NetworkPolicy");
    assert_eq!(e["involvedObject"]["apiVersion"], "networking.k8s.io/v1");
    assert!(!e["involvedObject"]["uid"].as_str().unwrap_or("").is_empty());
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("NetworkPolicy pw-c/never-good: genieNetworkpolicy: "));
    assert!(logs().contains("NetworkPolicy pw-c/never-good: genieNetworkpolicy: "));

    // A good policy edited into a bad one: the last good version stays enforced.
    let mut changes = w.changes();
    network_policy(
        &server,
        "pw-c",
        "flappy",
        Some("[{networkSelector: Bad_Name}]"),
    );
    tokio::time::timeout(WAIT, changes.changed()).await.unwrap();
    wait_server("an Event on flappy", || {
        !events_on(&server, "pw-c", "flappy").is_empty()
    })
    .await;
    assert_eq!(
        genie_peers(&w.snapshot(), "pw-c", "flappy").unwrap(),
        vec!["b"]
    );
    assert!(logs()
        .contains("NetworkPolicy pw-c/flappy: genieNetworkpolicy: networkSelector \"Bad_Name\""));

    // The broken spec of a MultiNetworkPolicy: the same.
    multi_policy(
        &server,
        "v1beta2",
        "pw-c",
        "mbad",
        "n1",
        json!({"podSelector": 5}),
    );
    wait_server("an Event on mbad", || {
        !events_on(&server, "pw-c", "mbad").is_empty()
    })
    .await;
    let e = &events_on(&server, "pw-c", "mbad")[0];
    assert_eq!(e["involvedObject"]["kind"], "MultiNetworkPolicy");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("MultiNetworkPolicy pw-c/mbad: spec: "));
    let s = w.snapshot();
    assert_eq!(s.multi.len(), 1, "the last good version of mbad stays");
    assert_eq!(
        s.multi[0]
            .spec
            .pod_selector
            .as_ref()
            .and_then(|p| p.match_labels.as_ref())
            .unwrap()["app"],
        "x"
    );
    assert!(logs().contains("MultiNetworkPolicy pw-c/mbad: spec: "));

    // Flapping: more bad versions are counted and logged, but make no more Events for a while.
    let before = w.counters().policy_problems;
    for n in 0..3 {
        network_policy(
            &server,
            "pw-c",
            "flappy",
            Some(&format!("[{{networkSelector: X{n}}}]")),
        );
        until(&w, "the bad version is counted", |_| {
            w.counters().policy_problems > before + n
        })
        .await;
    }
    assert_eq!(events_on(&server, "pw-c", "flappy").len(), 1);
    assert_eq!(
        genie_peers(&w.snapshot(), "pw-c", "flappy").unwrap(),
        vec!["b"]
    );

    // A good version again replaces it.
    network_policy(
        &server,
        "pw-c",
        "flappy",
        Some("[{networkSelector: a, peerNetworks: d}]"),
    );
    until(&w, "the good edit shows", |s| {
        genie_peers(s, "pw-c", "flappy") == Some(vec!["d".into()])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_watch_and_a_410_converge() {
    let server = ApiServer::start().unwrap();
    let cache = tempfile::tempdir().unwrap();
    namespace(&server, "pw-r", json!({}));
    nad(&server, "pw-r", "old", SRIOV);
    network_policy(
        &server,
        "pw-r",
        "p",
        Some("[{networkSelector: a, peerNetworks: b}]"),
    );
    let w = start(&server, cache.path());
    synced(&w).await;
    let lists = server.list_requests();

    server.stop_serving().unwrap();
    // While the API server is away: changes the watches have not seen, and a compaction, so a
    // watch resuming from its last resourceVersion is told 410 Gone and relists.
    server
        .delete("network-attachment-definitions", "pw-r", "old")
        .unwrap();
    nad(&server, "pw-r", "new", MACVLAN);
    network_policy(
        &server,
        "pw-r",
        "p",
        Some("[{networkSelector: a, peerNetworks: z}]"),
    );
    pod(
        &server,
        "pw-r",
        "late",
        NODE,
        json!({"app": "late"}),
        Some(json!([{"name": "pw-r/new", "interface": "net1", "ips": ["10.70.0.9"]}])),
    );
    server.compact();
    server.resume_serving().unwrap();

    let s = until(&w, "the watches caught up", |s| {
        !s.networks.contains_key(&key("pw-r", "old"))
            && s.networks.contains_key(&key("pw-r", "new"))
            && genie_peers(s, "pw-r", "p") == Some(vec!["z".into()])
            && s.pods.iter().any(|p| p.name == "late")
    })
    .await;
    let late = s.pods.iter().find(|p| p.name == "late").unwrap();
    assert_eq!(late.interfaces[0].ips, vec![ip("10.70.0.9")]);
    assert!(
        server.list_requests() > lists,
        "the 410 made the watches relist"
    );
    assert!(w.is_synced());
}

/// MultiNetworkPolicy is the NPWG project's CRD, often not installed: the watches sync without
/// it, and its policies show up once it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_multi_network_policies_syncs_and_picks_them_up_later() {
    let server = ApiServer::start().unwrap();
    let cache = tempfile::tempdir().unwrap();
    namespace(&server, "pw-m", json!({}));
    multi_policy(
        &server,
        "v1beta1",
        "pw-m",
        "later",
        "n1",
        json!({"podSelector": {}}),
    );
    server.set_served("multi-networkpolicies", false);
    let w = start(&server, cache.path());
    synced(&w).await;
    assert!(w.snapshot().multi.is_empty());
    server.set_served("multi-networkpolicies", true);
    until(&w, "the MultiNetworkPolicy shows", |s| {
        s.multi.iter().any(|m| m.name == "later")
    })
    .await;
}
