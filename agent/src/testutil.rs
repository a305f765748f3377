//! Helpers shared by the agent's unit tests, over [`vfcore::fixtures`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vfcore::SysRoot;

/// A fixture tree under core/fixtures, read in place.
pub fn fixture(name: &str) -> SysRoot {
    SysRoot::new(vfcore::fixtures::dir(name))
}

/// A private copy of a fixture tree (links stay links), which a test may change.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    vfcore::fixtures::copy(name, dst.path()).unwrap();
    dst
}

/// Every regular file's content in a tree, to prove nothing was written.
pub fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    vfcore::fixtures::contents(dir).unwrap()
}
