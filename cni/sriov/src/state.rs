//! The plugin's state on the node, under the state dir (the node's: see [`super::node`]; default
//! `/var/lib/cni/vfgenie/sriov`):
//!
//! - `locks/<pci>.lock`: one lock file per VF, held with `flock(LOCK_EX)` for the whole of an ADD,
//!   DEL or CHECK of that VF. Lock files are never removed (removing one would let two processes
//!   hold "the" lock on different inodes).
//! - `attachments/<containerID>-<ifname>.json`: one record per attachment. ADD writes it *before*
//!   changing anything (the intent: the VF's original PF-side state and netdev), rewrites it when
//!   done (with the result), and DEL removes it after restoring the VF. Written atomically
//!   (`.<record>.tmp.<pid>` renamed into place); DEL also removes the temp files of writers that
//!   were killed before their rename.
//! - `quarantine/<containerID>-<ifname>.json.<secs>.<nanos>.<pid>`: records that could not be read
//!   or parsed when all of them were listed (ADD's holder check, GC), moved aside (one rename) and
//!   logged at error level, so that one bad file does not stop every ADD and GC on the node. An
//!   admin may inspect them and remove them.
//!
//! A record is the only thing DEL needs: it names the VF, the pod's netns, the temporary netns,
//! the original state to restore and the config whose IPAM must release the address.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use vfcore::PciAddress;

pub use super::record::{Applied, Mode, Record, SavedNetdev, SavedVf, Stage, RECORD_KIND};

const LOCKS_DIR: &str = "locks";
const ATTACHMENTS_DIR: &str = "attachments";
const QUARANTINE_DIR: &str = "quarantine";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {} failed", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sriov state record {} is corrupt: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("VF {pci} is busy: another ADD or DEL of it did not finish within {timeout:?}")]
    LockTimeout { pci: PciAddress, timeout: Duration },
    /// A container ID or interface name that cannot be part of a file name (CNI code 4).
    #[error("{what} {name:?} cannot name a state record")]
    BadName { what: &'static str, name: String },
    #[error("encoding the sriov state record")]
    Encode(#[source] serde_json::Error),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// An exclusive lock on one VF, released on drop.
#[derive(Debug)]
pub struct VfLock {
    _lock: Flock<File>,
}

fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating directory", dir))
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

/// Checks a file-name part (container ID or ifname) before it goes into a path.
fn plain(what: &'static str, s: &str) -> Result<(), StateError> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(StateError::BadName {
            what,
            name: s.to_string(),
        });
    }
    Ok(())
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn record_path(&self, container_id: &str, ifname: &str) -> Result<PathBuf, StateError> {
        plain("the container ID", container_id)?;
        plain("the interface name", ifname)?;
        Ok(self
            .root
            .join(ATTACHMENTS_DIR)
            .join(format!("{container_id}-{ifname}.json")))
    }

    /// Takes the VF's lock, waiting at most `timeout`.
    pub fn lock(&self, pci: &PciAddress, timeout: Duration) -> Result<VfLock, StateError> {
        let dir = self.root.join(LOCKS_DIR);
        ensure_dir(&dir)?;
        let path = dir.join(format!("{pci}.lock"));
        let deadline = Instant::now() + timeout;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("opening lock file", &path))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(VfLock { _lock: lock }),
                Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                    if Instant::now() >= deadline {
                        return Err(StateError::LockTimeout { pci: *pci, timeout });
                    }
                    file = f;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((_, errno)) => {
                    return Err(StateError::Io {
                        op: "locking",
                        path,
                        source: std::io::Error::from_raw_os_error(errno as i32),
                    })
                }
            }
        }
    }

    /// Writes a record atomically: temp file, fsync, rename, fsync of the directory.
    pub fn write(&self, record: &Record) -> Result<(), StateError> {
        let path = self.record_path(&record.container_id, &record.ifname)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(StateError::Encode)?;
        let dir = self.root.join(ATTACHMENTS_DIR);
        ensure_dir(&dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp.{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("creating", &tmp))?;
            f.write_all(&bytes).map_err(io("writing", &tmp))?;
            f.sync_all().map_err(io("syncing", &tmp))?;
            fs::rename(&tmp, &path).map_err(io("renaming into place", &path))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        sync_dir(&dir)
    }

    /// The record of an attachment; `None` when there is none. A record that exists but cannot
    /// be read is an error, never "nothing to delete".
    pub fn read(&self, container_id: &str, ifname: &str) -> Result<Option<Record>, StateError> {
        let path = self.record_path(container_id, ifname)?;
        read_record(&path)
    }

    /// Removes the attachment's record, and the temporary files of writers of this record that
    /// were killed before their rename (`.<record>.tmp.<pid>`). Only the runtime's ADD of this
    /// container and interface writes this record, and the runtime never runs it alongside a DEL
    /// or GC of the same attachment, so no writer of these files is alive.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), StateError> {
        let path = self.record_path(container_id, ifname)?;
        let dir = self.root.join(ATTACHMENTS_DIR);
        let mut removed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(io("removing", &path)(e)),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let temps = vfcore::tempfiles::remove_killed_writers(&dir, name)
            .map_err(|(tmp, e)| io("removing", &tmp)(e))?;
        for tmp in &temps {
            tracing::info!(path = %tmp.display(), "removed the temporary file of a record writer that did not finish");
        }
        removed |= !temps.is_empty();
        if removed {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// `<state dir>/quarantine`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join(QUARANTINE_DIR)
    }

    /// Every readable record (for the holder check and GC), sorted by path. A record that cannot
    /// be read or parsed is moved into quarantine ([`Self::quarantine`]) and left out.
    pub fn list(&self) -> Result<Vec<Record>, StateError> {
        let dir = self.root.join(ATTACHMENTS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("listing", &dir)(e)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("listing", &dir))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            paths.push(entry.path());
        }
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            match read_record(&p) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    self.quarantine(&p, &e);
                }
            }
        }
        Ok(out)
    }

    /// Moves an unreadable record (`why`) into `<state dir>/quarantine/` under its name with a
    /// timestamp suffix, in one rename; logs it at error level. Returns where it went, `None`
    /// when it could not be moved (logged too) or another process moved it first.
    pub fn quarantine(&self, path: &Path, why: &StateError) -> Option<PathBuf> {
        let reason = super::device::chain(why);
        let dir = self.quarantine_dir();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let to = dir.join(format!(
            "{name}.{}.{:09}.{}",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id()
        ));
        let moved = ensure_dir(&dir)
            .and_then(|()| fs::rename(path, &to).map_err(io("moving into quarantine", path)));
        match moved {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    let _ = sync_dir(parent);
                }
                let _ = sync_dir(&dir);
                tracing::error!(
                    path = %path.display(),
                    quarantined = %to.display(),
                    reason = %reason,
                    "an sriov state record could not be read; moved into quarantine, the others go on"
                );
                Some(to)
            }
            Err(StateError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "an unreadable record was moved by another process");
                None
            }
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    reason = %reason,
                    error = %super::device::chain(&e),
                    "an sriov state record could not be read nor moved into quarantine; skipped"
                );
                None
            }
        }
    }
}

fn read_record(path: &Path) -> Result<Option<Record>, StateError> {
    let bytes = match crate::bounded::read(path, crate::bounded::RECORD_MAX) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", path)(e)),
    };
    let r: Record = serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if r.kind != RECORD_KIND {
        return Err(StateError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("kind {:?} is not {RECORD_KIND:?}", r.kind),
        });
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vfcore::netlink::{VfConfig, VfSettings, VlanProto};
    use vfcore::{MacAddr, VfIndex};

    fn original() -> VfConfig {
        crate::record::untouched_vf(2, MacAddr::ZERO)
    }

    pub(crate) fn record(cid: &str, pci: &str) -> Record {
        let applied = VfSettings {
            mac: Some("02:00:00:00:00:01".parse().unwrap()),
            vlan: Some(100),
            qos: Some(0),
            vlan_proto: Some(VlanProto::Dot1Q),
            spoofchk: Some(false),
            ..VfSettings::default()
        };
        Record {
            kind: RECORD_KIND.into(),
            container_id: cid.into(),
            ifname: "net1".into(),
            netns: "/run/netns/pod".into(),
            cni_args: "IgnoreUnknown=1".into(),
            network: Some("sriov-a".into()),
            pci: pci.parse().unwrap(),
            pf: "0000:01:00.0".parse().unwrap(),
            vf: VfIndex(2),
            mode: Mode::Netdev,
            stage: Stage::Intent,
            original_vf: SavedVf::from_config(&original()),
            original_netdev: Some(SavedNetdev {
                name: "eth3".into(),
                mac: Some("52:54:00:11:22:33".parse().unwrap()),
                mtu: 1500,
                up: false,
                alt_names: vec!["enp1s0f0v2".into()],
            }),
            applied: Applied::new(&applied, Some(1400)),
            temp_netns: Some("vfgenie-sriov-x".into()),
            device_info_file: None,
            config: json!({"type": "sriov", "ipam": {"type": "host-local"}}),
            ipam_config: Some(json!({"cniVersion": "1.0.0", "ipam": {"type": "host-local"}})),
            result: None,
        }
    }

    /// Every object key of `v` as a path, skipping the free-form configs and result.
    fn keys(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                let path = format!("{at}/{k}");
                out.push(path.clone());
                if !matches!(k.as_str(), "config" | "ipamConfig" | "result") {
                    keys(v, &path, out);
                }
            }
        }
        out.sort();
    }

    /// Upgrades: a record as release 0.1.0 writes it (kind `vfgenieSriovV1`, kept under
    /// fixtures/) reads whole with this code, so DEL of a pod attached before an upgrade restores
    /// its VF; and today's writer writes exactly its keys. A change of format needs a new kind
    /// and a reader for this one, and this test says so.
    #[test]
    fn a_record_written_by_release_0_1_0_still_reads() {
        let text = include_str!("../fixtures/record-v1-0.1.0.json");
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let path = state.record_path("3f9a1c2e4b5d", "net1").unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let r = state.read("3f9a1c2e4b5d", "net1").unwrap().unwrap();
        assert_eq!(r.pci, "0000:01:10.2".parse().unwrap());
        assert_eq!(r.pf, "0000:01:00.0".parse().unwrap());
        assert_eq!(r.vf, VfIndex(2));
        assert_eq!(r.stage, Stage::Done);
        assert_eq!(r.mode, Mode::Netdev);
        assert_eq!(r.original_vf.mac, MacAddr::ZERO);
        assert_eq!(r.original_vf.spoofchk, Some(true));
        assert_eq!(r.original_netdev.as_ref().unwrap().name, "eth3");
        assert_eq!(r.applied.vlan, Some(100));
        assert_eq!(r.applied.mtu, Some(1400));
        assert_eq!(r.temp_netns.as_deref(), Some("vfgenie-sriov-x"));
        assert!(r.device_info_file.is_some());
        assert_eq!(
            r.result.as_ref().unwrap()["ips"][0]["address"],
            "10.56.217.5/24"
        );
        let (mut old, mut now) = (Vec::new(), Vec::new());
        keys(&serde_json::from_str(text).unwrap(), "", &mut old);
        keys(&serde_json::to_value(&r).unwrap(), "", &mut now);
        assert_eq!(now, old, "the record format changed: give it a new kind");
    }

    #[test]
    fn records_round_trip_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert!(state.read("c1", "net1").unwrap().is_none());
        let r = record("c1", "0000:01:10.2");
        state.write(&r).unwrap();
        assert_eq!(state.read("c1", "net1").unwrap(), Some(r.clone()));
        let mut done = r.clone();
        done.stage = Stage::Done;
        done.result = Some(json!({"cniVersion": "1.0.0"}));
        state.write(&done).unwrap();
        state.write(&record("c2", "0000:01:10.4")).unwrap();
        let all = state.list().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], done);
        state.remove("c1", "net1").unwrap();
        state.remove("c1", "net1").unwrap();
        assert!(state.read("c1", "net1").unwrap().is_none());
        assert_eq!(state.list().unwrap().len(), 1);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join(ATTACHMENTS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["c2-net1.json".to_string()]);
    }

    /// A writer killed between creating its temp file and the rename leaves `.<record>.tmp.<pid>`;
    /// removing the attachment removes those (with or without a record in place) and nothing of
    /// another attachment.
    #[test]
    fn remove_takes_the_temp_files_of_killed_writers_of_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let att = dir.path().join(ATTACHMENTS_DIR);
        state.write(&record("c1", "0000:01:10.2")).unwrap();
        state.write(&record("c2", "0000:01:10.4")).unwrap();
        for name in [
            ".c1-net1.json.tmp.4242",
            ".c1-net1.json.tmp.77",
            ".c2-net1.json.tmp.4242",
            ".c1-net1.json.tmp.x-net1.json.tmp.5",
            ".c3-net1.json.tmp.9",
        ] {
            fs::write(att.join(name), "{").unwrap();
        }
        let names = || {
            let mut v: Vec<_> = fs::read_dir(&att)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        state.remove("c1", "net1").unwrap();
        assert_eq!(
            names(),
            [
                ".c1-net1.json.tmp.x-net1.json.tmp.5",
                ".c2-net1.json.tmp.4242",
                ".c3-net1.json.tmp.9",
                "c2-net1.json",
            ]
        );
        // No record, only a killed writer's temp file (ADD killed while writing its intent).
        state.remove("c3", "net1").unwrap();
        assert!(!names().contains(&".c3-net1.json.tmp.9".to_string()));
        assert!(names().contains(&"c2-net1.json".to_string()));
    }

    #[test]
    fn a_corrupt_record_is_an_error_not_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let path = state.record_path("c1", "net1").unwrap();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"{\"kind\": ").unwrap();
        let e = crate::spec::CniError::from(crate::SriovError::from(
            state.read("c1", "net1").unwrap_err(),
        ));
        assert_eq!(e.code, 5);
        assert!(e.msg.contains("corrupt"), "{}", e.msg);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    #[test]
    fn unreadable_records_are_quarantined_and_the_others_listed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let good = record("c2", "0000:01:10.4");
        state.write(&good).unwrap();
        let attachments = dir.path().join(ATTACHMENTS_DIR);
        // Invalid JSON, a truncated record, another kind, and a directory where a record should be
        // (mode 000 would not stop root).
        fs::write(attachments.join("bad-net1.json"), b"{\"kind\": ").unwrap();
        let full = serde_json::to_vec(&record("c3", "0000:01:10.6")).unwrap();
        fs::write(attachments.join("c3-net1.json"), &full[..full.len() / 2]).unwrap();
        let mut other = serde_json::to_value(record("c4", "0000:01:11.0")).unwrap();
        other["kind"] = json!("somethingElse");
        fs::write(
            attachments.join("c4-net1.json"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        fs::create_dir(attachments.join("c5-net1.json")).unwrap();

        assert_eq!(state.list().unwrap(), vec![good.clone()]);
        assert_eq!(names(&attachments), vec!["c2-net1.json".to_string()]);
        let moved = names(&state.quarantine_dir());
        assert_eq!(moved.len(), 4, "{moved:?}");
        for (n, original) in [
            "bad-net1.json",
            "c3-net1.json",
            "c4-net1.json",
            "c5-net1.json",
        ]
        .iter()
        .enumerate()
        {
            assert!(
                moved[n].starts_with(&format!("{original}.")),
                "{moved:?} lacks {original}"
            );
        }
        assert!(state.quarantine_dir().join(&moved[3]).is_dir());
        // The next listing finds only the good record, and nothing more is moved.
        assert_eq!(state.list().unwrap(), vec![good]);
        assert_eq!(names(&state.quarantine_dir()).len(), 4);
    }

    #[test]
    fn record_names_cannot_climb() {
        let state = StateDir::new("/tmp/x");
        assert!(state.record_path("../etc", "net1").is_err());
        assert!(state.record_path("c1", "..").is_err());
        assert!(state.record_path("", "net1").is_err());
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let pci: PciAddress = "0000:01:10.0".parse().unwrap();
        let held = state.lock(&pci, Duration::from_secs(1)).unwrap();
        let e = state.lock(&pci, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, StateError::LockTimeout { .. }));
        assert_eq!(
            crate::spec::CniError::from(crate::SriovError::from(e)).code,
            11
        );
        let other: PciAddress = "0000:01:10.1".parse().unwrap();
        let _other = state.lock(&other, Duration::from_millis(100)).unwrap();
        drop(held);
        state.lock(&pci, Duration::from_millis(100)).unwrap();
    }
}
