//! Helpers shared by the agent's unit tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vfcore::SysRoot;

/// A fixture tree under core/fixtures, read in place.
pub fn fixture(name: &str) -> SysRoot {
    SysRoot::new(fixture_dir(name))
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/fixtures")
        .join(name)
}

/// A private copy of a fixture tree (links stay links), which a test may change.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", fixture_dir(name).display()))
        .arg(dst.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying fixture {name}");
    dst
}

/// Every regular file's content in a tree, to prove nothing was written.
pub fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}
