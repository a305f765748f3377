//! The genie CNI's manifests (manifests/cni): CRDs, the genie conf, host paths, RBAC, the init script.

use super::*;

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
