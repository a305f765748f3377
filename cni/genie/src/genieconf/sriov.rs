//! The genie conf's `sriov` key: how CNI-Genie's `cni: "sriov"` becomes an SR-IOV attachment
//! without a hand-written conf file. The pools are the agent's (`agentConfig`, the SR-IOV network
//! device plugin's `resourceList` format); every other key is the sriov netconf to use (`ipam`,
//! `vlan`, `spoofchk`, ...), and the device comes from the pool of which the pod holds one.
//!
//! ```json
//! "sriov": {"agentConfig": "/etc/vfgenie/config.json", "vlan": 100,
//!           "ipam": {"type": "host-local", "subnet": "10.56.217.0/24"}}
//! ```

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ConfError;

/// Where the agent reads its config by default.
pub const DEFAULT_AGENT_CONFIG: &str = "/etc/vfgenie/config.json";
/// The plugin name that selects it in a `cni:` annotation, and the delegate type.
pub const SRIOV: &str = "sriov";

#[derive(Debug, Clone, PartialEq)]
pub struct SriovConf {
    pub agent_config: PathBuf,
    /// The netconf keys, `agentConfig` removed.
    pub netconf: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("cannot read the agent config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent config {path} is not valid: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

impl SriovConf {
    pub(super) fn from_map(m: &Map<String, Value>) -> Result<Self, ConfError> {
        let key = |problem: String| ConfError::Key {
            key: "sriov".into(),
            problem,
        };
        let mut netconf = m.clone();
        let agent_config = match netconf.remove("agentConfig") {
            None | Some(Value::Null) => PathBuf::from(DEFAULT_AGENT_CONFIG),
            Some(Value::String(s)) if Path::new(&s).is_absolute() => PathBuf::from(s),
            Some(v) => return Err(key(format!("agentConfig {v} is not an absolute path"))),
        };
        match netconf.get("type") {
            None => {}
            Some(Value::String(t)) if t == SRIOV => {}
            Some(v) => return Err(key(format!("type is always \"sriov\", not {v}"))),
        }
        if let Some(n) = netconf.get("name") {
            let ok = n
                .as_str()
                .is_some_and(|s| crate::spec::env::validate_network_name(s).is_ok());
            if !ok {
                return Err(key(format!("name {n} is not a valid network name")));
            }
        }
        Ok(Self {
            agent_config,
            netconf,
        })
    }

    /// The sriov netconf for one attachment (the device is added later).
    pub fn netconf(&self, cni_version: &str) -> Value {
        let mut c = Map::new();
        c.insert("cniVersion".into(), Value::String(cni_version.into()));
        c.insert("name".into(), Value::String(SRIOV.into()));
        c.extend(self.netconf.clone());
        c.insert("type".into(), Value::String(SRIOV.into()));
        Value::Object(c)
    }

    /// The agent's pools as extended resource names (`<prefix>/<name>`), in config order.
    pub fn pools(&self) -> Result<Vec<String>, AgentConfigError> {
        let path = &self.agent_config;
        let bytes = crate::bounded::read(path, crate::bounded::CONFIG_MAX).map_err(|source| {
            AgentConfigError::Read {
                path: path.clone(),
                source,
            }
        })?;
        pools_of(&bytes).map_err(|problem| AgentConfigError::Invalid {
            path: path.clone(),
            problem,
        })
    }
}

/// The pools (`<prefix>/<name>`) of an agent config, read with the device plugin's one
/// `resourceList` schema ([`vfdp::config`]).
pub fn pools_of(bytes: &[u8]) -> Result<Vec<String>, String> {
    vfdp::config::pool_names(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_netconf_is_the_key_without_agent_config() {
        let m = json!({"agentConfig": "/a.json", "vlan": 7, "ipam": {"type": "static"}});
        let s = SriovConf::from_map(m.as_object().unwrap()).unwrap();
        assert_eq!(s.agent_config, PathBuf::from("/a.json"));
        assert_eq!(
            s.netconf("1.0.0"),
            json!({"cniVersion": "1.0.0", "name": "sriov", "type": "sriov", "vlan": 7, "ipam": {"type": "static"}})
        );
        for bad in [
            json!({"agentConfig": "rel.json"}),
            json!({"type": "macvlan"}),
            json!({"name": "../x"}),
        ] {
            assert!(
                SriovConf::from_map(bad.as_object().unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
