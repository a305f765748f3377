//! The `sriov` plugin as a runtime (or Multus) execs it, on a host without VFs: the binary picks
//! the plugin by the conf's `type` or by its own name (`genie install --name sriov`), DEL of an
//! attachment that was never added succeeds, and configs and devices it cannot use are CNI
//! errors with the right codes. Moving real VFs is proven in the lab (`hack/vmlab pods`).
//!
//! The node's directories reach the plugin as a runtime's environment would carry them
//! (`VFGENIE_SRIOV_STATE_DIR`, `VFGENIE_DEVICE_INFO_DIR`); no key of a config may choose a host
//! path: `stateDir` is refused, `runtimeConfig.CNIDeviceInfoFile` and `logFile` are confined.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use vfgenie_tests::runtime::{exec_cni, genie_binary};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

fn call(bin: &Path, command: &str, state: &Path, conf: &Value) -> Out {
    call_as(bin, command, "ctr1", state, conf)
}

/// The plugin exec'd with the node's state dir `state` and device-info dir `<state>/devinfo`.
fn call_as(bin: &Path, command: &str, container: &str, state: &Path, conf: &Value) -> Out {
    let devinfo = state.join("devinfo");
    let out = exec_cni(
        bin,
        &[
            ("VFGENIE_SRIOV_STATE_DIR", state.to_str().unwrap()),
            ("VFGENIE_DEVICE_INFO_DIR", devinfo.to_str().unwrap()),
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/usr/lib/cni"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=default",
            ),
        ],
        conf.to_string().as_bytes(),
    )
    .unwrap();
    Out {
        ok: out.success,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

fn conf(extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "sriov-net",
        "type": "sriov",
        "deviceID": "0000:ee:1f.7",
        "vlan": 100,
        "ipam": {"type": "host-local", "subnet": "10.77.0.0/24"},
    });
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

#[test]
fn del_of_an_attachment_never_added_succeeds() {
    let bin = genie_binary().unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = call(&bin, "DEL", state.path(), &conf(json!({})));
    assert!(out.ok, "{}", out.stdout);
    assert_eq!(out.stdout, "");
}

#[test]
fn bad_configs_and_unknown_devices_are_cni_errors() {
    let bin = genie_binary().unwrap();
    let state = tempfile::tempdir().unwrap();
    for (extra, code, needle) in [
        (json!({"vlan": 4095}), 7, "\"vlan\""),
        (json!({"spoofchk": "maybe"}), 7, "\"spoofchk\""),
        (json!({"deviceID": "not-pci"}), 7, "\"deviceID\""),
        (json!({}), 7, "0000:ee:1f.7"),
    ] {
        let out = call(&bin, "ADD", state.path(), &conf(extra.clone()));
        assert!(!out.ok, "{extra}: {}", out.stdout);
        let v = out.json();
        assert_eq!(v["code"], code, "{extra}: {v}");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(
            v["msg"].as_str().unwrap().contains(needle),
            "{extra}: {v} does not name {needle}"
        );
    }
    // A PCI function that is not a VF (this host's first device) is refused by name.
    if let Some(dev) = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        let out = call(&bin, "ADD", state.path(), &conf(json!({"deviceID": dev})));
        let v = out.json();
        assert_eq!(v["code"], 7, "{v}");
        assert!(
            v["msg"].as_str().unwrap().contains("not an SR-IOV VF"),
            "{v}"
        );
    }
    let out = call(&bin, "CHECK", state.path(), &conf(json!({})));
    assert_eq!(out.json()["code"], 102);
    // Nothing was recorded by the refused ADDs.
    assert!(
        !state.path().join("attachments").exists()
            || std::fs::read_dir(state.path().join("attachments"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn installed_as_sriov_it_is_the_sriov_plugin_whatever_the_type() {
    let genie_bin = genie_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&genie_bin)
        .args([
            "install",
            "--to",
            dir.path().to_str().unwrap(),
            "--name",
            "sriov",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = tempfile::tempdir().unwrap();
    let bad = conf(json!({"type": "my-sriov", "vlanQoS": 9}));
    let out = call(&dir.path().join("sriov"), "ADD", state.path(), &bad);
    let v = out.json();
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("\"vlanQoS\""), "{v}");
    // The same conf given to `genie` is not the sriov plugin's business.
    let out = call(&genie_bin, "ADD", state.path(), &bad);
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(!msg.contains("vlanQoS"), "genie answered as sriov: {msg}");
}

/// A host path outside any temp dir (`/etc/...`, `/var/log/...`), unique to this test process,
/// removed when the test ends whatever happens.
struct HostPath(PathBuf);

impl HostPath {
    fn new(dir: &str, what: &str) -> Self {
        let p = PathBuf::from(format!("{dir}/vfgenie-test-{}-{what}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Self(p)
    }

    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for HostPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn assert_code_7_naming(out: &Out, key: &str) -> String {
    assert!(!out.ok, "{}", out.stdout);
    let v = out.json();
    assert_eq!(v["code"], 7, "{v}");
    let msg = v["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&format!("\"{key}\"")),
        "{msg} does not name {key}"
    );
    msg
}

#[test]
fn a_state_dir_in_the_config_is_refused_and_nothing_is_created_there() {
    let bin = genie_binary().unwrap();
    let state = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    for command in ["ADD", "DEL", "CHECK"] {
        let out = call(
            &bin,
            command,
            state.path(),
            &conf(json!({"stateDir": elsewhere.path()})),
        );
        let msg = assert_code_7_naming(&out, "stateDir");
        assert!(msg.contains("VFGENIE_SRIOV_STATE_DIR"), "{command}: {msg}");
    }
    assert!(
        names(elsewhere.path()).is_empty(),
        "{:?}",
        names(elsewhere.path())
    );
}

#[test]
fn a_device_info_file_outside_the_nodes_dir_is_neither_written_nor_deleted() {
    let bin = genie_binary().unwrap();
    let state = tempfile::tempdir().unwrap();
    let victim = HostPath::new("/etc", "devinfo");
    std::fs::write(&victim.0, b"keep me\n").unwrap();
    let absent = HostPath::new("/etc", "devinfo-new");
    let cni_dir = state.path().join("devinfo/cni");
    for file in [
        victim.s().to_string(),
        absent.s().to_string(),
        format!("{}/../../../../../..{}", cni_dir.display(), absent.s()),
        "relative-device.json".to_string(),
    ] {
        let c = conf(json!({"runtimeConfig": {"CNIDeviceInfoFile": file}}));
        let out = call(&bin, "ADD", state.path(), &c);
        assert_code_7_naming(&out, "runtimeConfig.CNIDeviceInfoFile");
        let out = call(&bin, "DEL", state.path(), &c);
        assert!(out.ok, "DEL with {file}: {}", out.stdout);
    }
    assert_eq!(std::fs::read(&victim.0).unwrap(), b"keep me\n");
    assert!(!absent.0.exists());

    // A record naming it (as a record of an older version could) is deleted without it.
    let pci: vfcore::PciAddress = "0000:ee:1f.6".parse().unwrap();
    let saved = vfcni::sriov::state::SavedVf {
        mac: vfcore::MacAddr::ZERO,
        vlan: 0,
        qos: 0,
        vlan_proto: "802.1q".into(),
        spoofchk: None,
        trust: None,
        link_state: None,
        min_tx_rate: 0,
        max_tx_rate: 0,
    };
    let record = vfcni::sriov::state::Record {
        kind: vfcni::sriov::state::RECORD_KIND.into(),
        container_id: "ctr-old".into(),
        ifname: "net1".into(),
        netns: "/nonexistent/netns".into(),
        cni_args: String::new(),
        network: Some("sriov-net".into()),
        pci,
        pf: "0000:ee:00.0".parse().unwrap(),
        vf: vfcore::VfIndex(6),
        mode: vfcni::sriov::state::Mode::Userspace,
        stage: vfcni::sriov::state::Stage::Done,
        original_vf: saved,
        original_netdev: None,
        applied: vfcni::sriov::state::Applied::default(),
        temp_netns: None,
        device_info_file: Some(victim.0.clone()),
        config: json!({"type": "sriov"}),
        ipam_config: None,
        result: None,
    };
    vfcni::sriov::state::StateDir::new(state.path())
        .write(&record)
        .unwrap();
    let out = call_as(&bin, "DEL", "ctr-old", state.path(), &conf(json!({})));
    assert!(out.ok, "{}", out.stdout);
    assert!(
        names(&state.path().join("attachments")).is_empty(),
        "the record was not deleted"
    );
    assert_eq!(std::fs::read(&victim.0).unwrap(), b"keep me\n");
}

#[test]
fn an_unreadable_record_does_not_stop_gc_and_goes_to_quarantine() {
    let bin = genie_binary().unwrap();
    let state = tempfile::tempdir().unwrap();
    let attachments = state.path().join("attachments");
    std::fs::create_dir_all(&attachments).unwrap();
    // Invalid JSON, and a directory where a record should be (root reads any mode).
    std::fs::write(attachments.join("bad-net1.json"), b"{\"kind\": \"vfg").unwrap();
    std::fs::create_dir(attachments.join("dir-net1.json")).unwrap();
    let c = conf(json!({"cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": "ctr1", "ifname": "net1"}]}));
    let out = call_as(&bin, "GC", "", state.path(), &c);
    assert!(out.ok, "{} {}", out.stdout, out.stderr);
    assert!(names(&attachments).is_empty(), "{:?}", names(&attachments));
    let moved = names(&state.path().join("quarantine"));
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(moved[0].starts_with("bad-net1.json."), "{moved:?}");
    assert!(moved[1].starts_with("dir-net1.json."), "{moved:?}");
    assert!(
        out.stderr.contains("quarantine") && out.stderr.contains("bad-net1.json"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_log_file_outside_var_log_is_refused_and_logs_go_to_stderr() {
    let bin = genie_binary().unwrap();
    let state = tempfile::tempdir().unwrap();
    let absent = HostPath::new("/etc", "log-new");
    let victim = HostPath::new("/etc", "log-victim");
    std::fs::write(&victim.0, b"keep me\n").unwrap();
    let link = HostPath::new("/var/log", "log-link");
    std::os::unix::fs::symlink(&victim.0, &link.0).unwrap();
    let link_to_absent = HostPath::new("/var/log", "log-link-new");
    std::os::unix::fs::symlink(&absent.0, &link_to_absent.0).unwrap();
    for file in [
        absent.s().to_string(),
        victim.s().to_string(),
        link.s().to_string(),
        link_to_absent.s().to_string(),
        format!("/var/log/..{}", absent.s()),
        format!("/var/log/../..{}", victim.s()),
    ] {
        let c = conf(json!({"logLevel": "debug", "logFile": file}));
        let out = call(&bin, "DEL", state.path(), &c);
        assert!(out.ok, "DEL with logFile {file}: {}", out.stdout);
        assert!(
            out.stderr.contains("logFile") && out.stderr.contains("refused"),
            "{file}: {}",
            out.stderr
        );
        // The plugin's own log lines went to stderr instead.
        assert!(out.stderr.contains("nothing to delete"), "{}", out.stderr);
    }
    assert!(!absent.0.exists(), "{} was created", absent.s());
    assert_eq!(std::fs::read(&victim.0).unwrap(), b"keep me\n");

    // A plain file under /var/log is created 0600 and appended to.
    let good = HostPath::new("/var/log", "log-ok.log");
    let c = conf(json!({"logLevel": "debug", "logFile": good.s()}));
    for _ in 0..2 {
        let out = call(&bin, "DEL", state.path(), &c);
        assert!(out.ok, "{}", out.stdout);
        assert!(!out.stderr.contains("refused"), "{}", out.stderr);
    }
    let text = std::fs::read_to_string(&good.0).unwrap();
    assert_eq!(text.matches("nothing to delete").count(), 2, "{text}");
    let mode = std::fs::metadata(&good.0).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn only_genies_own_conf_may_log_outside_var_log() {
    let genie_bin = genie_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&genie_bin)
        .args(["install", "--to", dir.path().to_str().unwrap()])
        .args(["--name", "sriov"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let sriov_bin = dir.path().join("sriov");
    let state = tempfile::tempdir().unwrap();
    let absent = HostPath::new("/etc", "log-other-type");
    // The sriov plugin by its name whatever the type, and a conf of another type given to genie.
    for (bin, ty) in [(&sriov_bin, "my-sriov"), (&genie_bin, "not-genie")] {
        let c = json!({"cniVersion": "1.0.0", "name": "n", "type": ty, "logFile": absent.s()});
        call(bin, "VERSION", state.path(), &c);
        assert!(
            !absent.0.exists(),
            "{} ({ty}) created {}",
            bin.display(),
            absent.s()
        );
    }
    // genie's own conf is the node's: its logFile may be anywhere, as before.
    let genie_log = dir.path().join("genie.log");
    let c = json!({"cniVersion": "1.0.0", "name": "n", "type": "genie",
        "logFile": genie_log.to_str().unwrap()});
    call(&genie_bin, "VERSION", state.path(), &c);
    assert!(genie_log.exists());
}
