//! `admission-demo`: what the admission controller does for a user, on a machine without a
//! cluster. The API server is the tests' stand-in (it serves the objects and the watches the
//! controller reads, over the real wire protocol); the controller is the real
//! `vfgenie-controller serve` binary (found beside this one) with a certificate from its own
//! `certs` command. Pods are sent to it as the API server sends them (AdmissionReview v1 over
//! HTTPS, checked against the printed caBundle), and each answer is printed the way `kubectl
//! apply` shows it. Exits non-zero if any answer is not the expected one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use vfgenie_tests::apiserver::{ApiServer, KubeAuth};

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no directory")?.join(name);
    if !bin.is_file() {
        bail!(
            "{} is missing: cargo build -p vfgenie-controller",
            bin.display()
        );
    }
    Ok(bin)
}

/// One HTTPS request on a fresh connection that trusts only `ca`; (status, body).
fn https(
    ca: &Path,
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The name the API server checks: the Service's, as `certs` made it.
    let name = ServerName::try_from("vfgenie-controller.kube-system.svc")?.to_owned();
    let conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "{method} {path} HTTP/1.1\r\nHost: vfgenie-controller.kube-system.svc\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    tls.write_all(body)?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol])?.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn pod(name: &str, annotations: Value, requests: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "demo", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                 "resources": {"requests": requests, "limits": requests}}]}
    })
}

fn review(uid: &str, pod: &Value) -> Vec<u8> {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": pod["metadata"]["name"], "namespace": "demo", "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
    .to_string()
    .into_bytes()
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let api = ApiServer::start()?;
    api.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}))?;
    api.add_nad(
        "demo",
        "blue",
        r#"{"cniVersion":"1.0.0","type":"bridge","bridge":"br-blue","ipam":{"type":"host-local","subnet":"10.20.0.0/24"}}"#,
        None,
    );
    api.add_nad(
        "demo",
        "fast-vf",
        r#"{"cniVersion":"1.0.0","type":"sriov","ipam":{"type":"host-local","subnet":"10.56.0.0/24"}}"#,
        Some("intel.com/sriov_netdevice"),
    );
    let kubeconfig = api.write_kubeconfig(&dir.path().join("kubeconfig"), KubeAuth::None)?;

    let controller = sibling("vfgenie-controller")?;
    let tls = dir.path().join("tls");
    let out = Command::new(&controller)
        .args([
            "certs",
            "--namespace",
            "kube-system",
            "--service",
            "vfgenie-controller",
            "--out",
        ])
        .arg(&tls)
        .output()?;
    if !out.status.success() {
        bail!("certs: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "$ vfgenie-controller certs --namespace kube-system --service vfgenie-controller --out {}",
        tls.display()
    );
    println!(
        "  caBundle: {}...",
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .chars()
            .take(40)
            .collect::<String>()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _serve = Controller(
        Command::new(&controller)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--tls-dir",
            ])
            .arg(&tls)
            .arg("--namespace-isolation")
            .env("KUBECONFIG", &kubeconfig)
            .env("VFGENIE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()?,
    );
    let ca = tls.join("ca.crt");
    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = https(&ca, port, "GET", "/readyz", b"") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("vfgenie-controller did not become ready");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "vfgenie-controller serving on 127.0.0.1:{port}, caches synced in {} ms\n",
        t0.elapsed().as_millis()
    );

    let vf = json!({"intel.com/sriov_netdevice": "1"});
    let cases = [
        (
            "web-1",
            json!({"k8s.v1.cni.cncf.io/networks": "blue"}),
            json!({}),
            true,
            "",
        ),
        (
            "dpdk-1",
            json!({"k8s.v1.cni.cncf.io/networks": "fast-vf@net1"}),
            vf.clone(),
            true,
            "",
        ),
        (
            "web-2",
            json!({"k8s.v1.cni.cncf.io/networks": "bleu"}),
            json!({}),
            false,
            "bleu",
        ),
        (
            "dpdk-2",
            json!({"k8s.v1.cni.cncf.io/networks": "fast-vf@net1"}),
            json!({}),
            false,
            "intel.com/sriov_netdevice",
        ),
        (
            "web-3",
            json!({"k8s.v1.cni.cncf.io/networks": "blue@../../eth1"}),
            json!({}),
            false,
            "../../eth1",
        ),
        (
            "web-4",
            json!({"k8s.v1.cni.cncf.io/networks": "other-team/blue"}),
            json!({}),
            false,
            "other-team",
        ),
    ];
    let mut wrong = 0;
    for (i, (name, annotations, requests, want, names)) in cases.iter().enumerate() {
        let p = pod(name, annotations.clone(), requests.clone());
        println!(
            "$ kubectl apply -f {name}.yaml   # networks: {}",
            annotations["k8s.v1.cni.cncf.io/networks"]
        );
        let (status, body) = https(
            &ca,
            port,
            "POST",
            "/validate",
            &review(&format!("uid-{i}"), &p),
        )?;
        if status != 200 {
            bail!(
                "/validate answered HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let answer: Value = serde_json::from_slice(&body)?;
        let allowed = answer["response"]["allowed"].as_bool() == Some(true);
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or("");
        if allowed {
            println!("pod/{name} created");
        } else {
            println!(
                "Error from server (Forbidden): error when creating \"{name}.yaml\": admission webhook \"pods.vfgenie.io\" denied the request: {message}"
            );
        }
        let ok = allowed == *want && message.contains(names);
        if !ok {
            wrong += 1;
            println!(
                "  ^ UNEXPECTED: wanted {}",
                if *want { "created" } else { "refused" }
            );
        }
        println!();
    }
    if wrong > 0 {
        bail!("{wrong} answers were not the expected ones");
    }
    println!("admission-demo: 2 pods admitted, 4 broken network requests refused at admission");
    Ok(())
}
