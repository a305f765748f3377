//! Network configurations (a single `.conf` or a `.conflist`) and the config sent to a delegate.
//!
//! The raw JSON object is kept whole: a delegate receives every key it was configured with, known
//! to us or not. Only `name`, `cniVersion`, `prevResult`, `runtimeConfig` and `args.cni` are ever
//! written, and only when building a delegate's config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod delegate;
mod error;

pub use delegate::DelegateContext;
pub use error::ConfError;

use super::env::validate_network_name;
use super::result::CniResult;
use super::version::{negotiate, CniVersion, VersionError};

/// The GC (1.1.0) key listing the attachments to keep.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";
/// The name an earlier 1.1.0 draft used; libcni sends both, we read either.
pub const LEGACY_ATTACHMENTS: &str = "cni.dev/attachments";

/// One attachment GC must keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Checks that a plugin `type` is a plain file name: not empty, no `/`, not `.` or `..`, no NUL.
/// A type is joined to CNI_PATH directories, so anything else could run a binary elsewhere.
pub fn validate_plugin_type(t: &str) -> Result<(), ConfError> {
    let reason = if t.is_empty() {
        Some("it is empty")
    } else if t.contains('/') {
        Some("it contains '/'")
    } else if t == "." || t == ".." {
        Some("it is '.' or '..'")
    } else if t.contains('\0') {
        Some("it contains NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfError::PluginType {
            plugin_type: t.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn as_object(v: Value, what: &'static str) -> Result<Map<String, Value>, ConfError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ConfError::NotObject {
            what,
            kind: kind(&other),
        }),
    }
}

/// What a JSON value is, for messages ("a string is expected, not an array").
pub use vfcore::gojson::kind;

fn opt_string(
    m: &Map<String, Value>,
    key: &'static str,
    what: &'static str,
) -> Result<Option<String>, ConfError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ConfError::NotAString {
            what,
            key,
            kind: kind(other),
        }),
    }
}

/// The JSON of a config (`what` names it for the message).
fn json(bytes: &[u8], what: &'static str) -> Result<Value, ConfError> {
    serde_json::from_slice(bytes).map_err(|source| ConfError::NotJson { what, source })
}

/// One plugin's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    raw: Map<String, Value>,
    /// `name`; optional for the entries of a conflist (the list's name is injected).
    pub name: Option<String>,
    /// `type`, validated as a plain file name.
    pub plugin_type: String,
    /// `cniVersion` as written.
    pub cni_version: Option<String>,
    /// `capabilities`: the capability args this plugin accepts in `runtimeConfig`.
    pub capabilities: BTreeMap<String, bool>,
}

impl NetConf {
    /// Parses one plugin config. Not JSON is code 6; a bad `type`, `name` or `capabilities` is 7.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfError> {
        Self::from_value(json(bytes, "the network config")?)
    }

    pub fn from_value(v: Value) -> Result<Self, ConfError> {
        let raw = as_object(v, "the network config")?;
        let plugin_type = opt_string(&raw, "type", "network config")?.ok_or(ConfError::NoType)?;
        validate_plugin_type(&plugin_type)?;
        let name = opt_string(&raw, "name", "network config")?;
        if let Some(n) = &name {
            validate_network_name(n)?;
        }
        let cni_version = opt_string(&raw, "cniVersion", "network config")?;
        let capabilities = match raw.get("capabilities") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::Bool(b) => Ok((k.clone(), *b)),
                    other => Err(ConfError::Capability {
                        plugin_type: plugin_type.clone(),
                        capability: k.clone(),
                        kind: kind(other),
                    }),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ConfError::Capabilities {
                    plugin_type,
                    kind: kind(other),
                })
            }
        };
        Ok(Self {
            raw,
            name,
            plugin_type,
            cni_version,
            capabilities,
        })
    }

    /// The version this config speaks: its `cniVersion`, missing meaning 0.1.0 as libcni reads
    /// it; code 1 when we do not implement it. The one reading of a plugin config's version.
    pub fn version(&self) -> Result<CniVersion, VersionError> {
        CniVersion::parse_or_default(self.cni_version.as_deref())
    }

    /// The whole config object as written.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    pub fn ipam(&self) -> Option<&Value> {
        self.raw.get("ipam")
    }
    pub fn dns(&self) -> Option<&Value> {
        self.raw.get("dns")
    }
    pub fn runtime_config(&self) -> Option<&Value> {
        self.raw.get("runtimeConfig")
    }
    pub fn args(&self) -> Option<&Value> {
        self.raw.get("args")
    }
    pub fn prev_result(&self) -> Option<&Value> {
        self.raw.get("prevResult")
    }

    /// The `prevResult` as a typed result (missing `cniVersion`: `default_version`).
    pub fn parsed_prev_result(
        &self,
        default_version: CniVersion,
    ) -> Result<Option<CniResult>, ConfError> {
        match self.prev_result() {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::from_value(v.clone(), default_version)
                .map(Some)
                .map_err(ConfError::PrevResult),
        }
    }

    /// GC's list of attachments to keep (`cni.dev/valid-attachments`, else the legacy
    /// `cni.dev/attachments`); `None` when neither is present. Malformed is code 7.
    pub fn valid_attachments(&self) -> Result<Option<Vec<GcAttachment>>, ConfError> {
        let Some((key, v)) = [VALID_ATTACHMENTS, LEGACY_ATTACHMENTS]
            .into_iter()
            .find_map(|k| self.raw.get(k).map(|v| (k, v)))
        else {
            return Ok(None);
        };
        serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|source| ConfError::ValidAttachments { key, source })
    }

    /// Whether this plugin declares capability `cap` as true.
    pub fn declares(&self, cap: &str) -> bool {
        self.capabilities.get(cap).copied().unwrap_or(false)
    }

    /// The `ipam.type`, validated like a plugin type (the plugin will exec it from CNI_PATH).
    pub fn ipam_type(&self) -> Result<Option<&str>, ConfError> {
        match self.ipam().and_then(|i| i.get("type")) {
            None => Ok(None),
            Some(Value::String(t)) => {
                validate_plugin_type(t)?;
                Ok(Some(t))
            }
            Some(other) => Err(ConfError::IpamType {
                plugin_type: self.plugin_type.clone(),
                kind: kind(other),
            }),
        }
    }
}

/// A network: a conflist, or a single conf seen as a list of one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    raw: Map<String, Value>,
    pub name: String,
    pub cni_version: Option<String>,
    pub cni_versions: Option<Vec<String>>,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<NetConf>,
}

impl NetConfList {
    /// Parses a conflist (an object with `plugins`). Code 6 for bad JSON, 7 for a bad list.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfError> {
        Self::from_value(json(bytes, "the network config list")?)
    }

    /// Parses either form: an object with `plugins` is a list, anything else a single conf.
    pub fn from_bytes_any(bytes: &[u8]) -> Result<Self, ConfError> {
        let v = json(bytes, "the network config")?;
        if v.get("plugins").is_some() {
            Self::from_value(v)
        } else {
            Self::from_conf(NetConf::from_value(v)?)
        }
    }

    pub fn from_value(v: Value) -> Result<Self, ConfError> {
        let raw = as_object(v, "the network config list")?;
        let name = opt_string(&raw, "name", "network config list")?.ok_or(ConfError::NoListName)?;
        validate_network_name(&name)?;
        let cni_version = opt_string(&raw, "cniVersion", "network config list")?;
        let cni_versions = match raw.get("cniVersions") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        other => Err(ConfError::CniVersionsEntry {
                            network: name.clone(),
                            kind: kind(other),
                        }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Some(other) => {
                return Err(ConfError::CniVersions {
                    network: name,
                    kind: kind(other),
                })
            }
        };
        let flag = |key: &'static str| -> Result<bool, ConfError> {
            match raw.get(key) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                // libcni accepts the strings too.
                Some(Value::String(s)) => Ok(s.eq_ignore_ascii_case("true")),
                Some(other) => Err(ConfError::Flag {
                    network: name.clone(),
                    key,
                    kind: kind(other),
                }),
            }
        };
        let disable_check = flag("disableCheck")?;
        let disable_gc = flag("disableGC")?;
        let plugins = match raw.get("plugins") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|p| NetConf::from_value(p.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfError::InList {
                    network: name.clone(),
                    error: Box::new(e),
                })?,
            _ => return Err(ConfError::NoPlugins { network: name }),
        };
        Ok(Self {
            raw,
            name,
            cni_version,
            cni_versions,
            disable_check,
            disable_gc,
            plugins,
        })
    }

    /// A single conf as a list of one (as libcni does); the conf must have a name.
    pub fn from_conf(conf: NetConf) -> Result<Self, ConfError> {
        let name = conf.name.clone().ok_or_else(|| ConfError::NoConfName {
            plugin_type: conf.plugin_type.clone(),
        })?;
        let mut raw = Map::new();
        raw.insert("name".into(), Value::String(name.clone()));
        if let Some(v) = &conf.cni_version {
            raw.insert("cniVersion".into(), Value::String(v.clone()));
        }
        raw.insert(
            "plugins".into(),
            Value::Array(vec![Value::Object(conf.raw.clone())]),
        );
        Ok(Self {
            raw,
            name,
            cni_version: conf.cni_version.clone(),
            cni_versions: None,
            disable_check: false,
            disable_gc: false,
            plugins: vec![conf],
        })
    }

    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The version to speak with this network's plugins (highest supported `cniVersions` entry,
    /// else `cniVersion`); code 1 when none is supported.
    pub fn negotiated_version(&self) -> Result<CniVersion, ConfError> {
        negotiate(self.cni_versions.as_deref(), self.cni_version.as_deref()).map_err(|error| {
            ConfError::Negotiation {
                network: self.name.clone(),
                error,
            }
        })
    }

    /// Every requested capability arg must be declared by at least one plugin of the list; the
    /// spec says to fail rather than drop it silently (code 2).
    pub fn check_capabilities(&self, requested: &Map<String, Value>) -> Result<(), ConfError> {
        let missing: Vec<String> = requested
            .keys()
            .filter(|k| !self.plugins.iter().any(|p| p.declares(k)))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfError::UndeclaredCapabilities {
                network: self.name.clone(),
                missing,
            })
        }
    }
}

#[cfg(test)]
mod tests;
