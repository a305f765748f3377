//! vfgenie-controller's LogicalNetwork status loop ([`vfcontroller::status_loop::StatusLoop`])
//! against the watch-capable API-server stand-in: `Ready` follows the admission rules as the
//! cluster changes, `attachedPods` follows the pods' network-status, and a quiet cluster sees no
//! status writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vfcontroller::caches::Caches;
use vfcontroller::metrics::Metrics;
use vfcontroller::status_loop::StatusLoop;
use vfgenie_tests::apiserver::ApiServer;

const WAIT: Duration = Duration::from_secs(30);
/// Shorter than the watch takes to bring a write back at times: a write is not repeated.
const INTERVAL: Duration = Duration::from_millis(20);
const LNS: &str = "logicalnetworks";

fn client(server: &ApiServer) -> kube::Client {
    server.kube_client().unwrap()
}

async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    vfgenie_tests::poll::wait_until(what, WAIT, cond).await
}

/// The stored LogicalNetwork's `Ready` condition, when it has one.
fn ready(server: &ApiServer, ns: &str, name: &str) -> Option<Value> {
    let ln = server.get(LNS, ns, name)?;
    ln["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

fn ready_is(server: &ApiServer, ns: &str, name: &str, status: &str) -> bool {
    ready(server, ns, name).is_some_and(|c| c["status"] == status)
}

fn attached(server: &ApiServer, ns: &str, name: &str) -> Option<i64> {
    server.get(LNS, ns, name)?["status"]["attachedPods"].as_i64()
}

fn status_writes(server: &ApiServer) -> usize {
    server
        .request_uris()
        .iter()
        .filter(|u| {
            (u.starts_with("PATCH ") || u.starts_with("PUT "))
                && u.split('?').next().is_some_and(|p| p.ends_with("/status"))
        })
        .count()
}

fn network_status(names: &[&str]) -> String {
    let list: Vec<Value> = names
        .iter()
        .map(|n| json!({"name": n, "interface": "net1", "ips": ["10.1.0.5"], "default": false, "dns": {}}))
        .collect();
    Value::from(list).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_follows_validity_and_attached_pods_and_is_written_only_on_change() {
    let server = ApiServer::start().unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}))
        .unwrap();
    server.add_logical_network("a", "red", "p1", "bridge", "10.1.0.0/24");
    let client = client(&server);
    let caches = Arc::new(Caches::start(client.clone()));
    let _status = StatusLoop::start(client, Arc::clone(&caches), INTERVAL, Arc::default());

    wait_until("red is Ready", || ready_is(&server, "a", "red", "True")).await;
    let c = ready(&server, "a", "red").unwrap();
    assert_eq!(c["reason"], "Valid");
    assert!(c["lastTransitionTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(attached(&server, "a", "red"), Some(0));

    // An overlapping network on the same physicalNet (admitted while the webhook was down):
    // both are not ready, each naming the other.
    server.add_logical_network("a", "blue", "p1", "bridge", "10.1.0.0/16");
    wait_until("red is not Ready", || {
        ready_is(&server, "a", "red", "False")
    })
    .await;
    let c = ready(&server, "a", "red").unwrap();
    assert_eq!(c["reason"], "Invalid");
    let message = c["message"].as_str().unwrap();
    assert!(message.contains("a/blue"), "{message}");
    wait_until("blue is not Ready", || {
        ready_is(&server, "a", "blue", "False")
    })
    .await;
    // The same range on another physicalNet does not overlap.
    server.add_logical_network("a", "green", "p2", "bridge", "10.1.0.0/24");
    wait_until("green is Ready", || ready_is(&server, "a", "green", "True")).await;

    server.delete(LNS, "a", "blue").unwrap();
    wait_until("red is Ready again", || {
        ready_is(&server, "a", "red", "True")
    })
    .await;

    // Pods whose network-status lists a/red; one of another namespace naming a/red does not
    // count (genie names a LogicalNetwork attachment by the pod's namespace), nor one without.
    let annotation = network_status(&["cbr0", "a/red"]);
    let ns_key = "k8s.v1.cni.cncf.io/network-status";
    server.add_pod("a", "web-0", &[(ns_key, &annotation)]);
    server.add_pod("a", "web-1", &[(ns_key, &annotation)]);
    server.add_pod("b", "other", &[(ns_key, &annotation)]);
    server.add_pod("a", "plain", &[]);
    wait_until("red has 2 pods", || {
        attached(&server, "a", "red") == Some(2)
    })
    .await;
    server.delete_pod("a", "web-1");
    wait_until("red has 1 pod", || attached(&server, "a", "red") == Some(1)).await;
    assert_eq!(attached(&server, "a", "green"), Some(0));

    // Settled: over a quiet period nothing is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = status_writes(&server);
    // One write per change (7 here; a change seen over two rounds may take one more), no storm.
    assert!((7..=10).contains(&before), "{:?}", server.request_uris());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = status_writes(&server);
    assert_eq!(
        after,
        before,
        "status writes in a quiet period: {:?}",
        &server.request_uris()
    );
    // Still as it was.
    assert!(ready_is(&server, "a", "red", "True"));
    assert_eq!(attached(&server, "a", "red"), Some(1));
}

fn status_writes_of(server: &ApiServer, ns: &str, name: &str) -> usize {
    let path = format!("/apis/alpha.network.k8s.io/v1/namespaces/{ns}/{LNS}/{name}/status");
    server
        .request_uris()
        .iter()
        .filter(|u| {
            u.starts_with("PATCH ") && u.split('?').next().is_some_and(|p| p.ends_with(&path))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_retried_and_a_restarted_api_server_is_followed() {
    let server = ApiServer::start().unwrap();
    server.add_logical_network("a", "red", "p1", "bridge", "10.1.0.0/24");
    let client = client(&server);
    let caches = Arc::new(Caches::start(client.clone()));
    let metrics = Arc::new(Metrics::default());
    let _status = StatusLoop::start(client, Arc::clone(&caches), INTERVAL, Arc::clone(&metrics));
    wait_until("red is Ready", || ready_is(&server, "a", "red", "True")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The next write answers 500: the round after writes again.
    let before = status_writes_of(&server, "a", "red");
    server.inject_failures(&[500]);
    server.add_pod(
        "a",
        "web-0",
        &[(
            "k8s.v1.cni.cncf.io/network-status",
            &network_status(&["a/red"]),
        )],
    );
    wait_until("red has 1 pod", || attached(&server, "a", "red") == Some(1)).await;
    assert!(
        status_writes_of(&server, "a", "red") >= before + 2,
        "{:?}",
        server.request_uris()
    );
    let text = metrics.render();
    assert!(
        text.contains("vfgenie_logicalnetwork_status_writes_total{result=\"error\"} 1"),
        "{text}"
    );

    // The API server restarts (watches break); what changes while it is back is still followed.
    server.restart().unwrap();
    server.add_logical_network("a", "blue", "p1", "bridge", "10.1.0.0/25");
    wait_until("red is not Ready after the restart", || {
        ready_is(&server, "a", "red", "False")
    })
    .await;
    server.delete_pod("a", "web-0");
    wait_until("red has no pods", || {
        attached(&server, "a", "red") == Some(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_outside_its_plugins_range_is_invalid_until_the_spec_is_fixed() {
    let server = ApiServer::start().unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}))
        .unwrap();
    server.add_nad(
        "a",
        "bridge",
        r#"{"cniVersion":"1.0.0","type":"bridge","bridge":"br-a","ipam":{"type":"host-local","subnet":"10.10.0.0/16"}}"#,
        None,
    );
    let mut ln = json!({
        "apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
        "metadata": {"name": "red", "namespace": "a", "uid": "uid-red", "generation": 1},
        "spec": {"physicalNet": "p1", "plugin": "bridge", "subnet": "10.99.0.0/24"}
    });
    server.create(ln.clone()).unwrap();
    let client = client(&server);
    let caches = Arc::new(Caches::start(client.clone()));
    let _status = StatusLoop::start(client, Arc::clone(&caches), INTERVAL, Arc::default());

    wait_until("red is not Ready", || {
        ready_is(&server, "a", "red", "False")
    })
    .await;
    let invalid = ready(&server, "a", "red").unwrap();
    assert_eq!(invalid["reason"], "Invalid");
    let message = invalid["message"].as_str().unwrap();
    assert!(
        message.contains("10.99.0.0/24") && message.contains("10.10.0.0/16"),
        "the message names the subnet and the plugin's range: {message}"
    );
    assert_eq!(invalid["observedGeneration"], 1);
    let stored = server.get(LNS, "a", "red").unwrap();
    assert_eq!(stored["status"]["observedGeneration"], 1);

    // lastTransitionTime has a resolution of one second: the fix comes in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The owner fixes the spec (a spec change bumps the generation; the status stays).
    ln = stored;
    ln["spec"]["subnet"] = json!("10.10.7.0/24");
    ln["metadata"]["generation"] = json!(2);
    server.update(ln).unwrap();
    wait_until("red is Ready", || ready_is(&server, "a", "red", "True")).await;
    let valid = ready(&server, "a", "red").unwrap();
    assert_eq!(valid["reason"], "Valid");
    assert_eq!(valid["message"], "");
    assert_eq!(valid["observedGeneration"], 2);
    let (before, after) = (
        invalid["lastTransitionTime"].as_str().unwrap(),
        valid["lastTransitionTime"].as_str().unwrap(),
    );
    // RFC 3339 in UTC to the second: the text orders as the time does.
    assert!(after > before, "{before} -> {after}");
    assert_eq!(
        server.get(LNS, "a", "red").unwrap()["status"]["observedGeneration"],
        2
    );
}
