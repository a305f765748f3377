//! Host tier: what genie reads is bounded. A file path in its conf that names a device, a FIFO or
//! a huge file fails the call at once with an error naming the path and why; an API answer over
//! the limit is refused naming the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;
use vfcni::k8s::{Client, ClientOptions, ClusterConfig, Error};
use vfgenie_tests::apiserver::{ApiServer, KubeAuth};
use vfgenie_tests::runtime::{require_root, Node, Sandbox};

#[test]
fn a_cluster_network_path_naming_dev_zero_or_a_fifo_fails_fast() {
    require_root();
    let node = Node::new().unwrap();
    node.api.add_pod("team", "z1", &[]);
    let sb = Sandbox::new().unwrap();
    let fifo = node.dir.path().join("cluster.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (path, why) in [
        ("/dev/zero".to_string(), "character device"),
        (fifo.display().to_string(), "FIFO"),
    ] {
        let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": path}));
        let t0 = Instant::now();
        let out = node
            .cni("ADD", "z1", &sb.path, "eth0", Some(("team", "z1")), &conf)
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        assert!(!out.success, "{}", out.stdout);
        let err = out.json().unwrap();
        assert_eq!(err["code"], 7, "{err}");
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.contains(&path) && msg.contains(why), "{msg}");
        assert!(node.cache_records().is_empty());
    }
}

#[test]
fn an_api_answer_over_the_limit_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start().unwrap();
    server.set_token(Some("t0ken"));
    let kc = server
        .write_kubeconfig(&dir.path().join("kubeconfig"), KubeAuth::Token("t0ken"))
        .unwrap();
    let huge = "x".repeat(vfcni::k8s::MAX_BODY + 1);
    server.add_pod("default", "huge", &[("big", huge.as_str())]);
    server.add_pod("default", "small", &[("big", "x")]);
    let c = Client::new(
        ClusterConfig::from_kubeconfig(&kc).unwrap(),
        ClientOptions::default(),
    )
    .unwrap();
    c.get_pod("default", "small").unwrap();
    let e = c.get_pod("default", "huge").unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("default/huge") && msg.contains(&vfcni::k8s::MAX_BODY.to_string()),
        "{msg}"
    );
    // Not retried: one request for it.
    let asked = server
        .requests()
        .iter()
        .filter(|r| r.contains("/pods/huge"))
        .count();
    assert_eq!(asked, 1, "{:?}", server.requests());
}
