//! The agent under a flood of idle TCP connections to its HTTP port: with 5,000 of them open (the
//! process limited to 6,000 descriptors, as a node's agent container might be), `/healthz` still
//! answers within a probe's timeout, a device-plugin Allocate over the real gRPC unix socket still
//! succeeds, and the server keeps no more connections than its cap.
//!
//! This file holds one test so that the descriptor limit it sets stays within its own process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use vfagent::http::{self, Limits, DEFAULT_MAX_CONNECTIONS};
use vfagent::run::{run, RunOptions};
use vfagent::state::Snapshot;
use vfcore::SysRoot;
use vfdp::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use vfgenie_tests::fixtures::copy_fixture;
use vfgenie_tests::kubelet::KubeletStandIn;

const T: Duration = Duration::from_secs(10);
/// A kubelet probe's timeout in the agent's DaemonSet.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE: usize = 5000;
const FD_LIMIT: u64 = 6000;
const DPDK: &str = "example.com/dpdk";

/// Sets this process's soft descriptor limit (the hard limit stays).
fn limit_descriptors(n: u64) {
    let ok = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={n}:"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit failed");
}

async fn healthz(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Idle connections the server still keeps open (a closed one reads EOF or an error).
fn still_open(conns: &[TcpStream]) -> usize {
    let mut buf = [0u8; 16];
    conns
        .iter()
        .filter(|c| {
            matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_stop_healthz_or_allocate() {
    limit_descriptors(FD_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("node");
    let plugins = dir.path().join("device-plugins");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::create_dir_all(&plugins).unwrap();
    copy_fixture("ixgbe-82599", &sys).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::json!({"resourceList": [
            {"resourceName": "dpdk", "resourcePrefix": "example.com",
             "selectors": {"drivers": ["vfio-pci"]}}
        ]})
        .to_string(),
    )
    .unwrap();

    let kubelet = KubeletStandIn::start(&plugins).await.unwrap();
    let mut opts = RunOptions::new(config);
    opts.root = SysRoot::new(&sys);
    opts.plugin_dir = plugins.clone();
    opts.devinfo_dir = dir.path().join("devinfo");
    opts.pod_resources_socket = dir.path().join("pod-resources/kubelet.sock");
    opts.kernel_events = false;
    let (state_tx, state_rx) = watch::channel(Snapshot::default());
    let (stop, stop_rx) = watch::channel(false);
    // The HTTP server as `vfgenie-agent run` starts it, on a free loopback port.
    let listeners = http::bind("127.0.0.1:0").await.unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let server = tokio::spawn(http::serve_all(
        listeners,
        Limits::default(),
        state_rx.clone(),
        stop_rx.clone(),
        Vec::new(),
    ));
    let agent = tokio::spawn(async move { run(opts, state_tx, stop_rx).await.unwrap() });
    kubelet
        .wait_for(DPDK, T, |r| r.devices.len() == 1)
        .await
        .unwrap();

    // The flood: connections that never send a byte.
    let mut idle = Vec::with_capacity(IDLE);
    tokio::time::timeout(Duration::from_secs(20), async {
        for _ in 0..IDLE {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} connections opened in 20 s", idle.len()));

    let answer = tokio::time::timeout(PROBE_TIMEOUT, healthz(addr))
        .await
        .expect("/healthz did not answer within a probe's timeout");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");

    let allocated = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut c = kubelet.plugin(DPDK).await.unwrap();
        c.allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["0000:03:10.6".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner()
    })
    .await
    .expect("Allocate did not answer in time");
    let paths: Vec<&str> = allocated.container_responses[0]
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(paths, vec!["/dev/vfio/73", "/dev/vfio/vfio"]);

    // The server keeps at most its cap: it closed the rest.
    tokio::time::timeout(T, async {
        while still_open(&idle) > DEFAULT_MAX_CONNECTIONS {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} idle connections still open, more than the cap {DEFAULT_MAX_CONNECTIONS}",
            still_open(&idle)
        )
    });

    drop(idle);
    stop.send(true).unwrap();
    agent.await.unwrap();
    server.await.unwrap().unwrap();
}
