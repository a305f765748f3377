//! The `sriov` plugin as a runtime (or Multus) execs it, on a host without VFs: the binary picks
//! the plugin by the conf's `type` or by its own name (`genie install --name sriov`), DEL of an
//! attachment that was never added succeeds, and configs and devices it cannot use are CNI
//! errors with the right codes. Moving real VFs is proven in the lab (`hack/vmlab pods`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use vfgenie_tests::runtime::{exec_cni, genie_binary};

struct Out {
    ok: bool,
    stdout: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

fn call(bin: &Path, command: &str, conf: &Value) -> Out {
    let out = exec_cni(
        bin,
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "ctr1"),
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
    }
}

fn conf(state: &Path, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "sriov-net",
        "type": "sriov",
        "deviceID": "0000:ee:1f.7",
        "vlan": 100,
        "ipam": {"type": "host-local", "subnet": "10.77.0.0/24"},
        "stateDir": state,
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
    let out = call(&bin, "DEL", &conf(state.path(), json!({})));
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
        let out = call(&bin, "ADD", &conf(state.path(), extra.clone()));
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
        let out = call(&bin, "ADD", &conf(state.path(), json!({"deviceID": dev})));
        let v = out.json();
        assert_eq!(v["code"], 7, "{v}");
        assert!(
            v["msg"].as_str().unwrap().contains("not an SR-IOV VF"),
            "{v}"
        );
    }
    let out = call(&bin, "CHECK", &conf(state.path(), json!({})));
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
    let bad = conf(state.path(), json!({"type": "my-sriov", "vlanQoS": 9}));
    let out = call(&dir.path().join("sriov"), "ADD", &bad);
    let v = out.json();
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("\"vlanQoS\""), "{v}");
    // The same conf given to `genie` is not the sriov plugin's business.
    let out = call(&genie_bin, "ADD", &bad);
    let msg = out.json()["msg"].as_str().unwrap_or_default().to_string();
    assert!(!msg.contains("vlanQoS"), "genie answered as sriov: {msg}");
}
