//! CNI results of every version in one model, parsed from and printed to each version's layout.
//!
//! The model is the 1.1.0 result (the superset). 0.1.0/0.2.0 results (`ip4`, `ip6`) become `ips`
//! without an interface index; printing in an older version drops what that version cannot say
//! (as libcni's converters do: 0.2.0 keeps the first address of each family and the routes of the
//! families it kept; 1.0.0 and older drop the 1.1.0 route and interface extras).

mod ipnet;
mod merge;
mod wire;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use ipnet::{IpNet, IpNetError};

use super::version::{CniVersion, ResultFamily, VersionError};

/// A result we cannot read: CNI code 1 for a version we do not speak, 6 for anything else.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("the result is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error("the result's cniVersion is not a string: {0}")]
    VersionNotAString(serde_json::Value),
    #[error("the {version} result is malformed: {reason}")]
    Malformed { version: CniVersion, reason: String },
}

/// An interface the plugin created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// The netns path for interfaces inside the container; empty on the host.
    pub sandbox: String,
    /// 1.1.0.
    pub mtu: Option<u32>,
    /// 1.1.0: a vhost-user or similar socket.
    pub socket_path: String,
    /// 1.1.0: the PCI address of the device behind the interface.
    pub pci_id: String,
}

/// An address assigned to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces` (0.3.0 and later).
    pub interface: Option<usize>,
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// A route; the 1.1.0 extras are `None` in older versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings; empty fields are omitted when printed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

/// A result of any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniResult {
    /// The version this result is printed in.
    pub cni_version: CniVersion,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl CniResult {
    /// An empty result of `version`.
    pub fn empty(version: CniVersion) -> Self {
        Self {
            cni_version: version,
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: Dns::default(),
        }
    }

    /// Parses a result in the layout of its `cniVersion` (missing: `default_version`, as libcni
    /// decodes a plugin's output with the config's version). Code 1 for an unknown version, 6
    /// for anything malformed.
    pub fn parse(bytes: &[u8], default_version: CniVersion) -> Result<Self, ResultError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(ResultError::NotJson)?;
        Self::from_value(value, default_version)
    }

    /// As [`CniResult::parse`], from a JSON value (a `prevResult`, a cached result).
    pub fn from_value(
        value: serde_json::Value,
        default_version: CniVersion,
    ) -> Result<Self, ResultError> {
        let version = match value.get("cniVersion") {
            None => default_version,
            Some(serde_json::Value::String(s)) if s.is_empty() => default_version,
            Some(serde_json::Value::String(s)) => CniVersion::parse(s)?,
            Some(other) => return Err(ResultError::VersionNotAString(other.clone())),
        };
        // Only what the version's layout has: a 1.1.0 field (an interface's `mtu`, a route's
        // `table`) in a result of an older version is not part of it, and keeping it would
        // make the result differ from what it prints and carry it into a later conversion.
        wire::decode(value, version)
            .map(|r| r.to_version(version))
            .map_err(|reason| ResultError::Malformed { version, reason })
    }

    /// The result as `version` would have it (libcni's conversion rules; see the module doc).
    pub fn to_version(&self, version: CniVersion) -> CniResult {
        let mut out = self.clone();
        out.cni_version = version;
        if version < CniVersion::V1_1_0 {
            for i in &mut out.interfaces {
                i.mtu = None;
                i.socket_path.clear();
                i.pci_id.clear();
            }
            for r in &mut out.routes {
                r.mtu = None;
                r.advmss = None;
                r.priority = None;
                r.table = None;
                r.scope = None;
            }
        }
        if version.result_family() == ResultFamily::Legacy {
            out.interfaces.clear();
            let ip4 = self.ips.iter().find(|ip| ip.address.is_ipv4());
            let ip6 = self.ips.iter().find(|ip| !ip.address.is_ipv4());
            out.ips = ip4
                .into_iter()
                .chain(ip6)
                .map(|ip| IpConfig {
                    interface: None,
                    ..ip.clone()
                })
                .collect();
            out.routes.retain(|r| {
                (r.dst.is_ipv4() && ip4.is_some()) || (!r.dst.is_ipv4() && ip6.is_some())
            });
        }
        out
    }

    /// The JSON text of this result in its own version's layout, fields in libcni's order.
    pub fn to_json(&self) -> String {
        wire::encode(&self.to_version(self.cni_version))
    }

    /// [`CniResult::to_json`] as a JSON value (to inject as `prevResult`, to cache).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.to_json()).unwrap_or(serde_json::Value::Null)
    }

    /// Merges results into one of `version`: interfaces are appended in order, each result's ips
    /// point at its own interfaces after renumbering, equal routes appear once, DNS lists are united.
    pub fn merge(version: CniVersion, results: &[CniResult]) -> CniResult {
        merge::merge(version, results)
    }
}
