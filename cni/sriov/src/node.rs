//! Where the plugin keeps things on the node: set by the node (the runtime's or the admin's
//! environment), never by a network config, which a tenant may have written (a NAD's
//! `spec.config` reaches the plugin as it is).
//!
//! - `VFGENIE_SRIOV_STATE_DIR`: the locks and attachment records (default
//!   `/var/lib/cni/vfgenie/sriov`);
//! - `VFGENIE_DEVICE_INFO_DIR`: the NPWG device-info dir (default
//!   `/var/run/k8s.cni.cncf.io/devinfo`); `runtimeConfig.CNIDeviceInfoFile` may only name a file
//!   directly in its `cni/` subdirectory.

use std::path::{Path, PathBuf};

/// The environment variable naming the state dir.
pub const STATE_DIR_ENV: &str = "VFGENIE_SRIOV_STATE_DIR";
/// The environment variable naming the device-info dir.
pub const DEVICE_INFO_DIR_ENV: &str = "VFGENIE_DEVICE_INFO_DIR";
/// Where the plugin keeps its locks and attachment records unless the node says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/vfgenie/sriov";
/// The subdirectory of the device-info dir that holds the files CNI plugins write.
pub const DEVICE_INFO_CNI_SUBDIR: &str = "cni";

/// A directory the node's environment names is unusable (CNI code 4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("{var} {value:?} is not an absolute path")]
    NotAbsolute { var: &'static str, value: String },
}

/// Why a device-info file a config names is not one the plugin may write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceInfoRefusal {
    #[error("{raw:?} is not a file directly in the node's device-info directory {}", .dir.display())]
    Elsewhere { raw: String, dir: PathBuf },
    #[error("{name:?} is not a plain file name")]
    NotPlainName { name: String },
    #[error("{} is not a directory", .dir.display())]
    DirNotDir { dir: PathBuf },
    #[error("{} is not a regular file", .path.display())]
    NotRegular { path: PathBuf },
}

/// The node's directories for this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDirs {
    pub state_dir: PathBuf,
    pub device_info_dir: PathBuf,
}

impl Default for NodeDirs {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            device_info_dir: PathBuf::from(vfdp::devinfo::DEVINFO_DIR),
        }
    }
}

fn dir_from(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: PathBuf,
) -> Result<PathBuf, NodeError> {
    match lookup(var).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) if v.starts_with('/') => Ok(PathBuf::from(v)),
        Some(value) => Err(NodeError::NotAbsolute { var, value }),
    }
}

impl NodeDirs {
    /// The directories `lookup` (an environment) gives; unset or empty means the default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, NodeError> {
        let d = Self::default();
        Ok(Self {
            state_dir: dir_from(&lookup, STATE_DIR_ENV, d.state_dir)?,
            device_info_dir: dir_from(&lookup, DEVICE_INFO_DIR_ENV, d.device_info_dir)?,
        })
    }

    pub fn from_process_env() -> Result<Self, NodeError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// `<device-info dir>/cni`.
    pub fn device_info_cni_dir(&self) -> PathBuf {
        self.device_info_dir.join(DEVICE_INFO_CNI_SUBDIR)
    }

    /// The device-info file `runtimeConfig.CNIDeviceInfoFile` names, when it is a plain file name
    /// directly in `<device-info dir>/cni/` and neither that directory nor the file is a symlink
    /// or something other than what it should be. Otherwise: why not.
    pub fn confine_device_info_file(&self, raw: &str) -> Result<PathBuf, DeviceInfoRefusal> {
        let cni_dir = self.device_info_cni_dir();
        let prefix = format!("{}/", cni_dir.display());
        let Some(name) = raw.strip_prefix(&prefix) else {
            return Err(DeviceInfoRefusal::Elsewhere {
                raw: raw.to_string(),
                dir: cni_dir,
            });
        };
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(DeviceInfoRefusal::NotPlainName {
                name: name.to_string(),
            });
        }
        match std::fs::symlink_metadata(&cni_dir) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(DeviceInfoRefusal::DirNotDir { dir: cni_dir })
            }
            // Created (as a directory) when the file is written.
            _ => {}
        }
        let path = cni_dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.is_file() => Err(DeviceInfoRefusal::NotRegular { path }),
            _ => Ok(path),
        }
    }

    /// Whether a device-info path (from a record) is one [`Self::confine_device_info_file`]
    /// accepts, i.e. one this plugin may remove.
    pub fn owns_device_info_file(&self, path: &Path) -> bool {
        path.to_str()
            .is_some_and(|p| self.confine_device_info_file(p).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn directories_come_from_the_environment_or_the_defaults() {
        assert_eq!(
            NodeDirs::from_lookup(env(&[])).unwrap(),
            NodeDirs::default()
        );
        assert_eq!(
            NodeDirs::default().state_dir,
            PathBuf::from("/var/lib/cni/vfgenie/sriov")
        );
        let d = NodeDirs::from_lookup(env(&[
            (STATE_DIR_ENV, "/tmp/s"),
            (DEVICE_INFO_DIR_ENV, "/tmp/d"),
        ]))
        .unwrap();
        assert_eq!(d.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(d.device_info_cni_dir(), PathBuf::from("/tmp/d/cni"));
        let e = NodeDirs::from_lookup(env(&[(STATE_DIR_ENV, "rel")])).unwrap_err();
        assert!(e.to_string().contains(STATE_DIR_ENV), "{e}");
    }

    #[test]
    fn device_info_files_only_directly_in_the_cni_dir() {
        let dir = tempfile::tempdir().unwrap();
        let d = NodeDirs {
            state_dir: dir.path().join("state"),
            device_info_dir: dir.path().join("devinfo"),
        };
        let cni = d.device_info_cni_dir();
        let ok = format!("{}/net-c1-net1-device.json", cni.display());
        assert_eq!(
            d.confine_device_info_file(&ok).unwrap(),
            cni.join("net-c1-net1-device.json")
        );
        for bad in [
            "/etc/passwd".to_string(),
            "x.json".to_string(),
            format!("{}/../x.json", cni.display()),
            format!("{}/a/x.json", cni.display()),
            format!("{}/", cni.display()),
            format!("{}/..", cni.display()),
            format!("{}/x.json", d.device_info_dir.display()),
        ] {
            assert!(d.confine_device_info_file(&bad).is_err(), "{bad} accepted");
        }
        // A symlink as the file, or as the cni dir, is refused.
        std::fs::create_dir_all(&cni).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", cni.join("link.json")).unwrap();
        let link = format!("{}/link.json", cni.display());
        assert!(d.confine_device_info_file(&link).is_err());
        assert!(!d.owns_device_info_file(Path::new(&link)));
        std::fs::remove_file(cni.join("link.json")).unwrap();
        std::fs::remove_dir(&cni).unwrap();
        std::os::unix::fs::symlink("/etc", &cni).unwrap();
        assert!(d
            .confine_device_info_file(&format!("{}/hostname", cni.display()))
            .is_err());
    }
}
