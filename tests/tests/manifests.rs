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

#[test]
fn every_manifest_parses_into_typed_objects() {
    let m = load();
    assert!(!m.daemon_sets.is_empty());
    assert!(!m.config_maps.is_empty());
    assert!(!m.service_accounts.is_empty());
}

#[test]
fn the_daemon_set_mounts_every_host_path_the_agent_uses() {
    let m = load();
    let ds = agent_daemon_set(&m);
    let spec = pod_spec(ds);
    let volumes: BTreeMap<&str, _> = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mounts = agent_container(ds).volume_mounts.as_ref().unwrap();
    for (path, access) in host_paths_used() {
        // The deepest mount that holds the path is the one the agent sees it through.
        let mount = mounts
            .iter()
            .filter(|vm| path.starts_with(&vm.mount_path))
            .max_by_key(|vm| vm.mount_path.len())
            .unwrap_or_else(|| panic!("no volume mount covers {}", path.display()));
        assert!(
            mount.sub_path.is_none() && mount.sub_path_expr.is_none(),
            "{}: a subPath mount hides later changes",
            mount.mount_path
        );
        let volume = volumes
            .get(mount.name.as_str())
            .unwrap_or_else(|| panic!("mount {} names no volume", mount.name));
        let host_path = volume
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("{} must be a hostPath volume", mount.name));
        assert_eq!(
            host_path.path, mount.mount_path,
            "{}: the agent uses host paths as they are, so the mount must keep the host's path",
            mount.name
        );
        if access == Access::Write {
            assert_ne!(
                mount.read_only,
                Some(true),
                "{} is written by the agent but mounted read-only",
                path.display()
            );
        }
    }
    // And nothing host-side that the agent does not use.
    for vm in mounts {
        if volumes[vm.name.as_str()].host_path.is_some() {
            assert!(
                host_paths_used()
                    .iter()
                    .any(|(p, _)| p.starts_with(&vm.mount_path)),
                "{} is mounted from the host but the agent does not use it",
                vm.mount_path
            );
        }
    }
}

#[test]
fn the_daemon_set_runs_where_and_how_the_agent_needs() {
    let m = load();
    let ds = agent_daemon_set(&m);
    // The environment the agent is measured with is the one it is deployed with.
    let env = agent_container(ds).env.clone().unwrap_or_default();
    for (name, value) in vfagent::DEPLOYED_ENV {
        assert!(
            env.iter()
                .any(|e| e.name == *name && e.value.as_deref() == Some(*value)),
            "the agent's DaemonSet does not set {name}={value}"
        );
    }
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
    let ds_spec = &ds.spec;
    assert_eq!(
        ds_spec.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let template_labels = ds_spec.template.metadata.as_ref().unwrap().labels.as_ref();
    for (k, v) in ds_spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(template_labels.unwrap().get(k), Some(v), "selector {k}");
    }
    let spec = pod_spec(ds);
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(spec
        .node_selector
        .as_ref()
        .unwrap()
        .contains_key("feature.node.kubernetes.io/network-sriov.capable"));
    assert!(spec.tolerations.as_ref().is_some_and(|t| !t.is_empty()));
    let c = agent_container(ds);
    assert_eq!(
        c.security_context.as_ref().unwrap().privileged,
        Some(true),
        "writing sysfs and binding drivers need a privileged container"
    );
    let res = c.resources.as_ref().unwrap();
    assert!(res
        .requests
        .as_ref()
        .is_some_and(|r| r.contains_key("memory")));
    assert!(res
        .limits
        .as_ref()
        .is_some_and(|r| r.contains_key("memory")));
}

#[test]
fn probes_and_ports_match_the_http_server() {
    let m = load();
    let c = agent_container(agent_daemon_set(&m));
    let ports = c.ports.as_ref().unwrap();
    let metrics = ports
        .iter()
        .find(|p| p.container_port == i32::from(DEFAULT_PORT))
        .unwrap_or_else(|| panic!("port {DEFAULT_PORT} is not declared"));
    let served = [METRICS_PATH, HEALTHZ_PATH, LIVEZ_PATH];
    let probes: Vec<(&str, &Probe)> = [
        ("startupProbe", &c.startup_probe),
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
    .collect();
    assert!(probes.iter().any(|(n, _)| *n == "livenessProbe"));
    assert!(probes.iter().any(|(n, _)| *n == "readinessProbe"));
    for (name, probe) in probes {
        let get = probe
            .http_get
            .as_ref()
            .unwrap_or_else(|| panic!("{name} is not an HTTP probe"));
        let path = get.path.as_deref().unwrap_or("/");
        assert!(served.contains(&path), "{name} asks for {path}");
        // Liveness must not restart the agent for one pool's server (the supervisor restarts
        // that); startup and readiness wait for every pool.
        let want = if name == "livenessProbe" {
            LIVEZ_PATH
        } else {
            HEALTHZ_PATH
        };
        assert_eq!(path, want, "{name} should use {want}");
        match &get.port {
            IntOrString::Int(n) => assert_eq!(*n, i32::from(DEFAULT_PORT), "{name}"),
            IntOrString::String(s) => {
                assert_eq!(Some(s), metrics.name.as_ref(), "{name} names another port")
            }
        }
    }
}

#[test]
fn the_config_map_holds_a_valid_config_where_the_arguments_say() {
    let m = load();
    let ds = agent_daemon_set(&m);
    let c = agent_container(ds);
    let args = c.args.as_ref().unwrap();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    let at = args.iter().position(|a| a == "--config").unwrap();
    let config_path = Path::new(&args[at + 1]);
    let mount = c
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|vm| Path::new(&vm.mount_path) == config_path.parent().unwrap())
        .unwrap_or_else(|| panic!("nothing is mounted at {}", config_path.display()));
    assert!(
        mount.sub_path.is_none(),
        "ConfigMap edits do not reach subPath mounts"
    );
    let volume = pod_spec(ds)
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let cm_name = volume.config_map.as_ref().unwrap().name.as_str();
    let ns = ds.metadata.namespace.as_deref();
    let cm = m
        .config_maps
        .iter()
        .find(|cm| {
            cm.metadata.name.as_deref() == Some(cm_name) && cm.metadata.namespace.as_deref() == ns
        })
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} is not in the manifests"));
    let key = config_path.file_name().unwrap().to_str().unwrap();
    let text = &cm.data.as_ref().unwrap()[key];
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    let cfg = Config::from_value(&value).unwrap_or_else(|e| panic!("{cm_name}/{key}: {e}"));
    assert!(!cfg.resource_list.is_empty());
    assert!(!cfg.provisioning.is_empty());
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

#[test]
fn rbac_is_least_privilege() {
    let m = load();
    for r in &m.roles {
        assert_no_wildcards(
            r.metadata.name.as_deref().unwrap_or("Role"),
            r.rules.as_ref(),
        );
    }
    for r in &m.cluster_roles {
        assert_no_wildcards(
            r.metadata.name.as_deref().unwrap_or("ClusterRole"),
            r.rules.as_ref(),
        );
        assert!(
            r.aggregation_rule.is_none(),
            "aggregated roles grant what others add"
        );
    }
    let ds = agent_daemon_set(&m);
    let sa_name = pod_spec(ds).service_account_name.as_deref().unwrap();
    let ns = ds.metadata.namespace.as_deref();
    let sa = m
        .service_accounts
        .iter()
        .find(|s| {
            s.metadata.name.as_deref() == Some(sa_name) && s.metadata.namespace.as_deref() == ns
        })
        .unwrap_or_else(|| panic!("ServiceAccount {sa_name} is not in the manifests"));
    // The agent watches the API for the policy engine (vfagent::policy::watch): it reads what
    // policies are made of and creates Events, with a projected short-lived token in place of
    // the auto-mounted one, through one ClusterRoleBinding.
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert_eq!(pod_spec(ds).automount_service_account_token, Some(false));
    let volume = token_volume(ds).expect("a projected ServiceAccount token for the agent");
    let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let ttl = sources
        .iter()
        .find_map(|s| s.service_account_token.as_ref())
        .and_then(|t| t.expiration_seconds)
        .expect("an explicit token lifetime");
    assert!((600..=3600).contains(&ttl), "token lifetime {ttl}s");
    // kube's in-cluster config reads the CA and the namespace beside the token.
    assert!(sources.iter().any(|s| s.config_map.is_some()));
    assert!(sources.iter().any(|s| s.downward_api.is_some()));
    let mount = agent_container(ds)
        .volume_mounts
        .iter()
        .flatten()
        .find(|vm| vm.mount_path == SA_DIR)
        .expect("the token mounted where in-cluster clients read it");
    assert_eq!(
        (mount.name.as_str(), mount.read_only),
        (volume.name.as_str(), Some(true))
    );
    // The node name the watch of this node's pods selects by.
    let env = agent_container(ds).env.clone().unwrap_or_default();
    assert!(env.iter().any(|e| e.name == "NODE_NAME"
        && e.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .is_some_and(|f| f.field_path == "spec.nodeName")));
    let bound_to_agent = |subjects: Option<&Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.into_iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa_name && s.namespace.as_deref() == ns
        })
    };
    assert!(!m
        .role_bindings
        .iter()
        .any(|b| bound_to_agent(b.subjects.as_ref())));
    let bindings: Vec<_> = m
        .cluster_role_bindings
        .iter()
        .filter(|b| bound_to_agent(b.subjects.as_ref()))
        .collect();
    assert_eq!(bindings.len(), 1, "one ClusterRoleBinding for {sa_name}");
    let role_ref = &bindings[0].role_ref;
    assert_eq!(role_ref.kind, "ClusterRole");
    let role = m
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(role_ref.name.as_str()))
        .unwrap_or_else(|| panic!("ClusterRole {} is not in the manifests", role_ref.name));
    let mut granted = Vec::new();
    for r in role.rules.iter().flatten() {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    granted.push(format!("{g}/{res}:{v}"));
                }
            }
        }
    }
    granted.sort();
    let crd = |kind: &str| {
        m.crds
            .iter()
            .find(|c| c.spec.names.kind == kind)
            .map(|c| format!("{}/{}", c.spec.group, c.spec.names.plural))
            .unwrap_or_else(|| panic!("no CRD of kind {kind}"))
    };
    let mut want: Vec<String> = Vec::new();
    for res in [
        "/pods".to_string(),
        "/namespaces".to_string(),
        crd("NetworkAttachmentDefinition"),
        crd("LogicalNetwork"),
        "networking.k8s.io/networkpolicies".to_string(),
        // Not a CRD we ship (the NPWG project's); group and plural as the agent watches them.
        "k8s.cni.cncf.io/multi-networkpolicies".to_string(),
    ] {
        for verb in ["get", "list", "watch"] {
            want.push(format!("{res}:{verb}"));
        }
    }
    want.push("/events:create".to_string());
    // The KPI summary annotation on its own Node.
    want.push("/nodes:patch".to_string());
    // Switching on a threshold: vfgenie.io/switch-to on pods of its node.
    want.push("/pods:patch".to_string());
    want.sort();
    assert_eq!(granted, want);
}

// ---------------------------------------------------------------------------------------------
// The genie CNI (manifests/cni).

const CNI: &str = "vfgenie-cni";
const CONF_KEY: &str = "00-genie.conflist";
/// Where the DaemonSet mounts the host's root-owned CNI directories.
const HOST_PREFIX: &str = "/host";

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

#[test]
fn the_crds_are_the_ones_genie_reads() {
    use vfcni::k8s::Kind;
    let m = load();
    let cases = [
        (
            Kind::NetworkAttachmentDefinition,
            "k8s.cni.cncf.io",
            "NetworkAttachmentDefinition",
            "network-attachment-definitions",
            Some("net-attach-def"),
            &[("config", "string")][..],
        ),
        (
            Kind::LogicalNetwork,
            "alpha.network.k8s.io",
            "LogicalNetwork",
            "logicalnetworks",
            None,
            &[
                ("physicalNet", "string"),
                ("plugin", "string"),
                ("subnet", "string"),
                ("vlan", "integer"),
            ][..],
        ),
    ];
    assert_eq!(m.crds.len(), cases.len());
    for (kind, group, kind_name, plural, short, fields) in cases {
        let crd = m
            .crds
            .iter()
            .find(|c| c.spec.names.kind == kind_name)
            .unwrap_or_else(|| panic!("no CRD for {kind_name}"));
        let spec = &crd.spec;
        assert_eq!(spec.group, group);
        assert_eq!(spec.names.plural, plural);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.{group}").as_str())
        );
        assert_eq!(spec.scope, "Namespaced");
        assert_eq!(
            spec.names.short_names.clone().unwrap_or_default(),
            short.map(String::from).into_iter().collect::<Vec<_>>()
        );
        assert_eq!(spec.versions.len(), 1);
        let v = &spec.versions[0];
        assert_eq!(v.name, "v1");
        assert!(v.served && v.storage);
        // The path genie's client requests is the one the API server serves for this CRD.
        assert_eq!(
            kind.collection("ns"),
            format!("/apis/{group}/{}/namespaces/ns/{plural}", v.name)
        );
        let schema = v
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let crd_spec = &schema.properties.as_ref().unwrap()["spec"];
        assert_eq!(crd_spec.type_.as_deref(), Some("object"));
        let props = crd_spec.properties.as_ref().unwrap();
        assert_eq!(
            props.keys().map(String::as_str).collect::<Vec<_>>(),
            fields.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            "{kind_name} spec fields"
        );
        for (f, ty) in fields {
            assert_eq!(props[*f].type_.as_deref(), Some(*ty), "{kind_name} {f}");
        }
    }
}

/// The schema node at a printer column's `.a.b` path (a JSONPath filter like `[?(...)]` on an
/// array of objects steps into the items and then to the field named after it).
fn schema_at<'a>(
    root: &'a k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
    path: &str,
) -> Option<&'a k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps>
{
    let mut node = root;
    let path = path.strip_prefix('.')?;
    // `.status.conditions[?(@.type=="Ready")].status` → status, conditions[], status
    let mut rest = path;
    while !rest.is_empty() {
        let (seg, tail) = match rest.find(['.', '[']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if seg == "metadata" {
            return node.properties.as_ref()?.get("metadata");
        }
        node = node.properties.as_ref()?.get(seg)?;
        rest = tail;
        if let Some(t) = rest.strip_prefix('[') {
            let end = t.find(']')?;
            node = match &node.items {
                Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s)) => s,
                _ => return None,
            };
            rest = &t[end + 1..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    Some(node)
}

/// Every node of a structural schema says its type (or opts out explicitly).
fn assert_structural(
    at: &str,
    s: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray;
    assert!(
        s.type_.is_some()
            || s.x_kubernetes_int_or_string == Some(true)
            || s.x_kubernetes_preserve_unknown_fields == Some(true),
        "{at} has no type"
    );
    for (k, v) in s.properties.iter().flatten() {
        assert_structural(&format!("{at}.{k}"), v);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &s.items {
        assert_structural(&format!("{at}[]"), items);
    }
    for r in s.required.iter().flatten() {
        assert!(
            s.properties.as_ref().is_some_and(|p| p.contains_key(r)),
            "{at} requires {r}, which it does not define"
        );
    }
}

#[test]
fn the_logical_network_crd_is_structural_with_status_and_columns() {
    let m = load();
    let crd = m
        .crds
        .iter()
        .find(|c| c.spec.names.kind == "LogicalNetwork")
        .unwrap();
    let v = &crd.spec.versions[0];
    let schema = v
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    assert_structural("LogicalNetwork", schema);
    let spec = &schema.properties.as_ref().unwrap()["spec"];
    assert_eq!(spec.required.clone().unwrap_or_default(), vec!["plugin"]);
    let vlan = &spec.properties.as_ref().unwrap()["vlan"];
    assert_eq!((vlan.minimum, vlan.maximum), (Some(1.0), Some(4094.0)));
    // The status the controller writes goes through its own subresource.
    assert!(v
        .subresources
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .is_some());
    let status = &schema.properties.as_ref().unwrap()["status"];
    let conds = &status.properties.as_ref().unwrap()["conditions"];
    assert_eq!(conds.type_.as_deref(), Some("array"));
    assert_eq!(
        conds.x_kubernetes_list_map_keys.clone().unwrap_or_default(),
        vec!["type"]
    );
    // Each printer column shows a field the schema has, with the column's type.
    let cols = v.additional_printer_columns.as_ref().unwrap();
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Plugin",
            "Subnet",
            "PhysicalNet",
            "VLAN",
            "Ready",
            "Pods",
            "Age"
        ]
    );
    for c in cols {
        let node = schema_at(schema, &c.json_path).unwrap_or_else(|| {
            panic!("column {} shows {}, not in the schema", c.name, c.json_path)
        });
        if c.type_ != "date" {
            assert_eq!(
                node.type_.as_deref(),
                Some(c.type_.as_str()),
                "column {}",
                c.name
            );
        }
    }
}

#[test]
fn the_genie_conf_is_one_genie_accepts() {
    let m = load();
    let (list, conf) = genie_conf(&m);
    assert_eq!(list["name"], "genie");
    assert_eq!(conf.cni_version.as_deref(), Some("1.0.0"));
    assert_eq!(conf.conf_dir, Path::new(vfcni::genieconf::DEFAULT_CONF_DIR));
    assert_eq!(conf.cni_dir, Path::new("/var/lib/cni/vfgenie"));
    assert_eq!(conf.bin_dir, Path::new(vfcni::genieconf::DEFAULT_BIN_DIR));
    // Multi-tenant by default (see the_shipped_genie_conf_isolates_namespaces).
    assert!(conf.namespace_isolation);
    assert!(conf.readiness_indicator_file.is_some());
    let cluster_network = conf.cluster_network.as_deref().unwrap();
    if cluster_network.starts_with('/') {
        assert!(
            Path::new(cluster_network).starts_with(&conf.conf_dir),
            "the cluster network's conf lives in confDir"
        );
    }
    let kubeconfig = conf.kubeconfig.as_ref().unwrap();
    assert!(
        kubeconfig.starts_with(&conf.conf_dir) && kubeconfig != &conf.conf_dir,
        "the kubeconfig is written under the mounted conf dir"
    );
}

#[test]
fn the_cni_daemon_set_mounts_exactly_the_host_paths_it_needs() {
    let m = load();
    let (_, conf) = genie_conf(&m);
    let ds = cni_daemon_set(&m);
    assert_eq!(ds.metadata.namespace.as_deref(), Some("kube-system"));
    let spec = pod_spec(ds);
    assert_eq!(spec.host_network, Some(true), "runs before the pod network");
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    let volumes = spec.volumes.as_ref().unwrap();
    let mut host_paths: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
        .collect();
    host_paths.sort();
    let bin_dir = conf.bin_dir.to_str().unwrap();
    let conf_dir = conf.conf_dir.to_str().unwrap();
    let mut want = vec![bin_dir, conf_dir];
    want.sort();
    assert_eq!(
        host_paths, want,
        "host mounts: the CNI bin and conf dirs only"
    );
    let init = init_container(ds);
    let all: Vec<&Container> = std::iter::once(init).chain(&spec.containers).collect();
    for c in &all {
        for vm in c.volume_mounts.as_ref().unwrap() {
            let v = volumes.iter().find(|v| v.name == vm.name).unwrap();
            assert!(vm.sub_path.is_none(), "{}: no subPath", c.name);
            if let Some(h) = &v.host_path {
                assert_eq!(vm.mount_path, host_view(Path::new(&h.path)), "{}", c.name);
                assert_ne!(vm.read_only, Some(true), "{} writes {}", c.name, h.path);
            }
        }
        let sc = c.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{} needs no privilege", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert!(c.resources.as_ref().unwrap().limits.is_some(), "{}", c.name);
    }
    // The init script installs into exactly the conf's dirs.
    let init_script = script(init);
    assert!(init_script.contains(&format!(
        "genie install --to {} --name genie --name sriov\n",
        host_view(&conf.bin_dir)
    )));
    assert!(init_script.contains(&format!("{}/{CONF_KEY}", host_view(&conf.conf_dir))));
    // The main container only refreshes files under the conf dir: the token, and the agent's
    // config from the agent's own ConfigMap (read-only, optional).
    assert_eq!(spec.containers.len(), 1);
    let main = &spec.containers[0];
    let mounts = main.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 3);
    assert_eq!(mounts[0].mount_path, host_view(&conf.conf_dir));
    assert_eq!(mounts[1].mount_path, AGENT_CONF_MOUNT);
    assert_eq!(mounts[1].read_only, Some(true));
    // The third is the projected token it copies (see the_cni_token_on_the_host_is_short_lived).
    assert_eq!(mounts[2].mount_path, SA_DIR);
    assert_eq!(mounts[2].read_only, Some(true));
    let agent_cm = volumes
        .iter()
        .find(|v| v.name == mounts[1].name)
        .and_then(|v| v.config_map.as_ref())
        .unwrap();
    assert_eq!(agent_cm.name, "vfgenie-agent-config");
    assert_eq!(agent_cm.optional, Some(true), "nodes without the agent");
    // genie's `cni: "sriov"` reads the copy the DaemonSet keeps, under the conf dir.
    let sriov = conf.sriov.as_ref().unwrap();
    assert_eq!(
        sriov.agent_config,
        conf.kubeconfig
            .as_ref()
            .unwrap()
            .with_file_name("agent-config.json")
    );
    let refresh = script(main);
    assert!(refresh.contains(&format!("{AGENT_CONF_MOUNT}/config.json")));
    assert!(refresh.contains("mv -f \"$d/.agent-config.json.tmp\" \"$d/agent-config.json\""));
}

/// Where the CNI DaemonSet mounts the agent's ConfigMap.
const AGENT_CONF_MOUNT: &str = "/etc/vfgenie";
/// Where the containers' scripts read the ServiceAccount's token and CA.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[test]
fn the_cni_cluster_role_grants_exactly_what_genie_does() {
    let m = load();
    let ds = cni_daemon_set(&m);
    let sa_name = pod_spec(ds).service_account_name.as_deref().unwrap();
    let ns = ds.metadata.namespace.as_deref().unwrap();
    let sa = m
        .service_accounts
        .iter()
        .find(|s| {
            s.metadata.name.as_deref() == Some(sa_name)
                && s.metadata.namespace.as_deref() == Some(ns)
        })
        .unwrap_or_else(|| panic!("ServiceAccount {sa_name} is not in the manifests"));
    // The init container copies the token for the CNI binary: not the auto-mounted one but a
    // projected one at the same path (see the_cni_token_on_the_host_is_short_lived).
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert_eq!(pod_spec(ds).automount_service_account_token, Some(false));
    assert!(
        token_volume(ds).is_some(),
        "no projected token for {sa_name}"
    );
    let bound = |subjects: Option<&Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.into_iter().flatten().any(|s| {
            s.kind == "ServiceAccount" && s.name == sa_name && s.namespace.as_deref() == Some(ns)
        })
    };
    assert!(!m.role_bindings.iter().any(|b| bound(b.subjects.as_ref())));
    let bindings: Vec<_> = m
        .cluster_role_bindings
        .iter()
        .filter(|b| bound(b.subjects.as_ref()))
        .collect();
    assert_eq!(bindings.len(), 1, "one ClusterRoleBinding for {sa_name}");
    let role_ref = &bindings[0].role_ref;
    assert_eq!(
        (role_ref.api_group.as_deref(), role_ref.kind.as_str()),
        (Some("rbac.authorization.k8s.io"), "ClusterRole")
    );
    let role = m
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(role_ref.name.as_str()))
        .unwrap_or_else(|| panic!("ClusterRole {} is not in the manifests", role_ref.name));
    let rules = role.rules.as_ref().unwrap();
    assert_no_wildcards(&role_ref.name, Some(rules));
    let mut granted = Vec::new();
    for r in rules {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        for g in r.api_groups.as_ref().unwrap() {
            for res in r.resources.as_ref().unwrap() {
                for v in &r.verbs {
                    granted.push((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    granted.sort();
    // What the client calls: GET pods, GET + PUT pods/status (annotations, retried on
    // conflict), GET NetworkAttachmentDefinitions and LogicalNetworks, by name only.
    let nad = &m
        .crds
        .iter()
        .find(|c| c.spec.names.kind == "NetworkAttachmentDefinition")
        .unwrap()
        .spec;
    let ln = &m
        .crds
        .iter()
        .find(|c| c.spec.names.kind == "LogicalNetwork")
        .unwrap()
        .spec;
    let mut want: Vec<(String, String, String)> = [
        ("", "pods", "get"),
        ("", "pods/status", "get"),
        ("", "pods/status", "update"),
        (nad.group.as_str(), nad.names.plural.as_str(), "get"),
        (ln.group.as_str(), ln.names.plural.as_str(), "get"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    want.sort();
    assert_eq!(granted, want);
}

/// Runs the init container's script against a temp dir standing in for the host and the pod
/// (paths rewritten, the real genie binary on PATH), twice, and checks what it leaves: the binary,
/// the conf, and a kubeconfig genie's client accepts, with the right modes and no temp files.
#[test]
fn the_init_script_installs_what_genie_needs() {
    use std::os::unix::fs::PermissionsExt;
    let m = load();
    let (list, conf) = genie_conf(&m);
    let ds = cni_daemon_set(&m);
    let init = init_container(ds);
    let genie = vfgenie_tests::runtime::genie_binary().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let host = root.join("host");
    let sa = root.join("sa");
    let cm = root.join("cm");
    let path_dir = root.join("path");
    let agent_cm = root.join("agent-cm");
    for d in [&sa, &cm, &path_dir, &agent_cm] {
        std::fs::create_dir_all(d).unwrap();
    }
    for h in [&conf.bin_dir, &conf.conf_dir] {
        std::fs::create_dir_all(host.join(h.strip_prefix("/").unwrap())).unwrap();
    }
    std::fs::write(sa.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(sa.join("token"), "t0ken").unwrap();
    // The agent's ConfigMap, as the manifests define it.
    let agent_config = m
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("vfgenie-agent-config"))
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get("config.json"))
        .unwrap()
        .clone();
    std::fs::write(agent_cm.join("config.json"), &agent_config).unwrap();
    std::os::unix::fs::symlink(&genie, path_dir.join("genie")).unwrap();
    let cm_mount = init
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|vm| vm.name == "genie-conf")
        .unwrap();
    std::fs::write(
        cm.join(CONF_KEY),
        serde_json::to_string_pretty(&list).unwrap(),
    )
    .unwrap();
    let text = script(init)
        .replace(HOST_PREFIX, host.to_str().unwrap())
        .replace(SA_DIR, sa.to_str().unwrap())
        .replace(&cm_mount.mount_path, cm.to_str().unwrap())
        .replace(
            &format!("{AGENT_CONF_MOUNT}/"),
            &format!("{}/", agent_cm.display()),
        );
    let path = format!(
        "{}:{}",
        path_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (service_host, server) in [
        ("10.96.0.1", "https://10.96.0.1:443/"),
        ("fd00::1", "https://[fd00::1]:443/"),
    ] {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&text)
            .env("PATH", &path)
            .env("KUBERNETES_SERVICE_HOST", service_host)
            .env("KUBERNETES_SERVICE_PORT", "443")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let on_host = |p: &Path| host.join(p.strip_prefix("/").unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let installed = on_host(&conf.bin_dir.join("genie"));
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(&genie).unwrap()
        );
        assert_eq!(mode(&installed), 0o755);
        // The same binary is the sriov plugin NADs of type "sriov" name.
        let sriov = on_host(&conf.bin_dir.join("sriov"));
        assert_eq!(
            std::fs::read(&sriov).unwrap(),
            std::fs::read(&genie).unwrap()
        );
        assert_eq!(mode(&sriov), 0o755);
        let conf_file = on_host(&conf.conf_dir.join(CONF_KEY));
        let written: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&conf_file).unwrap()).unwrap();
        assert_eq!(written, list);
        assert_eq!(mode(&conf_file), 0o644);
        let kubeconfig = conf.kubeconfig.as_ref().unwrap();
        let kc_dir = on_host(kubeconfig.parent().unwrap());
        assert_eq!(mode(&kc_dir), 0o700);
        for f in std::fs::read_dir(&kc_dir).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().into_string().unwrap();
            assert!(!name.starts_with('.'), "temp file {name} left behind");
            assert_eq!(mode(&f.path()), 0o600, "{name}");
        }
        // The kubeconfig names host paths; read it where they are in this stand-in.
        let kc_text = std::fs::read_to_string(on_host(kubeconfig))
            .unwrap()
            .replace(
                conf.conf_dir.to_str().unwrap(),
                on_host(&conf.conf_dir).to_str().unwrap(),
            );
        let cluster =
            vfcni::k8s::ClusterConfig::from_kubeconfig_str(&kc_text, &on_host(kubeconfig))
                .unwrap_or_else(|e| panic!("{service_host}: {e}"));
        assert_eq!(cluster.server.to_string(), server);
        assert_eq!(
            cluster.auth,
            vfcni::k8s::Auth::TokenFile(kc_dir.join("token"))
        );
        assert!(cluster.tls.ca_pem.is_some());
        // The agent's config is where the genie conf's `sriov` looks, and names its pools.
        let sriov = conf.sriov.as_ref().unwrap();
        let copied = std::fs::read(on_host(&sriov.agent_config)).unwrap();
        assert_eq!(copied, agent_config.as_bytes());
        assert_eq!(
            vfcni::genieconf::pools_of(&copied).unwrap(),
            ["intel.com/sriov_netdevice", "intel.com/sriov_dpdk"]
        );
        for d in [on_host(&conf.bin_dir), on_host(&conf.conf_dir)] {
            for f in std::fs::read_dir(&d).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                assert!(!name.starts_with('.'), "temp file {name} left in {d:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Privilege and trust (design: "Trust boundaries").

/// The agent stays privileged for the two things nothing narrower grants (the device cgroup for
/// opening `/dev/vfio/<group>`, the runtime's LSM profile for sysfs writes), the manifest says so
/// where it sets it, and it carries no narrowing field that a privileged container ignores (or
/// the API refuses), which would only suggest a confinement that is not there.
#[test]
fn the_agent_is_privileged_only_with_its_reasons_and_no_ineffective_narrowing() {
    let m = load();
    let ds = agent_daemon_set(&m);
    let spec = pod_spec(ds);
    assert_ne!(spec.host_pid, Some(true), "the agent needs no host PIDs");
    assert_ne!(spec.host_ipc, Some(true), "the agent needs no host IPC");
    assert_ne!(spec.share_process_namespace, Some(true));
    let c = agent_container(ds);
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.privileged, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "sysfs and the kubelet dirs are root's"
    );
    // Ignored for a privileged container: every capability is granted, no seccomp profile is
    // applied. And the API refuses allowPrivilegeEscalation: false together with privileged.
    assert!(sc.capabilities.is_none(), "capabilities mean nothing here");
    assert!(sc.seccomp_profile.is_none(), "seccomp is not applied here");
    assert!(spec
        .security_context
        .as_ref()
        .is_none_or(|p| p.seccomp_profile.is_none()));
    assert!(sc.allow_privilege_escalation.is_none());
    // The reasons, in the manifest: which operation needs what, and why nothing narrower works.
    let text = std::fs::read_to_string(workspace().join("manifests/agent/daemonset.yaml")).unwrap();
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for reason in [
        "open(/dev/vfio/<group>)",
        "device cgroup",
        "AppArmor",
        "SELinux",
        "CAP_NET_ADMIN",
        "sriov_numvfs",
    ] {
        assert!(
            header.contains(reason),
            "the header does not explain {reason}"
        );
    }
}

/// The agent's HTTP server binds node-local by default; with host network the kubelet probes it
/// from the host's netns, so every probe must name 127.0.0.1 (the default host is the pod IP,
/// which on host network is the node's address, where nothing listens).
#[test]
fn the_agent_probes_ask_the_node_local_server() {
    let m = load();
    let ds = agent_daemon_set(&m);
    assert_eq!(pod_spec(ds).host_network, Some(true));
    let c = agent_container(ds);
    let probes = [
        ("startupProbe", &c.startup_probe),
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
    ];
    for (name, probe) in probes {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{name} is not an HTTP probe"));
        assert_eq!(get.host.as_deref(), Some("127.0.0.1"), "{name}");
        assert!(
            get.scheme.as_deref().is_none_or(|s| s == "HTTP"),
            "{name}: the agent serves plain HTTP"
        );
    }
}

/// Both CNI containers: root (the host's CNI dirs are root's) but with no capability at all, no
/// privilege escalation, a read-only root filesystem and the runtime's default seccomp profile.
#[test]
fn the_cni_containers_run_with_no_capabilities() {
    let m = load();
    let ds = cni_daemon_set(&m);
    let spec = pod_spec(ds);
    let pod_seccomp = spec
        .security_context
        .as_ref()
        .and_then(|p| p.seccomp_profile.as_ref());
    let all: Vec<&Container> = std::iter::once(init_container(ds))
        .chain(&spec.containers)
        .collect();
    assert_eq!(all.len(), 2);
    for c in all {
        let sc = c.security_context.as_ref().unwrap();
        assert_ne!(sc.privileged, Some(true), "{}", c.name);
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{}",
            c.name
        );
        assert!(
            caps.add.as_ref().is_none_or(Vec::is_empty),
            "{}: adds capabilities",
            c.name
        );
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.run_as_user,
            Some(0),
            "{}: writes root-owned host dirs",
            c.name
        );
        assert_ne!(sc.run_as_non_root, Some(true), "{}", c.name);
        let seccomp = sc.seccomp_profile.as_ref().or(pod_seccomp);
        assert_eq!(
            seccomp.map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{}",
            c.name
        );
    }
    assert_ne!(spec.host_pid, Some(true));
    assert_ne!(spec.host_ipc, Some(true));
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

/// The token genie uses lies on every node's disk and can update any pod's status: it is a
/// projected token of at most an hour (not the auto-mounted one, which the API server may extend
/// to a year), mounted read-only where the scripts read it, with the cluster CA beside it.
#[test]
fn the_cni_token_on_the_host_is_short_lived() {
    let m = load();
    let ds = cni_daemon_set(&m);
    let spec = pod_spec(ds);
    assert_eq!(spec.automount_service_account_token, Some(false));
    let volume = token_volume(ds).expect("a projected ServiceAccount token volume");
    let sources = volume.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let token = sources
        .iter()
        .find_map(|s| s.service_account_token.as_ref())
        .unwrap();
    assert_eq!(token.path, "token");
    assert!(token.audience.is_none(), "the API server's own audience");
    let ttl = token.expiration_seconds.expect("an explicit lifetime");
    // 3607 is the lifetime of the auto-mounted token, which the API server extends to a year.
    assert!((600..=3600).contains(&ttl), "token lifetime {ttl}s");
    let ca = sources
        .iter()
        .find_map(|s| s.config_map.as_ref())
        .expect("the cluster CA beside the token");
    assert_eq!(ca.name, "kube-root-ca.crt");
    let items = ca.items.as_ref().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("ca.crt", "ca.crt")
    );
    let all: Vec<&Container> = std::iter::once(init_container(ds))
        .chain(&spec.containers)
        .collect();
    for c in all {
        assert!(script(c).contains(&format!("sa={SA_DIR}\n")), "{}", c.name);
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|vm| vm.mount_path == SA_DIR)
            .unwrap_or_else(|| panic!("{}: nothing mounted at {SA_DIR}", c.name));
        assert_eq!(mount.name, volume.name, "{}", c.name);
        assert_eq!(mount.read_only, Some(true), "{}", c.name);
    }
}

/// The shipped conf is for a multi-tenant cluster: a pod may use only its own namespace's NADs
/// (no global namespaces), and the node's own default network is not a NAD, so isolation cannot
/// refuse it to pods outside kube-system.
#[test]
fn the_shipped_genie_conf_isolates_namespaces() {
    let m = load();
    let (list, conf) = genie_conf(&m);
    assert_eq!(list["plugins"][0]["namespaceIsolation"], true);
    assert!(conf.namespace_isolation);
    assert!(conf.global_namespaces.is_empty());
    assert!(conf
        .check_isolation("tenant-a", "p", "tenant-a", "net")
        .is_ok());
    assert!(conf
        .check_isolation("tenant-a", "p", "tenant-b", "net")
        .is_err());
    assert!(conf
        .check_isolation("tenant-a", "p", "kube-system", "net")
        .is_err());
    // clusterNetwork and defaultNetworks naming NADs are checked like the pod's own choices:
    // the shipped default network is a conf file, and there are no defaultNetworks.
    let cluster_network = conf.cluster_network.as_deref().unwrap();
    assert!(
        cluster_network.starts_with('/'),
        "clusterNetwork {cluster_network} must not be a NAD while isolation is on"
    );
    assert!(conf.default_networks.is_empty());
}

const CONTROLLER: &str = "vfgenie-controller";

fn controller(m: &Manifests) -> (&Deployment, &PodSpec, &Container) {
    let d = m
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(CONTROLLER))
        .expect("the controller's Deployment");
    let pod = d.spec.template.spec.as_ref().unwrap();
    let c = pod
        .containers
        .iter()
        .find(|c| c.name == "controller")
        .unwrap();
    (d, pod, c)
}

/// The value of `--flag=value` (or the controller's default) in the container's args.
fn flag<'a>(c: &'a Container, name: &str, default: &'a str) -> &'a str {
    c.args
        .iter()
        .flatten()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
        .unwrap_or(default)
}

#[test]
fn the_controller_runs_two_replicas_behind_a_service_and_a_budget() {
    use vfcontroller::server::{DEFAULT_LISTEN, DEFAULT_TLS_DIR, HEALTHZ_PATH, READYZ_PATH};
    let m = load();
    let (d, pod, c) = controller(&m);
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(2));
    let labels = spec.selector.match_labels.clone().unwrap();
    // A rollout never takes a serving replica away before its successor is ready.
    let rolling = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
    // The budget covers the same pods and keeps one up through drains.
    let pdb = m
        .pdbs
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(CONTROLLER))
        .unwrap();
    let pdb_spec = pdb.spec.as_ref().unwrap();
    assert_eq!(pdb_spec.min_available, Some(IntOrString::Int(1)));
    assert_eq!(
        pdb_spec.selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&labels)
    );
    assert_eq!(pdb.metadata.namespace, d.metadata.namespace);
    // The container listens where the Service sends the API server.
    let listen: std::net::SocketAddr = flag(c, "listen", DEFAULT_LISTEN).parse().unwrap();
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("webhook"))
        .unwrap();
    assert_eq!(port.container_port, i32::from(listen.port()));
    let svc = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(CONTROLLER))
        .unwrap();
    let svc_spec = svc.spec.as_ref().unwrap();
    assert_eq!(svc_spec.selector.as_ref(), Some(&labels));
    let svc_port = &svc_spec.ports.as_ref().unwrap()[0];
    assert_eq!(
        svc_port.target_port,
        Some(IntOrString::String("webhook".into()))
    );
    // Probes: liveness while it serves, readiness once its caches are synced, over HTTPS.
    for (probe, path) in [
        (c.liveness_probe.as_ref(), HEALTHZ_PATH),
        (c.readiness_probe.as_ref(), READYZ_PATH),
    ] {
        let get = probe.unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        assert_eq!(get.port, IntOrString::String("webhook".into()));
    }
    // The serving certificate comes from the Secret, mounted where the controller reads it.
    let tls_dir = flag(c, "tls-dir", DEFAULT_TLS_DIR);
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|v| v.mount_path == tls_dir)
        .expect("a mount at --tls-dir");
    assert_eq!(mount.read_only, Some(true));
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let secret = vol.secret.as_ref().unwrap().secret_name.clone().unwrap();
    let cert = m
        .cert_manager
        .iter()
        .find(|(k, _)| k == "Certificate")
        .map(|(_, d)| d)
        .unwrap();
    assert_eq!(cert["spec"]["secretName"], secret.as_str());
    // The certificate names the Service as the API server calls it.
    let ns = svc.metadata.namespace.clone().unwrap();
    let wanted = vfcontroller::certs::dns_names(&ns, CONTROLLER);
    for name in cert["spec"]["dnsNames"].as_array().unwrap() {
        assert!(wanted.iter().any(|w| w == name.as_str().unwrap()), "{name}");
    }
    assert!(cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == &serde_json::json!(format!("{CONTROLLER}.{ns}.svc"))));
    // Unprivileged: a webhook needs no capability, no root and no writable root.
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    let csc = c.security_context.as_ref().unwrap();
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(
        csc.capabilities.as_ref().unwrap().drop.clone().unwrap(),
        vec!["ALL"]
    );
    // With a non-root user, the Secret's 0440 files must belong to its group.
    assert_eq!(vol.secret.as_ref().unwrap().default_mode, Some(0o440));
    assert_eq!(psc.fs_group, psc.run_as_group);
}

#[test]
fn the_webhooks_fail_closed_for_network_objects_and_open_for_pods() {
    use vfcontroller::server::VALIDATE_PATH;
    let m = load();
    assert_eq!(m.webhooks.len(), 1);
    let cfg = &m.webhooks[0];
    let hooks = cfg.webhooks.as_ref().unwrap();
    let svc = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(CONTROLLER))
        .unwrap();
    let svc_port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port;
    let cert = m
        .cert_manager
        .iter()
        .find(|(k, _)| k == "Certificate")
        .map(|(_, d)| d)
        .unwrap();
    assert_eq!(
        cfg.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("cert-manager.io/inject-ca-from")
            .map(String::as_str),
        Some(
            format!(
                "{}/{}",
                cert["metadata"]["namespace"].as_str().unwrap(),
                cert["metadata"]["name"].as_str().unwrap()
            )
            .as_str()
        )
    );
    let mut seen = std::collections::BTreeMap::new();
    for h in hooks {
        assert_eq!(h.side_effects, "None", "{}", h.name);
        assert_eq!(h.timeout_seconds, Some(5), "{}", h.name);
        assert_eq!(h.admission_review_versions, vec!["v1"], "{}", h.name);
        let target = h.client_config.service.as_ref().unwrap();
        assert_eq!(target.name, CONTROLLER);
        assert_eq!(Some(&target.namespace), svc.metadata.namespace.as_ref());
        assert_eq!(target.path.as_deref(), Some(VALIDATE_PATH));
        assert_eq!(target.port, Some(svc_port));
        // kube-system (where the controller and the CNI run) is never reviewed.
        let sel = h.namespace_selector.as_ref().unwrap();
        let exempt = sel.match_expressions.as_ref().unwrap().iter().any(|e| {
            e.key == "kubernetes.io/metadata.name"
                && e.operator == "NotIn"
                && e.values
                    .as_ref()
                    .is_some_and(|v| v.contains(&"kube-system".to_string()))
        });
        assert!(exempt, "{} does not exempt kube-system", h.name);
        for r in h.rules.iter().flatten() {
            for res in r.resources.iter().flatten() {
                seen.insert(
                    res.clone(),
                    (
                        h.failure_policy.clone().unwrap(),
                        r.operations.clone().unwrap(),
                    ),
                );
            }
        }
    }
    let fail = |ops: &[&str]| {
        (
            "Fail".to_string(),
            ops.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let ignore = |ops: &[&str]| {
        (
            "Ignore".to_string(),
            ops.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    let want: std::collections::BTreeMap<String, (String, Vec<String>)> = [
        (
            "network-attachment-definitions",
            fail(&["CREATE", "UPDATE"]),
        ),
        ("logicalnetworks", fail(&["CREATE", "UPDATE"])),
        ("multi-networkpolicies", fail(&["CREATE", "UPDATE"])),
        ("networkpolicies", ignore(&["CREATE", "UPDATE"])),
        // An outage of the controller never stops pod creation.
        ("pods", ignore(&["CREATE"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(seen, want);
}

#[test]
fn the_controller_role_reads_what_it_checks_and_writes_only_status() {
    let m = load();
    let role = m
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(CONTROLLER))
        .unwrap();
    assert_no_wildcards(CONTROLLER, role.rules.as_ref());
    let mut granted = Vec::new();
    for r in role.rules.iter().flatten() {
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    granted.push(format!("{g}/{res}:{v}"));
                }
            }
        }
    }
    granted.sort();
    let mut want: Vec<String> = [
        "k8s.cni.cncf.io/network-attachment-definitions:get",
        "k8s.cni.cncf.io/network-attachment-definitions:list",
        "k8s.cni.cncf.io/network-attachment-definitions:watch",
        "alpha.network.k8s.io/logicalnetworks:get",
        "alpha.network.k8s.io/logicalnetworks:list",
        "alpha.network.k8s.io/logicalnetworks:watch",
        "alpha.network.k8s.io/logicalnetworks/status:get",
        "alpha.network.k8s.io/logicalnetworks/status:patch",
        "alpha.network.k8s.io/logicalnetworks/status:update",
        "/namespaces:get",
        "/namespaces:list",
        "/namespaces:watch",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(granted, want);
    let (_, pod, _) = controller(&m);
    let sa = pod.service_account_name.as_deref().unwrap();
    let binding = m
        .cluster_role_bindings
        .iter()
        .find(|b| b.role_ref.name == CONTROLLER)
        .unwrap();
    assert!(binding
        .subjects
        .iter()
        .flatten()
        .any(|s| s.kind == "ServiceAccount" && s.name == sa));
}
