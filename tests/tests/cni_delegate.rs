//! Host tier: the CNI protocol layer driving Debian's real containernetworking-plugins (bridge +
//! host-local) as delegates in real network namespaces, as the genie meta-plugin will.
//! Privileged: every test asserts it runs as root and fails otherwise.
//!
//! Each test uses its own namespace, bridge, host-local data dir and subnet (pid and a counter in
//! the names) and guards remove them on every path, so the tests run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{json, Map};
use vfcni::exec::{self, ExecError, Invocation};
use vfcni::spec::{CniCommand, CniResult, CniVersion, DelegateContext, NetConfList};
use vfgenie_tests::runtime::{run, HostLink};

const PLUGIN_DIR: &str = "/usr/lib/cni";
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create network namespaces and links: run them as root"
    );
}

fn require_plugins() {
    for p in ["bridge", "host-local"] {
        assert!(
            Path::new(PLUGIN_DIR).join(p).is_file(),
            "{PLUGIN_DIR}/{p} is missing: apt-get install containernetworking-plugins"
        );
    }
}

/// A short unique token: `<pid%10000>x<n>`, so link names stay within 15 bytes.
fn unique() -> (String, u32) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (format!("{}x{n}", std::process::id() % 10000), n)
}

/// A named namespace (`ip netns add`), deleted with everything in it when dropped.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new(token: &str) -> Self {
        let name = format!("vfgcni-{token}");
        run("ip", &["netns", "add", &name]).unwrap();
        Self { name }
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn invocation(ns: &TestNs, container_id: &str, ifname: &str, command: CniCommand) -> Invocation {
    Invocation {
        command,
        container_id: container_id.to_string(),
        netns: ns.path(),
        ifname: ifname.to_string(),
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1".to_string(),
        path: vec![PathBuf::from("/nonexistent/bin"), PathBuf::from(PLUGIN_DIR)],
        timeout: Duration::from_secs(30),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// bridge + host-local through ADD, CHECK (0.4.0+), DEL, DEL again, at `version`.
fn bridge_cycle(version: &str) {
    require_root();
    require_plugins();
    let (token, n) = unique();
    let ns = TestNs::new(&token);
    let bridge = format!("vfgbr{token}");
    let _bridge_guard = HostLink(bridge.clone());
    let data = tempfile::tempdir().unwrap();
    let network = format!("vfg-net-{token}");
    let subnet_octet = 10 + n % 200;
    let conf_json = json!({
        "cniVersion": version,
        "name": network,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": false,
        "anUnknownKeyBridgeIgnores": {"kept": true},
        "ipam": {
            "type": "host-local",
            "subnet": format!("10.231.{subnet_octet}.0/24"),
            "dataDir": data.path(),
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    });
    let list = NetConfList::from_bytes_any(conf_json.to_string().as_bytes()).unwrap();
    let v = list.negotiated_version().unwrap();
    assert_eq!(v.as_str(), version);
    let plugin = &list.plugins[0];
    let no_caps = Map::new();
    list.check_capabilities(&no_caps).unwrap();
    let ctx = DelegateContext {
        name: &list.name,
        cni_version: v,
        prev_result: None,
        runtime_config: &no_caps,
        cni_args: None,
    };
    let add_conf = plugin.delegate_config(&ctx).unwrap();
    let container_id = format!("ctr-{token}");
    let ifname = "net1";

    let add = invocation(&ns, &container_id, ifname, CniCommand::Add);
    let result = exec::exec_add(&plugin.plugin_type, &add, &add_conf, v).unwrap();
    assert_eq!(result.cni_version, v);

    // The result names our interface in the sandbox and an address of the subnet on it.
    let (idx, iface) = result
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == ifname)
        .unwrap_or_else(|| panic!("no {ifname} in {}", result.to_json()));
    assert_eq!(iface.sandbox, ns.path());
    assert_eq!(result.ips.len(), 1, "{}", result.to_json());
    let ip = &result.ips[0];
    assert_eq!(ip.interface, Some(idx));
    let addr = ip.address.to_string();
    assert!(
        addr.starts_with(&format!("10.231.{subnet_octet}.")),
        "{addr}"
    );
    assert_eq!(ip.address.prefix, 24);
    assert!(
        result
            .routes
            .iter()
            .any(|r| r.dst.to_string() == "0.0.0.0/0"),
        "{}",
        result.to_json()
    );

    // ... and the kernel agrees.
    let (ok, out) = ns.ip(&["-o", "addr", "show", "dev", ifname]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("inet {addr}")), "{out}");
    let (ok, out) = ns.ip(&["route", "show", "default"]);
    assert!(
        ok && out.contains(&format!("10.231.{subnet_octet}.1")),
        "{out}"
    );
    let lease = data.path().join(&network).join(ip.address.addr.to_string());
    assert!(
        lease.is_file(),
        "host-local has no lease file {}",
        lease.display()
    );
    let host_ifname = result
        .interfaces
        .iter()
        .find(|i| i.sandbox.is_empty() && i.name != bridge)
        .map(|i| i.name.clone())
        .expect("no host-side veth in the result");

    // The result converts to every version and back.
    for to in CniVersion::ALL {
        let converted = result.to_version(to);
        let reparsed = CniResult::parse(converted.to_json().as_bytes(), to).unwrap();
        assert_eq!(reparsed.cni_version, to);
        assert_eq!(reparsed.ips[0].address, ip.address, "via {to}");
        if to >= CniVersion::V0_3_0 {
            assert_eq!(reparsed.ips[0].interface, Some(idx), "via {to}");
            assert_eq!(reparsed.interfaces, result.interfaces, "via {to}");
        }
    }

    // CHECK and DEL get the result as prevResult (0.4.0 and later).
    let with_prev = DelegateContext {
        prev_result: (v >= CniVersion::V0_4_0).then_some(&result),
        ..ctx
    };
    let prev_conf = plugin.delegate_config(&with_prev).unwrap();
    if v.allows(CniCommand::Check) {
        exec::exec_no_result(
            &plugin.plugin_type,
            &add.with_command(CniCommand::Check),
            &prev_conf,
        )
        .unwrap();
    } else {
        assert!(v.require(CniCommand::Check).is_err());
    }

    let del = add.with_command(CniCommand::Del);
    exec::exec_no_result(&plugin.plugin_type, &del, &prev_conf).unwrap();
    assert!(
        !lease.exists(),
        "host-local kept the lease {}",
        lease.display()
    );
    let leases: Vec<String> = files_in(&data.path().join(&network))
        .into_iter()
        .filter(|f| f.starts_with("10."))
        .collect();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    let (ok, out) = ns.ip(&["link", "show", ifname]);
    assert!(!ok, "{ifname} still exists: {out}");
    let host_link = Command::new("ip")
        .args(["link", "show", &host_ifname])
        .output()
        .unwrap();
    assert!(
        !host_link.status.success(),
        "host veth {host_ifname} still exists"
    );

    // DEL is idempotent.
    exec::exec_no_result(&plugin.plugin_type, &del, &prev_conf).unwrap();
}

#[test]
fn bridge_host_local_at_1_0_0() {
    bridge_cycle("1.0.0");
}

#[test]
fn bridge_host_local_at_0_4_0() {
    bridge_cycle("0.4.0");
}

#[test]
fn bridge_host_local_at_0_3_1() {
    bridge_cycle("0.3.1");
}

#[test]
fn the_real_plugins_answer_version() {
    require_root();
    require_plugins();
    let info = exec::exec_version(
        "bridge",
        &[PathBuf::from(PLUGIN_DIR)],
        Duration::from_secs(10),
    )
    .unwrap();
    for v in ["0.3.1", "0.4.0", "1.0.0"] {
        assert!(info.supports(v.parse().unwrap()), "{info:?}");
    }
}

#[test]
fn a_traversing_plugin_type_is_refused_before_any_exec() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let marker = d.path().join("ran");
    let evil = d.path().join("evil");
    std::fs::write(&evil, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();

    // In a config: refused at parse time.
    let e = NetConfList::from_bytes_any(br#"{"cniVersion":"1.0.0","name":"n","type":"../evil"}"#)
        .unwrap_err();
    assert_eq!(vfcni::spec::CniError::from(e).code, 7);
    // Straight to exec: refused before looking at the file system.
    let (token, _) = unique();
    let ns = TestNs::new(&token);
    let mut inv = invocation(&ns, "c1", "eth0", CniCommand::Add);
    inv.path = vec![bin];
    for t in ["../evil", &evil.display().to_string()] {
        let e = exec::exec_raw(t, &inv, b"{}").unwrap_err();
        assert!(matches!(e, ExecError::InvalidType(_)), "{t}: {e}");
        assert_eq!(e.to_cni_error().code, 7);
    }
    assert!(!marker.exists(), "the plugin outside CNI_PATH ran");
}

#[test]
fn a_failing_real_plugin_returns_its_cni_error() {
    require_root();
    require_plugins();
    let (token, _) = unique();
    let ns = TestNs::new(&token);
    let inv = invocation(&ns, &format!("ctr-{token}"), "net1", CniCommand::Add);
    // bridge creates its bridge before it opens the netns.
    let bridge = format!("vfgbf{token}");
    let _bridge_guard = HostLink(bridge.clone());

    // A version the plugin does not speak: its code 1 and message come back unchanged.
    let conf = json!({"cniVersion": "0.9.9", "name": "n", "type": "bridge", "bridge": bridge});
    match exec::exec_add(
        "bridge",
        &inv,
        conf.to_string().as_bytes(),
        CniVersion::V1_0_0,
    )
    .unwrap_err()
    {
        ExecError::Plugin { plugin, error, .. } => {
            assert_eq!(plugin, "bridge");
            assert_eq!(error.code, 1);
            assert_eq!(error.msg, "incompatible CNI versions");
            assert!(error.details.contains("0.9.9"), "{error:?}");
        }
        other => panic!("{other}"),
    }

    // A netns that does not exist: the plugin's own code (999 in this version) and message.
    let mut gone = inv.clone();
    gone.netns = format!("/var/run/netns/vfg-absent-{token}");
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge", "bridge": bridge,
                      "ipam": {"type": "host-local", "subnet": "10.232.0.0/24"}});
    let e = exec::exec_add(
        "bridge",
        &gone,
        conf.to_string().as_bytes(),
        CniVersion::V1_0_0,
    )
    .unwrap_err();
    let cni = e.to_cni_error();
    assert!(cni.code >= 100, "{cni:?}");
    assert!(
        cni.msg.contains("bridge") && cni.msg.contains("netns"),
        "{cni:?}"
    );

    // A type nobody installed: not found, naming the type and the path.
    let e = exec::exec_add("no-such-plugin", &inv, b"{}", CniVersion::V1_0_0).unwrap_err();
    assert!(matches!(e, ExecError::NotFound { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("no-such-plugin") && msg.contains(PLUGIN_DIR),
        "{msg}"
    );
}
