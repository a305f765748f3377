//! The agent's HTTP server on a real TCP socket: `/healthz` follows the published snapshot,
//! `/metrics` serves the Prometheus text, other paths and methods are refused, and the server stops
//! when asked to. Requests are plain HTTP/1.1 written on a `TcpStream`, as a probe or a scraper
//! sends them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vfagent::config::ResourceConfig;
use vfagent::http::{self, HEALTHZ_PATH, METRICS_PATH};
use vfagent::pool::{Pool, PoolDevice};
use vfagent::state::{Condition, Snapshot};

const T: Duration = Duration::from_secs(10);

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on its own connection (`Connection: close`), read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Response {
            status,
            headers,
            body: body.to_string(),
        }
    })
    .await
    .expect("the server did not answer in time")
}

fn pool(full_name: &str, healthy: &[bool]) -> Pool {
    let (prefix, name) = full_name.split_once('/').unwrap();
    let devices = healthy
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let address = format!("0000:01:10.{i}").parse().unwrap();
            let d = PoolDevice {
                address,
                pf: Some("0000:01:00.0".parse().unwrap()),
                vf_index: None,
                numa_node: None,
                driver: Some("igbvf".into()),
                iommu_group: None,
                netdev: None,
                need_vhost_net: false,
                healthy: *h,
            };
            (address, d)
        })
        .collect();
    Pool {
        config: ResourceConfig {
            resource_name: name.into(),
            resource_prefix: prefix.into(),
            exclude_topology: false,
            selectors: Vec::new(),
            additional_info: BTreeMap::new(),
        },
        devices,
    }
}

struct Server {
    addr: SocketAddr,
    state: watch::Sender<Snapshot>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), http::Error>>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (state, state_rx) = watch::channel(Snapshot::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(http::serve(listener, state_rx, shutdown_rx));
    Server {
        addr,
        state,
        shutdown,
        task,
    }
}

#[tokio::test]
async fn healthz_follows_the_published_snapshot() {
    let srv = start().await;
    srv.state.send_modify(|s| {
        s.conditions.push(Condition {
            object: "config".into(),
            reason: "ConfigInvalid".into(),
            message: "numVfs: must be a number".into(),
        })
    });
    let r = request(srv.addr, "GET", HEALTHZ_PATH).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body.lines().count(), 1, "{:?}", r.body);
    assert!(r.body.starts_with("not ready:"), "{:?}", r.body);
    assert!(r.body.contains("ConfigInvalid"), "{:?}", r.body);

    srv.state.send_modify(|s| {
        s.ready = true;
        s.conditions.clear();
    });
    let r = request(srv.addr, "GET", HEALTHZ_PATH).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "ok\n");

    // A query string does not change the route.
    let r = request(srv.addr, "GET", &format!("{HEALTHZ_PATH}?verbose=1")).await;
    assert_eq!(r.status, 200);

    srv.shutdown.send(true).unwrap();
    srv.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_serves_the_latest_snapshot() {
    let srv = start().await;
    let r = request(srv.addr, "GET", METRICS_PATH).await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(r.body.contains("vfgenie_ready 0\n"), "{}", r.body);
    assert!(!r.body.contains("vfgenie_pool_capacity{"), "{}", r.body);

    srv.state.send_replace(Snapshot {
        pools: vec![
            pool("intel.com/netdev", &[true, true, false]),
            pool("example.org/dpdk", &[true]),
        ],
        reconciles: 3,
        provisioning_errors: 1,
        ready: true,
        ..Snapshot::default()
    });
    let r = request(srv.addr, "GET", METRICS_PATH).await;
    assert_eq!(r.status, 200);
    for line in [
        "vfgenie_pool_capacity{resource=\"intel.com/netdev\"} 3",
        "vfgenie_pool_allocatable{resource=\"intel.com/netdev\"} 2",
        "vfgenie_pool_healthy{resource=\"intel.com/netdev\"} 2",
        "vfgenie_pool_capacity{resource=\"example.org/dpdk\"} 1",
        "vfgenie_reconciles_total 3",
        "vfgenie_provisioning_errors_total 1",
        "vfgenie_config_errors_total 0",
        "vfgenie_ready 1",
        "# TYPE vfgenie_reconciles_total counter",
    ] {
        assert!(
            r.body.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            r.body
        );
    }

    srv.shutdown.send(true).unwrap();
    srv.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn other_paths_and_methods_are_refused() {
    let srv = start().await;
    assert_eq!(request(srv.addr, "GET", "/").await.status, 404);
    assert_eq!(request(srv.addr, "GET", "/metricsx").await.status, 404);
    let r = request(srv.addr, "POST", METRICS_PATH).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(request(srv.addr, "DELETE", HEALTHZ_PATH).await.status, 405);
    let r = request(srv.addr, "HEAD", METRICS_PATH).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");

    srv.shutdown.send(true).unwrap();
    srv.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_server_stops_on_shutdown_even_with_an_idle_connection_open() {
    let srv = start().await;
    // A keep-alive connection that has been served once and then sits idle.
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    idle.write_all(format!("GET {HEALTHZ_PATH} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(T, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 503"));

    srv.shutdown.send(true).unwrap();
    tokio::time::timeout(T, srv.task)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
    // The listener is closed: new connections are refused.
    assert!(TcpStream::connect(srv.addr).await.is_err());
    // And the idle connection was closed by the server.
    let mut rest = Vec::new();
    tokio::time::timeout(T, idle.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn dropping_the_shutdown_sender_stops_the_server() {
    let srv = start().await;
    drop(srv.shutdown);
    tokio::time::timeout(T, srv.task)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
}
