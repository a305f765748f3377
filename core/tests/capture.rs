//! hack/capture-sysfs round trip: capturing a fixture tree gives a tree that reads the same,
//! and the source is left untouched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, fixture_dir, snapshot, FIXTURES};
use vfcore::sysfs;
use vfcore::SysRoot;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/capture-sysfs")
}

/// Runs the capture script with `shell` (`sh`, or `busybox sh` as in the lab's initramfs).
fn capture(shell: &[&str], src: &Path, out: &Path) {
    let status = Command::new(shell[0])
        .args(&shell[1..])
        .arg(script())
        .arg("--root")
        .arg(src)
        .arg(out)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{shell:?} capture of {} failed",
        src.display()
    );
}

fn shells() -> Vec<Vec<&'static str>> {
    let mut shells = vec![vec!["sh"]];
    // The lab runs the script under busybox ash; check it there too when busybox is installed.
    if Command::new("busybox")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
    {
        shells.push(vec!["busybox", "sh"]);
    }
    shells
}

#[test]
fn capture_round_trips_every_fixture() {
    for shell in shells() {
        for name in FIXTURES {
            let before = snapshot(&fixture_dir(name));
            let out = tempfile::tempdir().unwrap();
            capture(&shell, &fixture_dir(name), out.path());
            assert_eq!(
                snapshot(&fixture_dir(name)),
                before,
                "{name}: source modified"
            );
            let copy = SysRoot::new(out.path());
            assert_eq!(
                sysfs::discover(&copy).unwrap(),
                sysfs::discover(&fixture(name)).unwrap(),
                "{shell:?} {name}"
            );
            // Every link in the copy is relative, so the tree can be moved and committed.
            for (path, kind) in snapshot(out.path()) {
                if let Some(target) = kind.strip_prefix("link ") {
                    assert!(
                        !target.starts_with('/'),
                        "{name}: {} -> {target}",
                        path.display()
                    );
                }
            }
            // The vfio group device and the max_vfs parameter come along.
            if *name == "ixgbe-82599" {
                assert!(copy.dev_vfio_group(73, false).exists());
                let max_vfs = copy.module_parameter("ixgbe", "max_vfs").unwrap();
                assert_eq!(std::fs::read_to_string(max_vfs).unwrap(), "0\n");
            }
        }
    }
}

#[test]
fn capture_skips_non_network_devices_and_copies_no_config_space() {
    let src = tempfile::tempdir().unwrap();
    common::copy_tree(&fixture_dir("ixgbe-82599"), src.path());
    let pf = src
        .path()
        .join("sys/devices/pci0000:00/0000:00:03.0/0000:03:00.0");
    std::fs::write(pf.join("config"), [0x86u8, 0x80, 0xfb, 0x10]).unwrap();
    std::fs::write(pf.join("resource0"), "bar").unwrap();
    let out = tempfile::tempdir().unwrap();
    capture(&["sh"], src.path(), out.path());
    let copied = out
        .path()
        .join("sys/devices/pci0000:00/0000:00:03.0/0000:03:00.0");
    assert!(copied.join("sriov_totalvfs").exists());
    assert!(!copied.join("config").exists());
    assert!(!copied.join("resource0").exists());
    assert!(!out.path().join("sys/bus/pci/devices/0000:00:1f.2").exists());
    assert!(!out
        .path()
        .join("sys/devices/pci0000:00/0000:00:1f.2")
        .exists());
}

#[test]
fn capture_refuses_bad_usage() {
    let out = tempfile::tempdir().unwrap();
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new("sh")
            .arg(script())
            .args(args)
            .output()
            .unwrap()
    };
    assert_eq!(run(&[]).status.code(), Some(2));
    let no_sys = tempfile::tempdir().unwrap();
    let o = run(&[
        "--root".as_ref(),
        no_sys.path().as_os_str(),
        out.path().as_os_str(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no sys/bus/pci/devices"));
    // Writing into the source's sysfs is refused.
    let (_dir, root) = common::temp_copy("virtio-vm");
    let inside = root.root().join("sys/capture");
    let o = run(&[
        "--root".as_ref(),
        root.root().as_os_str(),
        inside.as_os_str(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing"));
    assert!(
        !inside.exists(),
        "the refused OUTDIR was created in the source"
    );
}
