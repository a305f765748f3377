//! The `genie` binary exec'd the way a container runtime execs it, for the commands that need no
//! network namespace: VERSION and the errors a runtime gets for a bad call. (Exec'ing it from this
//! package's integration tests also makes `cargo test --workspace` build it for the host tier in
//! `tests/`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs genie with `env` and `stdin`; returns its exit status success, stdout as JSON, and stderr.
fn genie(env: &[(&str, &str)], stdin: &str) -> (bool, Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_genie"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (
        out.status.success(),
        stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_lists_every_supported_spec_version() {
    let (ok, out, _) = genie(
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0","name":"n","type":"genie"}"#,
    );
    assert!(ok);
    // The reply is in the newest version the plugin speaks, whatever the config said.
    assert_eq!(out["cniVersion"], "1.1.0");
    let versions: Vec<&str> = out["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for v in [
        "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
    ] {
        assert!(versions.contains(&v), "{v} missing from {versions:?}");
    }
}

#[test]
fn an_unknown_command_is_error_4_on_stdout() {
    let (ok, out, _) = genie(
        &[("CNI_COMMAND", "FROB")],
        r#"{"cniVersion":"1.0.0","name":"n","type":"genie"}"#,
    );
    assert!(!ok);
    assert_eq!(out["code"], 4, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("CNI_COMMAND"),
        "{out}"
    );
}

#[test]
fn a_config_that_is_not_json_is_error_6() {
    let (ok, out, _) = genie(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/none"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ],
        "{not json",
    );
    assert!(!ok);
    assert_eq!(out["code"], 6, "{out}");
}
