//! vfgenie-controller's reflector caches ([`vfcontroller::caches::Caches`], kube-runtime watchers)
//! against the watch-capable API-server stand-in: they sync, follow creates and deletes, catch up
//! after the API server restarts mid-watch (and relist after a 410), and admission answers from
//! them as the cluster is now.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vfcontroller::caches::Caches;
use vfcontroller::lookup::{Lookup, Settings};
use vfcontroller::server::Webhook;
use vfgenie_tests::apiserver::ApiServer;

/// kube's watcher backs off up to a few seconds after the server went away.
const WAIT: Duration = Duration::from_secs(30);
const NADS: &str = "network-attachment-definitions";
const BRIDGE: &str = r#"{"cniVersion":"1.0.0","type":"bridge","bridge":"br-a","ipam":{"type":"host-local","subnet":"10.10.0.0/16"}}"#;

fn client(server: &ApiServer) -> kube::Client {
    server.kube_client().unwrap()
}

async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    vfgenie_tests::poll::wait_until(what, WAIT, cond).await
}

fn namespace(server: &ApiServer, name: &str) {
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .unwrap();
}

/// A pod CREATE review, as the API server sends it, asking for `networks` (NPWG style).
fn pod_review(ns: &str, name: &str, networks: &str) -> Vec<u8> {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns,
                     "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{name}"), "kind": gvk, "resource": gvr,
            "requestKind": gvk, "requestResource": gvr,
            "name": name, "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
    .to_string()
    .into_bytes()
}

/// (allowed, message) of the webhook's answer.
fn admit(webhook: &Webhook<Caches>, review: &[u8]) -> (bool, String) {
    let out = webhook.answer(review).unwrap();
    let v: Value = serde_json::to_value(&out).unwrap();
    let message = v["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (out.response.allowed, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_sync_and_follow_creates_and_deletes() {
    let server = ApiServer::start().unwrap();
    namespace(&server, "tenant-a");
    server.add_nad("tenant-a", "net-a", BRIDGE, None);
    server.add_logical_network("tenant-a", "ln-a", "phys-1", "bridge", "10.10.1.0/24");
    let caches = Caches::start(client(&server));
    wait_until("the caches are synced", || caches.synced()).await;
    assert!(caches.nad("tenant-a", "net-a").is_some());
    assert!(caches.namespace_exists("tenant-a"));
    assert!(!caches.namespace_exists("tenant-b"));
    let ln = caches.logical_network("tenant-a", "ln-a").unwrap();
    assert_eq!(ln.spec.subnet, "10.10.1.0/24");
    assert_eq!(caches.logical_networks().len(), 1);
    let found = caches.find_logical_network(&|l| l.spec.physical_net == "phys-1");
    assert_eq!(found.unwrap().metadata.name, "ln-a");
    assert!(caches
        .find_logical_network(&|l| l.spec.physical_net == "phys-2")
        .is_none());

    server.add_nad("tenant-a", "net-b", BRIDGE, None);
    wait_until("net-b is cached", || {
        caches.nad("tenant-a", "net-b").is_some()
    })
    .await;
    server.delete(NADS, "tenant-a", "net-a").unwrap();
    wait_until("net-a is gone", || {
        caches.nad("tenant-a", "net-a").is_none()
    })
    .await;
    // Only the first listing: every change came through the watch.
    assert_eq!(server.list_requests(), 3, "one LIST per cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_catch_up_after_the_api_server_restarts_mid_watch() {
    let server = ApiServer::start().unwrap();
    server.set_bookmark_interval(Duration::from_millis(200));
    namespace(&server, "tenant-a");
    server.add_nad("tenant-a", "net-a", BRIDGE, None);
    let caches = Arc::new(Caches::start(client(&server)));
    wait_until("the caches are synced", || caches.synced()).await;
    let webhook = Webhook::new(Arc::clone(&caches), Settings::default());
    assert!(admit(&webhook, &pod_review("tenant-a", "p1", "net-a")).0);

    // Down: net-a goes, net-b comes; the watches are cut.
    let s = Arc::new(server);
    let s2 = Arc::clone(&s);
    tokio::task::spawn_blocking(move || s2.stop_serving())
        .await
        .unwrap()
        .unwrap();
    s.delete(NADS, "tenant-a", "net-a").unwrap();
    s.add_nad("tenant-a", "net-b", BRIDGE, None);
    let s2 = Arc::clone(&s);
    tokio::task::spawn_blocking(move || s2.resume_serving())
        .await
        .unwrap()
        .unwrap();
    wait_until("the caches caught up", || {
        caches.nad("tenant-a", "net-a").is_none() && caches.nad("tenant-a", "net-b").is_some()
    })
    .await;
    // Admission answers from the cluster as it is now.
    let (allowed, message) = admit(&webhook, &pod_review("tenant-a", "p2", "net-a"));
    assert!(!allowed);
    assert!(message.contains("net-a"), "{message}");
    assert!(admit(&webhook, &pod_review("tenant-a", "p3", "net-b")).0);

    // Down again, and the history the watches would resume from is compacted away: the
    // watchers get 410 Gone and list again.
    let lists = s.list_requests();
    let s2 = Arc::clone(&s);
    tokio::task::spawn_blocking(move || s2.stop_serving())
        .await
        .unwrap()
        .unwrap();
    s.add_nad("tenant-a", "net-c", BRIDGE, None);
    namespace(&s, "tenant-b");
    s.add_nad("tenant-b", "net-x", BRIDGE, None);
    s.compact();
    let s2 = Arc::clone(&s);
    tokio::task::spawn_blocking(move || s2.resume_serving())
        .await
        .unwrap()
        .unwrap();
    wait_until("the caches relisted", || {
        caches.nad("tenant-a", "net-c").is_some()
            && caches.nad("tenant-b", "net-x").is_some()
            && caches.namespace_exists("tenant-b")
    })
    .await;
    assert!(
        s.list_requests() > lists,
        "a 410 makes the watchers list again"
    );
    assert!(caches.synced(), "still ready after the relist");
}
