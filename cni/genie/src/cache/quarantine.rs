//! The quarantine: what a DEL could not read or act on, moved aside into `<dir>/quarantine/`
//! instead of failing that DEL forever (a pod whose DEL fails stays Terminating).
//!
//! - `<containerID>-<ifname>.<stamp>.json`: a pod record holding the attachments whose DEL could
//!   not run (a plugin binary gone, a recorded config or result that cannot be used). It is a
//!   normal pod record, so it can be replayed: GC runs its DELs again once its plugins are back
//!   and removes it when they succeed.
//! - `<containerID>-<ifname>.<stamp>.corrupt`: a pod record that could not be read at all, moved
//!   here by rename exactly as it was, for an operator. Nothing can be replayed from it.
//! - `<name>.reason`: why, one line of text, beside each of the above.
//! - `.suspect-<containerID>-<ifname>`: a DEL met this attachment's record corrupt once and
//!   failed; the next DEL that finds it still corrupt quarantines it.
//!
//! Files are 0600 in a 0700 directory; a record is written before its reason counts as complete
//! (the reason goes first, the record is renamed into place last), so a listed record is whole.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    decode_pod, ensure_dir, io, read_if_exists, remove_if_exists, sync_dir, write_atomic, CacheDir,
    CacheError, PodKey, PodRecord, TEMP_COUNTER,
};

const QUARANTINE_DIR: &str = "quarantine";
const RECORD_SUFFIX: &str = ".json";
const CORRUPT_SUFFIX: &str = ".corrupt";
const REASON_SUFFIX: &str = ".reason";
const SUSPECT_PREFIX: &str = ".suspect-";

/// One quarantined entry.
#[derive(Debug)]
pub struct Quarantined {
    pub path: PathBuf,
    /// The reason recorded beside it (empty when its reason file is missing).
    pub reason: String,
    /// The attachments kept for replay; `None` for a record kept as it was because it could not
    /// be read.
    pub record: Option<Result<PodRecord, CacheError>>,
}

impl Quarantined {
    /// The pod record to replay, when this entry has one that reads.
    pub fn replayable(&self) -> Option<&PodRecord> {
        match &self.record {
            Some(Ok(r)) => Some(r),
            _ => None,
        }
    }
}

impl CacheDir {
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join(QUARANTINE_DIR)
    }

    fn quarantine_name(key: &PodKey, suffix: &str) -> String {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!(
            "{}-{}.{stamp}-{}-{}{suffix}",
            key.container_id,
            key.ifname,
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn write_reason(&self, name: &str, reason: &str) -> Result<(), CacheError> {
        let mut text = reason.replace('\n', " ");
        text.push('\n');
        write_atomic(
            &self.quarantine_dir(),
            &format!("{name}{REASON_SUFFIX}"),
            text.as_bytes(),
        )
    }

    /// Moves the pod record of `key` into the quarantine as it is (a rename), with `reason`
    /// beside it; returns where it went.
    pub fn quarantine_pod_file(&self, key: &PodKey, reason: &str) -> Result<PathBuf, CacheError> {
        let dir = self.quarantine_dir();
        ensure_dir(&dir)?;
        let name = Self::quarantine_name(key, CORRUPT_SUFFIX);
        self.write_reason(&name, reason)?;
        let from = self.pod_path(key);
        let to = dir.join(&name);
        if let Err(e) = fs::rename(&from, &to) {
            let _ = fs::remove_file(dir.join(format!("{name}{REASON_SUFFIX}")));
            return Err(io("moving into the quarantine", &from)(e));
        }
        fs::set_permissions(&to, fs::Permissions::from_mode(0o600))
            .map_err(io("restricting", &to))?;
        sync_dir(&dir)?;
        if let Some(pods) = from.parent() {
            sync_dir(pods)?;
        }
        Ok(to)
    }

    /// Writes `record` (the attachments a DEL could not act on) into the quarantine with
    /// `reason` beside it; returns where it went. The caller removes or narrows the pod record
    /// only after this succeeded.
    pub fn quarantine_attachments(
        &self,
        record: &PodRecord,
        reason: &str,
    ) -> Result<PathBuf, CacheError> {
        let key = record.key()?;
        let dir = self.quarantine_dir();
        let name = Self::quarantine_name(&key, RECORD_SUFFIX);
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| CacheError::Encode {
            path: dir.join(&name),
            source,
        })?;
        self.write_reason(&name, reason)?;
        write_atomic(&dir, &name, &bytes)?;
        Ok(dir.join(name))
    }

    /// Every quarantined entry, oldest name first (one unreadable file does not hide the rest).
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, CacheError> {
        let dir = self.quarantine_dir();
        let mut out = Vec::new();
        for path in entries(&dir)? {
            let reason = read_if_exists(&reason_path(&path))
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            let record = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => match read_if_exists(&path) {
                    Ok(Some(bytes)) => Some(decode_pod(&path, &bytes)),
                    Ok(None) => continue,
                    Err(e) => Some(Err(e)),
                },
                _ => None,
            };
            out.push(Quarantined {
                path,
                reason,
                record,
            });
        }
        Ok(out)
    }

    /// How many records (whole or in part) are in the quarantine: a node metric.
    pub fn quarantined_count(&self) -> Result<usize, CacheError> {
        Ok(entries(&self.quarantine_dir())?.len())
    }

    /// After a replay: `record` holds what is still left of the quarantined entry at `path`; the
    /// entry is removed (with its reason) when nothing is left, else narrowed to it.
    pub fn update_quarantined(&self, path: &Path, record: &PodRecord) -> Result<(), CacheError> {
        let dir = self.quarantine_dir();
        if path.parent() != Some(dir.as_path()) {
            return Err(CacheError::InvalidName {
                what: "quarantine entry",
                value: path.display().to_string(),
                reason: format!("it is not in {}", dir.display()),
            });
        }
        if record.attachments.is_empty() {
            remove_if_exists(path)?;
            return remove_if_exists(&reason_path(path));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| CacheError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
        write_atomic(&dir, &name, &bytes)
    }

    fn suspect_path(&self, key: &PodKey) -> PathBuf {
        self.quarantine_dir().join(format!(
            "{SUSPECT_PREFIX}{}-{}",
            key.container_id, key.ifname
        ))
    }

    /// Notes that a DEL found the record of `key` corrupt (and failed).
    pub fn mark_suspect(&self, key: &PodKey, reason: &str) -> Result<(), CacheError> {
        let path = self.suspect_path(key);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        write_atomic(&self.quarantine_dir(), &name, reason.as_bytes())
    }

    /// Whether an earlier DEL found the record of `key` corrupt.
    pub fn is_suspect(&self, key: &PodKey) -> bool {
        self.suspect_path(key).is_file()
    }

    pub fn clear_suspect(&self, key: &PodKey) -> Result<(), CacheError> {
        remove_if_exists(&self.suspect_path(key))
    }
}

fn reason_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(REASON_SUFFIX);
    PathBuf::from(s)
}

/// The quarantined records in `dir` (not their reasons, markers or temp files), sorted.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, CacheError> {
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry.map_err(io("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if name.ends_with(RECORD_SUFFIX) || name.ends_with(CORRUPT_SUFFIX) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::cache::PodAttachment;
    use serde_json::json;

    fn record(cid: &str, networks: &[&str]) -> PodRecord {
        let key = PodKey::new(cid, "eth0").unwrap();
        let mut r = PodRecord::new(&key, "/run/netns/x");
        r.attachments = networks
            .iter()
            .map(|n| PodAttachment {
                network: n.to_string(),
                if_name: "net1".into(),
                conf: json!({"cniVersion": "1.0.0", "name": n, "type": "gone"}),
                result: Some(json!({"cniVersion": "1.0.0"})),
                extra: Default::default(),
            })
            .collect();
        r
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_corrupt_record_is_moved_aside_with_its_reason() {
        let d = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(d.path());
        let key = PodKey::new("c1", "eth0").unwrap();
        cache.write_pod(&record("c1", &["a"])).unwrap();
        fs::write(cache.pod_path(&key), b"{ not json").unwrap();
        fs::set_permissions(cache.pod_path(&key), fs::Permissions::from_mode(0o644)).unwrap();
        let to = cache.quarantine_pod_file(&key, "it is not JSON").unwrap();
        assert!(!cache.pod_path(&key).exists());
        assert_eq!(fs::read(&to).unwrap(), b"{ not json");
        assert_eq!(mode(&to), 0o600);
        assert_eq!(mode(&cache.quarantine_dir()), 0o700);
        let listed = cache.quarantined().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, to);
        assert_eq!(listed[0].reason, "it is not JSON");
        assert!(listed[0].record.is_none() && listed[0].replayable().is_none());
        assert_eq!(cache.quarantined_count().unwrap(), 1);
    }

    #[test]
    fn quarantined_attachments_can_be_listed_narrowed_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(d.path());
        assert_eq!(cache.quarantined_count().unwrap(), 0);
        let r = record("c2", &["a", "b"]);
        let p = cache
            .quarantine_attachments(&r, "plugin \"gone\" is missing")
            .unwrap();
        assert_eq!(mode(&p), 0o600);
        let listed = cache.quarantined().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].replayable(), Some(&r));
        assert!(listed[0].reason.contains("gone"));
        let mut left = r.clone();
        left.attachments.remove(0);
        cache.update_quarantined(&p, &left).unwrap();
        assert_eq!(cache.quarantined().unwrap()[0].replayable(), Some(&left));
        left.attachments.clear();
        cache.update_quarantined(&p, &left).unwrap();
        assert_eq!(cache.quarantined_count().unwrap(), 0);
        assert_eq!(fs::read_dir(cache.quarantine_dir()).unwrap().count(), 0);
        // Only entries of the quarantine itself.
        let e = cache
            .update_quarantined(&d.path().join("elsewhere.json"), &left)
            .unwrap_err();
        assert!(e.to_string().contains("quarantine"), "{e}");
    }

    #[test]
    fn suspects_are_marked_and_cleared() {
        let d = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(d.path());
        let key = PodKey::new("c3", "eth0").unwrap();
        assert!(!cache.is_suspect(&key));
        cache.mark_suspect(&key, "corrupt").unwrap();
        assert!(cache.is_suspect(&key));
        assert_eq!(cache.quarantined_count().unwrap(), 0);
        cache.clear_suspect(&key).unwrap();
        assert!(!cache.is_suspect(&key));
    }
}
