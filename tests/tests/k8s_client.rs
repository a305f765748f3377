//! The Kubernetes API client against the API-server stand-in, reached through a kubeconfig as the
//! CNI binary reaches it: reads, errors, token rotation, retries and their bounds, status writes
//! with conflicts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use vfcni::k8s::{Auth, Client, ClientOptions, ClusterConfig, Error, Kind};
use vfgenie_tests::apiserver::{unused_addr, write_kubeconfig, ApiServer, KubeAuth, KubeTls};

fn fast() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(500),
        retries: 2,
        backoff: Duration::from_millis(20),
        conflict_retries: 3,
    }
}

fn client(kubeconfig: &Path, options: ClientOptions) -> Client {
    Client::new(ClusterConfig::from_kubeconfig(kubeconfig).unwrap(), options).unwrap()
}

fn server_with_token(dir: &Path, token: &str) -> (ApiServer, std::path::PathBuf) {
    let server = ApiServer::start().unwrap();
    server.set_token(Some(token));
    let kc = server
        .write_kubeconfig(&dir.join("kubeconfig"), KubeAuth::Token(token))
        .unwrap();
    (server, kc)
}

#[test]
fn the_requests_of_a_client_share_a_connection_until_the_server_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t0ken");
    server.add_pod("default", "web", &[]);
    let c = client(&kc, fast());
    for _ in 0..3 {
        c.get_pod("default", "web").unwrap();
    }
    let mut changes = BTreeMap::new();
    changes.insert(
        "k8s.v1.cni.cncf.io/network-status".to_string(),
        Some("[]".to_string()),
    );
    c.set_pod_annotations("default", "web", &changes).unwrap();
    assert_eq!(server.connections(), 1, "{:?}", server.requests());
    // A server that closes every connection after its answer: each request finds the kept
    // connection closed and makes a new one, without failing.
    server.set_keep_alive(false);
    for _ in 0..3 {
        c.get_pod("default", "web").unwrap();
    }
    assert_eq!(server.connections(), 3);
    assert_eq!(server.requests().len(), 8);
}

#[test]
fn reads_pods_nads_and_logical_networks() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t0ken");
    let uid = server.add_pod("default", "web", &[("cni", "weave,canal")]);
    server.add_nad(
        "infra",
        "sriov-a",
        r#"{"cniVersion":"1.0.0","type":"sriov"}"#,
        Some("intel.com/sriov_a"),
    );
    server.add_logical_network("default", "net1", "phys1", "flannel", "10.10.0.0/16");
    let c = client(&kc, fast());

    let pod = c.get_pod("default", "web").unwrap();
    assert_eq!(pod.metadata.uid, uid);
    assert_eq!(pod.metadata.annotations["cni"], "weave,canal");
    assert!(!pod.metadata.resource_version.is_empty());
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));

    let nad = c
        .get_network_attachment_definition("infra", "sriov-a")
        .unwrap();
    assert_eq!(nad.metadata.namespace, "infra");
    assert_eq!(nad.resource_name(), Some("intel.com/sriov_a"));
    assert_eq!(nad.spec.config, r#"{"cniVersion":"1.0.0","type":"sriov"}"#);

    let ln = c.get_logical_network("default", "net1").unwrap();
    assert_eq!(ln.spec.physical_net, "phys1");
    assert_eq!(ln.spec.plugin, "flannel");
    assert_eq!(ln.spec.subnet, "10.10.0.0/16");

    assert_eq!(
        server.requests(),
        [
            "GET /api/v1/namespaces/default/pods/web",
            "GET /apis/k8s.cni.cncf.io/v1/namespaces/infra/network-attachment-definitions/sriov-a",
            "GET /apis/alpha.network.k8s.io/v1/namespaces/default/logicalnetworks/net1",
        ]
    );
}

#[test]
fn missing_objects_are_not_found_and_name_the_object() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("default", "gone", &[]);
    server.delete_pod("default", "gone");
    let c = client(&kc, fast());
    let e = c.get_pod("default", "gone").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.to_string(), "pod default/gone was not found");
    let e = c
        .get_network_attachment_definition("default", "nope")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "NetworkAttachmentDefinition default/nope was not found"
    );
    let e = c.get_logical_network("default", "nope").unwrap_err();
    assert!(matches!(e, Error::NotFound { ref object } if object.kind == Kind::LogicalNetwork));
    // A 404 is an answer, not a failure: one request each, no retries.
    assert_eq!(server.requests().len(), 3);
    // Names that would change the path never reach the server.
    let e = c.get_pod("default", "../../secrets").unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e}");
    assert_eq!(server.requests().len(), 3);
}

#[test]
fn a_wrong_token_is_unauthorized_without_retries_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start().unwrap();
    server.set_token(Some("right"));
    server.add_pod("default", "web", &[]);
    let kc = server
        .write_kubeconfig(&dir.path().join("kc"), KubeAuth::Token("wrong-secret"))
        .unwrap();
    let c = client(&kc, fast());
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("pod default/web"), "{e}");
    assert!(!format!("{e} {e:?} {c:?}").contains("wrong-secret"));
    assert_eq!(server.requests().len(), 1);

    // No token at all is refused the same way.
    let kc = server
        .write_kubeconfig(&dir.path().join("kc2"), KubeAuth::None)
        .unwrap();
    let e = client(&kc, fast()).get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
}

#[test]
fn a_rotated_token_file_is_read_again_on_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start().unwrap();
    server.add_pod("default", "web", &[]);
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let kc = server
        .write_kubeconfig(&dir.path().join("kc"), KubeAuth::TokenFile(&token))
        .unwrap();
    let cluster = ClusterConfig::from_kubeconfig(&kc).unwrap();
    assert_eq!(cluster.auth, Auth::TokenFile(token.clone()));
    let c = Client::new(cluster, fast()).unwrap();

    server.set_token(Some("first"));
    c.get_pod("default", "web").unwrap();

    // The server moves to a new token, the file follows; the same client picks it up.
    server.set_token(Some("second"));
    assert!(matches!(
        c.get_pod("default", "web"),
        Err(Error::Unauthorized { .. })
    ));
    std::fs::write(&token, "second").unwrap();
    c.get_pod("default", "web").unwrap();

    std::fs::remove_file(&token).unwrap();
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Token { .. }), "{e}");
}

#[test]
fn a_server_that_is_down_gives_unreachable_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let addr = unused_addr().unwrap();
    let kc = dir.path().join("kc");
    write_kubeconfig(&kc, &format!("http://{addr}"), KubeAuth::Token("t")).unwrap();
    let options = fast();
    let bound = options.worst_case();
    let c = client(&kc, options);
    let start = Instant::now();
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(
        start.elapsed() <= bound,
        "{:?} > {bound:?}",
        start.elapsed()
    );
    match &e {
        Error::Unreachable {
            attempts, reason, ..
        } => {
            assert_eq!(*attempts, 3);
            assert!(reason.contains("connect"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(e.is_unavailable());
    assert!(e.to_string().contains("pod default/web"), "{e}");
}

#[test]
fn a_server_that_closes_connections_is_retried_then_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("default", "web", &[]);
    server.set_available(false);
    let options = fast();
    let bound = options.worst_case();
    let c = client(&kc, options);
    let start = Instant::now();
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(start.elapsed() <= bound);
    assert!(matches!(e, Error::Unreachable { attempts: 3, .. }), "{e}");
    assert_eq!(server.connections(), 3);
    // Back up: the same client works again.
    server.set_available(true);
    c.get_pod("default", "web").unwrap();
}

#[test]
fn a_slow_server_times_out_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("default", "web", &[]);
    let delay = Duration::from_secs(5);
    server.set_delay(delay);
    let options = ClientOptions {
        timeout: Duration::from_millis(200),
        retries: 1,
        backoff: Duration::from_millis(10),
        conflict_retries: 0,
    };
    // Room for a busy machine's late timers (a 10 ms sleep can take hundreds on a loaded VM),
    // while a client without a timeout, waiting for the answer, would still blow it.
    let bound = options.worst_case() + Duration::from_millis(1500);
    assert!(bound < delay);
    let c = client(&kc, options);
    let start = Instant::now();
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(start.elapsed() <= bound, "{:?}", start.elapsed());
    match e {
        Error::Unreachable {
            attempts, reason, ..
        } => {
            assert_eq!(attempts, 2);
            assert!(reason.contains("no answer within"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("default", "web", &[]);
    let c = client(&kc, fast());

    server.inject_failures(&[500, 429]);
    c.get_pod("default", "web").unwrap();
    assert_eq!(server.requests().len(), 3);

    server.inject_failures(&[503, 503, 503, 503]);
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Status { status: 503, .. }), "{e}");
    assert!(e.is_unavailable());
    assert_eq!(server.requests().len(), 6);

    server.inject_failures(&[403]);
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    assert_eq!(server.requests().len(), 7);

    server.inject_failures(&[400]);
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Status { status: 400, .. }), "{e}");
    assert!(e.to_string().contains("injected 400"), "{e}");
    assert_eq!(server.requests().len(), 8);
}

#[test]
fn status_writes_retry_conflicts_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("default", "web", &[("cni", "weave"), ("stale", "x")]);
    let c = client(&kc, fast());
    let status =
        r#"[{"name":"weave","interface":"eth0","ips":["10.0.0.5"],"default":true,"dns":{}}]"#;
    let changes = BTreeMap::from([
        (
            "k8s.v1.cni.cncf.io/network-status".to_string(),
            Some(status.to_string()),
        ),
        ("stale".to_string(), None),
    ]);

    server.inject_conflicts(2);
    let pod = c.set_pod_annotations("default", "web", &changes).unwrap();
    assert_eq!(
        pod.metadata.annotations["k8s.v1.cni.cncf.io/network-status"],
        status
    );
    assert!(!pod.metadata.annotations.contains_key("stale"));
    assert_eq!(pod.metadata.annotations["cni"], "weave");

    let writes = server.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        (writes[0].namespace.as_str(), writes[0].name.as_str()),
        ("default", "web")
    );
    assert_eq!(
        writes[0].annotation("k8s.v1.cni.cncf.io/network-status"),
        Some(status)
    );
    let puts = server
        .requests()
        .iter()
        .filter(|r| *r == "PUT /api/v1/namespaces/default/pods/web/status")
        .count();
    assert_eq!(puts, 3, "two conflicts, then the write");
    // The stored pod kept its spec.
    let stored = server.pod("default", "web").unwrap();
    assert_eq!(stored["spec"]["nodeName"], "node-1");

    // More conflicts than the bound: a Conflict error naming the pod, nothing written.
    server.inject_conflicts(10);
    let e = c
        .set_pod_annotations("default", "web", &changes)
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { attempts: 4, .. }), "{e}");
    assert!(e.to_string().contains("pod default/web"), "{e}");
    assert_eq!(server.writes().len(), 1);

    // A deleted pod is NotFound.
    server.inject_conflicts(0);
    server.delete_pod("default", "web");
    let e = c
        .set_pod_annotations("default", "web", &changes)
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

/// A connection dropped after the server applied the write and before it answered: the client
/// retries, and the pod ends with the annotations asked for, once.
#[test]
fn a_status_write_whose_answer_is_lost_is_retried_and_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("default", "web", &[("cni", "weave")]);
    let c = client(&kc, fast());
    let changes = BTreeMap::from([(
        "k8s.v1.cni.cncf.io/network-status".to_string(),
        Some("[]".to_string()),
    )]);
    // The GET's answer is lost, then the PUT's.
    server.inject_resets(2);
    let pod = c.set_pod_annotations("default", "web", &changes).unwrap();
    assert_eq!(
        pod.metadata.annotations["k8s.v1.cni.cncf.io/network-status"],
        "[]"
    );
    assert_eq!(pod.metadata.annotations["cni"], "weave");
    let stored = server.pod("default", "web").unwrap();
    assert_eq!(
        stored["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"],
        "[]"
    );
    assert!(server.requests().len() >= 4, "{:?}", server.requests());
    // More dropped answers than the retries: an error that says the server did not answer.
    server.inject_resets(100);
    let e = c.get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    server.inject_resets(0);
}

#[test]
fn a_status_write_from_a_pod_read_earlier_loses_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("default", "web", &[("cni", "weave")]);
    let c = client(&kc, fast());
    let count = |req: &str| server.requests().iter().filter(|r| *r == req).count();
    const GET: &str = "GET /api/v1/namespaces/default/pods/web";
    const PUT: &str = "PUT /api/v1/namespaces/default/pods/web/status";
    let set = |k: &str, v: &str| BTreeMap::from([(k.to_string(), Some(v.to_string()))]);

    // Fresh: written from the object as read, without reading it again.
    let (pod, whole) = c.get_pod_object("default", "web").unwrap();
    assert_eq!(pod.metadata.annotations["cni"], "weave");
    assert_eq!(whole["spec"]["nodeName"], "node-1");
    let (gets, puts) = (count(GET), count(PUT));
    c.set_pod_annotations_from("default", "web", Some(whole), &set("a", "1"))
        .unwrap();
    assert_eq!((count(GET) - gets, count(PUT) - puts), (0, 1));

    // Stale: someone wrote in between; the write meets a conflict, reads again and keeps theirs.
    let (_, stale) = c.get_pod_object("default", "web").unwrap();
    c.set_pod_annotations("default", "web", &set("theirs", "x"))
        .unwrap();
    let (gets, puts) = (count(GET), count(PUT));
    let pod = c
        .set_pod_annotations_from("default", "web", Some(stale), &set("b", "2"))
        .unwrap();
    assert_eq!((count(GET) - gets, count(PUT) - puts), (1, 2));
    for (k, v) in [("a", "1"), ("theirs", "x"), ("b", "2"), ("cni", "weave")] {
        assert_eq!(pod.metadata.annotations[k], v, "{k}");
    }
    let stored = server.pod("default", "web").unwrap();
    assert_eq!(stored["metadata"]["annotations"]["theirs"], "x");
    assert_eq!(stored["metadata"]["annotations"]["b"], "2");
}

#[tokio::test]
async fn the_async_client_works_inside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kc) = server_with_token(dir.path(), "t");
    server.add_pod("ns1", "p", &[]);
    let c =
        vfcni::k8s::AsyncClient::new(ClusterConfig::from_kubeconfig(&kc).unwrap(), fast()).unwrap();
    let pod = c.get_pod("ns1", "p").await.unwrap();
    assert_eq!(pod.metadata.namespace, "ns1");
    // The blocking client refuses to run here rather than panicking.
    let blocking = client(&kc, fast());
    assert!(matches!(
        blocking.get_pod("ns1", "p"),
        Err(Error::InsideRuntime)
    ));
}

#[test]
fn https_with_the_kubeconfig_ca_and_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, tls) = ApiServer::start_tls(false).unwrap();
    server.set_token(Some("t"));
    server.add_pod("default", "web", &[]);
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let kc = server
        .write_kubeconfig_tls(
            &dir.path().join("kc"),
            KubeAuth::Token("t"),
            KubeTls {
                ca_pem: Some(&tls.ca_pem),
                ..KubeTls::default()
            },
        )
        .unwrap();
    let cluster = ClusterConfig::from_kubeconfig(&kc).unwrap();
    assert!(
        cluster.tls.ca_pem.is_some(),
        "the relative CA file is found"
    );
    let c = Client::new(cluster, fast()).unwrap();
    assert_eq!(c.get_pod("default", "web").unwrap().metadata.name, "web");

    // Without the CA the server is not trusted: no request gets through, and no retry either.
    let kc = server
        .write_kubeconfig(&dir.path().join("kc-noca"), KubeAuth::Token("t"))
        .unwrap();
    let before = server.connections();
    let e = client(&kc, fast()).get_pod("default", "web").unwrap_err();
    assert_eq!(server.connections(), before + 1, "not retried");
    match &e {
        Error::Untrusted { reason, .. } => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("pod default/web"), "{e}");
    assert_eq!(server.requests().len(), 1);

    // insecure-skip-tls-verify accepts it.
    let kc = server
        .write_kubeconfig_tls(
            &dir.path().join("kc-insecure"),
            KubeAuth::Token("t"),
            KubeTls {
                insecure_skip_tls_verify: true,
                ..KubeTls::default()
            },
        )
        .unwrap();
    client(&kc, fast()).get_pod("default", "web").unwrap();
}

#[test]
fn https_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, tls) = ApiServer::start_tls(true).unwrap();
    server.add_pod("default", "web", &[]);
    let kc = server
        .write_kubeconfig_tls(
            &dir.path().join("kc"),
            KubeAuth::None,
            KubeTls {
                ca_pem: Some(&tls.ca_pem),
                client_cert_pem: Some(&tls.client_cert_pem),
                client_key_pem: Some(&tls.client_key_pem),
                ..KubeTls::default()
            },
        )
        .unwrap();
    client(&kc, fast()).get_pod("default", "web").unwrap();

    let kc = server
        .write_kubeconfig_tls(
            &dir.path().join("kc-nocert"),
            KubeAuth::None,
            KubeTls {
                ca_pem: Some(&tls.ca_pem),
                ..KubeTls::default()
            },
        )
        .unwrap();
    let e = client(&kc, fast()).get_pod("default", "web").unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert_eq!(server.requests().len(), 1);
}
