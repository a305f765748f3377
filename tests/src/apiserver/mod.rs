//! An API-server stand-in on 127.0.0.1 (random port) speaking the Kubernetes REST paths the CNI
//! binary uses: GET pods, GET/PUT pods/status (resourceVersion checked, 409 on a mismatch),
//! GET network-attachment-definitions and logicalnetworks, Status JSON errors (404, 401, 409).
//! Tests can require a bearer token, inject conflicts and server errors, delay every answer, make
//! the server close every connection, and read back every request and every successful write.
//!
//! It runs on its own thread and runtime, so blocking clients can be used from plain `#[test]`s.
//! [`ApiServer::start_tls`] serves https with a CA made for the run, optionally requiring client
//! certificates signed by it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod kubeconfig;
mod tls;

pub use kubeconfig::{write_kubeconfig, write_kubeconfig_with, KubeAuth, KubeTls};
use tls::tls_setup;
pub use tls::TlsMaterial;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// One successful write (PUT pods/status).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedWrite {
    pub namespace: String,
    pub name: String,
    /// The body as sent.
    pub body: Value,
}

impl RecordedWrite {
    /// An annotation of the written pod.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.body["metadata"]["annotations"][key].as_str()
    }
}

#[derive(Default)]
struct State {
    /// (plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    token: Option<String>,
    available: bool,
    /// `false`: every answer says `Connection: close`.
    keep_alive: bool,
    delay: Duration,
    conflicts: usize,
    failures: Vec<u16>,
    revision: u64,
    connections: usize,
    requests: Vec<String>,
    writes: Vec<RecordedWrite>,
}

impl State {
    fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }
}

const PODS: &str = "pods";
const NADS: &str = "network-attachment-definitions";
const LNS: &str = "logicalnetworks";

/// The running stand-in; stops when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl ApiServer {
    /// Serves plain http.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// Serves https on 127.0.0.1 with a certificate from a fresh CA; with `require_client_cert`
    /// only clients presenting a certificate from that CA get through the handshake.
    pub fn start_tls(require_client_cert: bool) -> anyhow::Result<(Self, TlsMaterial)> {
        let (config, material) = tls_setup(require_client_cert)?;
        Ok((Self::start_with(Some(config))?, material))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<Self> {
        let https = tls.is_some();
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the stand-in")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            available: true,
            keep_alive: true,
            ..State::default()
        }));
        let (tx, rx) = oneshot::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("apiserver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("apiserver stand-in: no runtime: {e}");
                        return;
                    }
                };
                rt.block_on(serve(std_listener, st, rx, tls));
            })?;
        Ok(Self {
            addr,
            https,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Require this bearer token on every request (`None`: no check).
    pub fn set_token(&self, token: Option<&str>) {
        lock(&self.state).token = token.map(str::to_string);
    }

    /// `false`: every connection is closed as soon as it is accepted.
    pub fn set_available(&self, available: bool) {
        lock(&self.state).available = available;
    }

    /// `false`: every answer closes its connection (`Connection: close`), as a server or proxy
    /// that keeps no idle connections does.
    pub fn set_keep_alive(&self, keep_alive: bool) {
        lock(&self.state).keep_alive = keep_alive;
    }

    /// Delay every answer by this long.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.state).delay = delay;
    }

    /// The next `n` PUTs of pods/status answer 409, as if another writer got there first (the
    /// stored resourceVersion moves on).
    pub fn inject_conflicts(&self, n: usize) {
        lock(&self.state).conflicts = n;
    }

    /// The next requests answer these status codes, in order (e.g. 500, 429).
    pub fn inject_failures(&self, statuses: &[u16]) {
        lock(&self.state).failures = statuses.to_vec();
    }

    /// Adds or replaces a pod; returns its uid.
    pub fn add_pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
        let uid = format!("uid-{namespace}-{name}");
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": annotations},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "node-1"},
            "status": {"phase": "Pending"}
        });
        self.insert(PODS, namespace, name, pod);
        uid
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        lock(&self.state)
            .objects
            .remove(&(PODS.into(), namespace.into(), name.into()));
    }

    /// Adds a NetworkAttachmentDefinition with this spec.config (may be empty).
    pub fn add_nad(&self, namespace: &str, name: &str, config: &str, resource_name: Option<&str>) {
        let mut annotations = serde_json::Map::new();
        if let Some(r) = resource_name {
            annotations.insert("k8s.v1.cni.cncf.io/resourceName".into(), json!(r));
        }
        let nad = json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "annotations": annotations},
            "spec": {"config": config}
        });
        self.insert(NADS, namespace, name, nad);
    }

    pub fn add_logical_network(
        &self,
        namespace: &str,
        name: &str,
        physical_net: &str,
        plugin: &str,
        subnet: &str,
    ) {
        let ln = json!({
            "apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
            "spec": {"physicalNet": physical_net, "plugin": plugin, "subnet": subnet}
        });
        self.insert(LNS, namespace, name, ln);
    }

    fn insert(&self, plural: &str, namespace: &str, name: &str, mut object: Value) {
        let mut st = lock(&self.state);
        object["metadata"]["resourceVersion"] = json!(st.next_revision());
        st.objects
            .insert((plural.into(), namespace.into(), name.into()), object);
    }

    /// The stored pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(&(PODS.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// How many TCP connections were accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.state).connections
    }

    /// Every request so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// Every successful write so far.
    pub fn writes(&self) -> Vec<RecordedWrite> {
        lock(&self.state).writes.clone()
    }

    /// Writes a kubeconfig for this server at `path`.
    pub fn write_kubeconfig(&self, path: &Path, auth: KubeAuth<'_>) -> anyhow::Result<PathBuf> {
        write_kubeconfig(path, &self.url(), auth)?;
        Ok(path.to_path_buf())
    }

    /// Writes a kubeconfig for this server with TLS settings.
    pub fn write_kubeconfig_tls(
        &self,
        path: &Path,
        auth: KubeAuth<'_>,
        tls: KubeTls<'_>,
    ) -> anyhow::Result<PathBuf> {
        write_kubeconfig_with(path, &self.url(), auth, tls)?;
        Ok(path.to_path_buf())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut shutdown: oneshot::Receiver<()>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("apiserver stand-in: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // As a real API server does: small writes go out at once, none waits for an ACK.
                let _ = stream.set_nodelay(true);
                let available = {
                    let mut st = lock(&state);
                    st.connections += 1;
                    st.available
                };
                if !available {
                    drop(stream);
                    continue;
                }
                let st = state.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            // A failed handshake (an untrusted client) just ends the connection.
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                    }
                });
            }
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()
    });
    respond(code, &body)
}

fn respond(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// (plural, namespace, name, subresource) of a path we serve.
fn route(path: &str) -> Option<(&'static str, String, String, Option<String>)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (plural, rest) = match segs.as_slice() {
        ["api", "v1", "namespaces", rest @ ..] => (PODS, rest),
        ["apis", "k8s.cni.cncf.io", "v1", "namespaces", rest @ ..] => (NADS, rest),
        ["apis", "alpha.network.k8s.io", "v1", "namespaces", rest @ ..] => (LNS, rest),
        _ => return None,
    };
    match rest {
        [ns, p, name] if *p == plural => Some((plural, ns.to_string(), name.to_string(), None)),
        [ns, p, name, sub] if *p == plural && plural == PODS => Some((
            plural,
            ns.to_string(),
            name.to_string(),
            Some(sub.to_string()),
        )),
        _ => None,
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (delay, keep_alive) = {
        let mut st = lock(&state);
        st.requests.push(format!("{method} {path}"));
        (st.delay, st.keep_alive)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut resp = answer(&mut lock(&state), &method, &path, auth.as_deref(), &body);
    if !keep_alive {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}

fn answer(
    st: &mut State,
    method: &Method,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if let Some(token) = &st.token {
        if auth != Some(format!("Bearer {token}").as_str()) {
            return status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
            );
        }
    }
    if !st.failures.is_empty() {
        let code = st.failures.remove(0);
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return status(code, "InternalError", format!("injected {}", code.as_u16()));
    }
    let Some((plural, ns, name, sub)) = route(path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource {path}"),
        );
    };
    let key = (plural.to_string(), ns.clone(), name.clone());
    let not_found = || {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{plural} \"{name}\" not found"),
        )
    };
    match (method, sub.as_deref()) {
        (&Method::GET, None) | (&Method::GET, Some("status")) => match st.objects.get(&key) {
            Some(o) => respond(StatusCode::OK, o),
            None => not_found(),
        },
        (&Method::PUT, Some("status")) => {
            let Ok(sent) = serde_json::from_slice::<Value>(body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the body is not JSON".into(),
                );
            };
            if sent["metadata"]["name"].as_str() != Some(name.as_str()) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "metadata.name does not match the path".into(),
                );
            }
            if !st.objects.contains_key(&key) {
                return not_found();
            }
            if st.conflicts > 0 {
                st.conflicts -= 1;
                let rv = st.next_revision();
                if let Some(stored) = st.objects.get_mut(&key) {
                    stored["metadata"]["resourceVersion"] = json!(rv);
                }
                return conflict(&name);
            }
            let rv = st.next_revision();
            let Some(stored) = st.objects.get_mut(&key) else {
                return not_found();
            };
            if sent["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                return conflict(&name);
            }
            // pods/status takes metadata.annotations and status; the spec stays as stored.
            stored["metadata"]["annotations"] = sent["metadata"]["annotations"].clone();
            stored["status"] = sent["status"].clone();
            stored["metadata"]["resourceVersion"] = json!(rv);
            let out = stored.clone();
            st.writes.push(RecordedWrite {
                namespace: ns,
                name,
                body: sent,
            });
            respond(StatusCode::OK, &out)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        ),
    }
}

fn conflict(name: &str) -> Response<Full<Bytes>> {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!("Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
    )
}

/// An address on loopback where nothing listens (bound, then released).
pub fn unused_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    drop(l);
    Ok(addr)
}

/// Reads one pod annotation of a stored pod.
pub fn annotation(pod: &Value, key: &str) -> anyhow::Result<String> {
    pod["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the pod has no annotation {key}"))
}
