//! Crash-safe records of what was attached, so DEL and GC work from the node alone.
//!
//! - `<dir>/vfgenie/<containerID>-<ifname>.json`: the meta-plugin's record of one pod attachment
//!   (every delegate in order, with its config and result).
//!
//! - `<dir>/locks/<containerID>-<ifname>.lock`: the attachment's lock ([`lock`]).
//! - `<dir>/quarantine/`: records, or parts of records, that DEL could not read or act on
//!   ([`quarantine`]).
//!
//! Files are written atomically (a temp file in the same directory, fsync, rename, fsync of the
//! directory), mode 0600 in directories of mode 0700. Reading a missing record is `Ok(None)`; a
//! record that exists but cannot be read is an error, never "nothing to delete" (a path that is
//! not a regular file, or a file over [`crate::bounded::RECORD_MAX`], is a corrupt record).
//! Removals are not synced: a record that a power loss brings back is deleted again, harmlessly.

pub mod lock;
pub mod quarantine;

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::env::{validate_container_id, validate_ifname};

/// Our pod record kind.
pub const POD_RECORD_V1: &str = "vfgeniePodV1";

const PODS_DIR: &str = "vfgenie";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a cache operation failed (its CNI code is picked at genie's boundary,
/// [`crate::genie::error`]).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache key {what} {value:?} is refused: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{op} {} failed", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache record {} is corrupt: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("encoding cache record {} failed", .path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the attachment of container {container_id} ({ifname}) is busy: another ADD, DEL or CHECK of it, or a delegate one of them started, held its lock for {waited:?}")]
    Busy {
        container_id: String,
        ifname: String,
        waited: std::time::Duration,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io { op, path, source }
}

/// The key of a pod record: the runtime's container ID and the meta-plugin's CNI_IFNAME.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub container_id: String,
    pub ifname: String,
}

impl PodKey {
    pub fn new(
        container_id: impl Into<String>,
        ifname: impl Into<String>,
    ) -> Result<Self, CacheError> {
        let key = Self {
            container_id: container_id.into(),
            ifname: ifname.into(),
        };
        validate_container_id(&key.container_id).map_err(|e| CacheError::InvalidName {
            what: "container ID",
            value: key.container_id.clone(),
            reason: e.msg,
        })?;
        validate_ifname(&key.ifname).map_err(|e| CacheError::InvalidName {
            what: "interface name",
            value: key.ifname.clone(),
            reason: e.msg,
        })?;
        Ok(key)
    }

    fn file_name(&self) -> String {
        format!("{}-{}.json", self.container_id, self.ifname)
    }
}

/// The meta-plugin's record of one pod: what it attached, in order, so DEL can undo it all
/// without the API server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(default)]
    pub netns: String,
    #[serde(
        rename = "podNamespace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pod_namespace: Option<String>,
    #[serde(rename = "podName", default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(rename = "podUid", default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// In attach order; DEL walks it backwards.
    pub attachments: Vec<PodAttachment>,
}

/// One delegate attachment of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodAttachment {
    /// The network's name (the conflist `name`), or `namespace/name` for a NAD.
    pub network: String,
    #[serde(rename = "ifName")]
    pub if_name: String,
    /// The config as delegated (a conf or a conflist, after injection).
    pub conf: Value,
    /// The delegate's result as returned, when ADD got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Anything else the flow needs to undo this attachment (device IDs, capability args, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl PodRecord {
    pub fn new(key: &PodKey, netns: impl Into<String>) -> Self {
        Self {
            kind: POD_RECORD_V1.to_string(),
            container_id: key.container_id.clone(),
            if_name: key.ifname.clone(),
            netns: netns.into(),
            pod_namespace: None,
            pod_name: None,
            pod_uid: None,
            attachments: Vec::new(),
        }
    }

    pub fn key(&self) -> Result<PodKey, CacheError> {
        PodKey::new(&self.container_id, &self.if_name)
    }
}

/// One entry of a listing: where it is and what reading it gave.
#[derive(Debug)]
pub struct Listed<T> {
    pub path: PathBuf,
    pub record: Result<T, CacheError>,
}

/// A cache directory (`/var/lib/cni` by default, as libcni's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDir {
    root: PathBuf,
}

impl CacheDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn pods_dir(&self) -> PathBuf {
        self.root.join(PODS_DIR)
    }

    pub fn pod_path(&self, key: &PodKey) -> PathBuf {
        self.pods_dir().join(key.file_name())
    }

    pub fn write_pod(&self, record: &PodRecord) -> Result<(), CacheError> {
        let key = record.key()?;
        let bytes = self.encode_pod(&key, record)?;
        write_atomic(&self.pods_dir(), &key.file_name(), &bytes)
    }

    /// [`write_pod`](Self::write_pod) up to the rename; the fsync of the directory, which makes
    /// the rename itself durable, runs on a thread of its own meanwhile. The record is whole and
    /// in place for every process when this returns (a process killed later leaves it behind for
    /// DEL); only a power loss before [`DirSync::wait`] returns can lose the rename.
    pub fn write_pod_syncing(&self, record: &PodRecord) -> Result<DirSync, CacheError> {
        let key = record.key()?;
        let bytes = self.encode_pod(&key, record)?;
        replace(&self.pods_dir(), &key.file_name(), &bytes)?;
        Ok(DirSync::start(self.pods_dir()))
    }

    fn encode_pod(&self, key: &PodKey, record: &PodRecord) -> Result<Vec<u8>, CacheError> {
        serde_json::to_vec_pretty(record).map_err(|source| CacheError::Encode {
            path: self.pod_path(key),
            source,
        })
    }

    pub fn read_pod(&self, key: &PodKey) -> Result<Option<PodRecord>, CacheError> {
        let path = self.pod_path(key);
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        let record = decode_pod(&path, &bytes)?;
        if record.key().ok().as_ref() != Some(key) {
            return Err(CacheError::Corrupt {
                path,
                reason: format!(
                    "it names container {} ifname {} instead",
                    record.container_id, record.if_name
                ),
            });
        }
        Ok(Some(record))
    }

    /// Removes the pod's record, and the temporary files of writers of this record that were
    /// killed before their rename (the caller holds the pod's lock, so no writer of it is alive).
    pub fn remove_pod(&self, key: &PodKey) -> Result<(), CacheError> {
        remove_if_exists(&self.pod_path(key))?;
        vfcore::tempfiles::remove_killed_writers(&self.pods_dir(), &key.file_name())
            .map(drop)
            .map_err(|(tmp, e)| io("removing", &tmp)(e))
    }

    pub fn list_pods(&self) -> Result<Vec<Listed<PodRecord>>, CacheError> {
        list(&self.pods_dir(), decode_pod, |r| {
            r.key().ok().map(|k| k.file_name())
        })
    }
}

fn decode_pod(path: &Path, bytes: &[u8]) -> Result<PodRecord, CacheError> {
    let r: PodRecord = serde_json::from_slice(bytes).map_err(|e| CacheError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if r.kind != POD_RECORD_V1 {
        return Err(CacheError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("kind {:?} is not {POD_RECORD_V1:?}", r.kind),
        });
    }
    Ok(r)
}

fn ensure_dir(dir: &Path) -> Result<(), CacheError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating directory", dir))
}

fn sync_dir(dir: &Path) -> Result<(), CacheError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Temp file in `dir`, write, fsync, rename over `name`, fsync `dir`.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
    replace(dir, name, bytes)?;
    sync_dir(dir)
}

/// Temp file in `dir`, write, fsync, rename over `name`: the file is whole (its data on disk
/// before it takes the name) and in place for every process; the rename is durable once `dir` is
/// synced.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CacheError> {
    ensure_dir(dir)?;
    let target = dir.join(name);
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        fs::rename(&tmp, &target).map_err(io("renaming into place", &target))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// The fsync of a record's directory, running on a thread of its own (see
/// [`CacheDir::write_pod_syncing`]).
#[must_use = "wait for the directory's fsync before relying on the rename being durable"]
pub struct DirSync {
    dir: PathBuf,
    syncing: std::thread::JoinHandle<Result<(), CacheError>>,
}

impl DirSync {
    fn start(dir: PathBuf) -> Self {
        let d = dir.clone();
        Self {
            dir,
            syncing: std::thread::spawn(move || sync_dir(&d)),
        }
    }

    /// Waits for the fsync and returns its outcome.
    pub fn wait(self) -> Result<(), CacheError> {
        self.syncing.join().unwrap_or_else(|_| {
            Err(io("syncing directory", &self.dir)(std::io::Error::other(
                "the syncing thread panicked",
            )))
        })
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
    match crate::bounded::read(path, crate::bounded::RECORD_MAX) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        // Not a regular file, or too large: nothing a record can be.
        Err(e) if e.kind() == ErrorKind::InvalidData => Err(CacheError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Removes `path`. The removal is not synced: a record that a power loss brings back only makes
/// the next DEL or GC run its (idempotent) DELs again.
fn remove_if_exists(path: &Path) -> Result<(), CacheError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path)(e)),
    }
}

/// Reads every record in `dir`; a record whose content does not name its own file is corrupt.
fn list<T>(
    dir: &Path,
    decode: impl Fn(&Path, &[u8]) -> Result<T, CacheError>,
    file_name_of: impl Fn(&T) -> Option<String>,
) -> Result<Vec<Listed<T>>, CacheError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("listing", dir))?;
        let name = entry.file_name();
        // Temp files of writes in progress (or of a crash) start with '.'.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let record = match read_if_exists(&path) {
            Ok(Some(bytes)) => decode(&path, &bytes).and_then(|r| {
                if file_name_of(&r).as_deref() == Some(&*name.to_string_lossy()) {
                    Ok(r)
                } else {
                    Err(CacheError::Corrupt {
                        path: path.clone(),
                        reason: "its content names another attachment".to_string(),
                    })
                }
            }),
            // Removed since the listing: not an entry any more.
            Ok(None) => continue,
            Err(e) => Err(e),
        };
        out.push(Listed { path, record });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests;
