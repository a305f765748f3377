//! `genie install`, exec'd as the DaemonSet's init container runs it: the binary lands in the bin
//! dir under each name, complete, mode 0755, with no temp file left; installing again replaces it;
//! names that would leave the directory are refused before anything is written; and the installed
//! copy still behaves as the CNI plugin when run without arguments.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use vfgenie_tests::runtime::{exec_cni, genie_binary};

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn genie(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A CNI VERSION call as a runtime makes it: no arguments, the config on stdin.
fn cni_version(bin: &Path) -> serde_json::Value {
    let out = exec_cni(
        bin,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.0.0"}"#,
    )
    .unwrap();
    assert!(out.success, "VERSION failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn installs_itself_atomically_under_each_name_and_again_over_itself() {
    let genie_bin = genie_binary().unwrap();
    let want = std::fs::read(&genie_bin).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap();
    for round in 0..2 {
        let out = genie(
            &genie_bin,
            &[
                "install", "--to", to, "--name", "genie", "--name", "vfgenie",
            ],
        );
        assert!(
            out.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "install prints nothing on stdout");
        assert_eq!(
            names_in(dir.path()),
            vec!["genie", "vfgenie"],
            "round {round}"
        );
        for name in ["genie", "vfgenie"] {
            let p = dir.path().join(name);
            assert_eq!(std::fs::read(&p).unwrap(), want, "{name} is a full copy");
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o755, "{name}");
        }
    }
    // The installed copy is the plugin: without arguments it speaks CNI.
    let version = cni_version(&dir.path().join("genie"));
    assert!(version["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("1.0.0")));
    assert_eq!(version, cni_version(&genie_bin));
}

#[test]
fn the_default_name_is_genie() {
    let genie_bin = genie_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = genie(
        &genie_bin,
        &["install", "--to", dir.path().to_str().unwrap()],
    );
    assert!(out.status.success());
    assert_eq!(names_in(dir.path()), vec!["genie"]);
}

#[test]
fn refuses_traversal_names_and_bad_usage_without_writing() {
    let genie_bin = genie_binary().unwrap();
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let to = bin.to_str().unwrap();
    let escape = root.path().join("escaped");
    let escape_abs = escape.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["install", "--to", to, "--name", "../escaped"],
        vec!["install", "--to", to, "--name", "ok", "--name", escape_abs],
        vec!["install", "--to", to, "--name", ".."],
        vec!["install", "--to", to, "--name", ""],
        vec!["install", "--name", "genie"],
        vec!["install", "--to", to, "--force"],
        vec!["uninstall", "--to", to],
    ];
    for args in cases {
        let out = genie(&genie_bin, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: says why");
    }
    assert!(names_in(&bin).is_empty());
    assert_eq!(names_in(root.path()), vec!["bin"]);
    // A missing target dir is an error, not created.
    let out = genie(
        &genie_bin,
        &[
            "install",
            "--to",
            root.path().join("nope").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(names_in(root.path()), vec!["bin"]);
}

/// An upgrade while pods are being created: the runtime keeps exec'ing the installed genie while
/// the installer replaces it, again and again. Every exec runs a whole binary (no ETXTBSY, no
/// exec of a partial file, no missing file), and the install never fails on a busy binary.
#[test]
fn replacing_the_installed_binary_while_the_runtime_execs_it() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let genie_bin = genie_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_string();
    let first = genie(&genie_bin, &["install", "--to", &to]);
    assert!(first.status.success());
    let installed = dir.path().join("genie");
    let want = cni_version(&genie_bin);
    let stop = AtomicBool::new(false);
    let calls = AtomicUsize::new(0);
    let installs = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let out = exec_cni(
                    &installed,
                    &[("CNI_COMMAND", "VERSION")],
                    br#"{"cniVersion":"1.0.0"}"#,
                )
                .unwrap_or_else(|e| panic!("exec {} during an install: {e}", installed.display()));
                assert!(out.success, "VERSION during an install: {}", out.stderr);
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap(),
                    want
                );
                calls.fetch_add(1, Ordering::Relaxed);
            }
        });
        while calls.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut installs = 0;
        for _ in 0..25 {
            let out = genie(&genie_bin, &["install", "--to", &to]);
            assert!(
                out.status.success(),
                "install while the runtime execs: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            installs += 1;
        }
        stop.store(true, Ordering::Relaxed);
        installs
    });
    assert_eq!(installs, 25);
    assert_eq!(names_in(dir.path()), vec!["genie"], "no temp file left");
}
