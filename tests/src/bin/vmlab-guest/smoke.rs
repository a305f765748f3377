//! `vmlab-guest smoke`: proves the lab itself with plain std::fs, independent of the core library's
//! device model: the igb PFs are there, `sriov_numvfs` creates VFs with netdevs, and the kernel's
//! EBUSY/ERANGE rules hold.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use vfcore::paths::attr;
use vfcore::SysRoot;

use crate::report::{note, Report};
use crate::util::{read_trim, run_program, run_program_env, wait_for};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The PCI directories bound to igb, sorted by address.
pub fn igb_pfs(root: &SysRoot) -> Result<Vec<PathBuf>> {
    let dir = root
        .pci_driver("igb")
        .context("igb is not a plain driver name")?;
    let mut pfs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("0000:"))
        .map(|e| root.pci_devices().join(e.file_name()))
        .collect();
    pfs.sort();
    Ok(pfs)
}

fn netdevs(dev: &Path) -> Vec<String> {
    std::fs::read_dir(dev.join(attr::NET))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn write_numvfs(pf: &Path, n: u32) -> std::io::Result<()> {
    std::fs::write(pf.join(attr::SRIOV_NUMVFS), n.to_string())
}

fn vf_count_with_netdev(pf: &Path, n: u32) -> Option<()> {
    (0..n)
        .all(|i| !netdevs(&pf.join(format!("{}{i}", attr::VIRTFN_PREFIX))).is_empty())
        .then_some(())
}

pub fn run(report: &mut Report) {
    let root = SysRoot::host();
    let mut pfs = Vec::new();
    let ok = report.check("smoke-pfs", || {
        pfs = igb_pfs(&root)?;
        ensure!(pfs.len() == 2, "expected 2 igb PFs, found {}", pfs.len());
        for pf in &pfs {
            let total = read_trim(&pf.join(attr::SRIOV_TOTALVFS))?;
            ensure!(total == "7", "{}: sriov_totalvfs is {total}", pf.display());
            ensure!(!netdevs(pf).is_empty(), "{} has no netdev", pf.display());
        }
        Ok(())
    });
    if !ok {
        return;
    }
    report.check("smoke-cni-plugins", || {
        // Debian's plugins are dynamically linked: proves the initramfs carries their libraries.
        let out = run_program_env(
            "/opt/cni/bin/host-device",
            &[],
            &[("CNI_COMMAND", "VERSION")],
        )?;
        ensure!(
            out.contains("supportedVersions"),
            "unexpected VERSION answer: {out}"
        );
        // The ping the core scenario uses between namespaces.
        run_program("ping", &["-c", "1", "-W", "2", "127.0.0.1"])?;
        Ok(())
    });
    let pf0 = pfs[0].clone();
    let pf1 = pfs[1].clone();
    report.check("smoke-create-vfs", || {
        write_numvfs(&pf0, 4).context("writing 4 to sriov_numvfs")?;
        wait_for("4 VF netdevs", TIMEOUT, || vf_count_with_netdev(&pf0, 4))?;
        let names: Vec<String> = (0..4)
            .flat_map(|i| netdevs(&pf0.join(format!("virtfn{i}"))))
            .collect();
        note(&format!("VF netdevs: {}", names.join(" ")));
        Ok(())
    });
    report.check("smoke-ebusy", || match write_numvfs(&pf0, 3) {
        Err(e) if e.raw_os_error() == Some(libc_ebusy()) => Ok(()),
        Err(e) => bail!("expected EBUSY, got {e}"),
        Ok(()) => bail!("writing 3 over 4 succeeded"),
    });
    report.check("smoke-erange", || match write_numvfs(&pf1, 8) {
        Err(e) if e.raw_os_error() == Some(libc_erange()) => Ok(()),
        Err(e) => bail!("expected ERANGE, got {e}"),
        Ok(()) => bail!("writing 8 succeeded"),
    });
    report.check("smoke-reset", || {
        write_numvfs(&pf0, 0).context("writing 0")?;
        ensure!(
            matches!(std::fs::symlink_metadata(pf0.join("virtfn0")), Err(e) if e.kind() == ErrorKind::NotFound),
            "virtfn0 still exists"
        );
        Ok(())
    });
}

const fn libc_ebusy() -> i32 {
    16
}

const fn libc_erange() -> i32 {
    34
}
