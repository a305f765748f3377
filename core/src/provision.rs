//! VF provisioning through `sriov_numvfs`, following the kernel's rules
//! (Documentation/ABI/testing/sysfs-bus-pci, drivers/pci/iov.c):
//!
//! - a count above `sriov_totalvfs` is refused with ERANGE; we refuse it before writing anything;
//! - writing the current count is a no-op;
//! - changing a non-zero count needs a write of 0 first (EBUSY otherwise);
//! - a PF without a driver, or whose driver cannot configure VFs, answers ENOENT;
//! - writes can block for long, so each one is bounded by a timeout.
//!
//! After the write, VFs appear as `virtfnN` links; when `sriov_drivers_autoprobe` is on their
//! drivers bind asynchronously and their netdevs appear later still (and may be renamed by udev).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::paths::{attr, SysRoot};
use crate::sysfs::io::{poll_until, remaining, write_bounded, WriteError};
use crate::sysfs::{self, VfLink};
use crate::types::PciAddress;

/// Why the VF count could not be set.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("PF {pf} supports at most {total} VFs, {want} requested (ERANGE)")]
    OutOfRange {
        pf: PciAddress,
        total: u32,
        want: u32,
    },
    #[error(
        "PCI device {pf} is not an SR-IOV PF (it has no {})",
        attr::SRIOV_TOTALVFS
    )]
    NotSriov { pf: PciAddress },
    #[error("PF {pf} refused to change its VF count while VFs are enabled or in use (EBUSY)")]
    Busy { pf: PciAddress },
    #[error("PF {pf} has no driver bound, or its driver cannot create VFs through sysfs (ENOENT)")]
    NoDriver { pf: PciAddress },
    #[error("setting the VF count of PF {pf} failed")]
    Write {
        pf: PciAddress,
        #[source]
        source: WriteError,
    },
    #[error("PF {pf} lists {found} VFs, not {want}, {timeout:?} after the write")]
    VfsDidNotAppear {
        pf: PciAddress,
        want: u32,
        found: usize,
        timeout: Duration,
    },
    #[error("VF {vf} of PF {pf} has no driver {timeout:?} after creation, though sriov_drivers_autoprobe is on")]
    VfDriverDidNotBind {
        pf: PciAddress,
        vf: PciAddress,
        timeout: Duration,
    },
    #[error("VF {vf} has no netdev after {timeout:?}")]
    NoNetdev { vf: PciAddress, timeout: Duration },
    #[error(transparent)]
    Sysfs(#[from] sysfs::Error),
}

/// The values to write to `sriov_numvfs`, in order, to go from `current` VFs to `want` on a PF
/// supporting `total`: none when nothing changes, `[0, want]` to change a non-zero count.
pub fn plan(pf: &PciAddress, current: u32, total: u32, want: u32) -> Result<Vec<u32>, Error> {
    if want > total {
        return Err(Error::OutOfRange {
            pf: *pf,
            total,
            want,
        });
    }
    Ok(if current == want {
        Vec::new()
    } else if current == 0 || want == 0 {
        vec![want]
    } else {
        vec![0, want]
    })
}

fn read_u32(path: PathBuf) -> Result<Option<u32>, Error> {
    sysfs::attr_u32(&path).map_err(Error::from)
}

/// Sets the PF's VF count to `want` and returns its VFs, sorted by index.
///
/// Waits, within `timeout` overall, for exactly `want` `virtfnN` links and, when the PF's
/// `sriov_drivers_autoprobe` is on (or absent, as on kernels that always probe), for every VF to
/// have a driver. Does not wait for VF netdevs: see [`wait_vf_netdev`].
pub fn set_num_vfs(
    root: &SysRoot,
    pf: &PciAddress,
    want: u32,
    timeout: Duration,
) -> Result<Vec<VfLink>, Error> {
    let deadline = Instant::now() + timeout;
    if !root.pci_device(pf).exists() {
        return Err(sysfs::Error::NoDevice { pci: *pf }.into());
    }
    let Some(total) = read_u32(root.pci_attr(pf, attr::SRIOV_TOTALVFS))? else {
        return Err(Error::NotSriov { pf: *pf });
    };
    let numvfs = root.pci_attr(pf, attr::SRIOV_NUMVFS);
    let current = read_u32(numvfs.clone())?.unwrap_or(0);
    let steps = plan(pf, current, total, want)?;
    for value in &steps {
        tracing::debug!(pf = %pf, value, "writing sriov_numvfs");
        write_bounded(&numvfs, &format!("{value}\n"), remaining(deadline))
            .map_err(|e| classify(pf, total, want, e))?;
    }
    if steps.is_empty() {
        tracing::debug!(pf = %pf, want, "VF count already as requested");
    }

    let mut found = 0;
    let vfs = poll_until(deadline, || {
        let vfs = sysfs::vfs_of(root, pf)?;
        found = vfs.len();
        let complete =
            vfs.len() == want as usize && vfs.iter().all(|l| root.pci_device(&l.address).exists());
        Ok::<_, Error>(complete.then_some(vfs))
    })?
    .ok_or(Error::VfsDidNotAppear {
        pf: *pf,
        want,
        found,
        timeout,
    })?;

    let autoprobe = sysfs::attr_bool(&root.pci_attr(pf, attr::SRIOV_DRIVERS_AUTOPROBE))?;
    if autoprobe.unwrap_or(true) {
        for vf in &vfs {
            let driver = root.pci_attr(&vf.address, attr::DRIVER);
            let bound = poll_until(deadline, || Ok::<_, Error>(driver.exists().then_some(())))?;
            if bound.is_none() {
                return Err(Error::VfDriverDidNotBind {
                    pf: *pf,
                    vf: vf.address,
                    timeout,
                });
            }
        }
    }
    Ok(vfs)
}

/// Maps the kernel's answers to a `sriov_numvfs` write onto their meaning.
fn classify(pf: &PciAddress, total: u32, want: u32, err: WriteError) -> Error {
    match err.refused_errno().map(Errno::from_raw) {
        Some(Errno::ERANGE) => Error::OutOfRange {
            pf: *pf,
            total,
            want,
        },
        Some(Errno::EBUSY) => Error::Busy { pf: *pf },
        Some(Errno::ENOENT) => Error::NoDriver { pf: *pf },
        _ => Error::Write {
            pf: *pf,
            source: err,
        },
    }
}

/// Waits for the VF's netdev and returns its name (the first by name if it has several).
pub fn wait_vf_netdev(root: &SysRoot, vf: &PciAddress, timeout: Duration) -> Result<String, Error> {
    let deadline = Instant::now() + timeout;
    if !root.pci_device(vf).exists() {
        return Err(sysfs::Error::NoDevice { pci: *vf }.into());
    }
    poll_until(deadline, || {
        let netdevs = sysfs::netdevs_of(root, vf)?;
        Ok::<_, Error>(netdevs.into_iter().next().map(|n| n.name))
    })?
    .ok_or(Error::NoNetdev { vf: *vf, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> PciAddress {
        "0000:03:00.0".parse().unwrap()
    }

    #[test]
    fn plan_follows_the_kernel_rules() {
        let pf = pf();
        assert_eq!(plan(&pf, 0, 63, 4).unwrap(), vec![4]);
        assert_eq!(plan(&pf, 4, 63, 4).unwrap(), Vec::<u32>::new());
        assert_eq!(plan(&pf, 0, 63, 0).unwrap(), Vec::<u32>::new());
        assert_eq!(plan(&pf, 4, 63, 0).unwrap(), vec![0]);
        assert_eq!(plan(&pf, 4, 63, 8).unwrap(), vec![0, 8]);
        assert_eq!(plan(&pf, 8, 63, 2).unwrap(), vec![0, 2]);
        assert_eq!(plan(&pf, 0, 63, 63).unwrap(), vec![63]);
    }

    #[test]
    fn plan_refuses_more_than_total_naming_erange() {
        let err = plan(&"0000:01:00.0".parse().unwrap(), 0, 7, 8).unwrap_err();
        assert!(matches!(
            err,
            Error::OutOfRange {
                total: 7,
                want: 8,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "PF 0000:01:00.0 supports at most 7 VFs, 8 requested (ERANGE)"
        );
        // Even when it would otherwise be a no-op or a reset.
        assert!(plan(&pf(), 8, 7, 8).is_err());
        assert!(plan(&pf(), 0, 0, 1).is_err());
    }

    #[test]
    fn kernel_errnos_map_to_their_meaning() {
        let refused = |errno: Errno| WriteError::Refused {
            path: PathBuf::from("sriov_numvfs"),
            value: "4\n".into(),
            source: std::io::Error::from_raw_os_error(errno as i32),
        };
        let pf = pf();
        assert!(matches!(
            classify(&pf, 7, 9, refused(Errno::ERANGE)),
            Error::OutOfRange {
                total: 7,
                want: 9,
                ..
            }
        ));
        assert!(matches!(
            classify(&pf, 7, 4, refused(Errno::EBUSY)),
            Error::Busy { .. }
        ));
        assert!(matches!(
            classify(&pf, 7, 4, refused(Errno::ENOENT)),
            Error::NoDriver { .. }
        ));
        assert!(matches!(
            classify(&pf, 7, 4, refused(Errno::EIO)),
            Error::Write { .. }
        ));
        // A missing attribute is not "no driver": the open failed, not the kernel's answer.
        let open = WriteError::Open {
            path: PathBuf::from("sriov_numvfs"),
            source: std::io::Error::from_raw_os_error(Errno::ENOENT as i32),
        };
        assert!(matches!(classify(&pf, 7, 4, open), Error::Write { .. }));
    }
}
