//! What admission needs to know about the cluster: the objects in the caches, and whether the
//! caches are synced. The server is generic over [`Lookup`], so tests use [`MemoryLookup`] and
//! `serve` uses the reflector caches ([`crate::caches`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use vfkube::isolation::Isolation;
use vfkube::objects::{LogicalNetwork, NetworkAttachmentDefinition};

use crate::status::StatusDigest;

/// Reads of the cluster's network objects, from caches (never a request per review).
pub trait Lookup: Send + Sync + 'static {
    /// The NetworkAttachmentDefinition `namespace/name`, when it exists.
    fn nad(&self, namespace: &str, name: &str) -> Option<NetworkAttachmentDefinition>;
    /// The LogicalNetwork `namespace/name`, when it exists.
    fn logical_network(&self, namespace: &str, name: &str) -> Option<LogicalNetwork>;
    /// Every LogicalNetwork of every namespace.
    fn logical_networks(&self) -> Vec<Arc<LogicalNetwork>>;
    /// [`Lookup::logical_networks`] with the digest of each one's status (the caches keep the
    /// digest in place of the status).
    fn logical_networks_with_status(&self) -> Vec<(Arc<LogicalNetwork>, StatusDigest)> {
        self.logical_networks()
            .into_iter()
            .map(|l| {
                let d = StatusDigest::of(l.status.as_ref());
                (l, d)
            })
            .collect()
    }
    /// A LogicalNetwork of any namespace for which `predicate` holds, if any (subnet overlap is
    /// checked across them all). Implementations look in place, copying only the one found.
    fn find_logical_network(
        &self,
        predicate: &dyn Fn(&LogicalNetwork) -> bool,
    ) -> Option<LogicalNetwork> {
        self.logical_networks()
            .into_iter()
            .find(|l| predicate(l))
            .map(Arc::unwrap_or_clone)
    }
    /// Whether the namespace exists.
    fn namespace_exists(&self, name: &str) -> bool;
    /// Whether the caches hold a complete first listing (`/readyz` waits for it).
    fn synced(&self) -> bool;
}

/// The controller's settings that admission applies, matching the nodes' genie conf:
/// `namespaceIsolation` and `globalNamespaces` (off and none by default, as genie's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub isolation: Isolation,
}

type Key = (String, String);

/// A [`Lookup`] over objects held in memory: for tests and tools that know the objects.
#[derive(Debug, Default)]
pub struct MemoryLookup {
    nads: RwLock<BTreeMap<Key, NetworkAttachmentDefinition>>,
    lns: RwLock<BTreeMap<Key, Arc<LogicalNetwork>>>,
    namespaces: RwLock<Vec<String>>,
    synced: AtomicBool,
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_string(), name.to_string())
}

impl MemoryLookup {
    /// An empty lookup that reports itself synced.
    pub fn new() -> Self {
        let l = Self::default();
        l.set_synced(true);
        l
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    /// Adds (or replaces) a NAD; its namespace is added too.
    pub fn add_nad(&self, nad: NetworkAttachmentDefinition) {
        self.add_namespace(&nad.metadata.namespace);
        let k = key(&nad.metadata.namespace, &nad.metadata.name);
        self.nads
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, nad);
    }

    /// Adds (or replaces) a LogicalNetwork; its namespace is added too.
    pub fn add_logical_network(&self, ln: LogicalNetwork) {
        self.add_namespace(&ln.metadata.namespace);
        let k = key(&ln.metadata.namespace, &ln.metadata.name);
        self.lns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, Arc::new(ln));
    }

    pub fn add_namespace(&self, name: &str) {
        let mut n = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        if !n.iter().any(|x| x == name) {
            n.push(name.to_string());
        }
    }
}

impl Lookup for MemoryLookup {
    fn nad(&self, namespace: &str, name: &str) -> Option<NetworkAttachmentDefinition> {
        self.nads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(namespace, name))
            .cloned()
    }

    fn logical_network(&self, namespace: &str, name: &str) -> Option<LogicalNetwork> {
        self.lns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(namespace, name))
            .map(|l| LogicalNetwork::clone(l))
    }

    fn logical_networks(&self) -> Vec<Arc<LogicalNetwork>> {
        self.lns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn find_logical_network(
        &self,
        predicate: &dyn Fn(&LogicalNetwork) -> bool,
    ) -> Option<LogicalNetwork> {
        self.lns
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|l| predicate(l))
            .map(|l| LogicalNetwork::clone(l))
    }

    fn namespace_exists(&self, name: &str) -> bool {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|n| n == name)
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
}
