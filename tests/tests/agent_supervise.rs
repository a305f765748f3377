//! The agent's supervision of its pools' device-plugin servers, on a private copy of a fixture sysfs
//! tree with the kubelet stand-in: when one pool's server fails (its socket path is taken by a
//! directory, so it can no longer bind), `/healthz` names the pool, the server is restarted with
//! backoff (counted in `/metrics`) until it serves and registers again, and the other pool keeps
//! serving Allocate throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vfagent::run::{run, RunOptions};
use vfagent::state::Snapshot;
use vfcore::SysRoot;
use vfdp::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use vfgenie_tests::kubelet::KubeletStandIn;

const T: Duration = Duration::from_secs(10);
const NET: &str = "example.com/net";
const DPDK: &str = "example.com/dpdk";

fn copy_fixture(name: &str, dst: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/fixtures")
        .join(name);
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn config() -> String {
    serde_json::json!({
        "resourceList": [
            {"resourceName": "net", "resourcePrefix": "example.com", "selectors": {"drivers": ["ixgbevf"]}},
            {"resourceName": "dpdk", "resourcePrefix": "example.com", "selectors": {"drivers": ["vfio-pci"]}}
        ],
        "provisioning": [
            {"pfName": "enp3s0f0", "numVfs": 4, "vfs": [{"range": "0-2", "driver": "netdevice"}, {"range": "3", "driver": "vfio-pci"}]}
        ]
    })
    .to_string()
}

/// `GET path` on its own connection: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    })
    .await
    .expect("the HTTP server did not answer in time")
}

/// Waits until the published snapshot satisfies `pred`.
async fn wait_state(
    state: &watch::Receiver<Snapshot>,
    what: &str,
    pred: impl Fn(&Snapshot) -> bool,
) {
    let mut st = state.clone();
    let r = tokio::time::timeout(T, st.wait_for(|s| pred(s))).await;
    assert!(
        matches!(r, Ok(Ok(_))),
        "{what} did not happen within {T:?}; the agent publishes {:#?}",
        *state.borrow()
    );
}

fn restarts(s: &Snapshot, name: &str) -> u64 {
    s.pool_server_restarts
        .iter()
        .find(|(r, _)| r == name)
        .map_or(0, |(_, n)| *n)
}

async fn allocate(kubelet: &KubeletStandIn, name: &str, id: &str) -> String {
    let mut c = kubelet.plugin(name).await.unwrap();
    let r = c
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![id.into()],
            }],
        })
        .await
        .unwrap_or_else(|e| panic!("Allocate on {name} failed: {e}"))
        .into_inner();
    let env = format!(
        "PCIDEVICE_{}",
        name.replace(['.', '/'], "_").to_ascii_uppercase()
    );
    r.container_responses[0].envs[&env].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pool_server_is_reported_restarted_and_registers_again() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("node");
    let plugins: PathBuf = dir.path().join("device-plugins");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::create_dir_all(&plugins).unwrap();
    copy_fixture("ixgbe-82599", &sys);
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config()).unwrap();

    let kubelet = KubeletStandIn::start(&plugins).await.unwrap();
    let mut opts = RunOptions::new(config_path);
    opts.root = SysRoot::new(&sys);
    opts.plugin_dir = plugins.clone();
    opts.devinfo_dir = dir.path().join("devinfo");
    opts.pod_resources_socket = plugins.join("no-pod-resources.sock");
    opts.health_interval = Duration::from_millis(100);
    // No resync in the test's time: what restarts the server is the supervisor, not a reconcile.
    opts.resync_interval = Duration::from_secs(3600);
    opts.config_poll = Duration::from_millis(100);
    opts.kernel_events = false;
    let (state_tx, state) = watch::channel(Snapshot::default());
    let (stop, stop_rx) = watch::channel(false);
    let agent_stop = stop_rx.clone();
    let agent = tokio::spawn(async move { run(opts, state_tx, agent_stop).await.unwrap() });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = tokio::spawn(vfagent::http::serve(listener, state.clone(), stop_rx));

    kubelet
        .wait_for(NET, T, |r| r.devices.len() == 3)
        .await
        .unwrap();
    kubelet
        .wait_for(DPDK, T, |r| r.devices.len() == 1)
        .await
        .unwrap();
    wait_state(&state, "the first reconcile", |s| s.ready).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));

    // The dpdk pool's socket path is taken by a directory: its server notices its socket is gone,
    // cannot bind again, and fails.
    let sock = plugins.join("example.com_dpdk.sock");
    std::fs::remove_file(&sock).unwrap();
    std::fs::create_dir(&sock).unwrap();
    std::fs::write(sock.join("in-the-way"), "x").unwrap();

    wait_state(&state, "the dpdk pool reported down", |s| {
        s.conditions
            .iter()
            .any(|c| c.object == DPDK && c.reason == "PoolServerDown")
    })
    .await;
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: example.com/dpdk: PoolServerDown: "),
        "{body}"
    );
    assert!(body.contains("example.com_dpdk.sock"), "{body}");

    // It is retried, with backoff, while the fault lasts; the net pool serves meanwhile.
    wait_state(&state, "two restarts of the dpdk pool's server", |s| {
        restarts(s, DPDK) >= 2
    })
    .await;
    assert_eq!(
        allocate(&kubelet, NET, "0000:03:10.2").await,
        "0000:03:10.2"
    );
    let metrics = get(addr, "/metrics").await.1;
    assert!(
        metrics.contains("vfgenie_pool_server_restarts_total{resource=\"example.com/net\"} 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vfgenie_pool_server_restarts_total{resource=\"example.com/dpdk\"} 0\n"),
        "{metrics}"
    );

    // The fault clears: the server comes back, registers again and serves Allocate.
    std::fs::remove_dir_all(&sock).unwrap();
    kubelet
        .wait_for(DPDK, T, |r| r.registrations == 2 && r.devices.len() == 1)
        .await
        .unwrap();
    wait_state(&state, "the dpdk pool serving again", |s| {
        s.conditions.iter().all(|c| c.reason != "PoolServerDown")
    })
    .await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        allocate(&kubelet, DPDK, "0000:03:10.6").await,
        "0000:03:10.6"
    );

    // The net pool was never restarted: it registered once and still serves.
    let net = kubelet.resource(NET).await.unwrap();
    assert_eq!(net.registrations, 1);
    assert_eq!(restarts(&state.borrow(), NET), 0);
    assert_eq!(
        allocate(&kubelet, NET, "0000:03:10.4").await,
        "0000:03:10.4"
    );

    stop.send(true).unwrap();
    agent.await.unwrap();
    http.await.unwrap().unwrap();
    assert!(!sock.exists(), "the dpdk socket was left behind");
}
