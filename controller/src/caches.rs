//! The real [`Lookup`]: kube-runtime reflector caches of NetworkAttachmentDefinitions,
//! LogicalNetworks and namespaces, each kept by a watcher that relists with backoff. Synced once
//! every cache has its first complete listing.
//!
//! NADs and LogicalNetworks are decoded to our types once, as they arrive ([`Cached`]), so that a
//! lookup copies one typed object and the overlap check of a LogicalNetwork review looks through
//! the cache in place: with 10,000 LogicalNetworks, converting them all from `DynamicObject`s on
//! each review took about 20 ms, and the `DynamicObject`s' JSON trees held about twice the memory
//! (`hack/bench controller`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// The caches, and the tasks that keep them.
pub struct Caches {
    nads: Store<Cached<NetworkAttachmentDefinition>>,
    lns: Store<Cached<LogicalNetwork>>,
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
        let nad_writer: Writer<Cached<NetworkAttachmentDefinition>> = Writer::default();
        let nads = nad_writer.as_reader();
        let ln_writer: Writer<Cached<LogicalNetwork>> = Writer::default();
        let lns = ln_writer.as_reader();
        let ns_writer: Writer<Namespace> = Writer::default();
        let namespaces = ns_writer.as_reader();
        let cfg = watcher::Config::default;
        let tasks = vec![
            keep(
                "NetworkAttachmentDefinition",
                reflector::reflector(
                    nad_writer,
                    watcher(Api::all(client.clone()), cfg()).default_backoff(),
                ),
            ),
            keep(
                "LogicalNetwork",
                reflector::reflector(
                    ln_writer,
                    watcher(Api::all(client.clone()), cfg()).default_backoff(),
                ),
            ),
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
            caches.nads.clone(),
            caches.lns.clone(),
            caches.namespaces.clone(),
            Arc::clone(&caches.synced),
        );
        caches.tasks.push(tokio::spawn(async move {
            let ready = a.wait_until_ready().await.is_ok()
                && b.wait_until_ready().await.is_ok()
                && c.wait_until_ready().await.is_ok();
            if ready {
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

fn get<T: Cacheable>(store: &Store<Cached<T>>, namespace: &str, name: &str) -> Option<T> {
    store
        .get(&ObjectRef::new(name).within(namespace))
        .and_then(|c| c.object.as_deref().cloned())
}

impl Lookup for Caches {
    fn nad(&self, namespace: &str, name: &str) -> Option<NetworkAttachmentDefinition> {
        get(&self.nads, namespace, name)
    }

    fn logical_network(&self, namespace: &str, name: &str) -> Option<LogicalNetwork> {
        get(&self.lns, namespace, name)
    }

    fn logical_networks(&self) -> Vec<Arc<LogicalNetwork>> {
        self.lns
            .state()
            .iter()
            .filter_map(|c| c.object.clone())
            .collect()
    }

    fn logical_networks_with_status(&self) -> Vec<(Arc<LogicalNetwork>, StatusDigest)> {
        self.lns
            .state()
            .iter()
            .filter_map(|c| c.object.clone().map(|o| (o, c.digest)))
            .collect()
    }

    fn find_logical_network(
        &self,
        predicate: &dyn Fn(&LogicalNetwork) -> bool,
    ) -> Option<LogicalNetwork> {
        self.lns
            .find(|c| c.object.as_deref().is_some_and(predicate))
            .and_then(|c| c.object.as_deref().cloned())
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
