//! The node's `"type": "genie"` network configuration: CNI-Genie's keys and the Multus keys we
//! accept, with defaults; resolving a NetworkAttachmentDefinition to a CNI config; namespace
//! isolation.
//!
//! The keys are decoded by serde's derive (`raw.rs`: exact key names, unknown keys ignored: a CNI
//! conf carries many), then validated into [`GenieConf`] so that every error names its key.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use self::raw::{Loose, Namespaces, RawConf};

use crate::annotations::is_plugin_name;
use crate::k8s::objects::is_dns_label;

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/vfgenie";
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = vfdp::paths::POD_RESOURCES_SOCKET;
pub const DEFAULT_KUBELET_CHECKPOINT: &str =
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
pub const DEFAULT_DEVICE_INFO_DIR: &str = vfdp::devinfo::DEVINFO_DIR;

/// Errors in the genie conf, each naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("the genie conf is not valid JSON: {0}")]
    Json(String),
    #[error("the genie conf is not a JSON object")]
    NotAnObject,
    #[error("the genie conf key {key:?} is invalid: {problem}")]
    Key { key: String, problem: String },
}

mod raw;
mod resolve;
pub mod smart;
mod sriov;
pub use resolve::{
    apply_logical_network, find_conf_file, find_plugin_conf, resolve_nad_config, ConfigSource,
    LogicalNetworkError, ResolvedConfig,
};
pub use smart::SmartSelection;
pub use sriov::{pools_of, AgentConfigError, SriovConf, DEFAULT_AGENT_CONFIG, SRIOV};
pub use vfkube::untrusted;

/// Errors while turning a NetworkAttachmentDefinition into a CNI config.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    SpecConfig(#[from] vfkube::netconf::SpecConfigError),
    #[error("NetworkAttachmentDefinition {namespace}/{name} has no spec.config and no file in {conf_dir} is named {name:?}")]
    NoFile {
        namespace: String,
        name: String,
        conf_dir: PathBuf,
    },
    #[error("{plugin:?} is not a plain plugin name")]
    PluginName { plugin: String },
    #[error("cannot read the conf dir {conf_dir}")]
    ReadDir {
        conf_dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub use vfkube::isolation::IsolationError;

/// Log levels of both projects' spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Panic,
    Error,
    Warning,
    Info,
    Debug,
    Verbose,
}

impl LogLevel {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "panic" | "fatal" => LogLevel::Panic,
            "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warning,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "verbose" | "trace" => LogLevel::Verbose,
            _ => return None,
        })
    }
}

/// The genie conf, validated, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct GenieConf {
    pub name: Option<String>,
    pub cni_version: Option<String>,
    /// CNI-Genie `default_plugin`, in order, repeats kept.
    pub default_plugins: Vec<String>,
    /// CNI-Genie `kubernetes.kubeconfig`, else Multus `kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// CNI-Genie `kubernetes.k8s_api_root`.
    pub k8s_api_root: Option<String>,
    /// CNI-Genie `cAdvisor_address`.
    pub cadvisor_address: Option<String>,
    /// Multus `clusterNetwork`: a NAD name (`[namespace/]name`), a conf name, or a conf file path.
    pub cluster_network: Option<String>,
    /// Multus `defaultNetworks`: NAD names added to every pod outside `systemNamespaces`.
    pub default_networks: Vec<String>,
    /// Multus `delegates` (legacy): inline CNI configs; the first is the cluster default.
    pub delegates: Vec<Value>,
    pub conf_dir: PathBuf,
    pub cni_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub readiness_indicator_file: Option<PathBuf>,
    pub namespace_isolation: bool,
    pub global_namespaces: Vec<String>,
    pub system_namespaces: Vec<String>,
    /// `logLevel`, else CNI-Genie `log_level`.
    pub log_level: Option<LogLevel>,
    pub log_file: Option<PathBuf>,
    /// `podResourcesSocket`: the kubelet's PodResources API, asked which devices a pod holds.
    pub pod_resources_socket: PathBuf,
    /// `kubeletCheckpoint`: the kubelet's device-manager checkpoint, read when nothing listens on
    /// `podResourcesSocket`.
    pub kubelet_checkpoint: PathBuf,
    /// `deviceInfoDir`: the NPWG device-info directory (`dp/` from device plugins, `cni/` ours).
    pub device_info_dir: PathBuf,
    /// `sriov`: CNI-Genie's `cni: "sriov"` from the agent's pools.
    pub sriov: Option<SriovConf>,
    /// `allowedTenantPaths`: the host-path keys tenants' NetworkAttachmentDefinitions may set,
    /// and under which prefixes (`{"dataDir": ["/var/lib/cni/networks"]}`); none by default.
    pub tenant_paths: untrusted::TenantPaths,
    /// `maxNetworksPerPod`: the most attachments one pod may have (1..=256, 32 by default).
    pub max_networks_per_pod: usize,
    /// `addTimeoutSeconds`: the bound on one whole ADD (1..=3600 s, 300 s by default).
    pub add_timeout: std::time::Duration,
    /// `policySocket`: the node agent's policy socket. When set, ADD has the agent install the
    /// pod's policy table before any delegate runs ([`crate::genie::policy`]); absent, no
    /// policy step.
    pub policy_socket: Option<PathBuf>,
    /// `auditLog`: where genie appends one line per call and per delegate
    /// (`{"path": ..., "maxSizeMB": 10, "maxFiles": 5}`, those defaults when absent; `false`: no
    /// audit log).
    pub audit_log: Option<vfaudit::AuditConfig>,
    /// `smartSelection`: how a pod that asks for no network, without `default_plugin`, gets one
    /// of the candidates from the node's KPIs ([`smart`]).
    pub smart_selection: Option<SmartSelection>,
}

/// The default of `maxNetworksPerPod`.
pub const DEFAULT_MAX_NETWORKS_PER_POD: usize = 32;
/// The default of `addTimeoutSeconds`.
pub const DEFAULT_ADD_TIMEOUT_SECONDS: u64 = 300;

impl GenieConf {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ConfError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| ConfError::Json(e.to_string()))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Self, ConfError> {
        if !v.is_object() {
            return Err(ConfError::NotAnObject);
        }
        // Every key decodes (a wrong kind is kept for the validation to name): this cannot fail.
        let raw = RawConf::deserialize(v).map_err(|e| ConfError::Json(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// The validation step: the keys as written into the typed conf, with defaults; the keys are
    /// checked in a fixed order, so the first invalid one is the one named.
    fn from_raw(raw: RawConf) -> Result<Self, ConfError> {
        let kubernetes = raw
            .kubernetes
            .get("kubernetes", "must be an object")?
            .map(|o| o.0)
            .unwrap_or_default();
        let genie_kubeconfig = string("kubernetes.kubeconfig", kubernetes.kubeconfig)?;
        let k8s_api_root = string("kubernetes.k8s_api_root", kubernetes.k8s_api_root)?;
        if let Some(root) = &k8s_api_root {
            crate::k8s::kubeconfig::parse_server(root)
                .map_err(|e| key_err("kubernetes.k8s_api_root", e.to_string()))?;
        }
        let default_plugins = match string("default_plugin", raw.default_plugin)? {
            Some(s) => s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    if is_plugin_name(p) {
                        Ok(p.to_string())
                    } else {
                        Err(key_err(
                            "default_plugin",
                            format!("{p:?} is not a plain plugin name"),
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        // The Multus key is read only without CNI-Genie's.
        let kubeconfig = match genie_kubeconfig {
            Some(p) => Some(abs_path("kubernetes.kubeconfig", &p)?),
            None => path("kubeconfig", raw.kubeconfig)?,
        };
        let log_level = match (
            string("logLevel", raw.log_level)?,
            string("log_level", raw.genie_log_level)?,
        ) {
            (Some(l), _) => Some(log_level("logLevel", &l)?),
            (None, Some(l)) => Some(log_level("log_level", &l)?),
            (None, None) => None,
        };
        let default_networks = raw
            .default_networks
            .get("defaultNetworks", "must be a list of network names")?
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let Loose::Ok(s) = e else {
                    return Err(key_err("defaultNetworks", "elements must be strings"));
                };
                check_nad_ref("defaultNetworks", &s)?;
                Ok(s)
            })
            .collect::<Result<Vec<_>, ConfError>>()?;
        let delegates = raw
            .delegates
            .get("delegates", "must be a list of CNI config objects")?
            .unwrap_or_default();
        if delegates.iter().any(|d| !d.is_object()) {
            return Err(key_err("delegates", "elements must be CNI config objects"));
        }
        let cluster_network =
            string("clusterNetwork", raw.cluster_network)?.filter(|s| !s.is_empty());
        let max_networks_per_pod = bounded_int(
            "maxNetworksPerPod",
            raw.max_networks_per_pod,
            1..=256,
            DEFAULT_MAX_NETWORKS_PER_POD as u64,
        )?;
        let add_timeout_seconds = bounded_int(
            "addTimeoutSeconds",
            raw.add_timeout_seconds,
            1..=3600,
            DEFAULT_ADD_TIMEOUT_SECONDS,
        )?;
        let or_default = |p: Option<PathBuf>, default: &str| p.unwrap_or_else(|| default.into());
        Ok(Self {
            name: string("name", raw.name)?,
            cni_version: string("cniVersion", raw.cni_version)?,
            default_plugins,
            kubeconfig,
            k8s_api_root,
            cadvisor_address: string("cAdvisor_address", raw.cadvisor_address)?
                .filter(|s| !s.is_empty()),
            cluster_network,
            default_networks,
            delegates,
            conf_dir: or_default(path("confDir", raw.conf_dir)?, DEFAULT_CONF_DIR),
            cni_dir: or_default(path("cniDir", raw.cni_dir)?, DEFAULT_CNI_DIR),
            bin_dir: or_default(path("binDir", raw.bin_dir)?, DEFAULT_BIN_DIR),
            readiness_indicator_file: path("readinessindicatorfile", raw.readinessindicatorfile)?,
            namespace_isolation: raw
                .namespace_isolation
                .get("namespaceIsolation", "must be true or false")?
                .unwrap_or(false),
            global_namespaces: namespaces("globalNamespaces", raw.global_namespaces, &[])?,
            system_namespaces: namespaces(
                "systemNamespaces",
                raw.system_namespaces,
                &["kube-system"],
            )?,
            log_level,
            log_file: path("logFile", raw.log_file)?,
            pod_resources_socket: or_default(
                path("podResourcesSocket", raw.pod_resources_socket)?,
                DEFAULT_POD_RESOURCES_SOCKET,
            ),
            kubelet_checkpoint: or_default(
                path("kubeletCheckpoint", raw.kubelet_checkpoint)?,
                DEFAULT_KUBELET_CHECKPOINT,
            ),
            device_info_dir: or_default(
                path("deviceInfoDir", raw.device_info_dir)?,
                DEFAULT_DEVICE_INFO_DIR,
            ),
            sriov: match raw.sriov.get("sriov", "must be an object")? {
                Some(m) => Some(SriovConf::from_map(&m)?),
                None => None,
            },
            tenant_paths: tenant_paths(
                raw.allowed_tenant_paths
                    .get("allowedTenantPaths", "must be an object")?
                    .as_ref(),
            )?,
            max_networks_per_pod: usize::try_from(max_networks_per_pod)
                .unwrap_or(DEFAULT_MAX_NETWORKS_PER_POD),
            add_timeout: std::time::Duration::from_secs(add_timeout_seconds),
            policy_socket: path("policySocket", raw.policy_socket)?,
            audit_log: audit_log(raw.audit_log)?,
            smart_selection: match raw
                .smart_selection
                .get("smartSelection", "must be an object")?
            {
                Some(m) => Some(SmartSelection::from_map(&m)?),
                None => None,
            },
        })
    }

    /// Where the API server is: `kubernetes.kubeconfig` (or `kubeconfig`) when set, else the
    /// in-cluster configuration; `kubernetes.k8s_api_root` replaces the server address.
    pub fn cluster_config(
        &self,
        in_cluster: &crate::k8s::InClusterPaths,
    ) -> Result<crate::k8s::ClusterConfig, crate::k8s::ConfigError> {
        let cluster = crate::k8s::ClusterConfig::load(self.kubeconfig.as_deref(), in_cluster)?;
        match &self.k8s_api_root {
            Some(root) => cluster.with_server(root),
            None => Ok(cluster),
        }
    }

    /// Whether `defaultNetworks` apply to pods of this namespace (not to `systemNamespaces`).
    pub fn default_networks_apply(&self, pod_namespace: &str) -> bool {
        !self.system_namespaces.iter().any(|n| n == pod_namespace)
    }

    /// Namespace isolation: with `namespaceIsolation`, a pod may only reference NADs of its own
    /// namespace or of `globalNamespaces`.
    pub fn check_isolation(
        &self,
        pod_namespace: &str,
        pod_name: &str,
        nad_namespace: &str,
        nad_name: &str,
    ) -> Result<(), IsolationError> {
        vfkube::isolation::Isolation {
            enabled: self.namespace_isolation,
            global_namespaces: self.global_namespaces.clone(),
        }
        .check(pod_namespace, pod_name, nad_namespace, nad_name)
    }
}

/// `allowedTenantPaths`: `{"key": ["/prefix", ...]}`.
fn tenant_paths(m: Option<&Map<String, Value>>) -> Result<untrusted::TenantPaths, ConfError> {
    const KEY: &str = "allowedTenantPaths";
    let mut out = untrusted::TenantPaths::default();
    for (key, prefixes) in m.into_iter().flatten() {
        let list = prefixes
            .as_array()
            .ok_or_else(|| key_err(KEY, format!("{key:?} must map to a list of paths")))?
            .iter()
            .map(|p| {
                p.as_str()
                    .map(PathBuf::from)
                    .ok_or_else(|| key_err(KEY, format!("{key:?}: paths must be strings")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.allow(key, list)
            .map_err(|problem| key_err(KEY, format!("{key:?}: {problem}")))?;
    }
    Ok(out)
}

/// `auditLog`: absent or `true` is the default log, `false` none, an object sets its keys.
fn audit_log(v: Loose<Value>) -> Result<Option<vfaudit::AuditConfig>, ConfError> {
    const PROBLEM: &str = "must be false or an object with path, maxSizeMB and maxFiles";
    let obj = match v {
        Loose::Absent | Loose::Ok(Value::Bool(true)) => Map::new(),
        Loose::Ok(Value::Bool(false)) => return Ok(None),
        Loose::Ok(Value::Object(m)) => m,
        _ => return Err(key_err("auditLog", PROBLEM)),
    };
    let raw = raw::RawAuditLog::deserialize(Value::Object(obj))
        .map_err(|_| key_err("auditLog", PROBLEM))?;
    let defaults = vfaudit::AuditConfig::with_defaults(vfaudit::DEFAULT_CNI_LOG);
    let max_mb = bounded_int(
        "auditLog.maxSizeMB",
        raw.max_size_mb,
        1..=1024,
        defaults.max_size / (1024 * 1024),
    )?;
    let max_files = bounded_int(
        "auditLog.maxFiles",
        raw.max_files,
        1..=100,
        u64::from(defaults.max_files),
    )?;
    Ok(Some(vfaudit::AuditConfig {
        path: path("auditLog.path", raw.path)?.unwrap_or(defaults.path),
        max_size: max_mb * 1024 * 1024,
        max_files: u32::try_from(max_files).unwrap_or(defaults.max_files),
    }))
}

fn key_err(key: &str, problem: impl Into<String>) -> ConfError {
    ConfError::Key {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn abs_path(key: &str, s: &str) -> Result<PathBuf, ConfError> {
    let p = PathBuf::from(s);
    if !p.is_absolute() {
        return Err(key_err(key, format!("{s:?} is not an absolute path")));
    }
    Ok(p)
}

/// `[namespace/]name` with both parts DNS labels.
fn check_nad_ref(key: &str, s: &str) -> Result<(), ConfError> {
    let ok = match s.split_once('/') {
        Some((ns, name)) => is_dns_label(ns) && is_dns_label(name),
        None => is_dns_label(s),
    };
    if ok {
        Ok(())
    } else {
        Err(key_err(key, format!("{s:?} is not [namespace/]name")))
    }
}

/// A conf key's value by its name.
trait Key<T> {
    /// The value, `None` when absent; one of another kind is refused naming `key`.
    fn get(self, key: &str, problem: &str) -> Result<Option<T>, ConfError>;
}

impl<T> Key<T> for Loose<T> {
    fn get(self, key: &str, problem: &str) -> Result<Option<T>, ConfError> {
        match self {
            Loose::Absent => Ok(None),
            Loose::Ok(v) => Ok(Some(v)),
            Loose::Wrong(_) => Err(key_err(key, problem)),
        }
    }
}

fn string(key: &str, v: Loose<String>) -> Result<Option<String>, ConfError> {
    v.get(key, "must be a string")
}

/// An absolute path; an empty string is no path.
fn path(key: &str, v: Loose<String>) -> Result<Option<PathBuf>, ConfError> {
    match string(key, v)?.filter(|s| !s.is_empty()) {
        Some(s) => abs_path(key, &s).map(Some),
        None => Ok(None),
    }
}

fn log_level(key: &str, l: &str) -> Result<LogLevel, ConfError> {
    LogLevel::parse(l).ok_or_else(|| {
        key_err(
            key,
            format!("{l:?} is not one of panic, error, warning, info, debug, verbose"),
        )
    })
}

fn bounded_int(
    key: &str,
    v: Loose<u64>,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, ConfError> {
    match v {
        Loose::Absent => Ok(default),
        Loose::Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(key_err(
            key,
            format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

/// `globalNamespaces`, `systemNamespaces`: namespace names, `default` when absent.
fn namespaces(key: &str, v: Loose<Namespaces>, default: &[&str]) -> Result<Vec<String>, ConfError> {
    let list = match v.get(key, "must be a comma list or a list of namespaces")? {
        None => return Ok(default.iter().map(|s| s.to_string()).collect()),
        Some(Namespaces::Comma(s)) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>(),
        Some(Namespaces::List(a)) => a
            .into_iter()
            .map(|e| match e {
                Loose::Ok(s) => Ok(s.trim().to_string()),
                _ => Err(key_err(key, "elements must be strings")),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    for ns in &list {
        if !is_dns_label(ns) {
            return Err(key_err(key, format!("{ns:?} is not a valid namespace")));
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests;
