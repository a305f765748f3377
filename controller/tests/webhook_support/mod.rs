//! A webhook server on 127.0.0.1:0 with certificates from `certs`, and an HTTPS client that
//! trusts only the CA it is given.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio_rustls::TlsConnector;
use vfcontroller::certs;
use vfcontroller::lookup::{MemoryLookup, Settings};
use vfcontroller::server::{Server, ServerConfig, Webhook};
use vfkube::isolation::Isolation;

pub const NAMESPACE: &str = "vfgenie";
pub const SERVICE: &str = "webhook";

pub struct Running {
    pub addr: SocketAddr,
    pub ca: String,
    pub lookup: Arc<MemoryLookup>,
    pub dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The cluster the table runs against.
pub fn cluster() -> MemoryLookup {
    let l = MemoryLookup::new();
    let nads = [
        (
            "default",
            "blue",
            r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth1"}"#,
            None,
        ),
        (
            "default",
            "sriov-a",
            r#"{"cniVersion":"1.0.0","type":"sriov","vlan":100}"#,
            Some("intel.com/sriov_a"),
        ),
        (
            "default",
            "br",
            r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local","subnet":"10.10.0.0/16"}}"#,
            None,
        ),
        ("shared", "green", "", None),
        (
            "other",
            "red",
            r#"{"cniVersion":"1.0.0","type":"ipvlan"}"#,
            None,
        ),
    ];
    for (ns, name, config, resource) in nads {
        let mut v =
            json!({"metadata": {"name": name, "namespace": ns}, "spec": {"config": config}});
        if let Some(r) = resource {
            v["metadata"]["annotations"] = json!({"k8s.v1.cni.cncf.io/resourceName": r});
        }
        l.add_nad(serde_json::from_value(v).unwrap());
    }
    l.add_logical_network(
        serde_json::from_value(json!({"metadata": {"name": "net1", "namespace": "default"},
            "spec": {"plugin": "bridge", "subnet": "10.1.0.0/24", "physicalNet": "p1"}}))
        .unwrap(),
    );
    l
}

/// Isolation on, `shared` global: as a cluster whose genie conf says so.
pub fn settings() -> Settings {
    Settings {
        isolation: Isolation {
            enabled: true,
            global_namespaces: vec!["shared".into()],
        },
    }
}

pub fn make_certs(dir: &Path) -> String {
    let g = certs::generate(NAMESPACE, SERVICE).unwrap();
    certs::write(dir, &g).unwrap();
    g.ca_pem
}

pub async fn start(lookup: MemoryLookup) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certs(dir.path());
    let lookup = Arc::new(lookup);
    let webhook = Arc::new(Webhook::new(Arc::clone(&lookup), settings()));
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_dir: dir.path().to_path_buf(),
        reload_every: Duration::from_millis(100),
    };
    let server = Server::bind(&config, webhook).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        ca,
        lookup,
        dir,
        _stop: stop,
    }
}

/// A TLS connection to the server as `webhook.vfgenie.svc`, trusting only `ca_pem`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name =
        ServerName::try_from(format!("{SERVICE}.{NAMESPACE}.svc")).map_err(|e| e.to_string())?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// An HTTP/1 connection with any body type; the caller drives `conn`.
pub async fn raw_connect<B>(
    addr: SocketAddr,
    ca_pem: &str,
) -> (SendRequest<B>, impl std::future::Future<Output = ()>)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = tls_connect(addr, ca_pem).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    (sender, async move {
        let _ = conn.await;
    })
}

/// One keep-alive HTTPS connection.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca_pem: &str) -> Result<Self, String> {
        let tls = tls_connect(addr, ca_pem).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    pub async fn send(&mut self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{SERVICE}.{NAMESPACE}.svc"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    pub async fn post(&mut self, body: &Value) -> (StatusCode, Value) {
        let (status, bytes) = self
            .send(Method::POST, "/validate", serde_json::to_vec(body).unwrap())
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

/// An AdmissionReview v1 as the API server posts it.
pub struct Review<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub resource: &'a str,
    pub operation: &'a str,
    pub namespace: &'a str,
    pub object: Value,
    /// The subresource and the kind it carries, for requests on a subresource.
    pub sub_resource: Option<(&'a str, Value)>,
}

impl Review<'_> {
    pub fn body(&self, uid: &str) -> Value {
        let name = self
            .object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        let gvk = json!({"group": self.group, "version": self.version, "kind": self.kind});
        let gvr = json!({"group": self.group, "version": self.version, "resource": self.resource});
        let (object, old, options) = match self.operation {
            "CREATE" => (self.object.clone(), Value::Null, "CreateOptions"),
            "UPDATE" => (self.object.clone(), self.object.clone(), "UpdateOptions"),
            _ => (Value::Null, self.object.clone(), "DeleteOptions"),
        };
        let mut review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": gvk,
                "resource": gvr,
                "requestKind": gvk,
                "requestResource": gvr,
                "name": name,
                "namespace": self.namespace,
                "operation": self.operation,
                "userInfo": {
                    "username": "system:serviceaccount:default:deployer",
                    "uid": "5b3f7e0c-7d5e-4a9e-9f38-2f1f9a3c1d11",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]
                },
                "object": object,
                "oldObject": old,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": options}
            }
        });
        if let Some((sub, kind)) = &self.sub_resource {
            review["request"]["subResource"] = json!(sub);
            review["request"]["requestSubResource"] = json!(sub);
            review["request"]["kind"] = kind.clone();
            review["request"]["requestKind"] = kind.clone();
        }
        review
    }
}
