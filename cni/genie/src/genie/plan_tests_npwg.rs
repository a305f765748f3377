//! NPWG annotations, interface names and the pod's default network.

use super::*;

// NPWG annotations.

#[test]
fn npwg_comma_form_adds_net1_net2_after_the_default_network() {
    let kube = FakeKube::default()
        .with_nad("default", "blue", bridge("blue"))
        .with_nad("default", "green", bridge("green"));
    let p = plan_for(&delegating(), &[(NETWORKS, "blue, green")], &kube).unwrap();
    assert_eq!(networks(&p), ["cluster", "default/blue", "default/green"]);
    assert_eq!(ifnames(&p), ["eth0", "net1", "net2"]);
    assert_eq!(defaults(&p), [true, false, false]);
    assert_eq!(p[1].config["type"], "bridge");
    assert!(p.iter().all(|a| a.resources.is_empty()));
}

#[test]
fn npwg_comma_form_takes_namespaces_and_interfaces() {
    let kube = FakeKube::default()
        .with_nad("infra", "storage", bridge("storage"))
        .with_nad("default", "blue", bridge("blue"));
    let p = plan_for(
        &delegating(),
        &[(NETWORKS, "infra/storage@san0,blue")],
        &kube,
    )
    .unwrap();
    assert_eq!(networks(&p), ["cluster", "infra/storage", "default/blue"]);
    assert_eq!(ifnames(&p), ["eth0", "san0", "net1"]);
}

#[test]
fn npwg_json_form_carries_interface_ips_mac_default_route_and_cni_args() {
    let kube = FakeKube::default().with_nad("default", "blue", bridge("blue"));
    let sel = r#"[{"name":"blue","interface":"blue0","ips":["10.10.1.5/24"],
        "mac":"02:00:00:00:00:05","default-route":["10.10.1.1"],"cni-args":{"vlan":"7"}}]"#;
    let p = plan_for(&delegating(), &[(NETWORKS, sel)], &kube).unwrap();
    assert_eq!(ifnames(&p), ["eth0", "blue0"]);
    let blue = &p[1];
    assert_eq!(blue.network, "default/blue");
    assert_eq!(blue.injected.runtime_config["ips"], json!(["10.10.1.5/24"]));
    assert_eq!(
        blue.injected.runtime_config["mac"]
            .as_str()
            .unwrap()
            .to_lowercase(),
        "02:00:00:00:00:05"
    );
    assert_eq!(blue.default_route, ["10.10.1.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(blue.injected.cni_args.as_ref().unwrap()["vlan"], json!("7"));
    // The default network gets none of it.
    assert!(p[0].injected.runtime_config.is_empty());
    assert!(p[0].default_route.is_empty());
}

#[test]
fn npwg_json_form_with_a_namespace_key() {
    let kube = FakeKube::default().with_nad("infra", "storage", bridge("storage"));
    let p = plan_for(
        &delegating(),
        &[(NETWORKS, r#"[{"name":"storage","namespace":"infra"}]"#)],
        &kube,
    )
    .unwrap();
    assert_eq!(networks(&p), ["cluster", "infra/storage"]);
    assert_eq!(ifnames(&p), ["eth0", "net1"]);
}

#[test]
fn the_same_nad_twice_gets_two_interfaces() {
    let kube = FakeKube::default().with_nad("default", "blue", bridge("blue"));
    let p = plan_for(&delegating(), &[(NETWORKS, "blue,blue")], &kube).unwrap();
    assert_eq!(networks(&p), ["cluster", "default/blue", "default/blue"]);
    assert_eq!(ifnames(&p), ["eth0", "net1", "net2"]);
}

// Interface names.

#[test]
fn generated_names_step_around_requested_ones() {
    let kube = FakeKube::default()
        .with_nad("default", "a", bridge("a"))
        .with_nad("default", "b", bridge("b"))
        .with_nad("default", "c", bridge("c"));
    let p = plan_for(&delegating(), &[(NETWORKS, "a,b@net1,c")], &kube).unwrap();
    assert_eq!(
        networks(&p),
        ["cluster", "default/a", "default/b", "default/c"]
    );
    assert_eq!(ifnames(&p), ["eth0", "net2", "net1", "net3"]);
}

#[test]
fn a_duplicate_interface_is_refused_naming_the_pod_and_interface() {
    let kube = FakeKube::default()
        .with_nad("default", "a", bridge("a"))
        .with_nad("default", "b", bridge("b"));
    let e = refused(plan_for(
        &delegating(),
        &[(NETWORKS, "a@data0,b@data0")],
        &kube,
    ));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(e.msg.contains("data0"), "{}", e.msg);
    assert!(e.msg.contains("default/b"), "{}", e.msg);
}

#[test]
fn a_secondary_network_may_not_take_the_default_interface() {
    let kube = FakeKube::default().with_nad("default", "a", bridge("a"));
    let e = refused(plan_for(&delegating(), &[(NETWORKS, "a@eth0")], &kube));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("eth0"), "{}", e.msg);
}

// Default networks.

#[test]
fn cluster_network_as_a_conf_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("calico.json");
    std::fs::write(&file, bridge("calico").to_string()).unwrap();
    let conf = genie(json!({"clusterNetwork": file.to_str().unwrap(),
                            "delegates": [bridge("ignored")]}));
    let p = plan_for(&conf, &[], &FakeKube::default()).unwrap();
    assert_eq!(networks(&p), ["calico"]);
    assert_eq!(ifnames(&p), ["eth0"]);
    assert_eq!(defaults(&p), [true]);
    assert_eq!(p[0].config["ipam"]["subnet"], "10.10.0.0/16");
}

#[test]
fn cluster_network_file_without_a_name_is_called_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("anon.conf");
    std::fs::write(&file, json!({"type": "bridge"}).to_string()).unwrap();
    let conf = genie(json!({"clusterNetwork": file.to_str().unwrap()}));
    let p = plan_for(&conf, &[], &FakeKube::default()).unwrap();
    assert_eq!(networks(&p), ["cluster"]);
    assert_eq!(p[0].config["name"], "cluster");
}

#[test]
fn a_missing_cluster_network_file_is_refused_naming_it() {
    let conf = genie(json!({"clusterNetwork": "/nonexistent/vfgenie/calico.conf"}));
    let e = refused(plan_for(&conf, &[], &FakeKube::default()));
    assert_eq!(e.code, 7);
    assert!(
        e.msg.contains("/nonexistent/vfgenie/calico.conf"),
        "{}",
        e.msg
    );
}

#[test]
fn cluster_network_as_a_conf_name_in_the_conf_dir() {
    let dir = tempfile::tempdir().unwrap();
    write_conf(
        dir.path(),
        "10-calico.conflist",
        json!({"cniVersion": "1.0.0", "name": "calico",
        "plugins": [{"type": "calico"}, {"type": "portmap"}]}),
    );
    let conf = genie_in(dir.path(), json!({"clusterNetwork": "calico"}));
    let p = plan_for(&conf, &[], &FakeKube::default()).unwrap();
    assert_eq!(networks(&p), ["calico"]);
    assert_eq!(p[0].config["plugins"][1]["type"], "portmap");
}

#[test]
fn cluster_network_as_a_nad_lives_in_kube_system_by_default() {
    let kube = FakeKube::default().with_nad("kube-system", "calico", bridge("calico"));
    let conf = genie(json!({"clusterNetwork": "calico"}));
    let p = plan_for(&conf, &[], &kube).unwrap();
    assert_eq!(networks(&p), ["kube-system/calico"]);
    assert_eq!(defaults(&p), [true]);
}

#[test]
fn cluster_network_as_a_namespaced_nad() {
    let kube = FakeKube::default().with_nad("infra", "calico", bridge("calico"));
    let conf = genie(json!({"clusterNetwork": "infra/calico"}));
    let p = plan_for(&conf, &[], &kube).unwrap();
    assert_eq!(networks(&p), ["infra/calico"]);
}

#[test]
fn the_first_delegate_is_the_default_network_without_cluster_network() {
    let conf = genie(json!({"delegates": [{"type": "bridge"}, bridge("second")]}));
    let p = plan_for(&conf, &[], &FakeKube::default()).unwrap();
    assert_eq!(networks(&p), ["default"]);
    assert_eq!(p[0].config["name"], "default");
    assert_eq!(p[0].config["type"], "bridge");
}

#[test]
fn the_default_network_annotation_overrides_cluster_network() {
    let kube = FakeKube::default()
        .with_nad("kube-system", "calico", bridge("calico"))
        .with_nad("default", "fast", bridge("fast"));
    let conf = genie(json!({"clusterNetwork": "calico"}));
    let p = plan_for(&conf, &[(DEFAULT_NETWORK, "fast")], &kube).unwrap();
    assert_eq!(networks(&p), ["default/fast"]);
    assert_eq!(ifnames(&p), ["eth0"]);
    assert_eq!(defaults(&p), [true]);
}

#[test]
fn default_networks_come_before_the_pods_networks() {
    let kube = FakeKube::default()
        .with_nad("kube-system", "tenant", bridge("tenant"))
        .with_nad("infra", "monitor", bridge("monitor"))
        .with_nad("default", "blue", bridge("blue"));
    let conf = genie(json!({"delegates": [bridge("cluster")],
                            "defaultNetworks": ["tenant", "infra/monitor"]}));
    let p = plan_for(&conf, &[(NETWORKS, "blue")], &kube).unwrap();
    assert_eq!(
        networks(&p),
        [
            "cluster",
            "kube-system/tenant",
            "infra/monitor",
            "default/blue"
        ]
    );
    assert_eq!(ifnames(&p), ["eth0", "net1", "net2", "net3"]);
    assert_eq!(defaults(&p), [true, false, false, false]);
}

#[test]
fn default_networks_are_skipped_in_system_namespaces() {
    let kube = FakeKube::default().with_nad("kube-system", "tenant", bridge("tenant"));
    let conf = genie(json!({"delegates": [bridge("cluster")],
                            "defaultNetworks": ["tenant"],
                            "systemNamespaces": ["kube-system", "monitoring"]}));
    for ns in ["kube-system", "monitoring"] {
        let p = plan_in(&conf, ns, &[], &kube).unwrap();
        assert_eq!(networks(&p), ["cluster"], "{ns}");
    }
    let p = plan_in(&conf, "apps", &[], &kube).unwrap();
    assert_eq!(networks(&p), ["cluster", "kube-system/tenant"]);
}

#[test]
fn without_any_default_network_the_pod_is_refused() {
    let e = refused(plan_for(&genie(json!({})), &[], &FakeKube::default()));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("pod default/web"), "{}", e.msg);
    assert!(e.msg.contains("no default network"), "{}", e.msg);
}

#[test]
fn without_pod_identity_delegates_still_plan() {
    let p = plan(&delegating(), "eth0", None, None).unwrap();
    assert_eq!(networks(&p), ["cluster"]);
    assert_eq!(ifnames(&p), ["eth0"]);
}

#[test]
fn without_pod_identity_a_nad_cluster_network_needs_the_api() {
    let conf = genie(json!({"clusterNetwork": "calico"}));
    let e = refused(plan(&conf, "eth0", None, None));
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("kube-system/calico"), "{}", e.msg);
    assert!(e.msg.contains("Kubernetes API"), "{}", e.msg);
}
