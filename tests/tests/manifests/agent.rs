//! The agent's manifests (manifests/agent): host paths, placement, probes, config, RBAC.

use super::*;

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
