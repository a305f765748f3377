//! Keeps every LogicalNetwork's `status` ([`crate::status`]) written: pods are watched
//! cluster-wide with a metadata-only watcher (kube's `Api<PartialObjectMeta<Pod>>`, which
//! replaced the deprecated `metadata_watcher`) (the network-status annotation is in the metadata,
//! so pod specs and statuses are never transferred or held), and every `interval` each
//! LogicalNetwork's desired status is computed from the caches and merge-PATCHed to its `status`
//! subresource only when it differs from the status the cache holds: a quiet cluster sees no
//! writes.
//!
//! There is no leader election: every replica runs the loop. Two replicas compute the same status
//! from the same cluster (the transition time is kept from the current status while the
//! condition holds), so when both write, the second write changes nothing; while their caches
//! disagree for a moment, the last write wins and the next round settles it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::Value;
use tokio::task::JoinHandle;
use vfkube::annotations::NETWORK_STATUS;
use vfkube::objects::{LogicalNetwork, LogicalNetworkStatus};

use crate::caches::{keep, Cacheable};
use crate::lookup::Lookup;
use crate::metrics::Metrics;
use crate::status::{
    attachment_counts, key_hash, needs_write, rfc3339, status_of, Key, ReadinessMemo,
};

/// How often the statuses are recomputed by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// The status loop's tasks (the pod watcher and the loop); aborted when dropped.
pub struct StatusLoop {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for StatusLoop {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl StatusLoop {
    /// Starts watching pods on `client` and, once `lookup` and the pods are synced, writing
    /// statuses every `interval`.
    /// Writes are counted in `metrics`.
    pub fn start<L: Lookup>(
        client: Client,
        lookup: Arc<L>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let writer: Writer<PartialObjectMeta<Pod>> = Writer::default();
        let pods = writer.as_reader();
        let watch = keep(
            "Pod",
            reflector::reflector(
                writer,
                watcher(
                    Api::<PartialObjectMeta<Pod>>::all(client.clone()),
                    watcher::Config::default(),
                )
                .modify(trim)
                .default_backoff(),
            ),
        );
        let run = tokio::spawn(run(client, lookup, pods, interval, metrics));
        Self {
            tasks: vec![watch, run],
        }
    }
}

/// Keeps of a pod's metadata what the reflector and the count read: name, namespace,
/// resourceVersion, uid and the network-status annotation (not managedFields, labels, owners or
/// the other annotations, which can be most of a pod's metadata).
fn trim(p: &mut PartialObjectMeta<Pod>) {
    let m = &mut p.metadata;
    m.managed_fields = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
    if let Some(a) = m.annotations.as_mut() {
        a.retain(|k, _| k == NETWORK_STATUS);
    }
}

async fn run<L: Lookup>(
    client: Client,
    lookup: Arc<L>,
    pods: Store<PartialObjectMeta<Pod>>,
    interval: Duration,
    metrics: Arc<Metrics>,
) {
    if pods.wait_until_ready().await.is_err() {
        return;
    }
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            LogicalNetwork::GROUP,
            LogicalNetwork::VERSION,
            LogicalNetwork::KIND,
        ),
        LogicalNetwork::PLURAL,
    );
    let mut state = State::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !lookup.synced() {
            continue;
        }
        // A full round that wrote everything is followed by the next at once.
        while round(&client, &resource, &lookup, &pods, &mut state, &metrics).await {}
    }
}

/// The statuses this replica wrote (hashed), with the resourceVersion the cache held for the
/// object then (hashed), by [`key_hash`]: until the cache holds a newer version (the watch brings
/// our write back), the object is not written again with the same status, however short the
/// interval.
#[derive(Default)]
struct Written(HashMap<u64, (u64, u64)>);

fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl Written {
    /// Whether `desired` was written over the version of `ln` the cache still holds.
    fn pending(&self, ln: &LogicalNetwork, desired: &LogicalNetworkStatus) -> bool {
        self.0.get(&key_hash(ln)).is_some_and(|&(rv, s)| {
            rv == hash_of(&ln.metadata.resource_version) && s == hash_of(desired)
        })
    }

    fn insert(&mut self, key: u64, resource_version: &str, status: &LogicalNetworkStatus) {
        self.0
            .insert(key, (hash_of(resource_version), hash_of(status)));
    }
}

/// At most this many statuses are written per round; when more differ, the next round follows
/// at once. Bounds what a round holds (a first round over 10,000 new networks would otherwise
/// hold 10,000 statuses to write at once).
const MAX_WRITES_PER_ROUND: usize = 256;

/// What the loop keeps between rounds.
#[derive(Default)]
struct State {
    written: Written,
    memo: ReadinessMemo,
}

/// One status to write: the object, the resourceVersion the cache holds, the status.
type Write = (Key, String, LogicalNetworkStatus);

/// The statuses that differ from the cache's (and were not just written by us), at most
/// [`MAX_WRITES_PER_ROUND`] of them.
fn plan(
    lookup: Arc<dyn Lookup>,
    pods: &Store<PartialObjectMeta<Pod>>,
    state: &mut State,
    now: &str,
) -> Vec<Write> {
    let counts = {
        let pods = pods.state();
        let empty = BTreeMap::new();
        attachment_counts(pods.iter().map(|p| {
            (
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.annotations.as_ref().unwrap_or(&empty),
            )
        }))
    };
    let (lns, digests): (Vec<_>, Vec<_>) =
        lookup.logical_networks_with_status().into_iter().unzip();
    // Keep only the writes the cache has not caught up with yet: once it holds a newer version
    // of a network (or the network is gone), its entry has done its job.
    let present: HashMap<u64, u64> = lns
        .iter()
        .map(|l| (key_hash(l), hash_of(&l.metadata.resource_version)))
        .collect();
    state
        .written
        .0
        .retain(|k, (rv, _)| present.get(k) == Some(rv));
    let readiness = state.memo.update(&lns, &lookup);
    let mut writes = Vec::new();
    for ((ln, ready), current) in lns.iter().zip(readiness).zip(&digests) {
        let attached = counts
            .get(&(ln.metadata.namespace.clone(), ln.metadata.name.clone()))
            .copied()
            .unwrap_or(0);
        let desired = status_of(ln, ready, attached, now, current);
        if needs_write(current, &desired) && !state.written.pending(ln, &desired) {
            let key = (ln.metadata.namespace.clone(), ln.metadata.name.clone());
            writes.push((key, ln.metadata.resource_version.clone(), desired));
            if writes.len() == MAX_WRITES_PER_ROUND {
                break;
            }
        }
    }
    writes
}

/// One round: the statuses are computed off the async workers (the overlap checks after a change
/// can take a while; the webhook shares the runtime), then every one that differs is written;
/// failures are logged and retried by the next round (the cache still holds the old status).
async fn round<L: Lookup>(
    client: &Client,
    resource: &ApiResource,
    lookup: &Arc<L>,
    pods: &Store<PartialObjectMeta<Pod>>,
    state: &mut State,
    metrics: &Metrics,
) -> bool {
    let lookup: Arc<dyn Lookup> = Arc::clone(lookup) as Arc<dyn Lookup>;
    let (pods, mut taken) = (pods.clone(), std::mem::take(state));
    let planned = tokio::task::spawn_blocking(move || {
        let writes = plan(lookup, &pods, &mut taken, &now());
        (taken, writes)
    })
    .await;
    let writes = match planned {
        Ok((kept, writes)) => {
            *state = kept;
            writes
        }
        Err(e) => {
            tracing::warn!(error = %e, "computing LogicalNetwork statuses failed");
            return false;
        }
    };
    let full = writes.len() == MAX_WRITES_PER_ROUND;
    let mut all_written = true;
    for (key, resource_version, desired) in writes {
        let (ns, name) = (&key.0, &key.1);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
        let patch = Patch::Merge(patch_body(&desired));
        match api
            .patch_status(name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                metrics.status_write(true);
                tracing::info!(namespace = %ns, name = %name, "LogicalNetwork status written");
                state
                    .written
                    .insert(hash_of(&key), &resource_version, &desired);
            }
            Err(e) => {
                all_written = false;
                metrics.status_write(false);
                tracing::warn!(
                    namespace = %ns, name = %name, error = %e,
                    "cannot write LogicalNetwork status; retrying next round"
                );
            }
        }
    }
    full && all_written
}

/// `{"status": ...}`, with the optional fields that are absent set to null so that the merge
/// patch removes them.
fn patch_body(status: &LogicalNetworkStatus) -> Value {
    let mut s = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Some(m) = s.as_object_mut() {
        for k in ["observedGeneration", "attachedPods"] {
            m.entry(k).or_insert(Value::Null);
        }
    }
    serde_json::json!({ "status": s })
}

/// Now, RFC 3339 to the second (as `metav1.Time`).
fn now() -> String {
    rfc3339(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_clears_absent_fields_and_now_is_rfc3339() {
        let body = patch_body(&LogicalNetworkStatus::default());
        assert_eq!(
            body,
            serde_json::json!({"status": {"observedGeneration": null, "attachedPods": null}})
        );
        let t = now();
        assert_eq!(t.len(), "2026-01-01T00:00:00Z".len(), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn pods_keep_only_what_the_count_reads() {
        let mut p: PartialObjectMeta<Pod> = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "a", "resourceVersion": "4", "uid": "u",
                "labels": {"app": "web"}, "managedFields": [{"manager": "kubelet"}],
                "annotations": {NETWORK_STATUS: "[]", "other": "x"}}}))
        .unwrap();
        trim(&mut p);
        let m = &p.metadata;
        assert_eq!(
            (
                m.name.as_deref(),
                m.namespace.as_deref(),
                m.resource_version.as_deref()
            ),
            (Some("web"), Some("a"), Some("4"))
        );
        assert!(m.labels.is_none() && m.managed_fields.is_none());
        let a = m.annotations.as_ref().unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), vec![NETWORK_STATUS]);
    }

    #[test]
    fn a_write_is_pending_until_the_cache_holds_a_newer_version() {
        let mut ln = LogicalNetwork::default();
        ln.metadata.resource_version = "5".into();
        let key: Key = ("a".into(), "red".into());
        let status = LogicalNetworkStatus {
            attached_pods: Some(1),
            ..LogicalNetworkStatus::default()
        };
        ln.metadata.namespace = key.0.clone();
        ln.metadata.name = key.1.clone();
        let mut written = Written::default();
        assert!(!written.pending(&ln, &status));
        written.insert(hash_of(&key), "5", &status);
        assert!(written.pending(&ln, &status));
        // Another status is written at once.
        let other = LogicalNetworkStatus::default();
        assert!(!written.pending(&ln, &other));
        // A newer version whose status is not ours (someone overwrote it): written again.
        ln.metadata.resource_version = "6".into();
        assert!(!written.pending(&ln, &status));
    }
}
