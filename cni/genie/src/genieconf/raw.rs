//! The genie conf as it is written, decoded by serde's derive: every key optional, and a key of
//! the wrong JSON kind kept ([`vfcore::gojson::Loose`]) rather than failing the decode, so that the
//! validation step ([`super::GenieConf::from_raw`]) refuses it naming its key, in a fixed order.
//! Keys match exactly (the genie conf has always been case-sensitive); unknown keys are ignored
//! (a CNI conf carries many).

use serde::Deserialize;
use serde_json::{Map, Value};
pub(super) use vfcore::gojson::{Loose, Obj};

/// `globalNamespaces` and `systemNamespaces`: a comma list or a list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum Namespaces {
    Comma(String),
    List(Vec<Loose<String>>),
}

/// CNI-Genie's `kubernetes` object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(super) struct RawKubernetes {
    pub kubeconfig: Loose<String>,
    pub k8s_api_root: Loose<String>,
}

/// Every key of the genie conf, as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(super) struct RawConf {
    pub name: Loose<String>,
    #[serde(rename = "cniVersion")]
    pub cni_version: Loose<String>,
    // CNI-Genie's keys.
    pub default_plugin: Loose<String>,
    pub kubernetes: Loose<Obj<RawKubernetes>>,
    #[serde(rename = "cAdvisor_address")]
    pub cadvisor_address: Loose<String>,
    #[serde(rename = "log_level")]
    pub genie_log_level: Loose<String>,
    // Multus' keys.
    pub kubeconfig: Loose<String>,
    #[serde(rename = "logLevel")]
    pub log_level: Loose<String>,
    #[serde(rename = "logFile")]
    pub log_file: Loose<String>,
    #[serde(rename = "clusterNetwork")]
    pub cluster_network: Loose<String>,
    #[serde(rename = "defaultNetworks")]
    pub default_networks: Loose<Vec<Loose<String>>>,
    pub delegates: Loose<Vec<Value>>,
    #[serde(rename = "confDir")]
    pub conf_dir: Loose<String>,
    #[serde(rename = "cniDir")]
    pub cni_dir: Loose<String>,
    #[serde(rename = "binDir")]
    pub bin_dir: Loose<String>,
    pub readinessindicatorfile: Loose<String>,
    #[serde(rename = "namespaceIsolation")]
    pub namespace_isolation: Loose<bool>,
    #[serde(rename = "globalNamespaces")]
    pub global_namespaces: Loose<Namespaces>,
    #[serde(rename = "systemNamespaces")]
    pub system_namespaces: Loose<Namespaces>,
    // Ours.
    #[serde(rename = "podResourcesSocket")]
    pub pod_resources_socket: Loose<String>,
    #[serde(rename = "kubeletCheckpoint")]
    pub kubelet_checkpoint: Loose<String>,
    #[serde(rename = "deviceInfoDir")]
    pub device_info_dir: Loose<String>,
    pub sriov: Loose<Map<String, Value>>,
    #[serde(rename = "allowedTenantPaths")]
    pub allowed_tenant_paths: Loose<Map<String, Value>>,
    #[serde(rename = "maxNetworksPerPod")]
    pub max_networks_per_pod: Loose<u64>,
    #[serde(rename = "addTimeoutSeconds")]
    pub add_timeout_seconds: Loose<u64>,
    #[serde(rename = "policySocket")]
    pub policy_socket: Loose<String>,
    #[serde(rename = "smartSelection")]
    pub smart_selection: Loose<Map<String, Value>>,
    /// `false`, or an object ([`RawAuditLog`]).
    #[serde(rename = "auditLog")]
    pub audit_log: Loose<Value>,
}

/// `auditLog` as an object.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(super) struct RawAuditLog {
    pub path: Loose<String>,
    #[serde(rename = "maxSizeMB")]
    pub max_size_mb: Loose<u64>,
    #[serde(rename = "maxFiles")]
    pub max_files: Loose<u64>,
}
