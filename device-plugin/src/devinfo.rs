//! Device-info files of the NPWG device-info specification (version 1.1.0): the device plugin writes
//! one per allocated device under `<devinfo>/dp/`, the CNI copies it under `<devinfo>/cni/` and
//! reports it in the pod's network-status.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Where device-info files live on a node.
pub const DEVINFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";
/// The spec version we write.
pub const VERSION: &str = "1.1.0";

/// `{"type":"pci","version":"1.1.0","pci":{...}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PciInfo {
    #[serde(rename = "pci-address")]
    pub pci_address: String,
    #[serde(
        rename = "pf-pci-address",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pf_pci_address: String,
    #[serde(
        rename = "rdma-device",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub rdma_device: String,
    #[serde(
        rename = "representor-device",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub representor_device: String,
}

impl DeviceInfo {
    pub fn pci(address: impl Into<String>, pf: impl Into<String>) -> Self {
        Self {
            kind: "pci".into(),
            version: VERSION.into(),
            pci: Some(PciInfo {
                pci_address: address.into(),
                pf_pci_address: pf.into(),
                ..PciInfo::default()
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write device-info file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read device-info file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("device-info file {path} is not valid: {source}")]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{what:?} cannot be part of a device-info file name")]
    BadName { what: String },
}

/// A name part must not climb out of the directory.
fn checked(part: &str) -> Result<String, Error> {
    if part.is_empty() || part.contains("..") || part.contains('\0') {
        return Err(Error::BadName { what: part.into() });
    }
    Ok(part.replace('/', "-"))
}

/// `<devinfo>/dp/<prefix>-<name>-<device>-device.json` for resource `<prefix>/<name>`.
pub fn dp_file(devinfo: &Path, resource: &str, device: &str) -> Result<PathBuf, Error> {
    Ok(devinfo.join("dp").join(format!(
        "{}-{}-device.json",
        checked(resource)?,
        checked(device)?
    )))
}

/// `<devinfo>/cni/<network>-<container>-<ifname>-device.json`, the copy a CNI keeps per attachment.
pub fn cni_file(
    devinfo: &Path,
    network: &str,
    container: &str,
    ifname: &str,
) -> Result<PathBuf, Error> {
    Ok(devinfo.join("cni").join(format!(
        "{}-{}-{}-device.json",
        checked(network)?,
        checked(container)?,
        checked(ifname)?
    )))
}

/// The modes of a written file and of its directory.
#[derive(Debug, Clone, Copy)]
struct Modes {
    file: u32,
    /// `None`: missing directories are created with the default mode and an existing one is left
    /// as it is. `Some`: the file's own directory is created with, or set to, this mode.
    dir: Option<u32>,
}

/// Read-only for everyone, in a directory shared with others (the CNI's copies).
const SHARED: Modes = Modes {
    file: 0o444,
    dir: None,
};
/// Root only, in a directory the writer owns (the device plugin's `dp/` files).
const PRIVATE: Modes = Modes {
    file: 0o600,
    dir: Some(0o700),
};

fn encode(path: &Path, info: &DeviceInfo) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(info).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

/// Writes `info` at `path` atomically (temporary file, fsync, rename, fsync of the directory) with
/// mode 0444, creating the directory (0755) if needed. Readers never see a partial file. A file
/// that already holds exactly this content with this mode (the device was allocated before) is
/// left as it is.
pub fn write(path: &Path, info: &DeviceInfo) -> Result<(), Error> {
    write_with(path, &encode(path, info)?, SHARED)
}

/// Writes `info` at `path` as [`write`] does, but readable by root only: the file gets mode 0600
/// and its directory (the device plugin's own `dp/`) 0700, tightened if it exists. Only root
/// readers (the CNI, Multus) need these files.
pub fn write_private(path: &Path, info: &DeviceInfo) -> Result<(), Error> {
    write_with(path, &encode(path, info)?, PRIVATE)
}

/// Writes `body` (an already encoded device-info document, e.g. a device plugin's file copied
/// as it is, keys we do not model included) at `path` as [`write`] does.
pub fn write_raw(path: &Path, body: &[u8]) -> Result<(), Error> {
    write_with(path, body, SHARED)
}

/// Creates `dir` (and its parents) with `mode` for `dir` itself, or sets that mode if it exists.
fn private_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        ));
    }
    // The mode given to mkdir() is masked by the umask, and an existing one may be looser.
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn write_with(path: &Path, body: &[u8], modes: Modes) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no parent directory",
        ))
    })?;
    match modes.dir {
        None => {
            if holds(path, body, modes.file) {
                return Ok(());
            }
            fs::create_dir_all(dir).map_err(err)?;
        }
        Some(mode) => {
            private_dir(dir, mode).map_err(err)?;
            if holds(path, body, modes.file) {
                return Ok(());
            }
        }
    }
    // One temporary name per write: two writers of the same file (two Allocates of one device
    // in the agent, two processes) never share a temporary file.
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(modes.file)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        // The mode given to open() is masked by the umask; make it exact.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(modes.file))?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// True when `path` is a regular file of mode `mode` whose content is `body`.
fn holds(path: &Path, body: &[u8], mode: u32) -> bool {
    let Ok(mut f) = fs::File::open(path) else {
        return false;
    };
    let same_shape = f.metadata().is_ok_and(|m| {
        m.is_file() && m.permissions().mode() & 0o7777 == mode && m.len() == body.len() as u64
    });
    let mut content = Vec::with_capacity(body.len());
    same_shape && std::io::Read::read_to_end(&mut f, &mut content).is_ok() && content == body
}

/// Reads a device-info file.
pub fn read(path: &Path) -> Result<DeviceInfo, Error> {
    let body = fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&body).map_err(|source| Error::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// Removes a device-info file; a file that is already gone is fine.
pub fn remove(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Removes an attachment's device-info file (a CNI plugin's, [`cni_file`]) and the temporary
/// files of writers of it that were killed before their rename (`.<name>.tmp-<pid>-<n>`). Only
/// the attachment's own ADD writes this file, and a runtime never runs it alongside that
/// attachment's DEL, so no writer of these temporary files is alive. A device plugin's own files
/// ([`dp_file`]) may have concurrent writers: [`remove`] is for those.
pub fn remove_attachment_file(path: &Path) -> Result<(), Error> {
    remove(path)?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    vfcore::tempfiles::remove_killed_writers(dir, name)
        .map(drop)
        .map_err(|(path, source)| Error::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A writer killed between creating its temporary file and the rename leaves it beside the
    /// attachment's file; removing the attachment's file removes those, and nothing else.
    #[test]
    fn removing_an_attachment_file_takes_the_temp_files_of_killed_writers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns-net-c1-net1-device.json");
        write_raw(&path, b"{}").unwrap();
        let left = [
            ".ns-net-c1-net1-device.json.tmp-x-1",
            ".ns-net-c2-net1-device.json.tmp-15185-0",
            "ns-net-c2-net1-device.json",
        ];
        for name in [
            ".ns-net-c1-net1-device.json.tmp-15185-0",
            ".ns-net-c1-net1-device.json.tmp-7-12",
        ]
        .iter()
        .chain(&left)
        {
            fs::write(dir.path().join(name), "{").unwrap();
        }
        remove_attachment_file(&path).unwrap();
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, left);
        // Only temporary files left (the writer was killed before its first rename).
        fs::write(dir.path().join(".ns-net-c1-net1-device.json.tmp-99-0"), "").unwrap();
        remove_attachment_file(&path).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), left.len());
    }

    #[test]
    fn file_names_follow_the_spec_and_refuse_traversal() {
        let d = Path::new("/x");
        assert_eq!(
            dp_file(d, "intel.com/sriov_net", "0000:02:10.0").unwrap(),
            PathBuf::from("/x/dp/intel.com-sriov_net-0000:02:10.0-device.json")
        );
        assert!(dp_file(d, "intel.com/../../etc", "0000:02:10.0").is_err());
        assert!(cni_file(d, "net", "..", "net1").is_err());
    }

    #[test]
    fn written_files_are_read_only_json_in_the_spec_shape() {
        let dir = tempfile::tempdir().unwrap();
        let p = dp_file(dir.path(), "example.com/vf", "0000:02:10.0").unwrap();
        let info = DeviceInfo::pci("0000:02:10.0", "0000:02:00.0");
        write(&p, &info).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:02:10.0","pf-pci-address":"0000:02:00.0"}})
        );
        assert_eq!(read(&p).unwrap(), info);
        // The same content again leaves the file as it is.
        let ino = fs::metadata(&p).unwrap().ino();
        write(&p, &info).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
        // Other content replaces the read-only file (rename), and no temp file is left.
        let other = DeviceInfo::pci("0000:02:10.0", "0000:02:00.1");
        write(&p, &other).unwrap();
        assert_eq!(read(&p).unwrap(), other);
        assert_ne!(fs::metadata(&p).unwrap().ino(), ino);
        // A file with the right content but the wrong mode is rewritten with the right one.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write(&p, &other).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o444
        );
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn private_files_are_root_only_in_a_root_only_directory() {
        let dir = tempfile::tempdir().unwrap();
        let devinfo = dir.path().join("devinfo");
        let p = dp_file(&devinfo, "example.com/vf", "0000:02:10.0").unwrap();
        let info = DeviceInfo::pci("0000:02:10.0", "0000:02:00.0");
        write_private(&p, &info).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        assert_eq!(read(&p).unwrap(), info);
        // A looser directory and file left by an earlier writer are tightened.
        fs::set_permissions(p.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, &info).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        let ino = fs::metadata(&p).unwrap().ino();
        write_private(&p, &info).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().ino(),
            ino,
            "an identical file was rewritten"
        );
    }

    #[test]
    fn concurrent_writers_of_one_file_each_leave_a_whole_document() {
        let dir = tempfile::tempdir().unwrap();
        let p = dp_file(dir.path(), "example.com/vf", "0000:02:10.0").unwrap();
        let infos: Vec<DeviceInfo> = (0..8)
            .map(|i| DeviceInfo::pci("0000:02:10.0", format!("0000:02:00.{i}")))
            .collect();
        std::thread::scope(|s| {
            for info in &infos {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write(p, info).unwrap();
                    }
                });
            }
        });
        assert!(infos.contains(&read(&p).unwrap()));
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    }
}
