//! The stand-in's object store: every kind it serves, one global resourceVersion that every
//! create, update and delete moves on (as etcd's revision), and an event log a watch replays from.
//!
//! Compaction only moves a mark: a watch or a paginated list asking for a revision before it is
//! told 410 Expired, while watches already running keep their events (as etcd's do).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tokio::sync::watch;

/// One kind the stand-in serves.
#[derive(Debug)]
pub(super) struct Resource {
    pub group: &'static str,
    /// Every version served; objects are shared between them (the stored apiVersion is rewritten
    /// to the one asked for, as a conversion that changes nothing).
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `status` subresource: writes of the object keep the stored status, writes of
    /// `.../status` change nothing but the status.
    pub status: bool,
}

pub(super) const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        versions: &["v1"],
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        status: true,
    },
    Resource {
        group: "",
        versions: &["v1"],
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        status: false,
    },
    Resource {
        group: "",
        versions: &["v1"],
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        status: true,
    },
    Resource {
        group: "",
        versions: &["v1"],
        plural: "events",
        kind: "Event",
        namespaced: true,
        status: false,
    },
    Resource {
        group: "k8s.cni.cncf.io",
        versions: &["v1"],
        plural: "network-attachment-definitions",
        kind: "NetworkAttachmentDefinition",
        namespaced: true,
        status: false,
    },
    Resource {
        group: "alpha.network.k8s.io",
        versions: &["v1"],
        plural: "logicalnetworks",
        kind: "LogicalNetwork",
        namespaced: true,
        status: true,
    },
    Resource {
        group: "networking.k8s.io",
        versions: &["v1"],
        plural: "networkpolicies",
        kind: "NetworkPolicy",
        namespaced: true,
        status: false,
    },
    Resource {
        group: "k8s.cni.cncf.io",
        versions: &["v1beta1", "v1beta2"],
        plural: "multi-networkpolicies",
        kind: "MultiNetworkPolicy",
        namespaced: true,
        status: false,
    },
];

impl Resource {
    pub fn by_plural(plural: &str) -> Option<&'static Resource> {
        RESOURCES.iter().find(|r| r.plural == plural)
    }

    pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
    }

    /// The kind an object names with its apiVersion and kind.
    pub fn of(object: &Value) -> Option<&'static Resource> {
        let api_version = object["apiVersion"].as_str()?;
        let kind = object["kind"].as_str()?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.kind == kind && r.versions.contains(&version))
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The object as served at `version`.
    pub fn present(&self, version: &str, object: &Value) -> Value {
        let mut out = object.clone();
        out["apiVersion"] = json!(self.api_version(version));
        out["kind"] = json!(self.kind);
        out
    }
}

/// (plural, namespace — empty for cluster-scoped kinds —, name).
pub(super) type Key = (&'static str, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, at its revision.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub rv: u64,
    pub key: Key,
    pub kind: EventType,
    /// The object after the change; for a deletion the last state with the deletion's revision.
    pub object: Value,
    /// The object before the change (none for an addition).
    pub prev: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StoreError {
    NotFound,
    AlreadyExists,
    /// The object's resourceVersion is not the stored one.
    Conflict,
    Invalid(String),
    /// The revision asked for is before the compaction mark.
    Expired {
        asked: u64,
        oldest: u64,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound => write!(f, "not found"),
            StoreError::AlreadyExists => write!(f, "already exists"),
            StoreError::Conflict => write!(f, "the object has been modified"),
            StoreError::Invalid(m) => write!(f, "invalid: {m}"),
            StoreError::Expired { asked, oldest } => {
                write!(f, "too old resource version: {asked} ({oldest})")
            }
        }
    }
}

pub(super) struct Store {
    objects: BTreeMap<Key, Value>,
    log: Vec<Event>,
    revision: u64,
    /// Revisions at or before this one are gone for new watches and lists.
    compacted: u64,
    changed: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            log: Vec::new(),
            revision: 0,
            compacted: 0,
            changed: watch::channel(0).0,
        }
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or("")
}

/// The key of `object` of kind `res` (its name and, for a namespaced kind, namespace).
pub(super) fn key_of(res: &'static Resource, object: &Value) -> Result<Key, StoreError> {
    let name = meta_str(object, "name");
    if name.is_empty() {
        return Err(StoreError::Invalid("metadata.name is required".into()));
    }
    let ns = if res.namespaced {
        let ns = meta_str(object, "namespace");
        if ns.is_empty() {
            return Err(StoreError::Invalid("metadata.namespace is required".into()));
        }
        ns
    } else {
        ""
    };
    Ok((res.plural, ns.to_string(), name.to_string()))
}

impl Store {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Told of every new revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// The one mutation: `new` replaces (or, `None`, deletes) what is stored at `key`, at the next
    /// revision, logged. Returns the stored object (for a deletion, the deleted one).
    pub fn commit(&mut self, key: Key, new: Option<Value>) -> Option<Value> {
        let prev = self.objects.get(&key).cloned();
        if prev.is_none() && new.is_none() {
            return None;
        }
        self.revision += 1;
        let rv = json!(self.revision.to_string());
        let (kind, object) = match new {
            Some(mut object) => {
                object["metadata"]["resourceVersion"] = rv;
                self.objects.insert(key.clone(), object.clone());
                let kind = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (kind, object)
            }
            None => {
                self.objects.remove(&key);
                let mut object = prev.clone().unwrap_or(Value::Null);
                object["metadata"]["resourceVersion"] = rv;
                (EventType::Deleted, object)
            }
        };
        self.log.push(Event {
            rv: self.revision,
            key,
            kind,
            object: object.clone(),
            prev,
        });
        self.changed.send_replace(self.revision);
        Some(object)
    }

    /// Stores a new object; a missing uid is made up.
    pub fn create(
        &mut self,
        res: &'static Resource,
        mut object: Value,
    ) -> Result<Value, StoreError> {
        let key = key_of(res, &object)?;
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        if meta_str(&object, "uid").is_empty() {
            object["metadata"]["uid"] = json!(format!("uid-{}-{}", res.plural, self.revision + 1));
        }
        Ok(self.commit(key, Some(object)).unwrap_or(Value::Null))
    }

    /// Replaces a stored object. A resourceVersion in `object` must be the stored one; the uid
    /// stays; with `keep_status`, so does the stored status.
    pub fn replace(
        &mut self,
        res: &'static Resource,
        mut object: Value,
        keep_status: bool,
    ) -> Result<Value, StoreError> {
        let key = key_of(res, &object)?;
        let stored = self.objects.get(&key).ok_or(StoreError::NotFound)?;
        let sent_rv = meta_str(&object, "resourceVersion");
        if !sent_rv.is_empty() && sent_rv != meta_str(stored, "resourceVersion") {
            return Err(StoreError::Conflict);
        }
        object["metadata"]["uid"] = stored["metadata"]["uid"].clone();
        if keep_status {
            match stored.get("status") {
                Some(s) => object["status"] = s.clone(),
                None => {
                    if let Some(o) = object.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        Ok(self.commit(key, Some(object)).unwrap_or(Value::Null))
    }

    pub fn delete(&mut self, key: Key) -> Result<Value, StoreError> {
        self.commit(key, None).ok_or(StoreError::NotFound)
    }

    /// Moves the compaction mark to now.
    pub fn compact(&mut self) -> u64 {
        self.compacted = self.revision;
        self.compacted
    }

    /// Fails for a revision the compaction dropped.
    pub fn check(&self, rv: u64) -> Result<(), StoreError> {
        if rv < self.compacted {
            Err(StoreError::Expired {
                asked: rv,
                oldest: self.compacted,
            })
        } else {
            Ok(())
        }
    }

    /// The objects of `plural` (in `namespace`, or all) as they were at revision `at`, in key
    /// order: the stored ones with every later change undone.
    pub fn snapshot(
        &self,
        plural: &str,
        namespace: Option<&str>,
        at: u64,
    ) -> Result<BTreeMap<Key, Value>, StoreError> {
        self.check(at)?;
        let wanted = |k: &Key| k.0 == plural && namespace.is_none_or(|ns| k.1 == ns);
        let mut out: BTreeMap<Key, Value> = self
            .objects
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for e in self.after(at).iter().rev() {
            if !wanted(&e.key) {
                continue;
            }
            match &e.prev {
                Some(prev) => out.insert(e.key.clone(), prev.clone()),
                None => out.remove(&e.key),
            };
        }
        Ok(out)
    }

    /// Every logged change after revision `rv`.
    pub fn after(&self, rv: u64) -> &[Event] {
        let start = self.log.partition_point(|e| e.rv <= rv);
        &self.log[start..]
    }
}
