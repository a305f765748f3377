//! The sysfs fixture trees of `core/fixtures` for other crates' tests (feature `fixtures`):
//! where they are, a private copy a test may change, and whole-tree snapshots to tell whether
//! something wrote to one.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The fixture tree `name` (a directory of `core/fixtures`), to be read in place.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Copies the fixture tree `name` into `dst`, links kept as links.
pub fn copy(name: &str, dst: &Path) -> io::Result<()> {
    let src = dir(name);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "copying {} failed",
            src.display()
        )))
    }
}

/// Every regular file below `dir` with its bytes (links are not followed).
pub fn contents(dir: &Path) -> io::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.insert(e.path(), std::fs::read(e.path())?);
            }
        }
    }
    Ok(out)
}
