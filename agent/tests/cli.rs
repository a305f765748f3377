//! The agent binary as an operator runs it.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vfgenie-agent"))
}

fn fixture(name: &str) -> String {
    format!("{}/../core/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn inventory_json_is_machine_readable() {
    let out = agent()
        .args(["--sysfs-root", &fixture("i40e-x710"), "inventory", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = v["devices"].as_array().unwrap();
    let pfs: Vec<_> = devices.iter().filter(|d| d["role"] == "pf").collect();
    assert!(!pfs.is_empty());
    assert!(pfs.iter().all(|d| d["vendor_device"] == "8086:1572"));
    assert!(devices
        .iter()
        .filter(|d| d["role"] == "vf")
        .all(|d| d["vendor_device"] == "8086:154c"));
}

#[test]
fn a_missing_root_is_an_error_naming_the_path() {
    let out = agent()
        .args(["--sysfs-root", "/nonexistent-root", "inventory"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent-root/sys/bus/pci/devices"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn inventory_with_a_config_shows_pools_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"resourceList": [{"resourceName": "net", "resourcePrefix": "example.com", "selectors": {"drivers": ["ixgbevf"]}}]}"#,
    )
    .unwrap();
    let out = agent()
        .args([
            "--sysfs-root",
            &fixture("ixgbe-82599"),
            "inventory",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let members: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("example.com/net"))
        .collect();
    assert_eq!(members.len(), 3, "{table}");
    assert!(members.iter().all(|l| l.contains("Healthy")), "{table}");
}

#[test]
fn metrics_are_served_on_the_nodes_loopback_unless_told_otherwise() {
    let out = agent().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("[default: 127.0.0.1:9808,[::1]:9808]"),
        "{help}"
    );
    assert!(help.contains("--metrics-max-connections"), "{help}");
}
