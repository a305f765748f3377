//! The IPAM plugin's config: ours, whole, with `cniVersion` lowered to the newest version the
//! plugin speaks when it does not speak ours (Debian's host-local stops at 1.0.0, so a 1.1.0
//! network would otherwise fail every ADD and, worse, every DEL). The result comes back in that
//! version and is converted into ours.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::exec::{exec_version, ExecError};
use crate::spec::version::{CniVersion, VersionInfo};

/// What went wrong with the IPAM plugin.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// It speaks none of the versions up to ours (CNI code 1).
    #[error("IPAM plugin {ipam_type:?} supports none of the CNI versions up to {ours} (it lists {listed:?})")]
    NoCommonVersion {
        ipam_type: String,
        ours: CniVersion,
        listed: Vec<String>,
    },
    /// Running it failed, or it answered with an error (the delegate's error, as spec maps it).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Its config could not be encoded (CNI code 5).
    #[error("encoding the IPAM config")]
    Encode(#[source] serde_json::Error),
}

/// The newest version at most `ours` that `info` lists; `None` when it lists none of them.
pub fn pick_version(info: &VersionInfo, ours: CniVersion) -> Option<CniVersion> {
    info.supported_versions
        .iter()
        .filter_map(|s| CniVersion::parse(s).ok())
        .filter(|v| *v <= ours)
        .max()
}

/// `config` with its `cniVersion` replaced.
pub fn with_version(config: &Value, version: CniVersion) -> Value {
    let mut c = config.clone();
    if let Some(o) = c.as_object_mut() {
        o.insert("cniVersion".into(), Value::String(version.to_string()));
    }
    c
}

/// The config and version to call `ipam_type` with. When the plugin's VERSION cannot be read,
/// the config goes unchanged and the plugin itself will say what it thinks of it.
pub fn config_for(
    ipam_type: &str,
    path: &[PathBuf],
    config: &Value,
    ours: CniVersion,
    timeout: Duration,
) -> Result<(Value, CniVersion), IpamError> {
    let info = match exec_version(ipam_type, path, timeout) {
        Ok(info) => info,
        Err(e) => {
            tracing::debug!(ipam = ipam_type, error = %e, "IPAM VERSION failed; passing the config as is");
            return Ok((config.clone(), ours));
        }
    };
    if info.supports(ours) {
        return Ok((config.clone(), ours));
    }
    match pick_version(&info, ours) {
        Some(v) => {
            tracing::debug!(ipam = ipam_type, version = %v, "calling IPAM in an older CNI version");
            Ok((with_version(config, v), v))
        }
        None => Err(IpamError::NoCommonVersion {
            ipam_type: ipam_type.to_string(),
            ours,
            listed: info.supported_versions,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_newest_version_not_above_ours() {
        let info = VersionInfo {
            cni_version: "1.0.0".into(),
            supported_versions: ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        assert_eq!(
            pick_version(&info, CniVersion::V1_1_0),
            Some(CniVersion::V1_0_0)
        );
        assert_eq!(
            pick_version(&info, CniVersion::V0_4_0),
            Some(CniVersion::V0_4_0)
        );
        let old = VersionInfo {
            cni_version: "0.4.0".into(),
            supported_versions: vec!["0.4.0".into()],
        };
        assert_eq!(pick_version(&old, CniVersion::V0_3_1), None);
        let c = with_version(
            &json!({"cniVersion": "1.1.0", "ipam": {}}),
            CniVersion::V1_0_0,
        );
        assert_eq!(c, json!({"cniVersion": "1.0.0", "ipam": {}}));
    }
}
