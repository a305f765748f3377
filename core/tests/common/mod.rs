//! Helpers shared by the fixture-based integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vfcore::{PciAddress, SysRoot};

/// The fixture trees every test runs against: the synthesized ones and the one captured from
/// the SR-IOV lab.
pub const FIXTURES: &[&str] = &[
    "ixgbe-82599",
    "i40e-x710",
    "mlx5-cx5",
    "virtio-vm",
    "lab-igb",
];

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn fixture(name: &str) -> SysRoot {
    SysRoot::new(fixture_dir(name))
}

pub fn pci(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// Copies a fixture into a fresh temp dir, keeping symlinks as symlinks (they are relative, so
/// the copy is self-contained), for tests that write.
pub fn temp_copy(name: &str) -> (tempfile::TempDir, SysRoot) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture_dir(name), dir.path());
    let root = SysRoot::new(dir.path());
    (dir, root)
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ty = entry.file_type().unwrap();
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ty.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Every entry under `dir` with its kind and content (file bytes, link target), sorted: a
/// snapshot to prove a tree was not modified.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let rel = path.strip_prefix(base).unwrap().to_path_buf();
        let ty = entry.file_type().unwrap();
        if ty.is_symlink() {
            let t = std::fs::read_link(&path).unwrap();
            out.push((rel, format!("link {}", t.display())));
        } else if ty.is_dir() {
            out.push((rel, "dir".into()));
            walk(base, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((rel, format!("file {}", String::from_utf8_lossy(&bytes))));
        }
    }
}
