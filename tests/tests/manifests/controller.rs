//! The controller's manifests (manifests/controller): replicas, webhooks, RBAC.

use super::*;

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
