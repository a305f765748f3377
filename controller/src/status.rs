//! A LogicalNetwork's status, as the controller wants it: pure functions over a [`Lookup`] and the
//! pods' `k8s.v1.cni.cncf.io/network-status` annotations. [`crate::status_loop`] writes it.
//!
//! - condition `Ready`: `True` (reason `Valid`) when the LogicalNetwork passes the admission rules
//!   ([`validate_logical_network`]) against the cluster as it is now, else `False` (reason
//!   `Invalid`) with the rule's message: a LogicalNetwork admitted before another one that
//!   overlaps it was deleted, or admitted while the webhook was down, shows here.
//! - `attachedPods`: how many pods list the network in their network-status.
//! - `observedGeneration`: the `metadata.generation` the status was computed from.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use vfkube::annotations::NETWORK_STATUS;
use vfkube::objects::{Condition, LogicalNetwork, LogicalNetworkStatus};

use crate::lookup::Lookup;
use crate::overlap_index::{candidates, Narrowed};
use crate::validate::logical::validate_logical_network;

/// The condition type the controller keeps.
pub const READY: &str = "Ready";
/// `Ready` reason when the LogicalNetwork passes the admission rules.
pub const REASON_VALID: &str = "Valid";
/// `Ready` reason when it does not.
pub const REASON_INVALID: &str = "Invalid";

/// `namespace/name` of a LogicalNetwork.
pub type Key = (String, String);

/// The networks a pod of `namespace` is attached to, by its network-status annotation: genie
/// names a LogicalNetwork attachment `<pod namespace>/<name>` (LogicalNetworks are looked up in
/// the pod's namespace), so only names of the pod's own namespace can be LogicalNetworks. Each
/// network counts once per pod. An annotation that is not a JSON list of objects with a `name`
/// gives nothing (genie writes it; anything else did not come from genie).
///
/// A NetworkAttachmentDefinition attachment is named the same way, so a NAD and a LogicalNetwork
/// of the same name in the same namespace cannot be told apart here: both count.
pub fn attached_networks(
    namespace: &str,
    annotations: &BTreeMap<String, String>,
) -> HashSet<String> {
    let Some(list) = annotations
        .get(NETWORK_STATUS)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        return HashSet::new();
    };
    let Some(list) = list.as_array() else {
        return HashSet::new();
    };
    list.iter()
        .filter_map(|e| e.get("name").and_then(Value::as_str))
        .filter_map(|n| n.split_once('/'))
        .filter(|(ns, name)| *ns == namespace && !name.is_empty())
        .map(|(_, name)| name.to_string())
        .collect()
}

/// Pods per network, over `(namespace, annotations)` of every pod.
pub fn attachment_counts<'a>(
    pods: impl IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
) -> HashMap<Key, i32> {
    let mut counts: HashMap<Key, i32> = HashMap::new();
    for (ns, annotations) in pods {
        for name in attached_networks(ns, annotations) {
            let c = counts.entry((ns.to_string(), name)).or_default();
            *c = c.saturating_add(1);
        }
    }
    counts
}

/// Whether a LogicalNetwork passes the admission rules: `None`, or the denial's message.
pub type Readiness = Option<String>;

/// [`Readiness`] of `ln` against the cluster in `lookup`.
pub fn readiness(ln: &LogicalNetwork, lookup: &dyn Lookup) -> Readiness {
    validate_logical_network(ln, lookup)
        .err()
        .map(|d| d.message)
}

/// The status `ln` should have, with `attached_pods` pods attached, at time `now` (RFC 3339).
/// `lastTransitionTime` is kept from `ln`'s current status when `Ready` keeps its status, so a
/// LogicalNetwork whose situation did not change gets exactly its current status back.
pub fn desired_status(
    ln: &LogicalNetwork,
    lookup: &dyn Lookup,
    attached_pods: i32,
    now: &str,
) -> LogicalNetworkStatus {
    let current = StatusDigest::of(ln.status.as_ref());
    status_of(ln, readiness(ln, lookup), attached_pods, now, &current)
}

/// What the status loop needs to know of a LogicalNetwork's current status: whether it equals a
/// desired one (a hash of it) and when its `Ready` condition last changed. The cache keeps this
/// in place of the status itself (a status is six allocations; with 10,000 networks the statuses
/// and the garbage of replacing them cost the controller about 10 MB of resident memory).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusDigest {
    hash: u64,
    ready: Option<ReadySince>,
}

/// The `Ready` condition's status (`True`: `Some(true)`, `False`: `Some(false)`, anything else:
/// `None`) and its `lastTransitionTime` in seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadySince {
    ready: Option<bool>,
    since: i64,
}

impl StatusDigest {
    pub fn of(status: Option<&LogicalNetworkStatus>) -> Self {
        let ready = status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
            .and_then(|c| {
                let since = c
                    .last_transition_time
                    .parse::<Timestamp>()
                    .ok()?
                    .as_second();
                let ready = match c.status.as_str() {
                    "True" => Some(true),
                    "False" => Some(false),
                    _ => None,
                };
                Some(ReadySince { ready, since })
            });
        Self {
            hash: status_hash(status),
            ready,
        }
    }
}

fn status_hash(status: Option<&LogicalNetworkStatus>) -> u64 {
    let mut h = DefaultHasher::new();
    status.hash(&mut h);
    h.finish()
}

/// `t` as `metav1.Time` writes it: RFC 3339, to the second, in UTC.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// [`desired_status`] from a [`Readiness`] computed before and the current status's digest.
pub fn status_of(
    ln: &LogicalNetwork,
    readiness: Readiness,
    attached_pods: i32,
    now: &str,
    current: &StatusDigest,
) -> LogicalNetworkStatus {
    let generation = ln.metadata.generation;
    let (ready, status, reason, message) = match readiness {
        None => (true, "True", REASON_VALID, String::new()),
        Some(message) => (false, "False", REASON_INVALID, message),
    };
    let last_transition_time = match current.ready {
        Some(p) if p.ready == Some(ready) => Timestamp::from_second(p.since)
            .map(rfc3339)
            .unwrap_or_else(|_| now.to_string()),
        _ => now.to_string(),
    };
    LogicalNetworkStatus {
        observed_generation: generation,
        attached_pods: Some(attached_pods),
        conditions: vec![Condition {
            type_: READY.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time,
            observed_generation: generation,
        }],
    }
}

/// The [`Readiness`] of every LogicalNetwork, recomputed only when what it depends on changed:
/// the overlap rule compares each network with all others, so checking 10,000 of them anew every
/// round would cost 10^8 comparisons on a quiet cluster (about 3 s of a core in a debug build
/// for 3,000 networks on one physicalNet), so those checked again search only the networks that
/// can overlap them ([`crate::overlap_index`]: 10,000 on one physicalNet in 64 ms, debug build),
/// and the others are not checked again. A network's readiness is kept while its own spec, the
/// specs of the LogicalNetworks on its physicalNet (only those can overlap it; one
/// order-independent fingerprint per physicalNet) and the NetworkAttachmentDefinition its
/// `spec.plugin` names (uid and resourceVersion) are as before.
#[derive(Debug, Default)]
pub struct ReadinessMemo {
    entries: HashMap<u64, (u64, Readiness)>,
}

fn spec_hash(ln: &LogicalNetwork) -> u64 {
    let mut h = DefaultHasher::new();
    let (m, s) = (&ln.metadata, &ln.spec);
    (
        &m.namespace,
        &m.name,
        &s.physical_net,
        &s.plugin,
        &s.subnet,
        s.vlan,
    )
        .hash(&mut h);
    h.finish()
}

impl ReadinessMemo {
    /// The readiness of each of `lns`, in their order.
    /// The networks checked again look for overlaps among their candidates
    /// ([`crate::overlap_index`]) only.
    pub fn update(
        &mut self,
        lns: &[Arc<LogicalNetwork>],
        lookup: &Arc<dyn Lookup>,
    ) -> Vec<Readiness> {
        let mut groups: HashMap<&str, u64> = HashMap::new();
        for ln in lns {
            let g = groups.entry(ln.spec.physical_net.as_str()).or_default();
            // The count too: wrapping_add(1) per network besides its hash.
            *g = g.wrapping_add(spec_hash(ln)).wrapping_add(1);
        }
        let present: HashSet<u64> = lns.iter().map(|l| key_hash(l)).collect();
        self.entries.retain(|k, _| present.contains(k));
        let depends: Vec<u64> = lns
            .iter()
            .map(|ln| {
                let nad = lookup
                    .nad(&ln.metadata.namespace, ln.spec.plugin.trim())
                    .map(|n| (n.metadata.uid, n.metadata.resource_version));
                let mut h = DefaultHasher::new();
                let group = groups.get(ln.spec.physical_net.as_str()).copied();
                (spec_hash(ln), group, nad).hash(&mut h);
                h.finish()
            })
            .collect();
        let key = |ln: &LogicalNetwork| key_hash(ln);
        let stale = lns.iter().zip(&depends).any(|(ln, d)| {
            self.entries
                .get(&key(ln))
                .is_none_or(|(known, _)| known != d)
        });
        let index = if stale { candidates(lns) } else { Vec::new() };
        lns.iter()
            .zip(depends)
            .enumerate()
            .map(|(i, (ln, depends))| {
                let k = key(ln);
                match self.entries.get(&k) {
                    Some((d, r)) if *d == depends => r.clone(),
                    _ => {
                        let narrowed = Narrowed {
                            inner: Arc::clone(lookup),
                            candidates: index
                                .get(i)
                                .map(|c| c.iter().filter_map(|&j| lns.get(j).cloned()).collect())
                                .unwrap_or_default(),
                        };
                        let r = readiness(ln, &narrowed);
                        self.entries.insert(k, (depends, r.clone()));
                        r
                    }
                }
            })
            .collect()
    }
}

/// Whether the current status (its digest) differs from `desired` (only then is it written).
pub fn needs_write(current: &StatusDigest, desired: &LogicalNetworkStatus) -> bool {
    current.hash != status_hash(Some(desired))
}

/// A LogicalNetwork's `namespace/name`, hashed: the memo and the status loop key their entries
/// by it rather than by two strings per network.
pub fn key_hash(ln: &LogicalNetwork) -> u64 {
    let mut h = DefaultHasher::new();
    (&ln.metadata.namespace, &ln.metadata.name).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::MemoryLookup;
    use serde_json::json;

    fn ln(name: &str, physical_net: &str, subnet: &str) -> LogicalNetwork {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "a", "generation": 3},
            "spec": {"physicalNet": physical_net, "plugin": "bridge", "subnet": subnet}}))
        .unwrap()
    }

    fn ready(s: &LogicalNetworkStatus) -> &Condition {
        s.conditions.iter().find(|c| c.type_ == READY).unwrap()
    }

    #[test]
    fn a_valid_network_is_ready_with_its_generation_and_pods() {
        let lookup = MemoryLookup::new();
        let red = ln("red", "p1", "10.1.0.0/24");
        lookup.add_logical_network(red.clone());
        let s = desired_status(&red, &lookup, 4, "2026-01-01T00:00:00Z");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.attached_pods, Some(4));
        let c = ready(&s);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Valid"));
        assert_eq!(c.last_transition_time, "2026-01-01T00:00:00Z");
        assert_eq!(c.observed_generation, Some(3));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["attachedPods"], 4);
        assert_eq!(v["conditions"][0]["type"], "Ready");
        assert_eq!(
            v["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn an_overlap_is_not_ready_and_names_the_other_network() {
        let lookup = MemoryLookup::new();
        let red = ln("red", "p1", "10.1.0.0/24");
        lookup.add_logical_network(red.clone());
        lookup.add_logical_network(ln("blue", "p1", "10.1.0.0/16"));
        let s = desired_status(&red, &lookup, 0, "t1");
        let c = ready(&s);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
        assert!(c.message.contains("a/blue"), "{}", c.message);
        // Another physical network does not overlap.
        let green = ln("green", "p2", "10.1.0.0/24");
        assert_eq!(
            ready(&desired_status(&green, &lookup, 0, "t1")).status,
            "True"
        );
    }

    #[test]
    fn the_transition_time_is_kept_while_the_condition_keeps_its_status() {
        let lookup = MemoryLookup::new();
        let mut red = ln("red", "p1", "10.1.0.0/24");
        lookup.add_logical_network(red.clone());
        let (t1, t2, t3, t4) = (
            "2026-12-04T10:00:01Z",
            "2026-12-04T10:00:02Z",
            "2026-12-04T10:00:03Z",
            "2026-12-04T10:00:04Z",
        );
        let digest = |l: &LogicalNetwork| StatusDigest::of(l.status.as_ref());
        let first = desired_status(&red, &lookup, 1, t1);
        assert!(needs_write(&digest(&red), &first));
        red.status = Some(first.clone());
        let again = desired_status(&red, &lookup, 1, t2);
        assert_eq!(again, first);
        assert!(!needs_write(&digest(&red), &again));
        // More pods: written, same transition time.
        let more = desired_status(&red, &lookup, 2, t3);
        assert!(needs_write(&digest(&red), &more));
        assert_eq!(ready(&more).last_transition_time, t1);
        // Now invalid: a new transition time.
        lookup.add_logical_network(ln("blue", "p1", "10.1.0.128/25"));
        let bad = desired_status(&red, &lookup, 2, t4);
        assert_eq!(ready(&bad).last_transition_time, t4);
        // A transition time the controller did not write (fractions, an offset) is kept as
        // the same instant; one that does not parse is replaced.
        red.status = Some(LogicalNetworkStatus {
            conditions: vec![Condition {
                last_transition_time: "2026-12-04T11:00:00.5+01:00".into(),
                ..ready(&first).clone()
            }],
            ..first.clone()
        });
        let kept = desired_status(&red, &lookup, 2, t4);
        assert_eq!(ready(&kept).status, "False");
        lookup.add_logical_network(ln("blue", "p9", "10.1.0.128/25"));
        let back = desired_status(&red, &lookup, 2, t4);
        assert_eq!(ready(&back).last_transition_time, "2026-12-04T10:00:00Z");
        if let Some(c) = red.status.as_mut().map(|s| &mut s.conditions[0]) {
            c.last_transition_time = "yesterday".into();
        }
        assert_eq!(
            ready(&desired_status(&red, &lookup, 2, t4)).last_transition_time,
            t4
        );
    }

    #[test]
    fn readiness_is_recomputed_only_when_a_spec_or_the_named_nad_changed() {
        let lookup = Arc::new(MemoryLookup::new());
        let dynamic: Arc<dyn Lookup> = lookup.clone();
        let red = ln("red", "p1", "10.1.0.0/24");
        lookup.add_logical_network(red.clone());
        let mut memo = ReadinessMemo::default();
        assert_eq!(memo.update(&[Arc::new(red.clone())], &dynamic), vec![None]);
        // The memo answers without looking at the other networks while nothing changed: a
        // stale entry planted by hand is what comes back.
        let key = key_hash(&red);
        if let Some(e) = memo.entries.get_mut(&key) {
            e.1 = Some("planted".into());
        }
        assert_eq!(
            memo.update(&[Arc::new(red.clone())], &dynamic),
            vec![Some("planted".to_string())]
        );
        // A network on another physicalNet cannot overlap red: red is not checked again.
        let green = ln("green", "p2", "10.1.0.0/24");
        lookup.add_logical_network(green.clone());
        let r = memo.update(&[Arc::new(red.clone()), Arc::new(green)], &dynamic);
        assert_eq!(r, vec![Some("planted".to_string()), None]);
        // Another network on red's physicalNet: red is checked again.
        let blue = ln("blue", "p1", "10.1.0.0/16");
        lookup.add_logical_network(blue.clone());
        let r = memo.update(&[Arc::new(red.clone()), Arc::new(blue.clone())], &dynamic);
        assert!(
            r.iter()
                .all(|x| x.as_deref().is_some_and(|m| m.contains("overlaps"))),
            "{r:?}"
        );
        // The NAD spec.plugin names appears: red is checked again.
        if let Some(e) = memo.entries.get_mut(&key) {
            e.1 = Some("planted".into());
        }
        let mut nad: vfkube::objects::NetworkAttachmentDefinition = serde_json::from_value(json!({
            "metadata": {"name": "bridge", "namespace": "a", "uid": "n1", "resourceVersion": "1"},
            "spec": {"config": ""}}))
        .unwrap();
        lookup.add_nad(nad.clone());
        let r = memo.update(&[Arc::new(red.clone()), Arc::new(blue.clone())], &dynamic);
        assert_ne!(r[0].as_deref(), Some("planted"));
        nad.metadata.resource_version = "2".into();
        lookup.add_nad(nad);
        assert_eq!(memo.update(&[Arc::new(red), Arc::new(blue)], &dynamic), r);
    }

    #[test]
    fn pods_count_once_per_network_of_their_own_namespace() {
        let status = |names: &[&str]| {
            let list: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
            BTreeMap::from([(NETWORK_STATUS.to_string(), Value::from(list).to_string())])
        };
        let p1 = status(&["cbr0", "a/red", "a/red", "a/blue"]);
        let p2 = status(&["a/red", "b/red"]);
        let p3 = BTreeMap::from([(NETWORK_STATUS.to_string(), "not json".to_string())]);
        let p4 = BTreeMap::new();
        let counts = attachment_counts([("a", &p1), ("a", &p2), ("a", &p3), ("b", &p4)]);
        let key = |n: &str| ("a".to_string(), n.to_string());
        assert_eq!(counts.get(&key("red")), Some(&2));
        assert_eq!(counts.get(&key("blue")), Some(&1));
        assert_eq!(counts.len(), 2, "{counts:?}");
    }
}
