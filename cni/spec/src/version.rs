//! The CNI spec versions we speak, version negotiation and the VERSION answer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::env::CniCommand;

/// A version we do not speak, or one a command does not exist in (all CNI code 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "CNI version {version:?} is not supported (we support {})",
        supported()
    )]
    Unsupported { version: String },
    #[error("config version {version} does not allow {command} (it needs {} or later)", .command.min_version())]
    NotAllowed {
        version: CniVersion,
        command: CniCommand,
    },
    #[error("none of the config's versions {list:?} nor cniVersion {cni_version:?} is supported")]
    NoneSupported {
        list: Vec<String>,
        cni_version: String,
    },
}

fn supported() -> String {
    CniVersion::ALL.map(|v| v.as_str()).join(", ")
}

/// A CNI spec version we implement. Ordered oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CniVersion {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every version we speak, oldest first.
    pub const ALL: [CniVersion; 7] = [
        CniVersion::V0_1_0,
        CniVersion::V0_2_0,
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version we speak.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub const fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_1_0 => "0.1.0",
            CniVersion::V0_2_0 => "0.2.0",
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a version string; an unknown one is error code 1.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| VersionError::Unsupported {
                version: s.to_string(),
            })
    }

    /// A missing `cniVersion` means 0.1.0, as libcni reads it.
    pub fn parse_or_default(s: Option<&str>) -> Result<Self, VersionError> {
        match s {
            None | Some("") => Ok(CniVersion::V0_1_0),
            Some(s) => Self::parse(s),
        }
    }

    /// Whether `command` exists in this version (CHECK from 0.4.0, GC and STATUS from 1.1.0).
    pub fn allows(self, command: CniCommand) -> bool {
        self >= command.min_version()
    }

    /// Error code 1 when `command` does not exist in this version.
    pub fn require(self, command: CniCommand) -> Result<(), VersionError> {
        if self.allows(command) {
            Ok(())
        } else {
            Err(VersionError::NotAllowed {
                version: self,
                command,
            })
        }
    }

    /// Which result layout this version uses.
    pub fn result_family(self) -> ResultFamily {
        match self {
            CniVersion::V0_1_0 | CniVersion::V0_2_0 => ResultFamily::Legacy,
            CniVersion::V0_3_0 | CniVersion::V0_3_1 | CniVersion::V0_4_0 => ResultFamily::V04,
            CniVersion::V1_0_0 | CniVersion::V1_1_0 => ResultFamily::V1,
        }
    }
}

/// The three result layouts of the spec's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultFamily {
    /// 0.1.0 and 0.2.0: `ip4`, `ip6`, `dns`.
    Legacy,
    /// 0.3.0 to 0.4.0: `interfaces`, `ips` with `version`, `routes`, `dns`.
    V04,
    /// 1.0.0 and 1.1.0: as 0.4.0 without `version` in `ips`; 1.1.0 adds route and interface fields.
    V1,
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CniVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Picks the version to speak for a config: the highest supported entry of `cniVersions` when the
/// list has one, else `cniVersion` (missing means 0.1.0). Nothing supported is error code 1.
pub fn negotiate(
    cni_versions: Option<&[String]>,
    cni_version: Option<&str>,
) -> Result<CniVersion, VersionError> {
    if let Some(list) = cni_versions {
        if let Some(best) = list.iter().filter_map(|s| CniVersion::parse(s).ok()).max() {
            return Ok(best);
        }
    }
    CniVersion::parse_or_default(cni_version).map_err(|e| match cni_versions {
        Some(list) if !list.is_empty() => VersionError::NoneSupported {
            list: list.to_vec(),
            cni_version: cni_version.unwrap_or("").to_string(),
        },
        _ => e,
    })
}

/// The VERSION answer: `{"cniVersion":"1.1.0","supportedVersions":[...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// What we answer to VERSION.
    pub fn ours() -> Self {
        Self {
            cni_version: CniVersion::LATEST.as_str().to_string(),
            supported_versions: CniVersion::ALL.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// Whether a plugin that answered this supports `v`.
    pub fn supports(&self, v: CniVersion) -> bool {
        self.supported_versions.iter().any(|s| s == v.as_str())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::IntoCni;

    #[test]
    fn parses_every_version_and_orders_them() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()).unwrap(), v);
        }
        assert!(CniVersion::V0_3_1 < CniVersion::V0_4_0);
        assert!(CniVersion::V1_0_0 < CniVersion::V1_1_0);
        assert_eq!(CniVersion::parse("0.5.0").unwrap_err().cni().code, 1);
        assert_eq!(
            CniVersion::parse_or_default(None).unwrap(),
            CniVersion::V0_1_0
        );
    }

    #[test]
    fn version_answer_lists_everything() {
        let json = VersionInfo::ours().to_json();
        assert_eq!(
            json,
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
    }

    #[test]
    fn negotiation_prefers_the_highest_supported_of_the_list() {
        let list = vec!["0.3.1".to_string(), "1.0.0".into(), "2.0.0".into()];
        assert_eq!(
            negotiate(Some(&list), Some("0.3.1")).unwrap(),
            CniVersion::V1_0_0
        );
        let none = vec!["9.0.0".to_string()];
        assert_eq!(
            negotiate(Some(&none), Some("0.4.0")).unwrap(),
            CniVersion::V0_4_0
        );
        assert_eq!(
            negotiate(Some(&none), Some("8.0.0"))
                .unwrap_err()
                .cni()
                .code,
            1
        );
        assert_eq!(negotiate(None, Some("1.1.0")).unwrap(), CniVersion::V1_1_0);
        assert_eq!(negotiate(None, None).unwrap(), CniVersion::V0_1_0);
    }

    #[test]
    fn commands_need_their_versions() {
        assert!(CniVersion::V0_4_0.require(CniCommand::Check).is_ok());
        assert_eq!(
            CniVersion::V0_3_1
                .require(CniCommand::Check)
                .unwrap_err()
                .cni()
                .code,
            1
        );
        assert!(CniVersion::V1_0_0.require(CniCommand::Gc).is_err());
        assert!(CniVersion::V1_1_0.require(CniCommand::Status).is_ok());
        assert!(CniVersion::V0_1_0.require(CniCommand::Add).is_ok());
    }
}
