//! Host tier: what a tenant with rights on one namespace (pods and NetworkAttachmentDefinitions)
//! could try against the node through genie, exec'd as a container runtime does, with Debian's
//! plugins as delegates. Each test is an attack that worked before genie treated network objects
//! as untrusted input; each checks that it is refused with an error naming the object and the
//! problem, that no plugin saw the hostile value, and that nothing is left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};
use vfgenie_tests::apiserver::ApiServer;
use vfgenie_tests::runtime::{exec_cni, require_root, run, unique, CniOutput, Node, Sandbox};

const NS: &str = "team";

/// A node with the cluster network (bridge) and genie's own conf in the conf dir, as on a real
/// node where both are files in /etc/cni/net.d.
fn node() -> Node {
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &node.cluster_conflist("10.81.0.0/24"),
    )
    .unwrap();
    let mut own = genie(&node);
    own["name"] = json!("genie");
    node.write_conf("00-genie.conf", &own).unwrap();
    node
}

fn genie(node: &Node) -> Value {
    node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}))
}

/// A copy of the genie binary under another name in the node's bin dir: what name checks miss.
fn genie_copy(node: &Node, name: &str) {
    let real = std::fs::canonicalize(node.bin_dir.join("genie")).unwrap();
    let to = node.bin_dir.join(name);
    std::fs::copy(real, &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn pod_gets(api: &ApiServer, pod: &str) -> usize {
    let path = format!("GET /api/v1/namespaces/{NS}/pods/{pod}");
    api.requests().iter().filter(|r| **r == path).count()
}

/// ADD of `pod` (created with `annotations`) in a fresh sandbox; the output and the sandbox.
fn add(node: &Node, pod: &str, annotations: &[(&str, &str)]) -> (CniOutput, Sandbox, String) {
    node.api.add_pod(NS, pod, annotations);
    let sb = Sandbox::new().unwrap();
    let cid = unique("c");
    let out = node
        .cni("ADD", &cid, &sb.path, "eth0", Some((NS, pod)), &genie(node))
        .unwrap();
    (out, sb, cid)
}

/// A refused ADD: CNI error `code`, its message containing every one of `words`, and nothing left
/// in the pod, in host-local or in genie's cache.
fn assert_refused(node: &Node, out: &CniOutput, sb: &Sandbox, code: u64, words: &[&str]) {
    assert!(!out.success, "{}", out.stdout);
    let e = out.json().unwrap();
    assert_eq!(e["code"], code, "{e}");
    let msg = e["msg"].as_str().unwrap();
    for w in words {
        assert!(msg.contains(w), "{w:?} not in {msg}");
    }
    node.assert_nothing_left(sb);
}

#[test]
fn a_nad_named_like_the_genie_conf_does_not_make_genie_delegate_to_itself() {
    require_root();
    let node = node();
    // Empty spec.config: the conf file of that name would be used, and it is genie's own.
    node.api.add_nad(NS, "genie", "", None);
    let (out, sb, _) = add(&node, "bomb", &[("k8s.v1.cni.cncf.io/networks", "genie")]);
    assert_refused(&node, &out, &sb, 7, &["team/genie", "no spec.config"]);
    assert_eq!(pod_gets(&node.api, "bomb"), 1, "{:?}", node.api.requests());
}

#[test]
fn genie_under_another_name_refuses_to_run_as_a_delegate() {
    require_root();
    let node = node();
    // A node file whose plugin is genie installed under another name (a copy, not a link: no
    // name or inode check can tell), reached by a NAD named like it: before, genie ran itself
    // with the node's conf, which asked for the same NAD again, without end.
    genie_copy(&node, "evil");
    let mut nested = genie(&node);
    nested["name"] = json!("loop");
    nested["type"] = json!("evil");
    node.write_conf("05-loop.conf", &nested).unwrap();
    node.api.add_nad(NS, "loop", "", None);
    let (out, sb, _) = add(&node, "bomb", &[("k8s.v1.cni.cncf.io/networks", "loop")]);
    assert_refused(&node, &out, &sb, 7, &["VFGENIE_EXEC_BY", "team/loop"]);
    // The nested copy read nothing: one GET of the pod, by the runtime's genie.
    assert_eq!(pod_gets(&node.api, "bomb"), 1, "{:?}", node.api.requests());
}

#[test]
fn a_plugin_that_execs_genie_as_its_ipam_is_refused_too() {
    require_root();
    let node = node();
    genie_copy(&node, "evil-ipam");
    let bridge = unique("gbx");
    let conf = json!({"cniVersion": "1.0.0", "name": "viaipam", "type": "bridge", "bridge": bridge,
                      "ipam": {"type": "evil-ipam"}});
    node.api.add_nad(NS, "viaipam", &conf.to_string(), None);
    let (out, sb, _) = add(&node, "p", &[("k8s.v1.cni.cncf.io/networks", "viaipam")]);
    let _ = run("ip", &["link", "del", &bridge]);
    assert_refused(&node, &out, &sb, 7, &["VFGENIE_EXEC_BY"]);
    assert_eq!(pod_gets(&node.api, "p"), 1, "{:?}", node.api.requests());
}

#[test]
fn a_nested_genie_never_connects_to_the_api_server_its_conf_names() {
    require_root();
    let node = node();
    // The attacker's server: a conf that reaches genie as a delegate names it as the API root.
    let attacker = ApiServer::start().unwrap();
    attacker.add_pod(NS, "p", &[]);
    let conf = json!({"cniVersion": "1.0.0", "name": "x", "type": "genie",
                      "kubernetes": {"k8s_api_root": attacker.url(),
                                     "kubeconfig": node.kubeconfig.display().to_string()},
                      "logFile": node.dir.path().join("nested.log").display().to_string()});
    let sb = Sandbox::new().unwrap();
    let netns = sb.path.to_string_lossy().into_owned();
    let path = format!("{}:{}", node.bin_dir.display(), node.plugin_dir.display());
    let nested = |caller: &str, command: &str| {
        exec_cni(
            &node.bin_dir.join("genie"),
            &[
                ("VFGENIE_EXEC_BY", caller),
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "net1"),
                ("CNI_ARGS", "K8S_POD_NAMESPACE=team;K8S_POD_NAME=p"),
                ("CNI_PATH", &path),
            ],
            &serde_json::to_vec(&conf).unwrap(),
        )
        .unwrap()
    };
    for (caller, command) in [("genie", "ADD"), ("sriov", "ADD"), ("genie", "CHECK")] {
        let out = nested(caller, command);
        assert!(!out.success, "{caller} {command}: {}", out.stdout);
        assert_eq!(out.json().unwrap()["code"], 7, "{}", out.stdout);
    }
    // DEL of a refused role has nothing to undo: it succeeds, still without reading the conf.
    let out = nested("genie", "DEL");
    assert!(out.success, "{}", out.stdout);
    assert_eq!(attacker.connections(), 0);
    assert!(!node.dir.path().join("nested.log").exists());
    assert!(sb.links().unwrap().is_empty());
}

/// A file a hostile key points at: it must be neither created, written nor deleted.
struct Target(std::path::PathBuf);
impl Target {
    fn new(dir: &Path, existing: bool) -> Self {
        let p = dir.join(unique("target"));
        if existing {
            std::fs::write(&p, "precious").unwrap();
        }
        Target(p)
    }
    fn untouched(&self, existing: bool) -> bool {
        match existing {
            true => std::fs::read_to_string(&self.0).ok().as_deref() == Some("precious"),
            false => !self.0.exists(),
        }
    }
}

#[test]
fn host_paths_in_a_nad_never_reach_any_plugin() {
    require_root();
    let node = node();
    // Outside the node's dir, as a real target would be.
    let outside = tempfile::tempdir().unwrap();
    let t = |existing| Target::new(outside.path(), existing);
    let ipam = |extra: Value| {
        let mut i = json!({"type": "host-local", "subnet": "10.82.0.0/24"});
        i.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        i
    };
    let cases: Vec<(Target, bool, Value, &str)> = {
        let a = t(false);
        let b = t(false);
        let c = t(true);
        let d = t(false);
        let e = t(false);
        let f = t(true);
        let (pa, pb, pc, pd, pe, pf) = (
            a.0.display().to_string(),
            b.0.display().to_string(),
            c.0.display().to_string(),
            d.0.display().to_string(),
            e.0.display().to_string(),
            f.0.display().to_string(),
        );
        vec![
            // Our sriov plugin and a Debian plugin, the same key: refused before either runs.
            (
                a,
                false,
                json!({"type": "sriov", "logFile": pa, "ipam": ipam(json!({}))}),
                "logFile",
            ),
            (
                b,
                false,
                json!({"type": "ptp", "LogFile": pb, "ipam": ipam(json!({}))}),
                "LogFile",
            ),
            (
                c,
                true,
                json!({"type": "ptp", "runtimeConfig": {"CNIDeviceInfoFile": pc},
                       "ipam": ipam(json!({}))}),
                "runtimeConfig",
            ),
            (
                d,
                false,
                json!({"type": "ptp", "ipam": ipam(json!({"dataDir": pd}))}),
                "ipam.dataDir",
            ),
            (
                e,
                false,
                json!({"type": "sriov", "stateDir": pe}),
                "stateDir",
            ),
            (
                f,
                true,
                json!({"type": "ptp", "ipam": ipam(json!({"resolvConf": pf}))}),
                "ipam.resolvConf",
            ),
        ]
    };
    for (n, (target, existing, conf, key)) in cases.into_iter().enumerate() {
        let nad = format!("hostile{n}");
        node.api.add_nad(NS, &nad, &conf.to_string(), None);
        let pod = format!("p{n}");
        let (out, sb, _) = add(&node, &pod, &[("k8s.v1.cni.cncf.io/networks", &nad)]);
        assert_refused(&node, &out, &sb, 7, &[&format!("{NS}/{nad}"), key]);
        assert!(target.untouched(existing), "{key}: {}", target.0.display());
    }
}

#[test]
fn hostile_cni_args_and_interface_names_are_refused_and_leave_nothing() {
    require_root();
    let node = node();
    let nad = json!({"cniVersion": "1.0.0", "name": "blue", "type": "ptp",
                     "ipam": node.ipam("10.83.0.0/24")});
    node.api.add_nad(NS, "blue", &nad.to_string(), None);
    let args = r#"[{"name": "blue", "cni-args": {"logFile": "/etc/x"}}]"#;
    let (out, sb, _) = add(&node, "a", &[("k8s.v1.cni.cncf.io/networks", args)]);
    assert_refused(&node, &out, &sb, 7, &["cni-args.logFile"]);
    // The kernel would expand "%d": the link would get another name and could not be undone.
    for ann in ["blue@net%d", r#"[{"name": "blue", "interface": "x%d"}]"#] {
        let (out, sb, _) = add(&node, "b", &[("k8s.v1.cni.cncf.io/networks", ann)]);
        assert_refused(&node, &out, &sb, 7, &["'%'"]);
    }
}

#[test]
fn gc_without_valid_attachments_keeps_every_pod() {
    require_root();
    let node = node();
    let (out, sb, cid) = add(&node, "live", &[]);
    assert!(out.success, "{}", out.stdout);
    let gc = |conf: Value| {
        let o = node.cni("GC", "", Path::new(""), "", None, &conf).unwrap();
        assert!(o.success, "{} {}", o.stdout, o.stderr);
    };
    let mut conf = genie(&node);
    conf["cniVersion"] = json!("1.1.0");
    gc(conf.clone());
    assert_eq!(sb.links().unwrap(), vec!["eth0"]);
    assert_eq!(node.leases().len(), 1);
    assert_eq!(node.cache_records().len(), 1);
    // The pod still goes away with its DEL, and with a GC that lists no live attachment.
    conf["cni.dev/valid-attachments"] = json!([]);
    gc(conf);
    assert!(sb.links().unwrap().is_empty());
    assert!(node.leases().is_empty());
    assert!(node.cache_records().is_empty());
    let out = node
        .cni(
            "DEL",
            &cid,
            &sb.path,
            "eth0",
            Some((NS, "live")),
            &genie(&node),
        )
        .unwrap();
    assert!(out.success, "{}", out.stdout);
}

#[test]
fn isolation_binds_what_pods_ask_for_not_the_nodes_own_networks() {
    require_root();
    let node = Node::new().unwrap();
    // The cluster network as a NAD in kube-system, and a default network for every pod there too.
    let ptp = |name: &str, subnet: &str| {
        json!({"cniVersion": "1.0.0", "name": name, "type": "ptp", "ipam": node.ipam(subnet)})
            .to_string()
    };
    node.api.add_nad(
        "kube-system",
        "cluster",
        &ptp("cluster", "10.84.0.0/24"),
        None,
    );
    node.api
        .add_nad("kube-system", "mgmt", &ptp("mgmt", "10.85.0.0/24"), None);
    let conf = node.genie_conf(
        "1.0.0",
        json!({"clusterNetwork": "cluster", "defaultNetworks": ["mgmt"],
               "namespaceIsolation": true}),
    );
    node.api.add_pod(NS, "ok", &[]);
    let sb = Sandbox::new().unwrap();
    let out = node
        .cni("ADD", "c-ok", &sb.path, "eth0", Some((NS, "ok")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(sb.links().unwrap(), vec!["eth0", "net1"]);
    let out = node
        .cni("DEL", "c-ok", &sb.path, "eth0", Some((NS, "ok")), &conf)
        .unwrap();
    assert!(out.success, "{}", out.stdout);
    // A pod that names the same kube-system NAD itself is bound by isolation.
    node.api.add_pod(
        NS,
        "nosy",
        &[("v1.multus-cni.io/default-network", "kube-system/cluster")],
    );
    let sb2 = Sandbox::new().unwrap();
    let out = node
        .cni(
            "ADD",
            "c-nosy",
            &sb2.path,
            "eth0",
            Some((NS, "nosy")),
            &conf,
        )
        .unwrap();
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stdout.contains("kube-system/cluster"), "{}", out.stdout);
    assert!(sb2.links().unwrap().is_empty());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_records().is_empty());
}
