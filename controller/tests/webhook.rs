//! The webhook over real HTTPS: AdmissionReviews as the API server posts them, hostile bodies,
//! the health and metrics endpoints, and the serving certificate's reload.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "webhook_cases/mod.rs"]
mod cases;
#[path = "webhook_support/mod.rs"]
mod support;

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;
use support::{start, Client};

#[tokio::test]
async fn the_table_over_one_keep_alive_connection() {
    let server = start(support::cluster()).await;
    let mut client = Client::connect(server.addr, &server.ca).await.unwrap();
    let cases = cases::cases();
    assert!(cases.len() >= 40, "{}", cases.len());
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let uid = format!("7f3c1a2b-0000-4000-8000-{i:012}");
        let (_, answer) = client.post(&case.review.body(&uid)).await;
        let r = &answer["response"];
        let message = r["status"]["message"].as_str().unwrap_or("").to_string();
        let warnings = r["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let mut problems = Vec::new();
        if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
            problems.push(format!("not an AdmissionReview v1: {answer}"));
        }
        if r["uid"] != uid.as_str() {
            problems.push(format!("uid {} not echoed", r["uid"]));
        }
        if r["allowed"] != case.allowed {
            problems.push(format!("allowed is {}, message {message:?}", r["allowed"]));
        }
        if !case.allowed && r["status"]["code"] != 403 {
            problems.push(format!("status {}", r["status"]));
        }
        let text = if case.allowed { &warnings } else { &message };
        for s in case.says {
            if !text.contains(s) {
                problems.push(format!("does not say {s:?}: {text}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The metrics counted them, with labels from the fixed sets.
    let (status, body) = client.send(Method::GET, "/metrics", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("vfgenie_admission_reviews_total{kind=\"Pod\",operation=\"CREATE\"}"),
        "{text}"
    );
    assert!(
        text.contains(
            "vfgenie_admission_denials_total{kind=\"other\",reason=\"unhandled_kind\"} 2"
        ),
        "{text}"
    );
    assert!(text.contains("vfgenie_admission_denials_total{kind=\"NetworkAttachmentDefinition\",reason=\"refused\"}"), "{text}");
    assert!(
        text.contains(&format!(
            "vfgenie_admission_review_seconds_count {}",
            cases.len()
        )),
        "{text}"
    );
    assert!(!text.contains("ConfigMap"), "{text}");
}

#[tokio::test]
async fn hostile_bodies_get_http_errors_not_a_crash() {
    let server = start(support::cluster()).await;
    let mut c = Client::connect(server.addr, &server.ca).await.unwrap();

    let (status, body) = c
        .send(Method::POST, "/validate", b"{not json".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("not a JSON AdmissionReview"),
        "{body:?}"
    );

    let deep = "[".repeat(100_000).into_bytes();
    let (status, body) = c.send(Method::POST, "/validate", deep).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");

    let mut deep_object = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"labels":"#.to_vec();
    for _ in 0..100_000 {
        deep_object.extend_from_slice(br#"{"a":"#);
    }
    let (status, body) = c.send(Method::POST, "/validate", deep_object).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("recursion limit"),
        "{body:?}"
    );

    let v1beta1 = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE"}});
    let (status, body) = c
        .send(
            Method::POST,
            "/validate",
            serde_json::to_vec(&v1beta1).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("admission.k8s.io/v1beta1"),
        "{body:?}"
    );

    let (status, body) = c
        .send(
            Method::POST,
            "/validate",
            serde_json::to_vec(
                &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("no request"),
        "{body:?}"
    );

    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let (status, _) = c.send(method.clone(), "/validate", Vec::new()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    let (status, _) = c.send(Method::POST, "/healthz", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = c.send(Method::GET, "/../etc/passwd", Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The connection still serves after all that.
    let (status, _) = c.send(Method::GET, "/healthz", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);

    // 4 MiB: refused by its length, on a connection of its own (the server closes it).
    let mut big = Client::connect(server.addr, &server.ca).await.unwrap();
    let (status, _) = big
        .send(Method::POST, "/validate", vec![b' '; 4 << 20])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The server still answers reviews.
    let mut after = Client::connect(server.addr, &server.ca).await.unwrap();
    let review = cases::cases().remove(0).review.body("after");
    let (_, answer) = after.post(&review).await;
    assert_eq!(answer["response"]["uid"], "after");
}

#[tokio::test]
async fn a_body_without_a_length_is_cut_at_the_limit() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let server = start(support::cluster()).await;
    // A chunked body (no content-length) of 4 MiB.
    let chunks = (0..64)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b' '; 64 << 10]))));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let (mut sender, conn) = support::raw_connect(server.addr, &server.ca).await;
    tokio::spawn(conn);
    let req = hyper::Request::post("/validate")
        .header("host", "webhook.vfgenie.svc")
        .body(body)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let _ = resp.into_body().collect().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let lookup = support::cluster();
    lookup.set_synced(false);
    let server = start(lookup).await;
    let mut c = Client::connect(server.addr, &server.ca).await.unwrap();
    assert_eq!(
        c.send(Method::GET, "/healthz", Vec::new()).await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.send(Method::GET, "/readyz", Vec::new()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    server.lookup.set_synced(true);
    assert_eq!(
        c.send(Method::GET, "/readyz", Vec::new()).await.0,
        StatusCode::OK
    );
    let (status, body) = c.send(Method::GET, "/metrics", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("# TYPE vfgenie_admission_review_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("vfgenie_admission_review_seconds_bucket{le=\"+Inf\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_new_pair_from_another_ca_is_served_after_the_reload() {
    let server = start(support::cluster()).await;
    let old_ca = server.ca.clone();
    Client::connect(server.addr, &old_ca).await.unwrap();

    let new_ca = support::make_certs(server.dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect(server.addr, &new_ca).await {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the new pair was not served: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The old CA is no longer trusted by what is served.
    assert!(Client::connect(server.addr, &old_ca).await.is_err());
}

#[tokio::test]
async fn the_certs_command_writes_a_pair_the_server_serves_and_prints_the_ca_bundle() {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tls");
    let run = |ns: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vfgenie-controller"))
            .args([
                "certs",
                "--namespace",
                ns,
                "--service",
                support::SERVICE,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap()
    };
    let o = run(support::NAMESPACE);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = String::from_utf8(o.stdout).unwrap();
    let ca = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .unwrap();
    assert_eq!(ca, std::fs::read(out.join("ca.crt")).unwrap());
    let mode = std::fs::metadata(out.join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Running it again replaces the pair.
    assert!(run(support::NAMESPACE).status.success());
    let bad = run("../etc");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("namespace"));

    // A server on that directory is trusted through the printed bundle.
    let ca_pem = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    let webhook = std::sync::Arc::new(vfcontroller::server::Webhook::new(
        std::sync::Arc::new(support::cluster()),
        support::settings(),
    ));
    let config = vfcontroller::server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_dir: out.clone(),
        reload_every: Duration::from_secs(5),
    };
    let server = vfcontroller::server::Server::bind(&config, webhook)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut c = Client::connect(addr, &ca_pem).await.unwrap();
    assert_eq!(
        c.send(Method::GET, "/healthz", Vec::new()).await.0,
        StatusCode::OK
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
