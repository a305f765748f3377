//! The table: one AdmissionReview each, the expected `allowed`, and what the message must say.

use serde_json::{json, Value};

use crate::support::Review;

pub struct Case {
    pub name: &'static str,
    pub review: Review<'static>,
    pub allowed: bool,
    /// Each must appear in the denial message (or, when allowed, in a warning).
    pub says: &'static [&'static str],
}

fn nad_obj(name: &str, config: &str, annotations: Value) -> Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "namespace": "default", "uid": "0d7a6c2e-1111-4c1e-9d61-6a7f0f1f2a01",
            "annotations": annotations},
        "spec": {"config": config}})
}

fn nad(op: &'static str, name: &str, config: &str, annotations: Value) -> Review<'static> {
    Review {
        group: "k8s.cni.cncf.io",
        version: "v1",
        kind: "NetworkAttachmentDefinition",
        resource: "network-attachment-definitions",
        operation: op,
        namespace: "default",
        sub_resource: None,
        object: nad_obj(name, config, annotations),
    }
}

fn ln(name: &str, spec: Value) -> Review<'static> {
    Review {
        group: "alpha.network.k8s.io",
        version: "v1",
        kind: "LogicalNetwork",
        resource: "logicalnetworks",
        operation: "CREATE",
        namespace: "default",
        sub_resource: None,
        object: json!({"apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    }
}

fn pod_obj(annotations: Value, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "annotations": annotations,
            "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1",
            "resources": resources}]}})
}

fn pod_op(op: &'static str, annotations: Value, resources: Value) -> Review<'static> {
    Review {
        group: "",
        version: "v1",
        kind: "Pod",
        resource: "pods",
        operation: op,
        namespace: "default",
        sub_resource: None,
        object: pod_obj(annotations, resources),
    }
}

fn pod(annotations: Value) -> Review<'static> {
    pod_op("CREATE", annotations, json!({}))
}

fn np(annotations: Value) -> Review<'static> {
    Review {
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        resource: "networkpolicies",
        operation: "CREATE",
        namespace: "default",
        sub_resource: None,
        object: json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "pol", "namespace": "default", "annotations": annotations},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}),
    }
}

fn mnp(version: &'static str, annotations: Value, spec: Value) -> Review<'static> {
    Review {
        group: "k8s.cni.cncf.io",
        version,
        kind: "MultiNetworkPolicy",
        resource: "multi-networkpolicies",
        operation: "CREATE",
        namespace: "default",
        sub_resource: None,
        object: json!({"apiVersion": format!("k8s.cni.cncf.io/{version}"), "kind": "MultiNetworkPolicy",
            "metadata": {"name": "mpol", "namespace": "default", "annotations": annotations},
            "spec": spec}),
    }
}

const NETS: &str = "k8s.v1.cni.cncf.io/networks";
const RES: &str = "k8s.v1.cni.cncf.io/resourceName";
const NAD_DEFAULT: &str = "NetworkAttachmentDefinition default/";

fn good_mnp_spec() -> Value {
    json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {"team": "a"}}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
            "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})
}

pub fn cases() -> Vec<Case> {
    let huge = "a".repeat(1024 * 1024);
    let mut deep = json!("x");
    for _ in 0..100 {
        deep = json!([deep]);
    }
    vec![
        // NetworkAttachmentDefinitions.
        Case {
            name: "nad macvlan",
            review: nad(
                "CREATE",
                "blue2",
                r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth1","ipam":{"type":"host-local","subnet":"10.5.0.0/24"}}"#,
                json!({}),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "nad conflist",
            review: nad(
                "CREATE",
                "chain",
                r#"{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
                json!({}),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "nad empty config",
            review: nad("CREATE", "nodefile", "", json!({})),
            allowed: true,
            says: &["spec.config is empty"],
        },
        Case {
            name: "nad type genie",
            review: nad(
                "CREATE",
                "loop",
                r#"{"cniVersion":"1.0.0","type":"genie"}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "loop", "\"type\"", "genie"],
        },
        Case {
            name: "nad conflist with genie",
            review: nad(
                "CREATE",
                "loop2",
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"},{"type":"Genie"}]}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "plugins[1].type", "genie"],
        },
        Case {
            name: "nad dataDir",
            review: nad(
                "CREATE",
                "dd",
                r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local","dataDir":"/etc"}}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "dd", "ipam.dataDir", "host path"],
        },
        Case {
            name: "nad kubeconfig",
            review: nad(
                "CREATE",
                "kc",
                r#"{"cniVersion":"1.0.0","type":"x","kubeconfig":"/etc/kubernetes/admin.conf"}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "kc", "kubeconfig"],
        },
        Case {
            name: "nad type traversal",
            review: nad(
                "CREATE",
                "tt",
                r#"{"cniVersion":"1.0.0","type":"../../bin/sh"}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "spec.config", "../../bin/sh"],
        },
        Case {
            name: "nad ipam type with slash",
            review: nad(
                "CREATE",
                "ts",
                r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"a/b"}}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "ipam.type", "a/b"],
        },
        Case {
            name: "nad name traversal",
            review: nad("CREATE", "../x", r#"{"type":"bridge"}"#, json!({})),
            allowed: false,
            says: &["NetworkAttachmentDefinition default/../x", "metadata.name"],
        },
        Case {
            name: "nad name with slash",
            review: nad("CREATE", "a/b", "", json!({})),
            allowed: false,
            says: &["metadata.name", "a/b"],
        },
        Case {
            name: "nad config not json",
            review: nad("CREATE", "nj", "{not json", json!({})),
            allowed: false,
            says: &[NAD_DEFAULT, "nj", "spec.config is not a valid CNI config"],
        },
        Case {
            name: "nad without type",
            review: nad("CREATE", "nt", r#"{"cniVersion":"1.0.0"}"#, json!({})),
            allowed: false,
            says: &[NAD_DEFAULT, "no \"type\""],
        },
        Case {
            name: "nad bad resourceName",
            review: nad(
                "CREATE",
                "rn",
                r#"{"cniVersion":"1.0.0","type":"sriov"}"#,
                json!({RES: "intel.com/../../etc"}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "rn", RES],
        },
        Case {
            name: "nad good resourceName",
            review: nad(
                "CREATE",
                "rn2",
                r#"{"cniVersion":"1.0.0","type":"sriov"}"#,
                json!({RES: "intel.com/sriov_b"}),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "nad deviceID",
            review: nad(
                "CREATE",
                "dev",
                r#"{"cniVersion":"1.0.0","type":"sriov","deviceID":"0000:01:10.1"}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "deviceID"],
        },
        Case {
            name: "nad update with logFile",
            review: nad(
                "UPDATE",
                "blue",
                r#"{"cniVersion":"1.0.0","type":"sriov","logFile":"/etc/passwd"}"#,
                json!({}),
            ),
            allowed: false,
            says: &[NAD_DEFAULT, "blue", "logFile"],
        },
        Case {
            name: "nad delete",
            review: nad("DELETE", "blue", "", json!({})),
            allowed: true,
            says: &[],
        },
        // LogicalNetworks.
        Case {
            name: "ln inside nad range",
            review: ln(
                "blue-ln",
                json!({"plugin": "br", "subnet": "10.10.3.0/24", "physicalNet": "p1"}),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "ln outside nad range",
            review: ln(
                "far",
                json!({"plugin": "br", "subnet": "10.99.0.0/24", "physicalNet": "p1"}),
            ),
            allowed: false,
            says: &[
                "LogicalNetwork default/far",
                "spec.subnet 10.99.0.0/24",
                "not inside the range 10.10.0.0/16",
            ],
        },
        Case {
            name: "ln overlap",
            review: ln(
                "over",
                json!({"plugin": "bridge", "subnet": "10.1.0.128/25", "physicalNet": "p1"}),
            ),
            allowed: false,
            says: &[
                "LogicalNetwork default/over",
                "spec.subnet",
                "LogicalNetwork default/net1",
            ],
        },
        Case {
            name: "ln same subnet other physnet",
            review: ln(
                "apart",
                json!({"plugin": "bridge", "subnet": "10.1.0.0/24", "physicalNet": "p2"}),
            ),
            allowed: true,
            says: &["spec.plugin \"bridge\""],
        },
        Case {
            name: "ln plugin traversal",
            review: ln("pt", json!({"plugin": "../x", "subnet": ""})),
            allowed: false,
            says: &["LogicalNetwork default/pt", "spec.plugin", "../x"],
        },
        Case {
            name: "ln plugin genie",
            review: ln("pg", json!({"plugin": "genie"})),
            allowed: false,
            says: &["LogicalNetwork default/pg", "spec.plugin", "genie"],
        },
        Case {
            name: "ln vlan out of range",
            review: ln("vl", json!({"plugin": "bridge", "vlan": 4095})),
            allowed: false,
            says: &["LogicalNetwork default/vl", "spec.vlan 4095"],
        },
        Case {
            name: "ln vlan ok",
            review: ln("vl2", json!({"plugin": "bridge", "vlan": 100})),
            allowed: true,
            says: &[],
        },
        Case {
            name: "ln physicalNet bad",
            review: ln("pn", json!({"plugin": "bridge", "physicalNet": "../p"})),
            allowed: false,
            says: &["LogicalNetwork default/pn", "spec.physicalNet"],
        },
        Case {
            name: "ln subnet bad",
            review: ln("sb", json!({"plugin": "bridge", "subnet": "10.0.0.0/40"})),
            allowed: false,
            says: &["LogicalNetwork default/sb", "spec.subnet", "prefix length"],
        },
        Case {
            name: "ln name bad",
            review: ln("Net_1", json!({"plugin": "bridge"})),
            allowed: false,
            says: &["LogicalNetwork default/Net_1", "metadata.name"],
        },
        // Pods.
        Case {
            name: "pod created with its own network-status (claims addresses)",
            review: pod(json!({
                NETS: "blue@net7",
                "k8s.v1.cni.cncf.io/network-status": "[{\"name\":\"default/blue\",\"interface\":\"net7\",\"ips\":[\"10.1.0.9\"]}]"
            })),
            allowed: false,
            says: &[
                "k8s.v1.cni.cncf.io/network-status",
                "written by the node's CNI plugin",
            ],
        },
        Case {
            name: "pod without annotations",
            review: pod(json!({})),
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod npwg short",
            review: pod(json!({NETS: "blue@net7, shared/green"})),
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod npwg json",
            review: pod(
                json!({NETS: r#"[{"name":"blue","interface":"x1","ips":["10.5.0.9/24"],"mac":"02:00:00:00:00:09"}]"#}),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod genie cni",
            review: pod(json!({"cni": "flannel@eth1,weave@eth2"})),
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod genie cni traversal",
            review: pod(json!({"cni": "../../usr/bin/x"})),
            allowed: false,
            says: &["pod default/web", "annotation cni", "plain plugin name"],
        },
        Case {
            name: "pod interface traversal",
            review: pod(json!({NETS: "blue@../x"})),
            allowed: false,
            says: &["pod default/web", NETS, "interface name"],
        },
        Case {
            name: "pod interface with slash",
            review: pod(json!({"cni": "weave@a/b"})),
            allowed: false,
            says: &["pod default/web", "annotation cni", "interface name"],
        },
        Case {
            name: "pod nad name traversal",
            review: pod(json!({NETS: "../x"})),
            allowed: false,
            says: &["pod default/web", NETS],
        },
        Case {
            name: "pod nad json name traversal",
            review: pod(json!({NETS: r#"[{"name":"a/b"}]"#})),
            allowed: false,
            says: &["pod default/web", NETS, "\"a/b\""],
        },
        Case {
            name: "pod nad missing",
            review: pod(json!({NETS: "nope"})),
            allowed: false,
            says: &[
                "pod default/web",
                NETS,
                "NetworkAttachmentDefinition default/nope",
                "does not exist",
            ],
        },
        Case {
            name: "pod nad missing in global namespace",
            review: pod(json!({NETS: "shared/nope"})),
            allowed: false,
            says: &[
                "pod default/web",
                "NetworkAttachmentDefinition shared/nope, which does not exist",
            ],
        },
        Case {
            name: "pod isolation",
            review: pod(json!({NETS: "other/red"})),
            allowed: false,
            says: &[
                "pod default/web",
                "may not use NetworkAttachmentDefinition other/red",
                "(shared)",
                NETS,
            ],
        },
        Case {
            name: "pod interface twice",
            review: pod(json!({NETS: "blue@net1,shared/green@net1"})),
            allowed: false,
            says: &[
                "pod default/web",
                "interface net1 is requested twice",
                "shared/green",
            ],
        },
        Case {
            name: "pod sriov without request",
            review: pod(json!({NETS: "sriov-a"})),
            allowed: false,
            says: &[
                "pod default/web",
                "intel.com/sriov_a",
                "request 0",
                "spec.containers[].resources",
            ],
        },
        Case {
            name: "pod sriov twice with one",
            review: pod_op(
                "CREATE",
                json!({NETS: "sriov-a,sriov-a"}),
                json!({"limits": {"intel.com/sriov_a": "1"}}),
            ),
            allowed: false,
            says: &["attach 2", "request 1"],
        },
        Case {
            name: "pod sriov with request",
            review: pod_op(
                "CREATE",
                json!({NETS: "sriov-a,sriov-a"}),
                json!({"requests": {"intel.com/sriov_a": "2"}, "limits": {"intel.com/sriov_a": "2"}}),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod logical network",
            review: pod(json!({"cni": "", "networks": "net1@eth1"})),
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod logical network missing",
            review: pod(json!({"networks": "net9"})),
            allowed: false,
            says: &[
                "pod default/web",
                "annotation networks",
                "LogicalNetwork default/net9",
            ],
        },
        Case {
            name: "pod default network missing",
            review: pod(json!({"v1.multus-cni.io/default-network": "nope"})),
            allowed: false,
            says: &[
                "pod default/web",
                "v1.multus-cni.io/default-network",
                "default/nope",
            ],
        },
        Case {
            name: "pod 1MB annotation",
            review: pod(json!({"cni": huge})),
            allowed: false,
            says: &["pod default/web", "annotation cni"],
        },
        Case {
            name: "pod 1MB networks annotation",
            review: pod(json!({NETS: huge})),
            allowed: false,
            says: &["pod default/web", NETS],
        },
        Case {
            name: "pod deeply nested json annotation",
            review: pod(json!({NETS: deep.to_string()})),
            allowed: false,
            says: &["pod default/web", NETS, "JSON"],
        },
        Case {
            name: "pod update with bad annotation",
            review: pod_op("UPDATE", json!({NETS: "../x"}), json!({})),
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod delete",
            review: pod_op("DELETE", json!({NETS: "../x"}), json!({})),
            allowed: true,
            says: &[],
        },
        // Policies.
        Case {
            name: "genie policy unquoted",
            review: np(
                json!({"genieNetworkpolicy": "[\n  {\n    networkSelector: net1\n    peerNetworks: net2,net3 \n  }\n]\n"}),
            ),
            allowed: true,
            says: &["default/net2"],
        },
        Case {
            name: "genie policy json",
            review: np(
                json!({"genieNetworkpolicy": r#"[{"networkSelector":"net1","peerNetworks":"net1"}]"#}),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "genie policy bad",
            review: np(json!({"genieNetworkpolicy": "[{networkSelector: ../net1}]"})),
            allowed: false,
            says: &[
                "NetworkPolicy default/pol",
                "annotation genieNetworkpolicy",
                "networkSelector",
            ],
        },
        Case {
            name: "plain network policy",
            review: np(json!({})),
            allowed: true,
            says: &[],
        },
        Case {
            name: "mnp v1beta1",
            review: mnp(
                "v1beta1",
                json!({"k8s.v1.cni.cncf.io/policy-for": "blue, shared/green"}),
                good_mnp_spec(),
            ),
            allowed: true,
            says: &[],
        },
        Case {
            name: "mnp v1beta2 bad policy-for",
            review: mnp(
                "v1beta2",
                json!({"k8s.v1.cni.cncf.io/policy-for": "a/b/c"}),
                good_mnp_spec(),
            ),
            allowed: false,
            says: &[
                "MultiNetworkPolicy default/mpol",
                "k8s.v1.cni.cncf.io/policy-for",
                "more than one '/'",
            ],
        },
        Case {
            name: "mnp bad spec",
            review: mnp(
                "v1beta1",
                json!({"k8s.v1.cni.cncf.io/policy-for": "blue"}),
                json!({"podSelector": {}, "ingress": [{"ports": [{"port": {"x": 1}}]}]}),
            ),
            allowed: false,
            says: &[
                "MultiNetworkPolicy default/mpol",
                "spec does not have NetworkPolicy's shape",
            ],
        },
        Case {
            name: "pod eviction subresource",
            review: Review {
                group: "",
                version: "v1",
                kind: "Pod",
                resource: "pods",
                operation: "CREATE",
                namespace: "default",
                sub_resource: Some((
                    "eviction",
                    json!({"group": "policy", "version": "v1", "kind": "Eviction"}),
                )),
                object: json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web", "namespace": "default"}}),
            },
            allowed: true,
            says: &[],
        },
        Case {
            name: "pod status update",
            review: Review {
                sub_resource: Some((
                    "status",
                    json!({"group": "", "version": "v1", "kind": "Pod"}),
                )),
                ..pod_op("UPDATE", json!({NETS: "../x"}), json!({}))
            },
            allowed: true,
            says: &[],
        },
        // Kinds we do not handle.
        Case {
            name: "unknown kind",
            review: Review {
                group: "",
                version: "v1",
                kind: "ConfigMap",
                resource: "configmaps",
                operation: "CREATE",
                namespace: "default",
                sub_resource: None,
                object: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            },
            allowed: false,
            says: &["does not handle", "core/v1/ConfigMap", "configmaps"],
        },
        Case {
            name: "unknown version of ours",
            review: Review {
                group: "k8s.cni.cncf.io",
                version: "v2",
                kind: "NetworkAttachmentDefinition",
                resource: "network-attachment-definitions",
                operation: "CREATE",
                namespace: "default",
                sub_resource: None,
                object: nad_obj("x", "", json!({})),
            },
            allowed: false,
            says: &[
                "does not handle",
                "k8s.cni.cncf.io/v2/NetworkAttachmentDefinition",
            ],
        },
    ]
}
