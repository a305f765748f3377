use super::*;
use crate::k8s::objects::{NadSpec, NetworkAttachmentDefinition, ObjectMeta};
use std::path::PathBuf;

fn conf(v: serde_json::Value) -> Result<GenieConf, ConfError> {
    GenieConf::from_value(&v)
}

#[test]
fn defaults_apply_to_a_minimal_conf() {
    let c = conf(serde_json::json!({"name":"k8s-pod-network","type":"genie"})).unwrap();
    assert_eq!(c.conf_dir, PathBuf::from("/etc/cni/net.d"));
    assert_eq!(c.cni_dir, PathBuf::from("/var/lib/cni/vfgenie"));
    assert_eq!(c.bin_dir, PathBuf::from("/opt/cni/bin"));
    assert!(c.default_plugins.is_empty());
    assert!(!c.namespace_isolation);
    assert_eq!(c.system_namespaces, ["kube-system"]);
    assert!(c.global_namespaces.is_empty());
    assert!(!c.default_networks_apply("kube-system"));
    assert!(c.default_networks_apply("default"));
}

#[test]
fn genie_and_multus_keys_are_read() {
    let c = conf(serde_json::json!({
        "name":"k8s-pod-network","type":"genie","cniVersion":"1.0.0",
        "default_plugin":"weave, flannel,weave",
        "log_level":"debug","cAdvisor_address":"http://127.0.0.1:4194",
        "kubernetes":{"kubeconfig":"/etc/cni/net.d/genie-kubeconfig","k8s_api_root":"https://10.96.0.1:443"},
        "clusterNetwork":"kube-system/calico","defaultNetworks":["tenant","infra/sriov-a"],
        "delegates":[{"type":"bridge"}],
        "confDir":"/tmp/conf","cniDir":"/tmp/cache","binDir":"/tmp/bin",
        "readinessindicatorfile":"/run/ready","namespaceIsolation":true,
        "globalNamespaces":"default,infra","systemNamespaces":["kube-system","monitoring"],
        "logFile":"/var/log/genie.log","etcd_endpoints":"ignored"
    }))
    .unwrap();
    assert_eq!(c.default_plugins, ["weave", "flannel", "weave"]);
    assert_eq!(
        c.kubeconfig,
        Some(PathBuf::from("/etc/cni/net.d/genie-kubeconfig"))
    );
    assert_eq!(c.k8s_api_root.as_deref(), Some("https://10.96.0.1:443"));
    assert_eq!(c.cadvisor_address.as_deref(), Some("http://127.0.0.1:4194"));
    assert_eq!(c.log_level, Some(LogLevel::Debug));
    assert_eq!(c.cluster_network.as_deref(), Some("kube-system/calico"));
    assert_eq!(c.default_networks, ["tenant", "infra/sriov-a"]);
    assert_eq!(c.delegates.len(), 1);
    assert_eq!(c.conf_dir, PathBuf::from("/tmp/conf"));
    assert_eq!(
        c.readiness_indicator_file,
        Some(PathBuf::from("/run/ready"))
    );
    assert!(c.namespace_isolation);
    assert_eq!(c.global_namespaces, ["default", "infra"]);
    assert_eq!(c.system_namespaces, ["kube-system", "monitoring"]);
    assert_eq!(c.log_file, Some(PathBuf::from("/var/log/genie.log")));
    // Multus kubeconfig key when the genie one is absent; logLevel wins over log_level.
    let m = conf(serde_json::json!({"kubeconfig":"/k","logLevel":"error","log_level":"debug"}))
        .unwrap();
    assert_eq!(m.kubeconfig, Some(PathBuf::from("/k")));
    assert_eq!(m.log_level, Some(LogLevel::Error));
}

#[test]
fn invalid_values_name_their_key() {
    let cases = [
        (
            serde_json::json!({"default_plugin":"weave,../bin/sh"}),
            "default_plugin",
        ),
        (serde_json::json!({"default_plugin":7}), "default_plugin"),
        (serde_json::json!({"kubernetes":"x"}), "kubernetes"),
        (
            serde_json::json!({"kubernetes":{"kubeconfig":"rel/path"}}),
            "kubernetes.kubeconfig",
        ),
        (
            serde_json::json!({"kubernetes":{"k8s_api_root":"ftp://x"}}),
            "kubernetes.k8s_api_root",
        ),
        (serde_json::json!({"confDir":"etc/cni"}), "confDir"),
        (serde_json::json!({"cniDir":5}), "cniDir"),
        (serde_json::json!({"binDir":"bin"}), "binDir"),
        (
            serde_json::json!({"namespaceIsolation":"yes"}),
            "namespaceIsolation",
        ),
        (
            serde_json::json!({"globalNamespaces":"a,B"}),
            "globalNamespaces",
        ),
        (
            serde_json::json!({"systemNamespaces":[1]}),
            "systemNamespaces",
        ),
        (
            serde_json::json!({"defaultNetworks":"a"}),
            "defaultNetworks",
        ),
        (
            serde_json::json!({"defaultNetworks":["a/b/c"]}),
            "defaultNetworks",
        ),
        (serde_json::json!({"delegates":[1]}), "delegates"),
        (serde_json::json!({"logLevel":"loud"}), "logLevel"),
        (serde_json::json!({"log_level":"loud"}), "log_level"),
        (
            serde_json::json!({"readinessindicatorfile":"ready"}),
            "readinessindicatorfile",
        ),
        (serde_json::json!({"logFile":"x.log"}), "logFile"),
    ];
    for (v, key) in cases {
        match conf(v.clone()) {
            Err(ConfError::Key { key: k, problem }) => {
                assert_eq!(k, key, "{v}: {problem}");
                let msg = ConfError::Key { key: k, problem }.to_string();
                assert!(
                    msg.starts_with(&format!("the genie conf key {key:?} is invalid: ")),
                    "{msg}"
                );
            }
            other => panic!("{v}: {other:?}"),
        }
    }
    assert!(matches!(
        GenieConf::from_slice(b"[]"),
        Err(ConfError::NotAnObject)
    ));
    assert!(matches!(
        GenieConf::from_slice(b"{"),
        Err(ConfError::Json(_))
    ));
}

fn nad(name: &str, config: &str) -> NetworkAttachmentDefinition {
    NetworkAttachmentDefinition {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..ObjectMeta::default()
        },
        spec: NadSpec {
            config: config.into(),
        },
    }
}

#[test]
fn nad_config_comes_from_spec_config() {
    let dir = tempfile::tempdir().unwrap();
    let r = resolve(
        &nad(
            "mv",
            r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0"}"#,
        ),
        dir.path(),
    )
    .unwrap();
    assert_eq!(r.source, ConfigSource::SpecConfig);
    assert_eq!(r.name(), Some("mv"), "a missing name becomes the NAD's");
    assert!(!r.is_conflist());
    let r = resolve(
        &nad("br", r#"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"},{"type":"tuning"}]}"#),
        dir.path(),
    )
    .unwrap();
    assert_eq!(r.name(), Some("other"));
    assert!(r.is_conflist());
    for (bad, problem) in [
        ("{", "EOF"),
        ("[1]", "not a JSON object"),
        (r#"{"name":"x"}"#, "no \"type\""),
        (r#"{"type":"../../bin/sh"}"#, "not a plain file name"),
        (r#"{"plugins":[]}"#, "empty"),
        (r#"{"plugins":[{"type":"a/b"}]}"#, "not a plain file name"),
        (r#"{"type":"x","name":3}"#, "must be a string"),
    ] {
        let e = resolve(&nad("x", bad), dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("NetworkAttachmentDefinition default/x: spec.config"),
            "{msg}"
        );
        assert!(msg.contains(problem), "{bad}: {msg}");
    }
}

#[test]
fn nad_config_comes_from_the_conf_dir_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("00-broken.conf"), "{ not json").unwrap();
    std::fs::write(d.join("10-mv.conf"), r#"{"name":"mv","type":"macvlan"}"#).unwrap();
    std::fs::write(
        d.join("20-br.conflist"),
        r#"{"name":"br","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    std::fs::write(d.join("30-other.json"), r#"{"name":"js","type":"ptp"}"#).unwrap();
    std::fs::write(d.join("40-ignored.txt"), r#"{"name":"txt","type":"ptp"}"#).unwrap();
    std::fs::write(
        d.join("50-mv-again.conf"),
        r#"{"name":"mv","type":"ipvlan"}"#,
    )
    .unwrap();
    std::fs::create_dir(d.join("sub.conf")).unwrap();

    let r = resolve(&nad("mv", ""), d).unwrap();
    assert_eq!(r.source, ConfigSource::File(d.join("10-mv.conf")));
    assert_eq!(r.config["type"], "macvlan");
    let r = resolve(&nad("br", "  "), d).unwrap();
    assert!(r.is_conflist());
    assert_eq!(r.source, ConfigSource::File(d.join("20-br.conflist")));
    assert_eq!(resolve(&nad("js", ""), d).unwrap().config["type"], "ptp");
    let e = resolve(&nad("txt", ""), d).unwrap_err();
    assert!(matches!(e, ResolveError::NoFile { .. }), "{e}");
    assert!(e.to_string().contains("default/txt has no spec.config"));
    let e = resolve(&nad("x", ""), &d.join("missing")).unwrap_err();
    assert!(matches!(e, ResolveError::ReadDir { .. }));
}

#[test]
fn namespace_isolation() {
    let open = conf(serde_json::json!({})).unwrap();
    assert!(open.check_isolation("a", "p", "b", "n").is_ok());
    let iso =
        conf(serde_json::json!({"namespaceIsolation":true,"globalNamespaces":["shared"]})).unwrap();
    assert!(iso.check_isolation("a", "p", "a", "n").is_ok());
    assert!(iso.check_isolation("a", "p", "shared", "n").is_ok());
    let e = iso.check_isolation("a", "p", "b", "n").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("pod a/p may not use NetworkAttachmentDefinition b/n"),
        "{msg}"
    );
    assert!(
        msg.contains("namespaceIsolation") && msg.contains("(shared)"),
        "{msg}"
    );
    let none = conf(serde_json::json!({"namespaceIsolation":true})).unwrap();
    assert!(none
        .check_isolation("a", "p", "b", "n")
        .unwrap_err()
        .to_string()
        .contains("(none)"));
}

#[test]
fn the_cluster_config_comes_from_the_kubeconfig_with_the_api_root_override() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("genie-kubeconfig");
    std::fs::write(
        &kc,
        "current-context: c\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n",
    )
    .unwrap();
    let c = conf(serde_json::json!({"kubernetes":{"kubeconfig": kc.to_str().unwrap()}})).unwrap();
    let paths = crate::k8s::InClusterPaths::default();
    assert_eq!(
        c.cluster_config(&paths).unwrap().server.to_string(),
        "http://127.0.0.1:1/"
    );
    let c = conf(serde_json::json!({"kubernetes":{"kubeconfig": kc.to_str().unwrap(), "k8s_api_root":"https://10.96.0.1:443"}})).unwrap();
    assert_eq!(
        c.cluster_config(&paths).unwrap().server.to_string(),
        "https://10.96.0.1:443/"
    );
}

#[test]
fn device_keys_default_to_the_kubelet_and_npwg_paths() {
    let c = conf(serde_json::json!({"type":"genie"})).unwrap();
    assert_eq!(
        c.pod_resources_socket,
        PathBuf::from("/var/lib/kubelet/pod-resources/kubelet.sock")
    );
    assert_eq!(
        c.kubelet_checkpoint,
        PathBuf::from("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
    );
    assert_eq!(
        c.device_info_dir,
        PathBuf::from("/var/run/k8s.cni.cncf.io/devinfo")
    );
    assert!(c.sriov.is_none());
    assert_eq!(c.policy_socket, None);
    let c = conf(serde_json::json!({"type":"genie", "policySocket": "/run/vfgenie/policy.sock"}))
        .unwrap();
    assert_eq!(
        c.policy_socket,
        Some(PathBuf::from("/run/vfgenie/policy.sock"))
    );
    assert!(conf(serde_json::json!({"type":"genie", "policySocket": "policy.sock"})).is_err());
    let c = conf(serde_json::json!({"type":"genie",
        "podResourcesSocket":"/k/pr.sock","kubeletCheckpoint":"/k/ckpt","deviceInfoDir":"/k/devinfo",
        "sriov":{"vlan":5}}))
    .unwrap();
    assert_eq!(c.pod_resources_socket, PathBuf::from("/k/pr.sock"));
    assert_eq!(c.kubelet_checkpoint, PathBuf::from("/k/ckpt"));
    assert_eq!(c.device_info_dir, PathBuf::from("/k/devinfo"));
    let s = c.sriov.unwrap();
    assert_eq!(s.agent_config, PathBuf::from("/etc/vfgenie/config.json"));
    for (key, bad) in [
        ("podResourcesSocket", serde_json::json!("pr.sock")),
        ("kubeletCheckpoint", serde_json::json!(7)),
        ("deviceInfoDir", serde_json::json!("../devinfo")),
        ("sriov", serde_json::json!("yes")),
    ] {
        let e = conf(serde_json::json!({"type":"genie", key: bad})).unwrap_err();
        assert!(e.to_string().contains(key), "{e}");
    }
}

/// A NAD's config as a node that lets tenants choose no host path resolves it.
fn resolve(
    nad: &NetworkAttachmentDefinition,
    conf_dir: &std::path::Path,
) -> Result<ResolvedConfig, ResolveError> {
    resolve_nad_config(nad, conf_dir, &Default::default())
}

#[test]
fn a_nad_named_like_the_genie_conf_does_not_resolve_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("00-genie.conflist"),
        r#"{"name":"genie","cniVersion":"1.0.0","plugins":[{"type":"genie"}]}"#,
    )
    .unwrap();
    std::fs::write(d.join("10-genie2.conf"), r#"{"name":"g2","type":"Genie"}"#).unwrap();
    for name in ["genie", "g2"] {
        let e = resolve(&nad(name, ""), d).unwrap_err();
        assert!(matches!(e, ResolveError::NoFile { .. }), "{name}: {e}");
    }
}

#[test]
fn a_spec_config_with_a_host_path_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let e = resolve(
        &nad(
            "x",
            r#"{"type":"bridge","ipam":{"type":"host-local","dataDir":"/etc"}}"#,
        ),
        dir.path(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ResolveError::SpecConfig(vfkube::netconf::SpecConfigError::Untrusted { .. })
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("default/x") && msg.contains("ipam.dataDir"),
        "{msg}"
    );
}

#[test]
fn audit_log_defaults_turns_off_and_names_its_bad_keys() {
    let c = conf(serde_json::json!({"type":"genie"})).unwrap();
    assert_eq!(
        c.audit_log,
        Some(vfaudit::AuditConfig {
            path: PathBuf::from("/var/log/vfgenie/cni-audit.log"),
            max_size: 10 * 1024 * 1024,
            max_files: 5,
        })
    );
    let c = conf(serde_json::json!({"type":"genie", "auditLog": false})).unwrap();
    assert_eq!(c.audit_log, None);
    let c = conf(serde_json::json!({"type":"genie",
        "auditLog": {"path": "/l/a.log", "maxSizeMB": 2, "maxFiles": 9}}))
    .unwrap();
    assert_eq!(
        c.audit_log,
        Some(vfaudit::AuditConfig {
            path: PathBuf::from("/l/a.log"),
            max_size: 2 * 1024 * 1024,
            max_files: 9,
        })
    );
    for (bad, key) in [
        (serde_json::json!("yes"), "auditLog"),
        (serde_json::json!({"path": "rel.log"}), "auditLog.path"),
        (serde_json::json!({"path": 3}), "auditLog.path"),
        (serde_json::json!({"maxSizeMB": 0}), "auditLog.maxSizeMB"),
        (serde_json::json!({"maxFiles": 101}), "auditLog.maxFiles"),
    ] {
        let e = conf(serde_json::json!({"type":"genie", "auditLog": bad})).unwrap_err();
        assert!(e.to_string().contains(&format!("{key:?}")), "{bad}: {e}");
    }
}

#[test]
fn smart_selection_is_read_with_defaults() {
    use vfkube::kpi::{Strategy, Weights};
    let c = conf(serde_json::json!({"type":"genie","smartSelection":{
        "strategy":"leastTraffic","candidates":["net-a","net-b"]}}))
    .unwrap();
    let s = c.smart_selection.unwrap();
    assert_eq!(s.policy.strategy, Strategy::LeastTraffic);
    assert_eq!(s.policy.candidates, ["net-a", "net-b"]);
    assert_eq!(s.policy.max_age_seconds, 30.0);
    assert_eq!(s.policy.weights, Weights::default());
    assert_eq!(s.kpi_file, PathBuf::from("/run/vfgenie/kpi.json"));
    let c = conf(serde_json::json!({"type":"genie","smartSelection":{
        "strategy":"weighted","candidates":["net-a"],"maxKpiAgeSeconds":5,
        "kpiFile":"/tmp/k.json","weights":{"traffic":2,"freeVfs":0}}}))
    .unwrap();
    let s = c.smart_selection.unwrap();
    assert_eq!(s.policy.max_age_seconds, 5.0);
    assert_eq!(s.kpi_file, PathBuf::from("/tmp/k.json"));
    assert_eq!(
        s.policy.weights,
        Weights {
            traffic: 2.0,
            ip_occupancy: 1.0,
            free_vfs: 0.0
        }
    );
    assert_eq!(conf(serde_json::json!({})).unwrap().smart_selection, None);
}

#[test]
fn smart_selection_errors_name_the_key() {
    let cases = [
        (serde_json::json!(3), "smartSelection", "object"),
        (
            serde_json::json!({"candidates":["a"]}),
            "smartSelection.strategy",
            "required",
        ),
        (
            serde_json::json!({"strategy":"fastest","candidates":["a"]}),
            "smartSelection.strategy",
            "leastTraffic",
        ),
        (
            serde_json::json!({"strategy":"leastTraffic","candidates":[]}),
            "smartSelection.candidates",
            "non-empty",
        ),
        (
            serde_json::json!({"strategy":"leastTraffic","candidates":["../x"]}),
            "smartSelection.candidates",
            "plain",
        ),
        (
            serde_json::json!({"strategy":"leastTraffic","candidates":["a","a"]}),
            "smartSelection.candidates",
            "twice",
        ),
        (
            serde_json::json!({"strategy":"leastTraffic","candidates":["a"],"maxKpiAgeSeconds":0}),
            "smartSelection.maxKpiAgeSeconds",
            "1 to",
        ),
        (
            serde_json::json!({"strategy":"leastTraffic","candidates":["a"],"kpiFile":"kpi.json"}),
            "smartSelection.kpiFile",
            "absolute",
        ),
        (
            serde_json::json!({"strategy":"weighted","candidates":["a"],"weights":{"latency":1}}),
            "smartSelection.weights",
            "latency",
        ),
        (
            serde_json::json!({"strategy":"weighted","candidates":["a"],"weights":{"traffic":-1}}),
            "smartSelection.weights",
            "0 or more",
        ),
        (
            serde_json::json!({"strategy":"weighted","candidates":["a"],"weights":{"traffic":0,"ipOccupancy":0,"freeVfs":0}}),
            "smartSelection.weights",
            "above 0",
        ),
        (
            serde_json::json!({"strategy":"leastTraffic","candidates":["a"],"kpifile":"/x"}),
            "smartSelection.kpifile",
            "not a smartSelection key",
        ),
    ];
    for (v, key, problem) in cases {
        let e = conf(serde_json::json!({"type":"genie","smartSelection":v})).unwrap_err();
        let ConfError::Key { key: k, problem: p } = &e else {
            panic!("{e}")
        };
        assert_eq!(k, key, "{e}");
        assert!(p.contains(problem), "{e}");
    }
}
