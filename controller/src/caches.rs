//! The real [`Lookup`]: caches of NetworkAttachmentDefinitions, LogicalNetworks and namespaces,
//! each kept by a kube-runtime watcher that relists with backoff. Synced once every cache has its
//! first complete listing.
//!
//! NADs and LogicalNetworks are decoded to our types once, as they arrive ([`Cached`]), so that a
//! lookup copies one typed object and the overlap check of a LogicalNetwork review looks through
//! the cache in place: with 10,000 LogicalNetworks, converting them all from `DynamicObject`s on
//! each review took about 20 ms, and the `DynamicObject`s' JSON trees held about twice the memory
//! (`hack/bench controller`). They are kept in a [`Table`] rather than a reflector store: a store
//! holds every object with a full `ObjectMeta` (some 360 bytes even when empty) under an
//! `ObjectRef` key of four strings; a table holds our object and its digest under
//! `(namespace, name)`, which took about 6 MB off the controller's resident memory with 20,000
//! objects.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as KubeMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::task::JoinHandle;
use vfkube::objects::{LogicalNetwork, NetworkAttachmentDefinition};

use crate::lookup::Lookup;
use crate::status::StatusDigest;

/// One of our kinds, as the caches hold it: decoded once when it arrives from the API server
/// (not on every lookup), and only the fields admission reads (no managedFields, no unknown
/// fields).
pub trait Cacheable: DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static {
    const GROUP: &'static str;
    const VERSION: &'static str;
    const KIND: &'static str;
    const PLURAL: &'static str;
    /// What the cache keeps of the fields admission does not read, in their place.
    type Digest: Clone + Copy + Default + std::fmt::Debug + Send + Sync + 'static;

    /// Takes those fields out of the object and returns their digest.
    fn digest(&mut self) -> Self::Digest;
}

impl Cacheable for NetworkAttachmentDefinition {
    const GROUP: &'static str = "k8s.cni.cncf.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "NetworkAttachmentDefinition";
    const PLURAL: &'static str = "network-attachment-definitions";
    type Digest = ();

    fn digest(&mut self) {}
}

impl Cacheable for LogicalNetwork {
    const GROUP: &'static str = "alpha.network.k8s.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "LogicalNetwork";
    const PLURAL: &'static str = "logicalnetworks";
    /// The status (only the status loop reads it, and a digest is all it needs).
    type Digest = StatusDigest;

    fn digest(&mut self) -> StatusDigest {
        StatusDigest::of(self.status.take().as_ref())
    }
}

/// A cached object: the metadata the reflector and its watcher read (name, namespace,
/// resourceVersion), and the object in our type. An object that does not decode to our type is
/// kept as `None`, treated as absent and logged once, when it arrives (our types accept every
/// object the API server holds).
#[derive(Debug, Clone)]
pub struct Cached<T: Cacheable> {
    meta: KubeMeta,
    object: Option<Arc<T>>,
    digest: T::Digest,
}

impl<T: Cacheable> Cached<T> {
    pub fn object(&self) -> Option<&T> {
        self.object.as_deref()
    }
}

impl<'de, T: Cacheable> Deserialize<'de> for Cached<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let field = |k: &str| {
            v.pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let meta = KubeMeta {
            name: field("name"),
            namespace: field("namespace"),
            resource_version: field("resourceVersion"),
            ..KubeMeta::default()
        };
        let mut digest = T::Digest::default();
        let object = match T::deserialize(&v) {
            Ok(mut t) => {
                digest = t.digest();
                Some(Arc::new(t))
            }
            Err(e) => {
                tracing::warn!(
                    kind = T::KIND,
                    namespace = meta.namespace.as_deref().unwrap_or(""),
                    name = meta.name.as_deref().unwrap_or(""),
                    error = %e,
                    "cached object does not decode"
                );
                None
            }
        };
        Ok(Self {
            meta,
            object,
            digest,
        })
    }
}

impl<T: Cacheable> kube::Resource for Cached<T> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(T::PLURAL)
    }

    fn meta(&self) -> &KubeMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut KubeMeta {
        &mut self.meta
    }
}

/// An object in a [`Table`].
struct Entry<T: Cacheable> {
    object: Arc<T>,
    digest: T::Digest,
}

/// `(namespace, name)`.
type Key = (String, String);

type Objects<T> = HashMap<Key, Entry<T>>;

/// A cache of one of our kinds by `(namespace, name)`, fed by a watcher's events: the first
/// listing (and every relist) is gathered aside and swapped in whole when complete, so a lookup
/// never sees half a listing.
pub struct Table<T: Cacheable> {
    objects: RwLock<Objects<T>>,
    ready: AtomicBool,
    ready_tx: tokio::sync::watch::Sender<bool>,
}

impl<T: Cacheable> Default for Table<T> {
    fn default() -> Self {
        Self {
            objects: RwLock::default(),
            ready: AtomicBool::new(false),
            ready_tx: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl<T: Cacheable> Table<T> {
    fn read(&self) -> RwLockReadGuard<'_, Objects<T>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The key and entry of a cached object; `None` for one without a name (the API server
    /// sends none such). An object that did not decode is absent.
    fn entry(c: Cached<T>) -> Option<(Key, Option<Entry<T>>)> {
        let Cached {
            meta,
            object,
            digest,
        } = c;
        let key = (meta.namespace.unwrap_or_default(), meta.name?);
        Some((key, object.map(|object| Entry { object, digest })))
    }

    /// Applies one watcher event; `relist` gathers a listing in progress.
    fn apply(&self, event: watcher::Event<Cached<T>>, relist: &mut Option<Objects<T>>) {
        match event {
            watcher::Event::Init => *relist = Some(HashMap::new()),
            watcher::Event::InitApply(c) => {
                if let (Some(list), Some((key, Some(entry)))) = (relist.as_mut(), Self::entry(c)) {
                    list.insert(key, entry);
                }
            }
            watcher::Event::InitDone => {
                if let Some(list) = relist.take() {
                    *self.objects.write().unwrap_or_else(|e| e.into_inner()) = list;
                }
                self.ready.store(true, Ordering::SeqCst);
                self.ready_tx.send_replace(true);
            }
            watcher::Event::Apply(c) => {
                if let Some((key, entry)) = Self::entry(c) {
                    let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
                    match entry {
                        Some(e) => objects.insert(key, e),
                        // Now an object that does not decode: absent.
                        None => objects.remove(&key),
                    };
                }
            }
            watcher::Event::Delete(c) => {
                if let Some((key, _)) = Self::entry(c) {
                    self.objects
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                }
            }
        }
    }

    /// Waits until the first listing is in.
    async fn wait_until_ready(&self) {
        let mut rx = self.ready_tx.subscribe();
        // An error means the sender is gone, which it cannot be while `self` lives.
        let _ = rx.wait_for(|r| *r).await;
    }

    fn get(&self, namespace: &str, name: &str) -> Option<T> {
        self.read()
            .get(&(namespace.to_string(), name.to_string()))
            .map(|e| T::clone(&e.object))
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

/// Runs a watcher of `T` into `table` until the task is aborted; a watch error is logged and the
/// watcher (with its backoff) carries on.
fn feed<T: Cacheable>(client: Client, table: Arc<Table<T>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stream =
            watcher(Api::<Cached<T>>::all(client), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut relist = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => table.apply(e, &mut relist),
                Err(e) => tracing::warn!(cache = T::KIND, error = %e, "watch failed; retrying"),
            }
        }
    })
}

/// The caches, and the tasks that keep them.
pub struct Caches {
    nads: Arc<Table<NetworkAttachmentDefinition>>,
    lns: Arc<Table<LogicalNetwork>>,
    namespaces: Store<Namespace>,
    synced: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Runs a reflector until the task is aborted; a watch error is logged and the watcher (with
/// its backoff) carries on.
pub(crate) fn keep<K, S>(what: &'static str, stream: S) -> JoinHandle<()>
where
    K: Send + 'static,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(event) = s.next().await {
            if let Err(e) = event {
                tracing::warn!(cache = what, error = %e, "watch failed; retrying");
            }
        }
    })
}

impl Caches {
    /// Starts the watchers (cluster-wide) on `client`.
    pub fn start(client: Client) -> Self {
        let nads: Arc<Table<NetworkAttachmentDefinition>> = Arc::default();
        let lns: Arc<Table<LogicalNetwork>> = Arc::default();
        let ns_writer: Writer<Namespace> = Writer::default();
        let namespaces = ns_writer.as_reader();
        let cfg = watcher::Config::default;
        let tasks = vec![
            feed(client.clone(), Arc::clone(&nads)),
            feed(client.clone(), Arc::clone(&lns)),
            keep(
                "Namespace",
                reflector::reflector(
                    ns_writer,
                    watcher(Api::all(client), cfg()).default_backoff(),
                ),
            ),
        ];
        let synced = Arc::new(AtomicBool::new(false));
        let mut caches = Self {
            nads,
            lns,
            namespaces,
            synced,
            tasks,
        };
        let (a, b, c, flag) = (
            Arc::clone(&caches.nads),
            Arc::clone(&caches.lns),
            caches.namespaces.clone(),
            Arc::clone(&caches.synced),
        );
        caches.tasks.push(tokio::spawn(async move {
            a.wait_until_ready().await;
            b.wait_until_ready().await;
            if c.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
                tracing::info!("caches synced");
            }
        }));
        caches
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Lookup for Caches {
    fn nad(&self, namespace: &str, name: &str) -> Option<NetworkAttachmentDefinition> {
        self.nads.get(namespace, name)
    }

    fn logical_network(&self, namespace: &str, name: &str) -> Option<LogicalNetwork> {
        self.lns.get(namespace, name)
    }

    fn logical_networks(&self) -> Vec<Arc<LogicalNetwork>> {
        self.lns
            .read()
            .values()
            .map(|e| Arc::clone(&e.object))
            .collect()
    }

    fn logical_networks_with_status(&self) -> Vec<(Arc<LogicalNetwork>, StatusDigest)> {
        self.lns
            .read()
            .values()
            .map(|e| (Arc::clone(&e.object), e.digest))
            .collect()
    }

    fn find_logical_network(
        &self,
        predicate: &dyn Fn(&LogicalNetwork) -> bool,
    ) -> Option<LogicalNetwork> {
        self.lns
            .read()
            .values()
            .find(|e| predicate(&e.object))
            .map(|e| LogicalNetwork::clone(&e.object))
    }

    fn namespace_exists(&self, name: &str) -> bool {
        self.namespaces.get(&ObjectRef::new(name)).is_some()
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;
    use serde_json::json;

    #[test]
    fn objects_are_decoded_once_to_our_types_and_keyed_by_their_metadata() {
        let c: Cached<LogicalNetwork> = serde_json::from_value(json!({
            "apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
            "metadata": {"name": "red", "namespace": "a", "uid": "u1", "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"physicalNet": "p1", "plugin": "bridge", "subnet": "10.1.0.0/24"}}))
        .unwrap();
        assert_eq!(c.meta().name.as_deref(), Some("red"));
        assert_eq!(c.meta().namespace.as_deref(), Some("a"));
        assert_eq!(c.meta().resource_version.as_deref(), Some("7"));
        assert!(c.meta().managed_fields.is_none());
        let ln = c.object().unwrap();
        assert_eq!(
            (ln.metadata.uid.as_str(), ln.spec.subnet.as_str()),
            ("u1", "10.1.0.0/24")
        );
        assert_eq!(
            Cached::<NetworkAttachmentDefinition>::url_path(&(), Some("a")),
            "/apis/k8s.cni.cncf.io/v1/namespaces/a/network-attachment-definitions"
        );
        assert_eq!(
            Cached::<LogicalNetwork>::url_path(&(), None),
            "/apis/alpha.network.k8s.io/v1/logicalnetworks"
        );
    }

    fn ln(name: &str, subnet: &str) -> Cached<LogicalNetwork> {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "a", "resourceVersion": "1"},
            "spec": {"physicalNet": "p1", "plugin": "bridge", "subnet": subnet},
            "status": {"attachedPods": 2}}))
        .unwrap()
    }

    #[test]
    fn a_table_swaps_in_whole_listings_and_follows_changes() {
        let t: Table<LogicalNetwork> = Table::default();
        let mut relist = None;
        t.apply(watcher::Event::Init, &mut relist);
        t.apply(
            watcher::Event::InitApply(ln("red", "10.1.0.0/24")),
            &mut relist,
        );
        // Half a listing is not visible, and the table is not ready.
        assert!(t.is_empty());
        assert!(!t.ready.load(Ordering::SeqCst));
        t.apply(
            watcher::Event::InitApply(ln("blue", "10.2.0.0/24")),
            &mut relist,
        );
        t.apply(watcher::Event::InitDone, &mut relist);
        assert_eq!(t.len(), 2);
        assert!(t.ready.load(Ordering::SeqCst));
        // The status is kept as a digest only.
        let red = t.get("a", "red").unwrap();
        assert!(red.status.is_none());
        let digest = t.read().get(&("a".into(), "red".into())).map(|e| e.digest);
        let expected = StatusDigest::of(Some(&vfkube::objects::LogicalNetworkStatus {
            attached_pods: Some(2),
            ..Default::default()
        }));
        assert_eq!(digest, Some(expected));
        // Changes.
        t.apply(watcher::Event::Apply(ln("red", "10.9.0.0/24")), &mut relist);
        assert_eq!(t.get("a", "red").unwrap().spec.subnet, "10.9.0.0/24");
        t.apply(watcher::Event::Delete(ln("blue", "")), &mut relist);
        assert!(t.get("a", "blue").is_none());
        // An update that no longer decodes makes the object absent.
        let broken: Cached<LogicalNetwork> = serde_json::from_value(json!({
            "metadata": {"name": "red", "namespace": "a"}, "spec": {"subnet": 7}}))
        .unwrap();
        t.apply(watcher::Event::Apply(broken), &mut relist);
        assert!(t.get("a", "red").is_none());
        // A relist (after a 410) replaces everything: what it does not list is gone.
        t.apply(
            watcher::Event::Apply(ln("stale", "10.3.0.0/24")),
            &mut relist,
        );
        t.apply(watcher::Event::Init, &mut relist);
        t.apply(
            watcher::Event::InitApply(ln("green", "10.4.0.0/24")),
            &mut relist,
        );
        assert!(
            t.get("a", "stale").is_some(),
            "the old listing serves until the new one is in"
        );
        t.apply(watcher::Event::InitDone, &mut relist);
        assert!(t.get("a", "stale").is_none());
        assert!(t.get("a", "green").is_some());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_object_that_does_not_decode_is_kept_as_absent() {
        let c: Cached<NetworkAttachmentDefinition> = serde_json::from_value(json!({
            "metadata": {"name": "n", "namespace": "a", "resourceVersion": "3"},
            "spec": {"config": 5}}))
        .unwrap();
        assert_eq!(c.meta().name.as_deref(), Some("n"));
        assert!(c.object().is_none());
    }
}
