//! The Kubernetes side of the policy engine: reflectors that fill the [`Inputs`] model.
//!
//! Watched (kube-runtime reflectors with the default backoff; a watch that fails, or is told 410
//! Gone, relists): namespaces (metadata: labels), NetworkAttachmentDefinitions, LogicalNetworks,
//! NetworkPolicies (metadata: only `genieNetworkpolicy` matters), MultiNetworkPolicies, every
//! pod's metadata (labels and network-status: peers' addresses) and the pods on this node
//! (`spec.nodeName=<node>`). Local pods' netns and interfaces come from genie's records
//! (`vfmeta::cache`) in the node's CNI cache directory, read at each [`PolicyWatch::snapshot`].
//!
//! Every store change wakes one task that waits a short while for the burst to end
//! ([`WatchConfig::debounce`]), parses the policies that changed (a version that does not parse
//! keeps the object's last good version enforced and is reported: [`report`]) and then fires
//! [`PolicyWatch::changes`]. The engine then takes a [`PolicyWatch::snapshot`] and recompiles.

pub mod networks;
pub mod objects;
pub mod pods;
pub mod policies;
pub mod report;
mod stores;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::FutureExt;
use k8s_openapi::api::core::v1::Pod as KubePod;
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use vfkube::annotations::NETWORK_STATUS;
use vfkube::objects::{is_dns_subdomain, LogicalNetwork, NetworkAttachmentDefinition};
use vfkube::policy::GENIE_NETWORK_POLICY;
use vfmeta::cache::CacheDir;

use self::networks::Confs;
use self::objects::{Cacheable, RawMultiPolicy};
use self::policies::{LastGood, Parsed, Version};
use self::report::{Reporter, Subject};
use self::stores::Stores;
use crate::policy::model::{GeniePolicy, Inputs, MultiPolicy, NetworkKey, Pod};

/// How long a burst of changes may go on before the engine is told (the default).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(30);

/// Why the watches cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("node name {0:?} is not a DNS-1123 subdomain; the pod watch selects by it")]
    NodeName(String),
}

/// What the watches need to know about this node.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// This node's name (`spec.nodeName` of its pods).
    pub node_name: String,
    /// genie's `cniDir` (`vfmeta::genieconf::DEFAULT_CNI_DIR`), its cache directory: its pod
    /// records give local pods' netns and interfaces.
    pub cache_dir: PathBuf,
    /// The node's CNI conf dir, when the agent can read it: NADs without `spec.config` and
    /// LogicalNetworks' plugins are looked up there (else a LogicalNetwork's plugin name is read
    /// as a plugin type, and a NAD without config is skipped).
    pub conf_dir: Option<PathBuf>,
    pub debounce: Duration,
    /// The shortest time between two Events on one object.
    pub event_interval: Duration,
}

impl WatchConfig {
    pub fn new(node_name: impl Into<String>, cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_name: node_name.into(),
            cache_dir: cache_dir.into(),
            conf_dir: None,
            debounce: DEFAULT_DEBOUNCE,
            event_interval: report::DEFAULT_EVENT_INTERVAL,
        }
    }
}

#[derive(Default)]
struct PolicyState {
    genie: LastGood<GeniePolicy>,
    multi: LastGood<MultiPolicy>,
}

/// Counters of what the watches skipped or reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Policy problems reported ([`report::Reporter::report`]), by the watches or others.
    pub policy_problems: u64,
    /// Networks and pods' network-status values skipped (each distinct problem once).
    pub skipped: u64,
    /// Objects that did not decode to our types (kept as absent).
    pub undecodable: u64,
}

/// Fires when the model may have changed (see [`PolicyWatch::changes`]).
pub struct Changes(watch::Receiver<u64>);

impl Changes {
    /// Waits for the next change; `false` once the watches are gone.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }

    /// How many change rounds there were so far.
    pub fn generation(&self) -> u64 {
        *self.0.borrow()
    }
}

/// The running watches (aborted when dropped).
pub struct PolicyWatch {
    stores: Stores,
    state: Arc<Mutex<PolicyState>>,
    changes: watch::Receiver<u64>,
    synced: watch::Receiver<bool>,
    reporter: Reporter,
    config: WatchConfig,
    /// Problems already logged, by object, so a snapshot logs each one once.
    logged: Mutex<HashMap<String, String>>,
    skipped: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PolicyWatch {
    /// Starts the watches (cluster-wide, and this node's pods) and the Event sender on `client`.
    pub fn start(client: Client, config: WatchConfig) -> Result<Self, WatchError> {
        if !is_dns_subdomain(&config.node_name) {
            return Err(WatchError::NodeName(config.node_name));
        }
        let dirty = Arc::new(Notify::new());
        let (stores, mut tasks) = Stores::start(&client, &config.node_name, &dirty);
        let (reporter, sender) = Reporter::start(client, &config.node_name, config.event_interval);
        tasks.push(sender);
        let state = Arc::new(Mutex::new(PolicyState::default()));
        let (changes_tx, changes) = watch::channel(0u64);
        let (synced_tx, synced) = watch::channel(false);
        tasks.push(tokio::spawn(settle(
            stores.clone(),
            Arc::clone(&state),
            reporter.clone(),
            dirty,
            config.debounce,
            changes_tx,
            synced_tx,
        )));
        Ok(Self {
            stores,
            state,
            changes,
            synced,
            reporter,
            config,
            logged: Mutex::new(HashMap::new()),
            skipped: AtomicU64::new(0),
            tasks,
        })
    }

    /// Whether every watch has its first complete listing (and the policies were parsed).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until [`Self::is_synced`].
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Fires (debounced) after each round of store changes, from the first complete sync on, for
    /// changes after it was made: take a [`Self::snapshot`] first, then wait on it.
    pub fn changes(&self) -> Changes {
        let mut rx = self.changes.clone();
        rx.mark_unchanged();
        Changes(rx)
    }

    /// The reporter the watches use, for other problems about policies (the compiler's).
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    pub fn counters(&self) -> Counters {
        Counters {
            policy_problems: self.reporter.reported(),
            skipped: self.skipped.load(Ordering::Relaxed),
            undecodable: objects::UNDECODABLE.load(Ordering::Relaxed),
        }
    }

    /// Logs a problem with an object once (until it changes); returns nothing to act on.
    fn skip(&self, object: String, problem: String) {
        let mut logged = lock(&self.logged);
        if logged.get(&object) == Some(&problem) {
            return;
        }
        if logged.len() > 10_000 {
            logged.clear();
        }
        self.skipped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("{object}: {problem}; skipped");
        logged.insert(object, problem);
    }

    /// The model as the stores and genie's records hold it now. Reads genie's record files (a
    /// few small files): call it from a blocking-capable context when that matters.
    pub fn snapshot(&self) -> Inputs {
        let mut inputs = Inputs {
            namespaces: self
                .stores
                .namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), pods::labels(n.metadata.labels.as_ref())))
                .collect(),
            networks: self.networks(),
            pods: self.pods(),
            ..Inputs::default()
        };
        let state = lock(&self.state);
        inputs.genie = state.genie.enforced();
        inputs.multi = state.multi.enforced();
        inputs
    }

    fn networks(&self) -> BTreeMap<NetworkKey, crate::policy::model::Network> {
        let mut confs = Confs::new(self.config.conf_dir.as_deref());
        let nads = self.stores.nads.state();
        let by_key: BTreeMap<NetworkKey, &NetworkAttachmentDefinition> = nads
            .iter()
            .filter_map(|c| c.object())
            .map(|n| (NetworkKey::new(&n.metadata.namespace, &n.metadata.name), n))
            .collect();
        let mut out = BTreeMap::new();
        for (key, nad) in &by_key {
            match networks::nad_network(nad, &mut confs) {
                Ok(n) => {
                    out.insert(key.clone(), n);
                }
                Err(p) => self.skip(format!("{} {key}", NetworkAttachmentDefinition::KIND), p),
            }
        }
        // A LogicalNetwork and a NAD of the same name: the LogicalNetwork (CNI-Genie's policy
        // names logical networks).
        for ln in self
            .stores
            .lns
            .state()
            .iter()
            .filter_map(|c| c.object().cloned())
        {
            match networks::logical_network(&ln, &by_key, &mut confs) {
                Ok(n) => {
                    out.insert(n.key.clone(), n);
                }
                Err(p) => self.skip(
                    format!(
                        "{} {}/{}",
                        LogicalNetwork::KIND,
                        ln.metadata.namespace,
                        ln.metadata.name
                    ),
                    p,
                ),
            }
        }
        out
    }

    fn pod(&self, p: &PartialObjectMeta<KubePod>) -> Pod {
        let namespace = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.name_any();
        let status = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NETWORK_STATUS));
        let (interfaces, problem) = pods::status_interfaces(status.map(String::as_str));
        if let Some(problem) = problem {
            self.skip(
                format!("Pod {namespace}/{name}"),
                format!("{NETWORK_STATUS}: {problem}"),
            );
        }
        Pod {
            labels: pods::labels(p.metadata.labels.as_ref()),
            namespace,
            name,
            interfaces,
            netns: None,
        }
    }

    fn pods(&self) -> Vec<Pod> {
        let (mut records, problems) = pods::read_records(&CacheDir::new(&self.config.cache_dir));
        for p in problems {
            tracing::debug!(problem = %p, "genie record skipped");
        }
        let mut out: BTreeMap<(String, String), Pod> = BTreeMap::new();
        for p in self.stores.local_pods.state() {
            let mut pod = self.pod(&p);
            let key = (pod.namespace.clone(), pod.name.clone());
            if let Some(local) = records.remove(&key) {
                pod.interfaces = pods::merge_interfaces(&local.interfaces, pod.interfaces);
                pod.netns = local.netns;
            }
            out.insert(key, pod);
        }
        for p in self.stores.pods.state() {
            let key = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.name_any(),
            );
            out.entry(key).or_insert_with(|| self.pod(&p));
        }
        out.into_values().collect()
    }
}

impl Drop for PolicyWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Parses the policies whose version changed; reports the ones that do not parse.
fn refresh_policies(stores: &Stores, state: &Mutex<PolicyState>, reporter: &Reporter) {
    let mut state = lock(state);
    let nps = stores.network_policies.state();
    let versions = nps.iter().map(|p| Version {
        namespace: p.metadata.namespace.as_deref().unwrap_or(""),
        name: p.metadata.name.as_deref().unwrap_or(""),
        resource_version: p.metadata.resource_version.as_deref().unwrap_or(""),
        object: p,
    });
    state.genie.refresh(
        versions,
        |p, ns| {
            let annotation = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(GENIE_NETWORK_POLICY));
            policies::parse_genie(ns, &p.name_any(), annotation.map(String::as_str))
        },
        |p, what, problem| {
            let s = Subject::new(
                "networking.k8s.io/v1",
                "NetworkPolicy",
                p.metadata.namespace.as_deref().unwrap_or(""),
                &p.name_any(),
                p.metadata.uid.as_deref(),
            );
            reporter.report(&s, what, problem);
        },
    );
    let mps = stores.multi_policies.state();
    let versions = mps.iter().map(|p| {
        let m = kube::Resource::meta(p.as_ref());
        Version {
            namespace: m.namespace.as_deref().unwrap_or(""),
            name: m.name.as_deref().unwrap_or(""),
            resource_version: m.resource_version.as_deref().unwrap_or(""),
            object: p,
        }
    });
    state.multi.refresh(
        versions,
        |p, _| match p.object() {
            Some(o) => policies::parse_multi(o),
            None => Parsed::Bad {
                what: "object",
                problem: "it does not decode as a MultiNetworkPolicy".into(),
            },
        },
        |p, what, problem| {
            let m = kube::Resource::meta(p.as_ref());
            let s = Subject::new(
                &format!("{}/{}", RawMultiPolicy::GROUP, RawMultiPolicy::VERSION),
                RawMultiPolicy::KIND,
                m.namespace.as_deref().unwrap_or(""),
                m.name.as_deref().unwrap_or(""),
                m.uid.as_deref(),
            );
            reporter.report(&s, what, problem);
        },
    );
}

/// Waits for the first complete sync, then after every burst of store changes parses the
/// policies and fires the change notification.
async fn settle(
    stores: Stores,
    state: Arc<Mutex<PolicyState>>,
    reporter: Reporter,
    dirty: Arc<Notify>,
    debounce: Duration,
    changes: watch::Sender<u64>,
    synced: watch::Sender<bool>,
) {
    if !stores.ready().await {
        return;
    }
    // Changes seen while syncing are in this first round.
    let _ = dirty.notified().now_or_never();
    refresh_policies(&stores, &state, &reporter);
    synced.send_replace(true);
    tracing::info!("policy watches synced");
    loop {
        changes.send_modify(|g| *g += 1);
        dirty.notified().await;
        tokio::time::sleep(debounce).await;
        // The changes of the burst are in the stores now; a wake-up they left is spent.
        let _ = dirty.notified().now_or_never();
        refresh_policies(&stores, &state, &reporter);
    }
}
