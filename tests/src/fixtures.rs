//! The sysfs fixture trees of `core/fixtures`, copied where a test's agent may change them, and
//! whole-tree snapshots to tell whether it did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

/// Copies the fixture tree `name` (a directory of `core/fixtures`) into `dst`, links kept.
pub fn copy_fixture(name: &str, dst: &Path) -> anyhow::Result<()> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/fixtures")
        .join(name);
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dst)
        .status()
        .context("running cp")?;
    ensure!(status.success(), "copying {} failed", src.display());
    Ok(())
}

/// Every regular file below `dir` with its bytes (links are not followed).
pub fn contents(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
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
