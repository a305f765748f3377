//! The genie conf as it is written, decoded by serde's derive: every key optional, and a key of
//! the wrong JSON kind kept as [`Given::WrongKind`] rather than failing the decode, so that the
//! validation step ([`super::GenieConf::from_raw`]) refuses it naming its key, in a fixed order.
//! Keys match exactly (the genie conf has always been case-sensitive); unknown keys are ignored
//! (a CNI conf carries many).

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// One key's value: absent (or `null`), of the kind the key takes, or of another kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) enum Given<T> {
    #[default]
    Absent,
    Is(T),
    WrongKind,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Given<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => Given::Absent,
            v => serde_json::from_value(v).map_or(Given::WrongKind, Given::Is),
        })
    }
}

/// A JSON object read as `T` (a derived struct alone would also take a JSON list).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Object<T>(pub T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Map::<String, Value>::deserialize(d)?;
        serde_json::from_value(Value::Object(m))
            .map(Object)
            .map_err(D::Error::custom)
    }
}

/// `globalNamespaces` and `systemNamespaces`: a comma list or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum Namespaces {
    Comma(String),
    List(Vec<Given<String>>),
}

/// CNI-Genie's `kubernetes` object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(super) struct RawKubernetes {
    pub kubeconfig: Given<String>,
    pub k8s_api_root: Given<String>,
}

/// Every key of the genie conf, as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(super) struct RawConf {
    pub name: Given<String>,
    #[serde(rename = "cniVersion")]
    pub cni_version: Given<String>,
    // CNI-Genie's keys.
    pub default_plugin: Given<String>,
    pub kubernetes: Given<Object<RawKubernetes>>,
    #[serde(rename = "cAdvisor_address")]
    pub cadvisor_address: Given<String>,
    #[serde(rename = "log_level")]
    pub genie_log_level: Given<String>,
    // Multus' keys.
    pub kubeconfig: Given<String>,
    #[serde(rename = "logLevel")]
    pub log_level: Given<String>,
    #[serde(rename = "logFile")]
    pub log_file: Given<String>,
    #[serde(rename = "clusterNetwork")]
    pub cluster_network: Given<String>,
    #[serde(rename = "defaultNetworks")]
    pub default_networks: Given<Vec<Given<String>>>,
    pub delegates: Given<Vec<Value>>,
    #[serde(rename = "confDir")]
    pub conf_dir: Given<String>,
    #[serde(rename = "cniDir")]
    pub cni_dir: Given<String>,
    #[serde(rename = "binDir")]
    pub bin_dir: Given<String>,
    pub readinessindicatorfile: Given<String>,
    #[serde(rename = "namespaceIsolation")]
    pub namespace_isolation: Given<bool>,
    #[serde(rename = "globalNamespaces")]
    pub global_namespaces: Given<Namespaces>,
    #[serde(rename = "systemNamespaces")]
    pub system_namespaces: Given<Namespaces>,
    // Ours.
    #[serde(rename = "podResourcesSocket")]
    pub pod_resources_socket: Given<String>,
    #[serde(rename = "kubeletCheckpoint")]
    pub kubelet_checkpoint: Given<String>,
    #[serde(rename = "deviceInfoDir")]
    pub device_info_dir: Given<String>,
    pub sriov: Given<Map<String, Value>>,
    #[serde(rename = "allowedTenantPaths")]
    pub allowed_tenant_paths: Given<Map<String, Value>>,
    #[serde(rename = "maxNetworksPerPod")]
    pub max_networks_per_pod: Given<u64>,
    #[serde(rename = "addTimeoutSeconds")]
    pub add_timeout_seconds: Given<u64>,
}
