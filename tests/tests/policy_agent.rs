//! Host tier, end to end: the agent's policy service (`vfagent::policy::service::run`) against
//! the API-server stand-in (list and watch), with genie's records on disk naming real pod
//! namespaces. Policies created and deleted through the API are enforced by nftables in those
//! namespaces (and in the node's), judged by real traffic: a MultiNetworkPolicy and a
//! genieNetworkpolicy each block what they should and nothing else, their deletion lets traffic
//! flow again, and a deleted pod's table goes with it.
//! Privileged: every test asserts it runs as root and fails otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vfagent::policy::nft::{Family, Nft};
use vfagent::policy::ruleset::TABLE_NAME;
use vfagent::policy::service::{run, PolicyOptions};
use vfgenie_tests::apiserver::ApiServer;
use vfgenie_tests::policynet::{PodId, Topology};
use vfgenie_tests::runtime::require_root;
use vfmeta::cache::{CacheDir, PodAttachment, PodKey, PodRecord};

const NODE: &str = "node-1";
const NS: &str = "pa";
/// kube's watcher and the service's debounce; generous where it costs nothing on success.
const WAIT: Duration = Duration::from_secs(30);
const PROBE: Duration = Duration::from_millis(300);

fn upsert(server: &ApiServer, object: Value) {
    if server.create(object.clone()).is_err() {
        server.update(object).unwrap();
    }
}

fn bridge_nad(server: &ApiServer, name: &str, subnet: &str) {
    let config = json!({"cniVersion": "1.0.0", "type": "bridge",
                        "ipam": {"type": "host-local", "subnet": subnet}});
    server.add_nad(NS, name, &config.to_string(), None);
}

/// The pod in the API (on this node, with its app label) and genie's record of it on disk (its
/// namespace and its interface with its address).
fn add_pod(server: &ApiServer, cache: &Path, t: &Topology, id: PodId, name: &str) {
    upsert(
        server,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
               "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]}}),
    );
    let p = t.pod(id);
    let iface = &p.ifaces[0];
    let mut r = PodRecord::new(
        &PodKey::new(format!("c{name}"), "eth9").unwrap(),
        p.netns_path().display().to_string(),
    );
    r.pod_namespace = Some(NS.into());
    r.pod_name = Some(name.into());
    r.attachments = vec![PodAttachment {
        network: format!("{NS}/{}", iface.network),
        if_name: iface.ifname.clone(),
        conf: json!({"type": "bridge"}),
        result: Some(
            json!({"cniVersion": "1.0.0", "ips": [{"address": format!("{}/24", iface.v4)}]}),
        ),
        extra: Default::default(),
    }];
    CacheDir::new(cache).write_pod(&r).unwrap();
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < WAIT, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Our table in `netns`, as nft lists it.
fn our_table(netns: &Path) -> Option<Value> {
    Nft::new(None)
        .unwrap()
        .list(Some(netns), Family::Inet, TABLE_NAME)
        .unwrap()
}

#[test]
fn policies_through_the_api_are_enforced_and_lifted_in_real_namespaces() {
    require_root();
    let mut t = Topology::new().unwrap();
    let (net1, net2) = (t.add_network().unwrap(), t.add_network().unwrap());
    let db = t.add_pod("db", net1).unwrap();
    let web = t.add_pod("web", net1).unwrap();
    let other = t.add_pod("other", net2).unwrap();
    let db_ip = t.pod(db).v4();
    assert!(t.ping_within(web, db_ip, Duration::from_secs(3)));
    assert!(t.ping_within(other, db_ip, Duration::from_secs(3)));

    let server = ApiServer::start().unwrap();
    let cache = tempfile::tempdir().unwrap();
    upsert(
        &server,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    );
    bridge_nad(&server, "net1", "10.91.1.0/24");
    bridge_nad(&server, "net2", "10.91.2.0/24");
    for (id, name) in [(db, "db"), (web, "web"), (other, "other")] {
        add_pod(&server, cache.path(), &t, id, name);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let options = PolicyOptions {
        node_name: NODE.into(),
        genie_cni_dir: cache.path().to_path_buf(),
        socket: None,
        nft: None,
        resync: Duration::from_secs(2),
        host_netns: Some(t.node_netns().path().to_path_buf()),
    };
    let client = {
        let _in_runtime = rt.enter();
        server.kube_client().unwrap()
    };
    let service = rt.spawn(run(client, options, stop_rx));

    // The service is up: every local pod has its (empty) table, nothing is blocked.
    let db_ns = t.pod(db).netns_path().to_path_buf();
    wait_for("db's table is installed", || our_table(&db_ns).is_some());
    assert!(our_table(t.pod(web).netns_path()).is_some());
    assert!(t.ping_within(other, db_ip, Duration::from_secs(2)));

    // A MultiNetworkPolicy on net1: db admits web only.
    upsert(
        &server,
        json!({"apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
               "metadata": {"name": "protect-db", "namespace": NS,
                            "annotations": {"k8s.v1.cni.cncf.io/policy-for": "net1"}},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "policyTypes": ["Ingress"],
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}}),
    );
    wait_for("the MultiNetworkPolicy keeps other out of db", || {
        !t.ping_within(other, db_ip, PROBE)
    });
    assert!(
        t.ping_within(web, db_ip, Duration::from_secs(2)),
        "web -> db blocked"
    );
    assert!(
        !t.tcp_connect(other, db_ip, 8080, PROBE),
        "other -> db tcp passed"
    );
    server
        .delete("multi-networkpolicies", NS, "protect-db")
        .unwrap();
    wait_for("other reaches db again", || {
        t.ping_within(other, db_ip, PROBE)
    });

    // A genieNetworkpolicy: net2 talks only within itself, so other (net2) and db (net1) are
    // apart on the node's forward path; web and db (both net1) are not.
    upsert(
        &server,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": "isolate-net2", "namespace": NS,
                            "annotations": {"genieNetworkpolicy": "[{networkSelector: net2, peerNetworks: net2}]"}},
               "spec": {"podSelector": {}}}),
    );
    wait_for("the genie policy keeps net2 from net1", || {
        !t.ping_within(other, db_ip, PROBE)
    });
    assert!(
        !t.ping_within(db, t.pod(other).v4(), PROBE),
        "db -> other passed"
    );
    assert!(
        t.ping_within(web, db_ip, Duration::from_secs(2)),
        "web -> db blocked"
    );
    server
        .delete("networkpolicies", NS, "isolate-net2")
        .unwrap();
    wait_for("net2 reaches net1 again", || {
        t.ping_within(other, db_ip, PROBE)
    });

    // The pod goes (API and genie's record): its table goes with it, the others stay.
    server.delete_pod(NS, "db");
    CacheDir::new(cache.path())
        .remove_pod(&PodKey::new("cdb", "eth9").unwrap())
        .unwrap();
    wait_for("db's table is removed", || our_table(&db_ns).is_none());
    assert!(our_table(t.pod(web).netns_path()).is_some());

    stop_tx.send(true).unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), service)
            .await
            .expect("the service did not stop")
            .unwrap()
            .unwrap();
    });
}
