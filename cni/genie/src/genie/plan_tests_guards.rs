//! What planning refuses or passes on: namespace isolation, device resources, untrusted
//! configs and API errors.

use super::*;

// Namespace isolation.

fn isolated() -> GenieConf {
    genie(
        json!({"delegates": [bridge("cluster")], "namespaceIsolation": true,
                 "globalNamespaces": "shared"}),
    )
}

#[test]
fn isolation_refuses_another_namespaces_nad() {
    let kube = FakeKube::default().with_nad("other", "blue", bridge("blue"));
    let e = refused(plan_for(&isolated(), &[(NETWORKS, "other/blue")], &kube));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(e.msg.contains("other/blue"), "{}", e.msg);
    // The default-network annotation is the pod's too.
    let e = refused(plan_for(
        &isolated(),
        &[(DEFAULT_NETWORK, "other/blue")],
        &kube,
    ));
    assert_eq!(e.code, 7);
}

#[test]
fn isolation_allows_the_pods_namespace_and_global_ones() {
    let kube = FakeKube::default()
        .with_nad("default", "blue", bridge("blue"))
        .with_nad("shared", "green", bridge("green"));
    let p = plan_for(&isolated(), &[(NETWORKS, "blue,shared/green")], &kube).unwrap();
    assert_eq!(networks(&p), ["cluster", "default/blue", "shared/green"]);
}

#[test]
fn isolation_does_not_restrict_the_nodes_own_nads() {
    let kube = FakeKube::default()
        .with_nad("kube-system", "calico", bridge("calico"))
        .with_nad("infra", "monitor", bridge("monitor"));
    let conf = genie(
        json!({"clusterNetwork": "calico", "defaultNetworks": ["infra/monitor"],
                            "namespaceIsolation": true}),
    );
    let p = plan_for(&conf, &[], &kube).unwrap();
    assert_eq!(networks(&p), ["kube-system/calico", "infra/monitor"]);
}

// Device assignment inputs.

#[test]
fn a_nad_with_a_resource_name_asks_for_a_device() {
    let kube = FakeKube::default().with_resource_nad(
        "default",
        "fast",
        json!({"cniVersion": "1.0.0", "type": "sriov", "vlan": 100}),
        "intel.com/sriov_a",
    );
    let p = plan_for(&delegating(), &[(NETWORKS, "fast")], &kube).unwrap();
    assert_eq!(p[1].network, "default/fast");
    assert_eq!(p[1].resources, ["intel.com/sriov_a"]);
    assert!(p[0].resources.is_empty());
    assert_eq!(p[1].config["name"], "fast");
}

#[test]
fn an_invalid_resource_name_is_refused_naming_the_nad() {
    let kube = FakeKube::default().with_resource_nad(
        "default",
        "fast",
        json!({"type": "sriov"}),
        "../sriov",
    );
    let e = refused(plan_for(&delegating(), &[(NETWORKS, "fast")], &kube));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("default/fast"), "{}", e.msg);
    assert!(e.msg.contains(RESOURCE_NAME_ANNOTATION), "{}", e.msg);
}

#[test]
fn genie_sriov_uses_the_genie_confs_sriov_key_and_the_agents_pools() {
    let dir = genie_plugins_dir();
    let agent = dir.path().join("agent.config");
    std::fs::write(
        &agent,
        json!({"resourceList": [{"resourceName": "sriov_a"},
                                {"resourcePrefix": "example.com", "resourceName": "sriov_b"}]})
        .to_string(),
    )
    .unwrap();
    let conf = genie_in(
        dir.path(),
        json!({"sriov": {"agentConfig": agent.to_str().unwrap(),
        "vlan": 100, "ipam": {"type": "host-local", "subnet": "10.56.217.0/24"}}}),
    );
    let p = plan_for(&conf, &[("cni", "weave,sriov")], &FakeKube::default()).unwrap();
    assert_eq!(networks(&p), ["weave", "sriov"]);
    assert_eq!(ifnames(&p), ["eth0", "eth1"]);
    assert_eq!(p[1].resources, ["intel.com/sriov_a", "example.com/sriov_b"]);
    assert_eq!(p[1].config["type"], "sriov");
    assert_eq!(p[1].config["vlan"], 100);
    assert_eq!(p[1].config["ipam"]["subnet"], "10.56.217.0/24");
}

#[test]
fn genie_sriov_without_pools_is_refused_naming_the_agent_config() {
    let dir = genie_plugins_dir();
    let agent = dir.path().join("agent.config");
    std::fs::write(&agent, json!({"resourceList": []}).to_string()).unwrap();
    let conf = genie_in(
        dir.path(),
        json!({"sriov": {"agentConfig": agent.to_str().unwrap()}}),
    );
    let e = refused(plan_for(
        &conf,
        &[("cni", "weave,sriov")],
        &FakeKube::default(),
    ));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(e.msg.contains(agent.to_str().unwrap()), "{}", e.msg);
}

// Untrusted configs.

fn data_dir_nad() -> FakeKube {
    FakeKube::default().with_nad(
        "default",
        "blue",
        json!({"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.10.0.0/16",
               "dataDir": "/var/lib/cni/networks/blue"}}),
    )
}

#[test]
fn a_tenant_config_with_a_host_path_is_refused_naming_the_key() {
    let e = refused(plan_for(
        &delegating(),
        &[(NETWORKS, "blue")],
        &data_dir_nad(),
    ));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("default/blue"), "{}", e.msg);
    assert!(e.msg.contains("ipam.dataDir"), "{}", e.msg);
}

#[test]
fn a_host_path_below_allowed_tenant_paths_is_accepted() {
    let conf = genie(json!({"delegates": [bridge("cluster")],
                            "allowedTenantPaths": {"dataDir": ["/var/lib/cni/networks"]}}));
    let p = plan_for(&conf, &[(NETWORKS, "blue")], &data_dir_nad()).unwrap();
    assert_eq!(p[1].config["ipam"]["dataDir"], "/var/lib/cni/networks/blue");
}

#[test]
fn a_nad_without_spec_config_uses_the_conf_file_of_its_name() {
    let dir = tempfile::tempdir().unwrap();
    write_conf(
        dir.path(),
        "50-blue.conf",
        json!({"cniVersion": "1.0.0", "name": "blue",
        "type": "macvlan", "master": "eth1"}),
    );
    let conf = genie_in(dir.path(), json!({"delegates": [bridge("cluster")]}));
    let kube = FakeKube::default().with_nad("default", "blue", Value::Null);
    let p = plan_for(&conf, &[(NETWORKS, "blue")], &kube).unwrap();
    assert_eq!(networks(&p), ["cluster", "default/blue"]);
    assert_eq!(p[1].config["type"], "macvlan");
}

// API errors.

#[test]
fn an_api_outage_is_try_again_later_naming_the_pod_and_nad() {
    let kube = FakeKube {
        down: true,
        ..FakeKube::default()
    };
    let e = refused(plan_for(&delegating(), &[(NETWORKS, "blue")], &kube));
    assert_eq!(e.code, 11);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(
        e.msg.contains("NetworkAttachmentDefinition default/blue"),
        "{}",
        e.msg
    );
}

#[test]
fn a_missing_nad_is_refused_naming_it() {
    let e = refused(plan_for(
        &delegating(),
        &[(NETWORKS, "blue")],
        &FakeKube::default(),
    ));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(
        e.msg.contains("NetworkAttachmentDefinition default/blue"),
        "{}",
        e.msg
    );
    assert!(e.msg.contains("not found"), "{}", e.msg);
}
