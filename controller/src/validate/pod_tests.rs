use super::*;
use crate::lookup::MemoryLookup;
use serde_json::json;
use vfkube::isolation::Isolation;

fn lookup() -> MemoryLookup {
    let l = MemoryLookup::new();
    for (ns, name, config, resource) in [
        (
            "default",
            "blue",
            r#"{"cniVersion":"1.0.0","type":"macvlan"}"#,
            None,
        ),
        (
            "default",
            "sriov-a",
            r#"{"cniVersion":"1.0.0","type":"sriov"}"#,
            Some("intel.com/sriov_a"),
        ),
        ("shared", "green", "", None),
        ("other", "red", "", None),
        (
            "default",
            "evil",
            r#"{"type":"bridge","ipam":{"dataDir":"/etc"}}"#,
            None,
        ),
    ] {
        let mut v =
            json!({"metadata": {"name": name, "namespace": ns}, "spec": {"config": config}});
        if let Some(r) = resource {
            v["metadata"]["annotations"] = json!({RESOURCE_NAME_ANNOTATION: r});
        }
        l.add_nad(serde_json::from_value(v).unwrap());
    }
    l.add_logical_network(
        serde_json::from_value(json!({"metadata": {"name": "net1", "namespace": "default"},
            "spec": {"plugin": "bridge", "subnet": "10.1.0.0/24"}}))
        .unwrap(),
    );
    l
}

fn pod(annotations: Value, vfs: Option<u64>) -> PodObject {
    let mut v = json!({"metadata": {"name": "web", "namespace": "default", "annotations": annotations},
        "spec": {"containers": [{"name": "app"}]}});
    if let Some(n) = vfs {
        v["spec"]["containers"][0]["resources"] =
            json!({"limits": {"intel.com/sriov_a": n.to_string()}});
    }
    serde_json::from_value(v).unwrap()
}

fn isolated() -> Settings {
    Settings {
        isolation: Isolation {
            enabled: true,
            global_namespaces: vec!["shared".into()],
        },
    }
}

#[test]
fn pods_asking_for_existing_networks_pass() {
    let l = lookup();
    let s = Settings::default();
    for a in [
        json!({}),
        json!({"k8s.v1.cni.cncf.io/networks": "blue@net5,other/red"}),
        json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name":"blue","interface":"x1"}]"#}),
        json!({"cni": "flannel@eth1,weave"}),
        json!({"cni": "", "networks": "net1@eth1"}),
        json!({"v1.multus-cni.io/default-network": "shared/green"}),
    ] {
        validate_pod(&pod(a.clone(), None), "default", &l, &s)
            .unwrap_or_else(|d| panic!("{a}: {}", d.message));
    }
    validate_pod(
        &pod(
            json!({"k8s.v1.cni.cncf.io/networks": "sriov-a,sriov-a"}),
            Some(2),
        ),
        "default",
        &l,
        &s,
    )
    .unwrap();
    // Isolation lets own and global namespaces through.
    validate_pod(
        &pod(
            json!({"k8s.v1.cni.cncf.io/networks": "blue,shared/green"}),
            None,
        ),
        "default",
        &l,
        &isolated(),
    )
    .unwrap();
}

#[test]
fn pods_breaking_a_rule_are_denied_naming_pod_and_annotation() {
    let l = lookup();
    let s = Settings::default();
    for (a, reason, needle) in [
        (
            json!({"k8s.v1.cni.cncf.io/networks": "../x"}),
            Reason::Annotation,
            "k8s.v1.cni.cncf.io/networks",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "a/b/c"}),
            Reason::Annotation,
            "more than one '/'",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "blue@../x"}),
            Reason::Annotation,
            "interface name",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "blue@a/b"}),
            Reason::Annotation,
            "interface name",
        ),
        (
            json!({"cni": "../../bin/sh"}),
            Reason::Annotation,
            "annotation cni",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "blue@x1,other/red@x1"}),
            Reason::Annotation,
            "interface x1 is requested twice",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "blue",
                "k8s.v1.cni.cncf.io/network-status": "[{\"name\":\"default/blue\",\"ips\":[\"10.1.0.9\"]}]"}),
            Reason::Refused,
            "annotation k8s.v1.cni.cncf.io/network-status is written by the node's CNI plugin",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "nope"}),
            Reason::NotFound,
            "NetworkAttachmentDefinition default/nope, which does not exist",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "ghost/nope"}),
            Reason::NotFound,
            "namespace ghost does not exist",
        ),
        (
            json!({"v1.multus-cni.io/default-network": "nope"}),
            Reason::NotFound,
            "v1.multus-cni.io/default-network",
        ),
        (
            json!({"networks": "net2"}),
            Reason::NotFound,
            "LogicalNetwork default/net2",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "evil"}),
            Reason::Refused,
            "ipam.dataDir",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "sriov-a"}),
            Reason::Resources,
            "intel.com/sriov_a",
        ),
    ] {
        let d = validate_pod(&pod(a.clone(), None), "default", &l, &s).unwrap_err();
        assert_eq!(d.reason, reason, "{a}: {}", d.message);
        assert!(d.message.contains("pod default/web"), "{}", d.message);
        assert!(d.message.contains(needle), "{a}: {}", d.message);
    }
    let d = validate_pod(
        &pod(
            json!({"k8s.v1.cni.cncf.io/networks": "sriov-a,sriov-a"}),
            Some(1),
        ),
        "default",
        &l,
        &s,
    )
    .unwrap_err();
    assert!(
        d.message.contains("attach 2") && d.message.contains("request 1"),
        "{}",
        d.message
    );
    let d = validate_pod(
        &pod(json!({"k8s.v1.cni.cncf.io/networks": "other/red"}), None),
        "default",
        &l,
        &isolated(),
    )
    .unwrap_err();
    assert_eq!(d.reason, Reason::Isolation);
    assert!(
        d.message
            .contains("may not use NetworkAttachmentDefinition other/red"),
        "{}",
        d.message
    );
}

#[test]
fn requests_count_across_containers_and_must_be_whole() {
    let p: PodObject =
        serde_json::from_value(json!({"metadata": {"name": "w"}, "spec": {"containers": [
        {"name": "a", "resources": {"requests": {"r/x": "1"}, "limits": {"r/x": "1"}}},
        {"name": "b", "resources": {"limits": {"r/x": 2}}},
        {"name": "c", "resources": {"limits": {"r/y": "500m"}}}]}}))
        .unwrap();
    assert_eq!(p.requested("r/x").unwrap(), 3);
    assert_eq!(p.requested("r/z").unwrap(), 0);
    assert!(p.requested("r/y").unwrap_err().contains("container \"c\""));
    assert_eq!(p.pod_ref("ns").to_string(), "ns/w");
}
