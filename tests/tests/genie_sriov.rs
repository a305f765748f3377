//! Host tier: SR-IOV attachments as genie sets them up, without VFs (this host has none; the lab
//! moves real ones). The kubelet's PodResources API is the stand-in's real gRPC service on a unix
//! socket; the `sriov` delegate is a recording script in the node's bin dir that keeps the config
//! it was given and answers a valid result. Checked: which device each attachment gets and how the
//! delegate learns it, device-info files and network-status, the kubelet checkpoint fallback in
//! both formats, refusals that leave nothing behind, and CNI-Genie's `cni: "sriov"` from the
//! agent's pools.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vfgenie_tests::podresources::PodResourcesStandIn;
use vfgenie_tests::runtime::{require_root, Node, Sandbox};

const NS: &str = "team";
const VF_A: &str = "example.com/vf_a";
const VF_B: &str = "intel.com/vf_b";

/// A node whose delegates record what they get: the default network is `rec` (type `recorder`),
/// SR-IOV networks are type `sriov`. PodResources, checkpoint and device-info live under the node.
struct SriovNode {
    node: Node,
    rec: PathBuf,
    devinfo: PathBuf,
    socket: PathBuf,
    checkpoint: PathBuf,
}

fn recording_delegate(bin_dir: &Path, name: &str, rec: &Path) {
    let script = format!(
        r#"#!/bin/sh
d='{}'
t=$(basename "$0")
n=$(ls "$d" | wc -l)
f="$d/$(printf %03d "$n")-$t-$CNI_COMMAND-$CNI_IFNAME.json"
cat > "$f"
case "$CNI_COMMAND" in
ADD)
  if [ "$CNI_IFNAME" = fail0 ]; then
    printf '{{"cniVersion":"1.0.0","code":999,"msg":"this recorder refuses fail0"}}'
    exit 1
  fi
  # A plugin given a device-info file path that holds nothing yet may write one (device-info spec).
  p=$(sed -n 's/.*"CNIDeviceInfoFile":"\([^"]*\)".*/\1/p' "$f")
  dev=$(sed -n 's/.*"deviceID":"\([^"]*\)".*/\1/p' "$f")
  if [ -n "$p" ] && [ ! -e "$p" ]; then
    mkdir -p "$(dirname "$p")"
    printf '{{"type":"pci","version":"1.1.0","pci":{{"pci-address":"%s","rdma-device":"written-by-plugin"}}}}' "$dev" > "$p"
  fi
  v=$(sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p' "$f")
  printf '{{"cniVersion":"%s","interfaces":[{{"name":"%s","mac":"02:00:00:00:00:%02x","sandbox":"%s"}}],"ips":[]}}' "$v" "$CNI_IFNAME" "$n" "$CNI_NETNS" ;;
VERSION)
  printf '{{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}}' ;;
esac
"#,
        rec.display()
    );
    let path = bin_dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl SriovNode {
    fn new() -> Self {
        let node = Node::new().unwrap();
        let base = node.dir.path().to_path_buf();
        let rec = base.join("rec");
        std::fs::create_dir_all(&rec).unwrap();
        recording_delegate(&node.bin_dir, "sriov", &rec);
        recording_delegate(&node.bin_dir, "recorder", &rec);
        node.write_conf(
            "10-rec.conf",
            &json!({"cniVersion": "1.0.0", "name": "rec", "type": "recorder"}),
        )
        .unwrap();
        for (name, resource) in [("sriov-a", VF_A), ("sriov-b", VF_B)] {
            let mut conf =
                json!({"cniVersion": "1.0.0", "name": name, "type": "sriov", "vlan": 10});
            if name == "sriov-b" {
                conf["capabilities"] = json!({"CNIDeviceInfoFile": true});
            }
            node.api
                .add_nad(NS, name, &conf.to_string(), Some(resource));
        }
        Self {
            rec,
            devinfo: base.join("devinfo"),
            socket: base.join("pod-resources.sock"),
            checkpoint: base.join("kubelet_internal_checkpoint"),
            node,
        }
    }

    fn conf(&self, extra: Value) -> Value {
        let mut c = self.node.genie_conf(
            "1.0.0",
            json!({
                "clusterNetwork": "rec",
                "podResourcesSocket": self.socket.display().to_string(),
                "kubeletCheckpoint": self.checkpoint.display().to_string(),
                "deviceInfoDir": self.devinfo.display().to_string(),
            }),
        );
        if let (Some(m), Value::Object(e)) = (c.as_object_mut(), extra) {
            m.extend(e);
        }
        c
    }

    /// What the delegates were given, in call order: (type, command, ifname, config).
    fn recorded(&self) -> Vec<(String, String, String, Value)> {
        let mut names: Vec<String> = std::fs::read_dir(&self.rec)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let parts: Vec<&str> = n.trim_end_matches(".json").splitn(4, '-').collect();
                let v = serde_json::from_slice(&std::fs::read(self.rec.join(&n)).unwrap())
                    .unwrap_or(Value::Null);
                (
                    parts[1].to_string(),
                    parts[2].to_string(),
                    parts[3].to_string(),
                    v,
                )
            })
            .collect()
    }

    /// The config the `sriov` delegate got for ADD on `ifname`.
    fn sriov_add(&self, ifname: &str) -> Value {
        self.recorded()
            .into_iter()
            .find(|(t, c, i, _)| t == "sriov" && c == "ADD" && i == ifname)
            .map(|(_, _, _, v)| v)
            .unwrap_or_else(|| panic!("no sriov ADD on {ifname}: {:?}", self.recorded()))
    }

    fn cni_devinfo_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.devinfo.join("cni"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn network_status(&self, pod: &str) -> Vec<Value> {
        let writes = self.node.api.writes();
        let w = writes
            .iter()
            .rev()
            .find(|w| w.name == pod)
            .expect("no status write");
        serde_json::from_str::<Value>(w.annotation("k8s.v1.cni.cncf.io/network-status").unwrap())
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Asserts a refused ADD left nothing: no delegate ran, no cache record, no device-info file.
    fn assert_nothing_ran(&self) {
        assert!(self.recorded().is_empty(), "{:?}", self.recorded());
        assert!(self.node.cache_records().is_empty());
        assert!(self.cni_devinfo_files().is_empty());
    }
}

fn device_id_of(conf: &Value) -> (Option<&str>, Option<&str>) {
    (
        conf["deviceID"].as_str(),
        conf["runtimeConfig"]["deviceID"].as_str(),
    )
}

#[test]
fn each_attachment_gets_its_own_sorted_device_with_device_info() {
    require_root();
    let n = SriovNode::new();
    let pr = PodResourcesStandIn::start(&n.socket).unwrap();
    n.node.api.add_pod(
        NS,
        "web",
        &[("k8s.v1.cni.cncf.io/networks", "sriov-a,sriov-b,sriov-a@vf9")],
    );
    // Device IDs out of order and across two containers; another pod's devices and another
    // resource are not the pod's to use.
    pr.set_pod(
        NS,
        "web",
        &[
            ("app", VF_A, &["0000:02:10.4"]),
            ("side", VF_A, &["0000:02:10.2"]),
            ("app", VF_B, &["0000:03:10.0"]),
            ("app", "example.com/other", &["0000:04:10.0"]),
        ],
    );
    pr.set_pod(NS, "db", &[("app", VF_A, &["0000:02:10.0"])]);
    // The device plugin's device-info file exists for the first device only.
    let dp = vfdp::devinfo::dp_file(&n.devinfo, VF_A, "0000:02:10.2").unwrap();
    vfdp::devinfo::write(
        &dp,
        &vfdp::devinfo::DeviceInfo::pci("0000:02:10.2", "0000:02:00.0"),
    )
    .unwrap();

    let sb = Sandbox::new().unwrap();
    let conf = n.conf(json!({}));
    let out = n
        .node
        .cni("ADD", "c1", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(pr.lists(), 1, "one PodResources List per ADD");

    // The Nth attachment of a resource gets the Nth sorted device, in the conf and runtimeConfig.
    let net1 = n.sriov_add("net1");
    assert_eq!(
        device_id_of(&net1),
        (Some("0000:02:10.2"), Some("0000:02:10.2"))
    );
    assert_eq!(net1["vlan"], 10);
    assert_eq!(net1["name"], "sriov-a");
    let net2 = n.sriov_add("net2");
    assert_eq!(
        device_id_of(&net2),
        (Some("0000:03:10.0"), Some("0000:03:10.0"))
    );
    // sriov-b declares CNIDeviceInfoFile: it gets its attachment's file path (and, finding no
    // copy there, writes the file itself); sriov-a declares nothing and gets no such key.
    let net2_file = n.devinfo.join("cni/team-sriov-b-c1-net2-device.json");
    assert_eq!(
        net2["runtimeConfig"]["CNIDeviceInfoFile"].as_str(),
        Some(net2_file.to_str().unwrap())
    );
    assert!(net1["runtimeConfig"].get("CNIDeviceInfoFile").is_none());
    assert_eq!(
        device_id_of(&n.sriov_add("vf9")),
        (Some("0000:02:10.4"), Some("0000:02:10.4"))
    );
    // The default network has no device.
    let eth0 = n
        .recorded()
        .into_iter()
        .find(|(t, _, _, _)| t == "recorder")
        .unwrap()
        .3;
    assert_eq!(device_id_of(&eth0), (None, None));

    // The device plugin's file was copied for net1, read-only, under the attachment's name.
    let files = n.cni_devinfo_files();
    assert!(
        files.contains(&"team-sriov-a-c1-net1-device.json".to_string()),
        "{files:?}"
    );
    let copy = n.devinfo.join("cni/team-sriov-a-c1-net1-device.json");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&dp).unwrap());
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o444
    );

    // network-status: the copied document for net1, the minimal PCI one where the device plugin
    // wrote none, nothing for the default network.
    let status = n.network_status("web");
    let by_if = |i: &str| {
        status
            .iter()
            .find(|e| e["interface"] == i)
            .unwrap_or_else(|| panic!("{i} not in {status:?}"))
            .clone()
    };
    assert_eq!(
        by_if("net1")["device-info"],
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:02:10.2", "pf-pci-address": "0000:02:00.0"}})
    );
    assert_eq!(by_if("net1")["name"], "team/sriov-a");
    assert_eq!(
        by_if("vf9")["device-info"],
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:02:10.4"}})
    );
    assert!(by_if("eth0").get("device-info").is_none());
    // What the plugin wrote is what network-status reports.
    assert_eq!(
        by_if("net2")["device-info"]["pci"],
        json!({"pci-address": "0000:03:10.0", "rdma-device": "written-by-plugin"})
    );
    assert!(net2_file.exists());

    // DEL: the delegate gets its device again; the device-info files and the record go.
    let del = n
        .node
        .cni("DEL", "c1", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(del.success, "{} / {}", del.stdout, del.stderr);
    let dels: Vec<(String, Value)> = n
        .recorded()
        .into_iter()
        .filter(|(t, c, _, _)| t == "sriov" && c == "DEL")
        .map(|(_, _, i, v)| (i, v))
        .collect();
    assert_eq!(dels.len(), 3);
    let net1_del = &dels.iter().find(|(i, _)| i == "net1").unwrap().1;
    assert_eq!(device_id_of(net1_del).0, Some("0000:02:10.2"));
    assert!(
        n.cni_devinfo_files().is_empty(),
        "{:?}",
        n.cni_devinfo_files()
    );
    assert!(n.node.cache_records().is_empty());
    assert!(
        dp.exists(),
        "the device plugin's own file is not genie's to remove"
    );
    // Each VF attachment's delegate records name its device, on ADD and on DEL.
    let audit: Vec<Value> = std::fs::read_to_string(n.node.audit_log())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for verb in ["ADD", "DEL"] {
        let net1 = audit
            .iter()
            .find(|r| r["kind"] == "delegate" && r["verb"] == verb && r["ifname"] == "net1")
            .unwrap_or_else(|| panic!("no {verb} delegate record of net1"));
        assert_eq!(net1["device"], "0000:02:10.2", "{net1}");
        assert_eq!(net1["network"], "team/sriov-a", "{net1}");
        assert_eq!(net1["plugin"], "sriov", "{net1}");
    }
}

#[test]
fn a_pod_without_the_device_is_refused_before_anything_runs() {
    require_root();
    let n = SriovNode::new();
    let pr = PodResourcesStandIn::start(&n.socket).unwrap();
    let conf = n.conf(json!({}));
    let sb = Sandbox::new().unwrap();

    // No device of the resource at all.
    n.node
        .api
        .add_pod(NS, "nodev", &[("k8s.v1.cni.cncf.io/networks", "sriov-a")]);
    pr.set_pod(NS, "nodev", &[("app", VF_B, &["0000:03:10.0"])]);
    let out = n
        .node
        .cni("ADD", "c2", &sb.path, "eth0", Some((NS, "nodev")), &conf)
        .unwrap();
    assert!(!out.success);
    let err = out.json().unwrap();
    let msg = err["msg"].as_str().unwrap();
    for want in [
        "pod team/nodev",
        "network team/sriov-a (net1)",
        VF_A,
        "request example.com/vf_a: 1",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    n.assert_nothing_ran();
    // The audit log's call record carries the refusal as the runtime got it, with every field.
    let audit: Vec<Value> = std::fs::read_to_string(n.node.audit_log())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let call = audit
        .iter()
        .rfind(|r| r["kind"] == "call" && r["containerId"] == "c2")
        .expect("no call record of the refused ADD");
    assert_eq!(call["verb"], "ADD");
    assert_eq!(call["plugin"], "genie");
    assert_eq!(call["ifname"], "eth0");
    assert_eq!(
        (&call["pod"]["namespace"], &call["pod"]["name"]),
        (&json!(NS), &json!("nodev"))
    );
    assert!(call["durationUs"].as_u64().is_some(), "{call}");
    assert!(
        call["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{call}"
    );
    assert_eq!(call["error"]["code"], err["code"], "{call}");
    assert_eq!(call["error"]["msg"], err["msg"], "{call}");
    assert!(call.get("result").is_none(), "{call}");

    // One device, two attachments of the resource.
    n.node.api.add_pod(
        NS,
        "short",
        &[("k8s.v1.cni.cncf.io/networks", "sriov-a,sriov-a")],
    );
    pr.set_pod(NS, "short", &[("app", VF_A, &["0000:02:10.2"])]);
    let out = n
        .node
        .cni("ADD", "c3", &sb.path, "eth0", Some((NS, "short")), &conf)
        .unwrap();
    assert!(!out.success);
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("(net2)") && msg.contains("request example.com/vf_a: 2"),
        "{msg}"
    );
    n.assert_nothing_ran();
    assert!(sb.links().unwrap().is_empty());
}

fn checkpoint_new(uid: &str, resource: &str, ids: &[&str]) -> Value {
    json!({"Data": {"PodDeviceEntries": [
        {"PodUID": "uid-other", "ContainerName": "c", "ResourceName": resource, "DeviceIDs": {"0": ["0000:02:10.0"]}, "AllocResp": "AA=="},
        {"PodUID": uid, "ContainerName": "c", "ResourceName": resource, "DeviceIDs": {"0": [ids[1]], "1": [ids[0]]}, "AllocResp": "AA=="}
    ], "RegisteredDevices": {resource: ids}}, "Checksum": 12345})
}

fn checkpoint_old(uid: &str, resource: &str, ids: &[&str]) -> Value {
    json!({"Data": {"PodDeviceEntries": [
        {"PodUID": uid, "ContainerName": "c", "ResourceName": resource, "DeviceIDs": [ids[1], ids[0]], "AllocResp": "AA=="}
    ], "RegisteredDevices": {resource: ids}}, "Checksum": 1})
}

#[test]
fn without_pod_resources_the_kubelet_checkpoint_is_read_in_both_formats() {
    require_root();
    let n = SriovNode::new();
    let conf = n.conf(json!({}));
    let sb = Sandbox::new().unwrap();
    let ids = ["0000:02:10.6", "0000:02:10.1"];
    for (i, (format, stale_socket)) in [("new", false), ("old", true), ("new", true)]
        .into_iter()
        .enumerate()
    {
        let pod = format!("ckpt{i}");
        let uid = n.node.api.add_pod(
            NS,
            &pod,
            &[("k8s.v1.cni.cncf.io/networks", "sriov-a,sriov-a")],
        );
        let doc = match format {
            "new" => checkpoint_new(&uid, VF_A, &ids),
            _ => checkpoint_old(&uid, VF_A, &ids),
        };
        std::fs::write(&n.checkpoint, serde_json::to_vec(&doc).unwrap()).unwrap();
        // Unreachable is either no socket file or one nobody listens on (a kubelet that died).
        let _ = std::fs::remove_file(&n.socket);
        if stale_socket {
            drop(std::os::unix::net::UnixListener::bind(&n.socket).unwrap());
            assert!(n.socket.exists());
        }
        let cid = format!("k{i}");
        let out = n
            .node
            .cni("ADD", &cid, &sb.path, "eth0", Some((NS, &pod)), &conf)
            .unwrap();
        assert!(out.success, "{format}: {} / {}", out.stdout, out.stderr);
        assert_eq!(
            device_id_of(&n.sriov_add("net1")).0,
            Some("0000:02:10.1"),
            "{format}"
        );
        assert_eq!(
            device_id_of(&n.sriov_add("net2")).0,
            Some("0000:02:10.6"),
            "{format}"
        );
        let del = n
            .node
            .cni("DEL", &cid, &sb.path, "eth0", Some((NS, &pod)), &conf)
            .unwrap();
        assert!(del.success, "{}", del.stdout);
        for e in std::fs::read_dir(&n.rec).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }

    // The kubelet's K8S_POD_UID wins over the API's uid (a pod recreated under the same name).
    let _ = std::fs::remove_file(&n.socket);
    n.node
        .api
        .add_pod(NS, "again", &[("k8s.v1.cni.cncf.io/networks", "sriov-a")]);
    let doc = checkpoint_old("uid-from-kubelet", VF_A, &ids);
    std::fs::write(&n.checkpoint, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = n
        .node
        .cni_with_args(
            "ADD",
            "k8",
            &sb.path,
            "eth0",
            Some((NS, "again")),
            "K8S_POD_UID=uid-from-kubelet",
            &conf,
        )
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(device_id_of(&n.sriov_add("net1")).0, Some("0000:02:10.1"));
    let del = n
        .node
        .cni("DEL", "k8", &sb.path, "eth0", Some((NS, "again")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    for e in std::fs::read_dir(&n.rec).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }

    // Neither PodResources nor a checkpoint: an error naming both, nothing run.
    std::fs::remove_file(&n.checkpoint).unwrap();
    let _ = std::fs::remove_file(&n.socket);
    n.node
        .api
        .add_pod(NS, "lost", &[("k8s.v1.cni.cncf.io/networks", "sriov-a")]);
    let out = n
        .node
        .cni("ADD", "k9", &sb.path, "eth0", Some((NS, "lost")), &conf)
        .unwrap();
    assert!(!out.success);
    let err = out.json().unwrap();
    assert_eq!(err["code"], 11, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("pod team/lost")
            && msg.contains(&n.socket.display().to_string())
            && msg.contains(&n.checkpoint.display().to_string()),
        "{msg}"
    );
    n.assert_nothing_ran();
}

#[test]
fn a_silent_pod_resources_api_times_out_with_a_clear_error() {
    require_root();
    let n = SriovNode::new();
    // Something accepts connections on the socket and never answers.
    let _silent = std::os::unix::net::UnixListener::bind(&n.socket).unwrap();
    // A checkpoint that would answer: a kubelet that is there but silent is not bypassed.
    std::fs::write(
        &n.checkpoint,
        serde_json::to_vec(&checkpoint_old(
            "uid-team-slow",
            VF_A,
            &["0000:02:10.1", "0000:02:10.2"],
        ))
        .unwrap(),
    )
    .unwrap();
    n.node
        .api
        .add_pod(NS, "slow", &[("k8s.v1.cni.cncf.io/networks", "sriov-a")]);
    let sb = Sandbox::new().unwrap();
    let started = Instant::now();
    let out = n
        .node
        .cni(
            "ADD",
            "t1",
            &sb.path,
            "eth0",
            Some((NS, "slow")),
            &n.conf(json!({})),
        )
        .unwrap();
    let took = started.elapsed();
    assert!(!out.success);
    let err = out.json().unwrap();
    assert_eq!(err["code"], 11, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("pod team/slow") && msg.contains("did not answer") && msg.contains("2s"),
        "{msg}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    n.assert_nothing_ran();
}

#[test]
fn cni_genie_sriov_uses_the_agent_pools_the_pod_holds_devices_of() {
    require_root();
    let n = SriovNode::new();
    let pr = PodResourcesStandIn::start(&n.socket).unwrap();
    // The agent's config as the SR-IOV network device plugin writes it: keys in any case, the
    // default prefix for a pool that names none.
    let agent = n.node.dir.path().join("agent.json");
    std::fs::write(
        &agent,
        serde_json::to_vec(&json!({
            "resourceList": [
                {"ResourceName": "vf_a", "resourcePrefix": "example.com", "selectors": {"drivers": ["igbvf"]}},
                {"resourcename": "vf_b", "selectors": [{"pfNames": ["ens1f0#0-3"]}]}
            ],
            "provisioning": []
        }))
        .unwrap(),
    )
    .unwrap();
    // The agent itself accepts that config and sees the same pools.
    let parsed = vfagent::config::Config::load(&agent).unwrap();
    let pools: Vec<String> = parsed.resource_list.iter().map(|r| r.full_name()).collect();
    assert_eq!(pools, vec![VF_A, VF_B]);

    n.node
        .api
        .add_pod(NS, "dpdk", &[("cni", "sriov,sriov@vf1")]);
    pr.set_pod(
        NS,
        "dpdk",
        &[
            ("app", VF_B, &["0000:03:10.3"]),
            ("app", VF_A, &["0000:02:10.5"]),
        ],
    );
    let conf = n.conf(json!({"sriov": {
        "agentConfig": agent.display().to_string(),
        "vlan": 100,
        "spoofchk": "off",
        "ipam": {"type": "static", "addresses": [{"address": "10.56.0.5/24"}]}
    }}));
    let sb = Sandbox::new().unwrap();
    let out = n
        .node
        .cni("ADD", "g1", &sb.path, "eth0", Some((NS, "dpdk")), &conf)
        .unwrap();
    assert!(out.success, "{} / {}", out.stdout, out.stderr);

    // eth1 and vf1: sriov netconfs built from the genie conf, each with one of the pod's devices
    // (sorted over both pools).
    let eth1 = n.sriov_add("eth1");
    assert_eq!(eth1["type"], "sriov");
    assert_eq!(eth1["name"], "sriov");
    assert_eq!(eth1["vlan"], 100);
    assert_eq!(eth1["spoofchk"], "off");
    assert_eq!(eth1["ipam"]["type"], "static");
    assert!(eth1.get("agentConfig").is_none());
    assert_eq!(
        device_id_of(&eth1),
        (Some("0000:02:10.5"), Some("0000:02:10.5"))
    );
    assert_eq!(device_id_of(&n.sriov_add("vf1")).0, Some("0000:03:10.3"));
    let status = n.network_status("dpdk");
    let vf1 = status.iter().find(|e| e["interface"] == "vf1").unwrap();
    assert_eq!(vf1["name"], "sriov");
    assert_eq!(vf1["device-info"]["pci"]["pci-address"], "0000:03:10.3");

    let del = n
        .node
        .cni("DEL", "g1", &sb.path, "eth0", Some((NS, "dpdk")), &conf)
        .unwrap();
    assert!(del.success, "{}", del.stdout);
    assert!(n.node.cache_records().is_empty());

    // A pod holding no device of any pool is told which pools to request from.
    n.node.api.add_pod(NS, "plain", &[("cni", "sriov")]);
    pr.set_pod(NS, "plain", &[]);
    for e in std::fs::read_dir(&n.rec).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let out = n
        .node
        .cni("ADD", "g2", &sb.path, "eth0", Some((NS, "plain")), &conf)
        .unwrap();
    assert!(!out.success);
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("pod team/plain") && msg.contains(VF_A) && msg.contains(VF_B),
        "{msg}"
    );
    n.assert_nothing_ran();
}

#[test]
fn traversal_through_resource_network_or_device_names_is_refused() {
    require_root();
    let n = SriovNode::new();
    let pr = PodResourcesStandIn::start(&n.socket).unwrap();
    let conf = n.conf(json!({}));
    let sb = Sandbox::new().unwrap();
    let nad = json!({"cniVersion": "1.0.0", "name": "evil", "type": "sriov"}).to_string();
    for (i, resource) in [
        "example.com/../../../etc/passwd",
        "../../etc/x",
        "example.com/..",
        "example.com/a/b",
    ]
    .into_iter()
    .enumerate()
    {
        n.node.api.add_nad(NS, "evil", &nad, Some(resource));
        let pod = format!("evil{i}");
        n.node
            .api
            .add_pod(NS, &pod, &[("k8s.v1.cni.cncf.io/networks", "evil")]);
        pr.set_pod(NS, &pod, &[("app", resource, &["0000:02:10.1"])]);
        let out = n
            .node
            .cni("ADD", "e1", &sb.path, "eth0", Some((NS, &pod)), &conf)
            .unwrap();
        assert!(!out.success, "{resource}");
        let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
        assert!(msg.contains("resourceName is refused"), "{resource}: {msg}");
        n.assert_nothing_ran();
    }
    // A network name that climbs is refused with the annotation.
    n.node.api.add_pod(
        NS,
        "climb",
        &[("k8s.v1.cni.cncf.io/networks", "../sriov-a")],
    );
    let out = n
        .node
        .cni("ADD", "e2", &sb.path, "eth0", Some((NS, "climb")), &conf)
        .unwrap();
    assert!(!out.success);
    n.assert_nothing_ran();
    // A device ID that climbs (from a misbehaving device plugin) is refused too.
    n.node
        .api
        .add_pod(NS, "baddev", &[("k8s.v1.cni.cncf.io/networks", "sriov-a")]);
    pr.set_pod(NS, "baddev", &[("app", VF_A, &["../../../etc/passwd"])]);
    let out = n
        .node
        .cni("ADD", "e3", &sb.path, "eth0", Some((NS, "baddev")), &conf)
        .unwrap();
    assert!(!out.success);
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
    assert!(msg.contains("not a usable device ID"), "{msg}");
    n.assert_nothing_ran();
    assert!(!n.devinfo.exists() || n.cni_devinfo_files().is_empty());
}

#[test]
fn a_failed_add_removes_the_device_info_it_copied() {
    require_root();
    let n = SriovNode::new();
    let pr = PodResourcesStandIn::start(&n.socket).unwrap();
    n.node.api.add_pod(
        NS,
        "half",
        &[("k8s.v1.cni.cncf.io/networks", "sriov-a,sriov-a@fail0")],
    );
    let ids = ["0000:02:10.2", "0000:02:10.4"];
    pr.set_pod(NS, "half", &[("app", VF_A, &ids)]);
    for id in ids {
        let dp = vfdp::devinfo::dp_file(&n.devinfo, VF_A, id).unwrap();
        vfdp::devinfo::write(&dp, &vfdp::devinfo::DeviceInfo::pci(id, "0000:02:00.0")).unwrap();
    }
    let sb = Sandbox::new().unwrap();
    let conf = n.conf(json!({}));
    let out = n
        .node
        .cni("ADD", "h1", &sb.path, "eth0", Some((NS, "half")), &conf)
        .unwrap();
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stdout.contains("refuses fail0"), "{}", out.stdout);
    // net1 was attached with its device and then torn down with it; nothing is left.
    assert_eq!(device_id_of(&n.sriov_add("net1")).0, Some("0000:02:10.2"));
    let net1_del = n
        .recorded()
        .into_iter()
        .find(|(t, c, i, _)| t == "sriov" && c == "DEL" && i == "net1")
        .expect("net1 was not torn down")
        .3;
    assert_eq!(device_id_of(&net1_del).0, Some("0000:02:10.2"));
    assert!(
        n.cni_devinfo_files().is_empty(),
        "{:?}",
        n.cni_devinfo_files()
    );
    assert!(n.node.cache_records().is_empty());
}

#[test]
fn a_device_reaches_a_pod_only_as_the_kubelet_allocated_it() {
    require_root();
    let n = SriovNode::new();
    let pr = PodResourcesStandIn::start(&n.socket).unwrap();
    pr.set_pod(
        NS,
        "web",
        &[("app", VF_A, &["0000:02:10.2", "0000:02:10.4"])],
    );
    pr.set_pod(NS, "victim", &[("app", VF_A, &["0000:02:10.0"])]);
    // A NAD without resourceName that names the victim's VF itself.
    n.node.api.add_nad(
        NS,
        "grab",
        &json!({"cniVersion": "1.0.0", "name": "grab", "type": "sriov", "deviceID": "0000:02:10.0",
                "vlan": 7, "trust": "on"})
        .to_string(),
        None,
    );
    let conf = n.conf(json!({}));
    let try_add = |pod: &str, networks: &str| {
        n.node
            .api
            .add_pod(NS, pod, &[("k8s.v1.cni.cncf.io/networks", networks)]);
        let sb = Sandbox::new().unwrap();
        let out = n
            .node
            .cni("ADD", pod, &sb.path, "eth0", Some((NS, pod)), &conf)
            .unwrap();
        (out, sb)
    };
    let (out, _sb) = try_add("web", "grab");
    assert!(!out.success, "{}", out.stdout);
    let e = out.json().unwrap();
    assert_eq!(e["code"], 7);
    assert!(e["msg"].as_str().unwrap().contains("deviceID"), "{e}");
    n.assert_nothing_ran();

    // The annotation asks for the victim's VF on a resource-backed network: refused, naming what
    // the pod holds.
    let wish = |id: &str| format!(r#"[{{"name": "sriov-a", "deviceID": "{id}"}}]"#);
    let (out, _sb) = try_add("web", &wish("0000:02:10.0"));
    assert!(!out.success, "{}", out.stdout);
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("0000:02:10.0") && msg.contains("0000:02:10.2, 0000:02:10.4"),
        "{msg}"
    );
    n.assert_nothing_ran();
    // A deviceID on a network without a resource is refused as well.
    n.node.api.add_nad(
        NS,
        "plain",
        &json!({"cniVersion": "1.0.0", "name": "plain", "type": "sriov"}).to_string(),
        None,
    );
    let (out, _sb) = try_add("web", r#"[{"name": "plain", "deviceID": "0000:02:10.2"}]"#);
    assert!(!out.success, "{}", out.stdout);
    let msg = out.json().unwrap()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("team/plain") && msg.contains("resourceName"),
        "{msg}"
    );
    n.assert_nothing_ran();

    // One of its own devices is honoured.
    let (out, _sb) = try_add("web", &wish("0000:02:10.4"));
    assert!(out.success, "{} / {}", out.stdout, out.stderr);
    assert_eq!(
        device_id_of(&n.sriov_add("net1")),
        (Some("0000:02:10.4"), Some("0000:02:10.4"))
    );
}

/// Hot-plug (genie UPDATE) of a VF network: the new attachment gets a device the kubelet
/// allocated to the pod that no running attachment uses; without one the UPDATE is refused and
/// nothing runs; removing it gives its device back to the delegate's DEL.
#[test]
fn a_hot_added_vf_network_takes_a_held_device_no_attachment_uses() {
    require_root();
    let n = SriovNode::new();
    let pr = PodResourcesStandIn::start(&n.socket).unwrap();
    let conf = n.conf(json!({}));
    let sb = Sandbox::new().unwrap();
    pr.set_pod(
        NS,
        "web",
        &[("app", VF_A, &["0000:02:10.4", "0000:02:10.2"])],
    );
    n.node
        .api
        .add_pod(NS, "web", &[("k8s.v1.cni.cncf.io/networks", "sriov-a")]);
    let run = |cmd: &str| {
        n.node
            .cni(cmd, "c1", &sb.path, "eth0", Some((NS, "web")), &conf)
            .unwrap()
    };
    let add = run("ADD");
    assert!(add.success, "{} / {}", add.stdout, add.stderr);
    assert_eq!(device_id_of(&n.sriov_add("net1")).0, Some("0000:02:10.2"));

    // A second attachment of the resource: the device net1 does not use.
    n.node.api.add_pod(
        NS,
        "web",
        &[("k8s.v1.cni.cncf.io/networks", "sriov-a,sriov-a")],
    );
    let up = run("UPDATE");
    assert!(up.success, "{} / {}", up.stdout, up.stderr);
    assert_eq!(device_id_of(&n.sriov_add("net2")).0, Some("0000:02:10.4"));
    let status = n.network_status("web");
    let net2 = status.iter().find(|s| s["interface"] == "net2").unwrap();
    assert_eq!(
        net2["device-info"]["pci"]["pci-address"], "0000:02:10.4",
        "{net2}"
    );

    // A third: the pod holds no further device. Refused before any delegate runs.
    let before = n.recorded().len();
    n.node.api.add_pod(
        NS,
        "web",
        &[("k8s.v1.cni.cncf.io/networks", "sriov-a,sriov-a,sriov-a")],
    );
    let up = run("UPDATE");
    assert!(!up.success);
    let err = up.json().unwrap();
    assert_eq!(err["code"], 7, "{err}");
    assert!(err["msg"].as_str().unwrap().contains("(net3)"), "{err}");
    assert_eq!(n.recorded().len(), before, "a delegate ran");

    // net2 removed: its delegate's DEL gets its device, its device-info file goes.
    n.node
        .api
        .add_pod(NS, "web", &[("k8s.v1.cni.cncf.io/networks", "sriov-a")]);
    let up = run("UPDATE");
    assert!(up.success, "{} / {}", up.stdout, up.stderr);
    let del2 = n
        .recorded()
        .into_iter()
        .find(|(t, c, i, _)| t == "sriov" && c == "DEL" && i == "net2")
        .map(|(_, _, _, v)| v)
        .expect("no DEL of net2");
    assert_eq!(device_id_of(&del2).0, Some("0000:02:10.4"));
    assert!(
        n.cni_devinfo_files().iter().all(|f| !f.contains("net2")),
        "{:?}",
        n.cni_devinfo_files()
    );
    let del = run("DEL");
    assert!(del.success, "{}", del.stderr);
    assert!(n.node.cache_records().is_empty());
    assert!(
        n.cni_devinfo_files().is_empty(),
        "{:?}",
        n.cni_devinfo_files()
    );
}
