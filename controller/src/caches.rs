//! The real [`Lookup`]: kube-runtime reflector caches of NetworkAttachmentDefinitions,
//! LogicalNetworks and namespaces, each kept by a watcher that relists with backoff. Synced once
//! every cache has its first complete listing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::runtime::reflector::{self, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use vfkube::objects::{LogicalNetwork, NetworkAttachmentDefinition};

use crate::lookup::Lookup;

fn nad_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
        "network-attachment-definitions",
    )
}

fn logical_network_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("alpha.network.k8s.io", "v1", "LogicalNetwork"),
        "logicalnetworks",
    )
}

/// The caches, and the tasks that keep them.
pub struct Caches {
    nads: Store<DynamicObject>,
    nad_resource: ApiResource,
    lns: Store<DynamicObject>,
    ln_resource: ApiResource,
    namespaces: Store<Namespace>,
    synced: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Runs a reflector until the task is aborted; a watch error is logged and the watcher (with
/// its backoff) carries on.
fn keep<K, S>(what: &'static str, stream: S) -> JoinHandle<()>
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
        let nad_resource = nad_resource();
        let ln_resource = logical_network_resource();
        let nad_writer = Writer::new(nad_resource.clone());
        let nads = nad_writer.as_reader();
        let ln_writer = Writer::new(ln_resource.clone());
        let lns = ln_writer.as_reader();
        let ns_writer: Writer<Namespace> = Writer::default();
        let namespaces = ns_writer.as_reader();
        let cfg = watcher::Config::default;
        let tasks = vec![
            keep(
                "NetworkAttachmentDefinition",
                reflector::reflector(
                    nad_writer,
                    watcher(Api::all_with(client.clone(), &nad_resource), cfg()).default_backoff(),
                ),
            ),
            keep(
                "LogicalNetwork",
                reflector::reflector(
                    ln_writer,
                    watcher(Api::all_with(client.clone(), &ln_resource), cfg()).default_backoff(),
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
            nad_resource,
            lns,
            ln_resource,
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

/// Converts a cached object to our type; an object that does not convert is treated as absent
/// (and logged), since our types accept every object the API server holds.
fn convert<T: DeserializeOwned>(o: &DynamicObject) -> Option<T> {
    let v = serde_json::to_value(o).ok()?;
    match serde_json::from_value(v) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(
                namespace = o.metadata.namespace.as_deref().unwrap_or(""),
                name = o.metadata.name.as_deref().unwrap_or(""),
                error = %e,
                "cached object does not decode"
            );
            None
        }
    }
}

fn get(
    store: &Store<DynamicObject>,
    ar: &ApiResource,
    namespace: &str,
    name: &str,
) -> Option<Arc<DynamicObject>> {
    store.get(&ObjectRef::new_with(name, ar.clone()).within(namespace))
}

impl Lookup for Caches {
    fn nad(&self, namespace: &str, name: &str) -> Option<NetworkAttachmentDefinition> {
        get(&self.nads, &self.nad_resource, namespace, name).and_then(|o| convert(&o))
    }

    fn logical_network(&self, namespace: &str, name: &str) -> Option<LogicalNetwork> {
        get(&self.lns, &self.ln_resource, namespace, name).and_then(|o| convert(&o))
    }

    fn logical_networks(&self) -> Vec<LogicalNetwork> {
        self.lns.state().iter().filter_map(|o| convert(o)).collect()
    }

    fn namespace_exists(&self, name: &str) -> bool {
        self.namespaces.get(&ObjectRef::new(name)).is_some()
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
}
