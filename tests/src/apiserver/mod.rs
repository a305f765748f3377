//! An API-server stand-in on 127.0.0.1 (random port) speaking the Kubernetes wire protocol for the
//! kinds vfgenie reads and writes: pods, namespaces, NetworkAttachmentDefinitions,
//! LogicalNetworks (with a status subresource), NetworkPolicies, MultiNetworkPolicies and core
//! v1 Events (posted with `generateName`).
//!
//! - GET, LIST (label and field selectors, `limit`/`continue` pagination at one revision), WATCH
//!   (replay from a resourceVersion, live events, bookmarks, 410 Expired after a compaction,
//!   `timeoutSeconds`, `sendInitialEvents`), POST, PUT, merge PATCH and DELETE, GET/PUT/PATCH of
//!   `.../status`; PUT pods/status checks the resourceVersion (409 on a mismatch) as before.
//! - One global resourceVersion, moved on by every change, as etcd's revision.
//! - Tests can require a bearer token, inject conflicts and server errors, delay every answer,
//!   make the server close every connection, stop and resume serving (a restart on the same port
//!   with the same objects), compact the event log, and read back every request and every
//!   successful pods/status write.
//!
//! It runs on its own thread and runtime, so blocking clients can be used from plain `#[test]`s.
//! [`ApiServer::start_tls`] serves https with a CA made for the run, optionally requiring client
//! certificates signed by it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod kubeconfig;
mod query;
mod routes;
mod server;
mod store;
mod tls;
mod watch;

pub use kubeconfig::{write_kubeconfig, write_kubeconfig_with, KubeAuth, KubeTls};
pub use tls::TlsMaterial;

use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use server::Control;
use store::{Key, Resource, Store};
use tokio::sync::mpsc;

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

struct State {
    store: Store,
    token: Option<String>,
    available: bool,
    /// `false`: every answer says `Connection: close`.
    keep_alive: bool,
    delay: Duration,
    conflicts: usize,
    failures: Vec<u16>,
    /// Requests still to be answered by dropping the connection (after they took effect).
    resets: usize,
    /// Kinds (by plural) answered 404, as a cluster without their CRD.
    unserved: Vec<String>,
    connections: usize,
    requests: Vec<String>,
    request_uris: Vec<String>,
    writes: Vec<RecordedWrite>,
    bookmark_interval: Duration,
    list_requests: usize,
    watch_requests: usize,
    open_watches: usize,
    bookmarks_sent: usize,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running stand-in; stops when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    control: mpsc::UnboundedSender<Control>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Serves plain http.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// Serves https on 127.0.0.1 with a certificate from a fresh CA; with `require_client_cert`
    /// only clients presenting a certificate from that CA get through the handshake.
    pub fn start_tls(require_client_cert: bool) -> anyhow::Result<(Self, TlsMaterial)> {
        let (config, material) = tls::tls_setup(require_client_cert)?;
        Ok((Self::start_with(Some(config))?, material))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<Self> {
        let https = tls.is_some();
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the stand-in")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            store: Store::default(),
            token: None,
            available: true,
            keep_alive: true,
            delay: Duration::ZERO,
            conflicts: 0,
            failures: Vec::new(),
            resets: 0,
            unserved: Vec::new(),
            connections: 0,
            requests: Vec::new(),
            request_uris: Vec::new(),
            writes: Vec::new(),
            bookmark_interval: Duration::from_secs(1),
            list_requests: 0,
            watch_requests: 0,
            open_watches: 0,
            bookmarks_sent: 0,
        }));
        let (control, control_rx) = mpsc::unbounded_channel();
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
                rt.block_on(server::serve(std_listener, addr, st, control_rx, tls));
            })?;
        Ok(Self {
            addr,
            https,
            state,
            control,
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

    /// A kube-rs client of this stand-in (plain HTTP: one started with [`ApiServer::start`]).
    pub fn kube_client(&self) -> anyhow::Result<kube::Client> {
        let url = self.url().parse()?;
        Ok(kube::Client::try_from(kube::Config::new(url))?)
    }

    /// A kube-rs client of this stand-in that sends `token` (the one [`ApiServer::set_token`]
    /// requires).
    pub fn kube_client_with_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        let mut config = kube::Config::new(self.url().parse()?);
        config.auth_info.token = Some(token.to_string().into());
        Ok(kube::Client::try_from(config)?)
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

    /// The next `n` requests take effect, then their connection is dropped without an answer, as
    /// when a connection breaks (or a load balancer resets it) mid-call: the client cannot know
    /// whether a write was applied.
    pub fn inject_resets(&self, n: usize) {
        lock(&self.state).resets = n;
    }

    /// The next requests answer these status codes, in order (e.g. 500, 429).
    pub fn inject_failures(&self, statuses: &[u16]) {
        lock(&self.state).failures = statuses.to_vec();
    }

    /// Whether the kind served as `plural` is served: `false` answers every request for it 404,
    /// as a cluster without its CRD does (the objects stay, and are served again with `true`).
    pub fn set_served(&self, plural: &str, served: bool) {
        let mut st = lock(&self.state);
        st.unserved.retain(|p| p != plural);
        if !served {
            st.unserved.push(plural.to_string());
        }
    }

    /// How often a watch that allows bookmarks gets one (1 s unless set); for watches started
    /// afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        lock(&self.state).bookmark_interval = interval;
    }

    /// Adds or replaces a pod (on node-1); returns its uid.
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
        self.put("pods", namespace, name, pod);
        uid
    }

    /// Deletes a pod if there is one.
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        let _ = self.delete("pods", namespace, name);
    }

    /// Adds or replaces a NetworkAttachmentDefinition with this spec.config (may be empty).
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
        self.put("network-attachment-definitions", namespace, name, nad);
    }

    /// Adds or replaces a selectable group (`vfgenie.io/select-from`, and
    /// `vfgenie.io/select-strategy` when given): a NetworkAttachmentDefinition without a config
    /// (`plural` "network-attachment-definitions") or a LogicalNetwork ("logicalnetworks").
    pub fn add_group(
        &self,
        plural: &'static str,
        namespace: &str,
        name: &str,
        members: &str,
        strategy: Option<&str>,
    ) {
        let mut annotations = serde_json::Map::new();
        annotations.insert("vfgenie.io/select-from".into(), json!(members));
        if let Some(s) = strategy {
            annotations.insert("vfgenie.io/select-strategy".into(), json!(s));
        }
        let metadata = json!({"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                              "annotations": annotations});
        let object = match plural {
            "logicalnetworks" => json!({
                "apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
                "metadata": metadata, "spec": {"physicalNet": "", "plugin": "", "subnet": ""}}),
            _ => json!({
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": metadata, "spec": {"config": ""}}),
        };
        self.put(plural, namespace, name, object);
    }

    /// Adds or replaces a LogicalNetwork.
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
        self.put("logicalnetworks", namespace, name, ln);
    }

    /// Stores (adds or replaces) an object: one ADDED or MODIFIED event.
    fn put(&self, plural: &'static str, namespace: &str, name: &str, object: Value) {
        let key = (plural, namespace.to_string(), name.to_string());
        lock(&self.state).store.commit(key, Some(object));
    }

    /// The key of `name` in `namespace` of the kind served as `plural` (the namespace is ignored
    /// for a cluster-scoped kind).
    fn key(plural: &str, namespace: &str, name: &str) -> anyhow::Result<Key> {
        let res = Resource::by_plural(plural)
            .ok_or_else(|| anyhow!("the stand-in serves no {plural}"))?;
        let ns = if res.namespaced { namespace } else { "" };
        Ok((res.plural, ns.to_string(), name.to_string()))
    }

    /// Creates an object of a served kind (named by its apiVersion and kind), as a POST does:
    /// fails if it exists; a missing uid is made up. Returns it as stored.
    pub fn create(&self, object: Value) -> anyhow::Result<Value> {
        let (res, _) = routes::key_for(&object).map_err(|e| anyhow!(e))?;
        lock(&self.state)
            .store
            .create(res, object)
            .map_err(|e| anyhow!("creating: {e}"))
    }

    /// Replaces a stored object, status included (a resourceVersion in `object` must be the
    /// stored one; without one the write is unconditional). Returns it as stored.
    pub fn update(&self, object: Value) -> anyhow::Result<Value> {
        let (res, _) = routes::key_for(&object).map_err(|e| anyhow!(e))?;
        lock(&self.state)
            .store
            .replace(res, object, false)
            .map_err(|e| anyhow!("updating: {e}"))
    }

    /// Deletes an object of the kind served as `plural` (e.g. "pods", "logicalnetworks"); the
    /// namespace is ignored for a cluster-scoped kind. Returns the deleted object.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> anyhow::Result<Value> {
        let key = Self::key(plural, namespace, name)?;
        lock(&self.state)
            .store
            .delete(key)
            .map_err(|e| anyhow!("deleting {plural} {namespace}/{name}: {e}"))
    }

    /// The stored object.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = Self::key(plural, namespace, name).ok()?;
        lock(&self.state).store.get(&key).cloned()
    }

    /// Every stored object of the kind served as `plural` (in `namespace`, or all), by key.
    pub fn list(&self, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(key) = Self::key(plural, "", "") else {
            return Vec::new();
        };
        let st = lock(&self.state);
        let now = st.store.revision();
        st.store
            .snapshot(key.0, namespace, now)
            .map(|m| m.into_values().collect())
            .unwrap_or_default()
    }

    /// The stored pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get("pods", namespace, name)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.state).store.revision()
    }

    /// Compacts the event log up to now: a watch or a continued list asking for an older
    /// resourceVersion is answered 410 Expired (watches already running are not affected).
    /// Returns the compaction revision.
    pub fn compact(&self) -> u64 {
        lock(&self.state).store.compact()
    }

    /// Stops serving: the listener closes (connecting is refused) and every open connection —
    /// every watch stream with it — is closed. Objects stay and can be changed meanwhile.
    pub fn stop_serving(&self) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control
            .send(Control::Stop(tx))
            .map_err(|_| anyhow!("the stand-in is gone"))?;
        rx.recv_timeout(Duration::from_secs(10))
            .context("the stand-in did not stop serving")
    }

    /// Serves again, on the same address.
    pub fn resume_serving(&self) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.control
            .send(Control::Resume(tx))
            .map_err(|_| anyhow!("the stand-in is gone"))?;
        rx.recv_timeout(Duration::from_secs(10))
            .context("the stand-in did not resume")?
            .with_context(|| format!("listening again on {}", self.addr))
    }

    /// An API server restart: stops serving, stays down for a moment (200 ms), serves again on
    /// the same port with the same objects.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.stop_serving()?;
        std::thread::sleep(Duration::from_millis(200));
        self.resume_serving()
    }

    /// How many TCP connections were accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.state).connections
    }

    /// Every request so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn request_uris(&self) -> Vec<String> {
        lock(&self.state).request_uris.clone()
    }

    /// How many LISTs (GETs of a collection without `watch`) were answered so far.
    pub fn list_requests(&self) -> usize {
        lock(&self.state).list_requests
    }

    /// How many WATCHes were started so far.
    pub fn watch_requests(&self) -> usize {
        lock(&self.state).watch_requests
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        lock(&self.state).open_watches
    }

    /// How many BOOKMARK events were sent so far.
    pub fn bookmarks_sent(&self) -> usize {
        lock(&self.state).bookmarks_sent
    }

    /// Every successful pods/status write so far.
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
        let _ = self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
