//! The CNI error: a numeric code, a message and details, printed on stdout as
//! `{"cniVersion","code","msg","details"}`.

use serde::{Deserialize, Serialize};

use super::conf::ConfError;
use super::env::EnvError;
use super::exec::ExecError;
use super::result::ResultError;
use super::version::{CniVersion, VersionError};

/// Error codes of the spec (0-99 reserved; 100 and up are plugin-specific).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    pub const PLUGIN_NOT_AVAILABLE_LIMITED: u32 = 51;
    /// The first plugin-specific code; ours start here.
    pub const PLUGIN_SPECIFIC: u32 = 100;
}

/// A CNI error as the protocol carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

#[derive(Deserialize)]
struct ErrorIn {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(code::INCOMPATIBLE_VERSION, msg)
    }
    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(code::UNSUPPORTED_FIELD, msg)
    }
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(code::UNKNOWN_CONTAINER, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENV, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(code::IO, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(code::DECODE, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_NETWORK_CONFIG, msg)
    }
    pub fn try_again_later(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN_LATER, msg)
    }
    pub fn plugin_not_available(msg: impl Into<String>) -> Self {
        Self::new(code::PLUGIN_NOT_AVAILABLE, msg)
    }
    pub fn plugin_not_available_limited(msg: impl Into<String>) -> Self {
        Self::new(code::PLUGIN_NOT_AVAILABLE_LIMITED, msg)
    }
    /// A plugin-specific error: `offset` is added to 100.
    pub fn plugin_specific(offset: u32, msg: impl Into<String>) -> Self {
        Self::new(code::PLUGIN_SPECIFIC.saturating_add(offset), msg)
    }

    /// The error JSON for stdout, in the version we answer in.
    pub fn to_json(&self, version: CniVersion) -> String {
        let out = ErrorOut {
            cni_version: version.as_str(),
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        // A struct of strings and an integer always serialises.
        serde_json::to_string(&out).unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads a plugin's error JSON. `None` when the bytes are not an error object (no integer `code`).
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let e: ErrorIn = serde_json::from_slice(bytes).ok()?;
        Some(Self {
            code: e.code,
            msg: e.msg,
            details: e.details,
        })
    }
}

pub use vfcore::error::chain;

// The protocol's own errors as CNI errors, all in this one place: the code is picked here, the
// message is the error's chain. Genie and the sriov plugin pass these on with `?`.

impl From<VersionError> for CniError {
    fn from(e: VersionError) -> Self {
        Self::incompatible_version(chain(&e))
    }
}

impl From<EnvError> for CniError {
    fn from(e: EnvError) -> Self {
        Self::invalid_env(chain(&e))
    }
}

impl From<ResultError> for CniError {
    fn from(e: ResultError) -> Self {
        Self::new(result_code(&e), chain(&e))
    }
}

impl From<ConfError> for CniError {
    fn from(e: ConfError) -> Self {
        Self::new(conf_code(&e), chain(&e))
    }
}

impl From<ExecError> for CniError {
    fn from(e: ExecError) -> Self {
        e.to_cni_error()
    }
}

fn result_code(e: &ResultError) -> u32 {
    match e {
        ResultError::Version(_) => code::INCOMPATIBLE_VERSION,
        ResultError::NotJson(_)
        | ResultError::VersionNotAString(_)
        | ResultError::Malformed { .. } => code::DECODE,
    }
}

fn conf_code(e: &ConfError) -> u32 {
    match e {
        ConfError::NotJson { .. } | ConfError::NotObject { .. } | ConfError::Encode { .. } => {
            code::DECODE
        }
        ConfError::PrevResult(e) => result_code(e),
        ConfError::InList { error, .. } => conf_code(error),
        ConfError::Negotiation { .. } | ConfError::Version(_) => code::INCOMPATIBLE_VERSION,
        ConfError::UndeclaredCapabilities { .. } => code::UNSUPPORTED_FIELD,
        ConfError::NotAString { .. }
        | ConfError::NoType
        | ConfError::PluginType { .. }
        | ConfError::NoNetworkName
        | ConfError::NetworkName(_)
        | ConfError::Capability { .. }
        | ConfError::Capabilities { .. }
        | ConfError::IpamType { .. }
        | ConfError::ValidAttachments { .. }
        | ConfError::NoListName
        | ConfError::NoConfName { .. }
        | ConfError::CniVersionsEntry { .. }
        | ConfError::CniVersions { .. }
        | ConfError::Flag { .. }
        | ConfError::NoPlugins { .. }
        | ConfError::ArgsNotObject { .. } => code::INVALID_NETWORK_CONFIG,
    }
}

impl ExecError {
    /// The CNI error to report for this failure: a plugin's own error keeps its code and
    /// details; a bad type or missing plugin is 7, a plugin's unreadable output is 6 (1 when it
    /// answers in a version we do not speak), a timeout or an I/O failure is 5.
    pub fn to_cni_error(&self) -> CniError {
        match self {
            ExecError::InvalidType(e) => CniError::new(conf_code(e), chain(e)),
            ExecError::Plugin { plugin, error, .. } => CniError {
                code: error.code,
                msg: format!("plugin {plugin:?}: {}", error.msg),
                details: error.details.clone(),
            },
            ExecError::BadOutput { error, .. } => {
                CniError::new(result_code(error), self.to_string())
            }
            ExecError::BadVersion { .. } | ExecError::Garbage { .. } => {
                CniError::decode(self.to_string())
            }
            ExecError::NotFound { .. } => CniError::invalid_config(self.to_string()),
            ExecError::Spawn { .. }
            | ExecError::Timeout { .. }
            | ExecError::Io { .. }
            | ExecError::OutputTooLarge { .. } => CniError::io(self.to_string()),
        }
    }
}

/// In tests: any error of the protocol as the CNI error a runtime would read.
#[cfg(test)]
pub(crate) trait IntoCni {
    fn cni(self) -> CniError;
}

#[cfg(test)]
impl<E: Into<CniError>> IntoCni for E {
    fn cni(self) -> CniError {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_of_an_error_without_source_is_its_message() {
        assert_eq!(chain(&CniError::io("disk full")), "disk full");
    }

    #[test]
    fn prints_the_spec_shape() {
        let e = CniError::invalid_env("CNI_IFNAME is missing").with_details("set it");
        assert_eq!(
            e.to_json(CniVersion::V1_0_0),
            r#"{"cniVersion":"1.0.0","code":4,"msg":"CNI_IFNAME is missing","details":"set it"}"#
        );
        assert_eq!(e.to_string(), "CNI_IFNAME is missing: set it");
        let plain = CniError::try_again_later("busy");
        assert_eq!(
            plain.to_json(CniVersion::V0_4_0),
            r#"{"cniVersion":"0.4.0","code":11,"msg":"busy"}"#
        );
        assert_eq!(plain.to_string(), "busy");
    }

    #[test]
    fn codes_are_the_spec_codes() {
        assert_eq!(CniError::incompatible_version("").code, 1);
        assert_eq!(CniError::unsupported_field("").code, 2);
        assert_eq!(CniError::unknown_container("").code, 3);
        assert_eq!(CniError::invalid_env("").code, 4);
        assert_eq!(CniError::io("").code, 5);
        assert_eq!(CniError::decode("").code, 6);
        assert_eq!(CniError::invalid_config("").code, 7);
        assert_eq!(CniError::try_again_later("").code, 11);
        assert_eq!(CniError::plugin_not_available("").code, 50);
        assert_eq!(CniError::plugin_not_available_limited("").code, 51);
        assert_eq!(CniError::plugin_specific(3, "").code, 103);
    }

    #[test]
    fn parses_a_delegates_error() {
        let e = CniError::parse(
            br#"{"cniVersion":"0.3.1","code":7,"msg":"no subnet","details":"ipam"}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            CniError::invalid_config("no subnet").with_details("ipam")
        );
        let round = CniError::parse(e.to_json(CniVersion::V1_1_0).as_bytes()).unwrap();
        assert_eq!(round, e);
        assert!(CniError::parse(b"garbage").is_none());
        assert!(CniError::parse(br#"{"cniVersion":"1.0.0","ips":[]}"#).is_none());
    }
}
