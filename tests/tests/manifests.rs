//! Every YAML document under `manifests/` parses into its typed Kubernetes object without losing a
//! field (a misspelt key fails), and the agent's manifests agree with the code: the DaemonSet
//! mounts every host path the agent uses (taken from the code's constants), its probes ask for
//! paths the HTTP server serves, the ConfigMap holds a config the agent accepts at the path its
//! arguments name, and RBAC grants no wildcards, and the agent exactly what its policy watches
//! use (with a projected short-lived token and its node name).
//!
//! The CNI's manifests likewise: the CRDs are the ones genie's client reads, the genie conf in the
//! ConfigMap is one genie accepts and names the paths the DaemonSet installs into, the init script
//! (run here against a temp dir) installs a binary, conf and kubeconfig that genie accepts, and
//! the ClusterRole grants exactly the API calls genie makes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use vfagent::config::Config;
use vfagent::http::{DEFAULT_PORT, HEALTHZ_PATH, LIVEZ_PATH, METRICS_PATH};
use vfcore::paths::{modules, params};
use vfcore::SysRoot;

const AGENT: &str = "vfgenie-agent";

/// All objects found under `manifests/`.
#[derive(Default)]
struct Manifests {
    daemon_sets: Vec<DaemonSet>,
    config_maps: Vec<ConfigMap>,
    service_accounts: Vec<ServiceAccount>,
    namespaces: Vec<Namespace>,
    roles: Vec<Role>,
    cluster_roles: Vec<ClusterRole>,
    role_bindings: Vec<RoleBinding>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    crds: Vec<CustomResourceDefinition>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    pdbs: Vec<PodDisruptionBudget>,
    webhooks: Vec<ValidatingWebhookConfiguration>,
    /// cert-manager's Issuer and Certificate (not Kubernetes types): kind and document.
    cert_manager: Vec<(String, serde_json::Value)>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Parses `doc` as `T` and checks that serializing it again gives the document back, so a key the
/// type does not know (a typo, a field at the wrong level) fails instead of vanishing.
fn typed<T: DeserializeOwned + Serialize>(doc: serde_json::Value, at: &str) -> T {
    let obj: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{at}: not a valid object of its kind: {e}"));
    let back = serde_json::to_value(&obj).unwrap();
    assert_eq!(
        back, doc,
        "{at}: fields were lost in parsing (a misspelt or misplaced key?)"
    );
    obj
}

fn load() -> Manifests {
    let mut files = Vec::new();
    yaml_files(&workspace().join("manifests"), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no manifests found");
    let mut m = Manifests::default();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let at = format!("{} document {i}", file.display());
            // YAML's core types map onto JSON values, which the k8s-openapi types read.
            let doc: serde_json::Value = serde::Deserialize::deserialize(de)
                .unwrap_or_else(|e| panic!("{at}: not YAML: {e}"));
            if doc.is_null() {
                continue; // an empty document between `---` separators
            }
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let api = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
            match (api.as_str(), kind.as_str()) {
                ("apps/v1", "DaemonSet") => m.daemon_sets.push(typed(doc, &at)),
                ("v1", "ConfigMap") => m.config_maps.push(typed(doc, &at)),
                ("v1", "ServiceAccount") => m.service_accounts.push(typed(doc, &at)),
                ("v1", "Namespace") => m.namespaces.push(typed(doc, &at)),
                ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(typed(doc, &at)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    m.cluster_roles.push(typed(doc, &at))
                }
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    m.role_bindings.push(typed(doc, &at))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    m.cluster_role_bindings.push(typed(doc, &at))
                }
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                    m.crds.push(typed(doc, &at))
                }
                ("apps/v1", "Deployment") => m.deployments.push(typed(doc, &at)),
                ("v1", "Service") => m.services.push(typed(doc, &at)),
                ("policy/v1", "PodDisruptionBudget") => m.pdbs.push(typed(doc, &at)),
                ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
                    m.webhooks.push(typed(doc, &at))
                }
                ("cert-manager.io/v1", "Issuer" | "Certificate") => {
                    m.cert_manager.push((kind, doc))
                }
                // kustomize's own file (tests/tests/images.rs checks its resources).
                ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {}
                _ => panic!("{at}: {api} {kind} is not a kind this test knows; add it here"),
            }
        }
    }
    m
}

fn agent_daemon_set(m: &Manifests) -> &DaemonSet {
    let found: Vec<_> = m
        .daemon_sets
        .iter()
        .filter(|d| d.metadata.name.as_deref() == Some(AGENT))
        .collect();
    assert_eq!(found.len(), 1, "exactly one DaemonSet {AGENT}");
    found[0]
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec.template.spec.as_ref().unwrap()
}

fn agent_container(ds: &DaemonSet) -> &Container {
    let spec = pod_spec(ds);
    assert_eq!(spec.containers.len(), 1, "the agent pod has one container");
    &spec.containers[0]
}

/// Host paths the agent opens, from the code's own path constants and helpers.
fn host_paths_used() -> Vec<(PathBuf, Access)> {
    let host = SysRoot::host();
    let pod_resources_dir = Path::new(vfdp::paths::POD_RESOURCES_SOCKET)
        .parent()
        .unwrap()
        .to_path_buf();
    vec![
        (host.pci_devices(), Access::Write),
        (host.pci_drivers(), Access::Write),
        (host.pci_drivers_probe(), Access::Write),
        (host.net_class(), Access::Read),
        (host.iommu_groups(), Access::Read),
        (
            host.module_parameter(modules::VFIO, params::ENABLE_UNSAFE_NOIOMMU_MODE)
                .unwrap(),
            Access::Read,
        ),
        (host.dev_vfio(), Access::Read),
        (host.dev_vfio_container(), Access::Read),
        (host.dev_vhost_net(), Access::Read),
        (host.dev_net_tun(), Access::Read),
        (PathBuf::from(vfdp::paths::DEVICE_PLUGIN_DIR), Access::Write),
        (
            vfdp::paths::kubelet_socket(Path::new(vfdp::paths::DEVICE_PLUGIN_DIR)),
            Access::Write,
        ),
        // Connecting to a unix socket works on a read-only mount.
        (pod_resources_dir, Access::Read),
        (PathBuf::from(vfdp::devinfo::DEVINFO_DIR), Access::Write),
        // The CNI plugins' quarantines, counted in /metrics.
        (
            PathBuf::from(vfagent::run::GENIE_QUARANTINE_DIR),
            Access::Read,
        ),
        (
            PathBuf::from(vfagent::run::SRIOV_QUARANTINE_DIR),
            Access::Read,
        ),
        // genie's pod records: local pods' netns and interfaces for the policy engine; the
        // genie UPDATEs of hot-plug write them.
        (genie_records_dir(), Access::Write),
        // Hot-plug runs genie (and genie its delegates) with the node's conf; host-local's
        // leases are taken and released there.
        (
            PathBuf::from(vfagent::hotplug::DEFAULT_CNI_BIN_DIR),
            Access::Read,
        ),
        (
            PathBuf::from(vfagent::hotplug::DEFAULT_CNI_CONF_DIR),
            Access::Read,
        ),
        (
            PathBuf::from(vfagent::kpi::ipam::HOST_LOCAL_DATA_DIR),
            Access::Write,
        ),
        // Pods' pinned network namespaces, where the policy engine applies their tables (nft
        // runs inside; the files are only opened).
        (PathBuf::from("/var/run/netns"), Access::Read),
        // The node's audit logs: the agent's own, and genie's read by reports.
        (PathBuf::from(vfaudit::LOG_DIR), Access::Write),
        // The policy socket genie connects to.
        (
            Path::new(vfagent::policy::socket::DEFAULT_SOCKET)
                .parent()
                .unwrap()
                .to_path_buf(),
            Access::Write,
        ),
    ]
}

/// Where genie (with its default `cniDir`) keeps its pod records.
fn genie_records_dir() -> PathBuf {
    let cache = vfmeta::cache::CacheDir::new(vfmeta::genieconf::DEFAULT_CNI_DIR);
    let any = vfmeta::cache::PodKey::new("c", "eth0").unwrap();
    cache.pod_path(&any).parent().unwrap().to_path_buf()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

fn assert_no_wildcards(owner: &str, rules: Option<&Vec<PolicyRule>>) {
    for r in rules.into_iter().flatten() {
        let lists = [
            ("verbs", Some(&r.verbs)),
            ("resources", r.resources.as_ref()),
            ("apiGroups", r.api_groups.as_ref()),
            ("resourceNames", r.resource_names.as_ref()),
            ("nonResourceURLs", r.non_resource_urls.as_ref()),
        ];
        for (field, list) in lists {
            for item in list.into_iter().flatten() {
                assert!(
                    !item.contains('*'),
                    "{owner}: {field} has the wildcard {item:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The genie CNI (manifests/cni).

const CNI: &str = "vfgenie-cni";
const CONF_KEY: &str = "00-genie.conflist";
/// Where the DaemonSet mounts the host's root-owned CNI directories.
const HOST_PREFIX: &str = "/host";
/// Where the containers' scripts read the ServiceAccount's token and CA.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn cni_daemon_set(m: &Manifests) -> &DaemonSet {
    let found: Vec<_> = m
        .daemon_sets
        .iter()
        .filter(|d| d.metadata.name.as_deref() == Some(CNI))
        .collect();
    assert_eq!(found.len(), 1, "exactly one DaemonSet {CNI}");
    found[0]
}

fn init_container(ds: &DaemonSet) -> &Container {
    let inits = pod_spec(ds).init_containers.as_ref().unwrap();
    assert_eq!(inits.len(), 1, "one init container installs everything");
    &inits[0]
}

/// The `sh -c` script of a container.
fn script(c: &Container) -> &str {
    let cmd = c.command.as_ref().unwrap();
    assert_eq!(cmd.len(), 3, "{}: /bin/sh -c SCRIPT", c.name);
    assert_eq!((cmd[0].as_str(), cmd[1].as_str()), ("/bin/sh", "-c"));
    &cmd[2]
}

/// The genie conf from the ConfigMap the init container copies from, as the runtime hands it to
/// the plugin: the conflist's one plugin with the list's name and cniVersion injected.
fn genie_conf(m: &Manifests) -> (serde_json::Value, vfcni::genieconf::GenieConf) {
    let ds = cni_daemon_set(m);
    let init = init_container(ds);
    let volumes = pod_spec(ds).volumes.as_ref().unwrap();
    // The ConfigMap volume the script copies the conf from.
    let cm_name = init
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .filter(|vm| script(init).contains(&format!("cp {}/{CONF_KEY} ", vm.mount_path)))
        .find_map(|vm| {
            volumes
                .iter()
                .find(|v| v.name == vm.name)
                .and_then(|v| v.config_map.as_ref())
        })
        .unwrap_or_else(|| panic!("the init script copies {CONF_KEY} from no ConfigMap"))
        .name
        .as_str();
    let cm = m
        .config_maps
        .iter()
        .find(|cm| {
            cm.metadata.name.as_deref() == Some(cm_name)
                && cm.metadata.namespace == ds.metadata.namespace
        })
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} is not in the manifests"));
    let text = &cm.data.as_ref().unwrap()[CONF_KEY];
    let list: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(list["cniVersion"], "1.0.0");
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "genie is the only plugin of its list");
    let mut plugin = plugins[0].clone();
    assert_eq!(plugin["type"], "genie");
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    let bytes = serde_json::to_vec(&plugin).unwrap();
    let conf = vfcni::genieconf::GenieConf::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{cm_name}/{CONF_KEY}: {e}"));
    (list, conf)
}

fn host_view(host_path: &Path) -> String {
    format!("{HOST_PREFIX}{}", host_path.display())
}

/// The projected-token volume of the CNI DaemonSet, if it has one.
fn token_volume(ds: &DaemonSet) -> Option<&k8s_openapi::api::core::v1::Volume> {
    pod_spec(ds).volumes.as_ref().unwrap().iter().find(|v| {
        v.projected
            .as_ref()
            .and_then(|p| p.sources.as_ref())
            .is_some_and(|s| s.iter().any(|s| s.service_account_token.is_some()))
    })
}

#[path = "manifests/agent.rs"]
mod agent;
#[path = "manifests/cni.rs"]
mod cni;
#[path = "manifests/controller.rs"]
mod controller;
#[path = "manifests/trust.rs"]
mod trust;
