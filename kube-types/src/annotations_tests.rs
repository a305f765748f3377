use super::*;

fn pod() -> PodRef {
    PodRef::new("default", "web")
}

fn nets(v: &str) -> Result<Vec<NetworkSelection>, AnnotationError> {
    parse_networks(&pod(), NETWORKS, v)
}

#[test]
fn short_form_with_namespaces_and_interfaces() {
    let n = nets("sriov-a, other/macvlan@net5 ,bridge").unwrap();
    assert_eq!(n.len(), 3);
    assert_eq!(n[0].name, "sriov-a");
    assert_eq!(n[0].namespace, None);
    assert_eq!(n[0].namespace_or("default"), "default");
    assert_eq!(n[1].namespace.as_deref(), Some("other"));
    assert_eq!(n[1].interface.as_ref().map(IfName::as_str), Some("net5"));
    assert_eq!(n[2].name, "bridge");
    assert!(nets("").unwrap().is_empty());
    assert!(nets("   ").unwrap().is_empty());
}

#[test]
fn json_form_with_every_key() {
    let v = r#"[
      {"name":"sriov-a","namespace":"infra","interface":"vf0",
       "ips":["10.1.1.5/24","fd00::5/64"],"mac":"02:00:00:00:00:01",
       "infiniband-guid":"c2:11:22:33:44:55:66:77","default-route":["10.1.1.1"],
       "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"0.0.0.0"}],
       "bandwidth":{"ingressRate":1000,"ingressBurst":2000,"egressRate":3000,"egressBurst":4000},
       "deviceID":"0000:02:10.1","cni-args":{"foo":"bar","n":1},
       "ipam-claim-reference":"claim-1","unknownKey":true},
      {"name":"bridge","interfaceRequest":"br1"}
    ]"#;
    let n = nets(v).unwrap();
    let a = &n[0];
    assert_eq!(a.name, "sriov-a");
    assert_eq!(a.namespace.as_deref(), Some("infra"));
    assert_eq!(a.interface.as_ref().map(IfName::as_str), Some("vf0"));
    assert_eq!(
        a.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.1.1.5/24", "fd00::5/64"]
    );
    assert_eq!(
        a.mac.map(|m| m.to_string()).as_deref(),
        Some("02:00:00:00:00:01")
    );
    assert_eq!(
        a.infiniband_guid.as_deref(),
        Some("c2:11:22:33:44:55:66:77")
    );
    assert_eq!(a.default_route, vec!["10.1.1.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(a.port_mappings[0].host_port, 8080);
    assert_eq!(a.port_mappings[0].container_port, 80);
    assert_eq!(a.port_mappings[0].protocol.as_deref(), Some("tcp"));
    assert_eq!(
        a.bandwidth.as_ref().and_then(|b| b.egress_burst),
        Some(4000)
    );
    assert_eq!(a.device_id.as_deref(), Some("0000:02:10.1"));
    assert_eq!(
        a.cni_args.as_ref().map(|c| c["foo"].clone()),
        Some(serde_json::json!("bar"))
    );
    assert_eq!(a.ipam_claim_reference.as_deref(), Some("claim-1"));
    assert_eq!(n[1].interface.as_ref().map(IfName::as_str), Some("br1"));
    // serialised forms of the capability args
    assert_eq!(
        serde_json::to_value(&a.port_mappings).unwrap(),
        serde_json::json!([{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"0.0.0.0"}])
    );
    // a single object is accepted too
    assert_eq!(nets(r#"{"name":"x"}"#).unwrap()[0].name, "x");
}

#[test]
fn invalid_npwg_values_name_pod_annotation_and_problem() {
    let cases = [
        ("../x", "namespace \"..\""),
        ("a/b/c", "more than one '/'"),
        ("ns/../x", "more than one '/'"),
        ("net@../../etc", "interface name"),
        ("net@", "interface name"),
        ("net@averyveryverylongname", "interface name"),
        ("Net1", "network name"),
        ("a,,b", "empty"),
        ("a,", "empty"),
        ("-a", "network name"),
        ("x/", "network name"),
        ("/x", "namespace"),
        ("[1,2]", "not valid JSON"),
        ("[{\"name\":\"a\"", "not valid JSON"),
        ("\"a\"", "must be a list"),
        (r#"[{"namespace":"a"}]"#, "not valid JSON"),
        (r#"[{"name":"../etc"}]"#, "network name"),
        (r#"[{"name":"a","namespace":"a/b"}]"#, "namespace"),
        (
            r#"[{"name":"a","interface":"../../etc"}]"#,
            "interface name",
        ),
        (
            r#"[{"name":"a","interface":"x","interfaceRequest":"y"}]"#,
            "interfaceRequest",
        ),
        (r#"[{"name":"a","ips":["10.1.1.5"]}]"#, "CIDR"),
        (r#"[{"name":"a","ips":["10.1.1.5/33"]}]"#, "prefix"),
        (r#"[{"name":"a","ips":["x/24"]}]"#, "IP address"),
        (r#"[{"name":"a","mac":"zz:00:00:00:00:01"}]"#, "not a MAC"),
        (r#"[{"name":"a","mac":"01:00:00:00:00:01"}]"#, "unicast"),
        (r#"[{"name":"a","default-route":["gw"]}]"#, "default-route"),
        (
            r#"[{"name":"a","infiniband-guid":"12:34"}]"#,
            "infiniband-guid",
        ),
        (r#"[{"name":"a","deviceID":"../../sys"}]"#, "deviceID"),
        (
            r#"[{"name":"a","ipam-claim-reference":"A/B"}]"#,
            "ipam-claim-reference",
        ),
        (
            r#"[{"name":"a","portMappings":[{"hostPort":-1,"containerPort":80}]}]"#,
            "not valid JSON",
        ),
    ];
    for (value, problem) in cases {
        let e = nets(value).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("pod default/web: annotation k8s.v1.cni.cncf.io/networks is invalid: "),
            "{value}: {msg}"
        );
        assert!(msg.contains(problem), "{value}: {msg}");
    }
}

#[test]
fn default_network_override_takes_exactly_one() {
    let p = pod();
    assert_eq!(parse_default_network(&p, "").unwrap(), None);
    let d = parse_default_network(&p, "kube-system/calico")
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.namespace.as_deref(), d.name.as_str()),
        (Some("kube-system"), "calico")
    );
    let d = parse_default_network(&p, r#"[{"name":"calico"}]"#)
        .unwrap()
        .unwrap();
    assert_eq!(d.name, "calico");
    let e = parse_default_network(&p, "a,b").unwrap_err();
    assert_eq!(e.annotation, DEFAULT_NETWORK);
    assert!(e.to_string().contains("exactly one"));
}

#[test]
fn genie_cni_lists() {
    let p = pod();
    assert_eq!(parse_genie_cni(&p, "").unwrap(), None);
    assert_eq!(parse_genie_cni(&p, "  ").unwrap(), None);
    let l = parse_genie_cni(&p, "weave,canal").unwrap().unwrap();
    assert_eq!(
        l.iter().map(|g| g.plugin.as_str()).collect::<Vec<_>>(),
        ["weave", "canal"]
    );
    let l = parse_genie_cni(&p, "flannel@eth1, weave@eth4,weave")
        .unwrap()
        .unwrap();
    assert_eq!(l[0].interface.as_ref().map(IfName::as_str), Some("eth1"));
    assert_eq!(l[1].interface.as_ref().map(IfName::as_str), Some("eth4"));
    assert_eq!(
        (l[2].plugin.as_str(), l[2].interface.is_none()),
        ("weave", true)
    );
    for bad in [
        "../x",
        "a/b",
        "..",
        ".",
        "weave,",
        "we ave",
        "x@../../etc",
        "x@",
        "bin/sh@eth1",
    ] {
        let e = parse_genie_cni(&p, bad).unwrap_err();
        assert_eq!(e.annotation, "cni", "{bad}");
        assert!(e
            .to_string()
            .starts_with("pod default/web: annotation cni is invalid: "));
    }
}

#[test]
fn genie_logical_networks() {
    let p = pod();
    let l = parse_genie_networks(&p, "net1@eth1,net2").unwrap();
    assert_eq!(l[0].name, "net1");
    assert_eq!(l[0].interface.as_ref().map(IfName::as_str), Some("eth1"));
    assert_eq!(l[1].interface, None);
    assert!(parse_genie_networks(&p, "").unwrap().is_empty());
    for bad in ["../net", "ns/net", "net@a/b", "NET"] {
        let e = parse_genie_networks(&p, bad).unwrap_err();
        assert_eq!(e.annotation, "networks", "{bad}");
    }
}

#[test]
fn all_annotations_together() {
    let p = pod();
    let mut a = BTreeMap::new();
    assert!(parse_pod_annotations(&p, &a).unwrap().is_empty());
    a.insert(GENIE_CNI.to_string(), String::new());
    assert!(parse_pod_annotations(&p, &a).unwrap().is_empty());
    a.insert(NETWORKS.to_string(), "a,b@net7".to_string());
    a.insert(DEFAULT_NETWORK.to_string(), "calico".to_string());
    a.insert(GENIE_NETWORKS.to_string(), "net1@eth1".to_string());
    a.insert("unrelated".to_string(), "[{".to_string());
    let r = parse_pod_annotations(&p, &a).unwrap();
    assert_eq!(r.networks.len(), 2);
    assert_eq!(r.default_network.map(|d| d.name).as_deref(), Some("calico"));
    assert_eq!(r.logical_networks[0].name, "net1");
    assert_eq!(r.genie_plugins, None);
    a.insert(GENIE_CNI.to_string(), "../../bin/sh".to_string());
    assert_eq!(parse_pod_annotations(&p, &a).unwrap_err().annotation, "cni");
}
