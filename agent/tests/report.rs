//! `vfgenie-agent report` and `GET /report` over the same logs give the same figures; bad
//! queries get 400.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vfagent::state::Snapshot;
use vfaudit::{AuditConfig, ErrorInfo, Event, Kind, PodRef, Record, ResultInfo, Source, Writer};

fn write_logs(dir: &Path) -> Vec<PathBuf> {
    let cni = dir.join("cni-audit.log");
    let agent = dir.join("agent-audit.log");
    let w = Writer::new(AuditConfig::with_defaults(&cni));
    for i in 0..200u64 {
        let mut r = Record {
            verb: Some(if i % 2 == 0 { "ADD" } else { "DEL" }.into()),
            pod: Some(PodRef {
                namespace: "ns".into(),
                name: format!("p{}", i % 5),
                uid: None,
            }),
            network: Some(format!("net-{}", i % 3)),
            plugin: Some("macvlan".into()),
            duration_us: Some(100 + i * 7),
            ..Record::new(
                Source::Cni,
                if i % 4 == 0 {
                    Kind::Call
                } else {
                    Kind::Delegate
                },
            )
        };
        if i % 9 == 0 {
            r.error = Some(ErrorInfo {
                code: 11,
                msg: "busy".into(),
            });
        } else {
            r.result = Some(ResultInfo {
                addresses: vec![format!("10.0.0.{i}/24")],
            });
        }
        w.try_write(&r).unwrap();
    }
    let aw = Writer::new(AuditConfig::with_defaults(&agent));
    aw.try_write(&Record {
        pool: Some("intel.com/vf".into()),
        devices: vec!["0000:01:10.1".into(), "0000:01:10.2".into()],
        ..Record::event(Event::Allocate)
    })
    .unwrap();
    vec![cni, agent]
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    })
    .await
    .unwrap()
}

fn cli(logs: &[PathBuf], args: &[&str]) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vfgenie-agent"));
    c.arg("report");
    for l in logs {
        c.arg("--log").arg(l);
    }
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_cli_and_the_endpoint_give_the_same_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = write_logs(tmp.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_state_tx, state_rx) = watch::channel(Snapshot::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(vfagent::http::serve_all(
        vec![listener],
        vfagent::http::Limits::default(),
        state_rx,
        stop_rx,
        logs.clone(),
    ));

    for (query, args) in [
        ("format=json", vec!["--format", "json"]),
        (
            "format=json&network=net-1&pod=ns%2Fp2",
            vec!["--format", "json", "--network", "net-1", "--pod", "ns/p2"],
        ),
        (
            "format=csv&since=1h",
            vec!["--format", "csv", "--since", "1h"],
        ),
    ] {
        let (status, body) = get(addr, &format!("/report?{query}")).await;
        assert_eq!(status, 200, "{body}");
        let printed = cli(&logs, &args);
        if query.contains("json") {
            let a: serde_json::Value = serde_json::from_str(&body).unwrap();
            let b: serde_json::Value = serde_json::from_str(&printed).unwrap();
            assert_eq!(a, b, "{query}");
            assert!(a["groups"].as_array().is_some_and(|g| !g.is_empty()), "{a}");
        } else {
            assert_eq!(body, printed, "{query}");
            assert_eq!(body.lines().count(), 1 + 3 + 1, "{body}");
        }
    }
    let (_, body) = get(addr, "/report?format=json").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["linesRead"], 201);
    assert_eq!(v["pools"][0]["vfsAllocated"], 2);
    let calls: u64 = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(calls, 200);

    for bad in [
        "/report?since=forever",
        "/report?pod=nope",
        "/report?format=xml",
        "/report?logs=/etc/shadow",
        "/report?network=a&network=b",
    ] {
        let (status, body) = get(addr, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let _ = stop_tx.send(true);
    server.await.unwrap().unwrap();
}
