//! The PCI/netdev device model read from sysfs.
//!
//! [`discover`] lists every network-class PCI function (PFs and VFs alike) with its IDs, driver,
//! netdevs, NUMA node, IOMMU group and SR-IOV state; [`read_device`] reads one; [`vfs_of`] lists a
//! PF's VFs from its `virtfnN` links. Everything is read under a [`SysRoot`](crate::SysRoot), so
//! the same code runs against the host and against fixture trees.

mod attr;
mod device;
pub mod io;
mod model;
mod netdev;

use std::path::PathBuf;

use crate::types::PciAddress;

pub use device::{discover, read_device, read_device_unnamed, vfs_of};
pub use model::{Netdev, PciNetDevice, SriovPf, VfLink, VfOf};

/// PCI base class of network controllers (`class` is `0xCCSSPP`; CC = 0x02).
pub const PCI_CLASS_NETWORK: u32 = 0x02;

/// Why the device model could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds {value:?}, which is not {expected}")]
    Parse {
        path: PathBuf,
        value: String,
        expected: &'static str,
    },
    #[error("PCI device {pci} does not exist")]
    NoDevice { pci: PciAddress },
    #[error("{path} does not name a PCI device")]
    BadLink { path: PathBuf },
    #[error("VF {vf} is not among the virtfn links of its PF {pf}")]
    NotListedByPf { vf: PciAddress, pf: PciAddress },
}

impl Error {
    /// True when the error only says that something disappeared while it was being read (a VF
    /// removed, a netdev renamed): scans skip such entries instead of failing.
    pub fn is_vanished(&self) -> bool {
        match self {
            Error::Read { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Error::NoDevice { .. } => true,
            _ => false,
        }
    }
}

/// The netdevs of one PCI function, sorted by name (empty when it has none).
pub fn netdevs_of(root: &crate::SysRoot, addr: &PciAddress) -> Result<Vec<Netdev>, Error> {
    netdev::read_netdevs(&root.pci_device(addr))
}

/// True when the PCI function has at least one netdev in view; cheaper than [`netdevs_of`] when
/// only presence matters (health checks).
pub fn has_netdev(root: &crate::SysRoot, addr: &PciAddress) -> Result<bool, Error> {
    netdev::has_netdev(&root.pci_device(addr))
}

/// An optional decimal attribute (`sriov_numvfs`, `sriov_totalvfs`).
pub(crate) fn attr_u32(path: &std::path::Path) -> Result<Option<u32>, Error> {
    attr::optional(path, attr::parse_u32)
}

/// An optional `0`/`1` attribute (`sriov_drivers_autoprobe`).
pub(crate) fn attr_bool(path: &std::path::Path) -> Result<Option<bool>, Error> {
    attr::optional(path, attr::parse_bool)
}

/// The last component of a link's target, `None` when the link does not exist.
pub(crate) fn link_name(path: &std::path::Path) -> Result<Option<String>, Error> {
    attr::link_name(path)
}

pub(crate) use device::iommu_group_of;

/// An optional attribute's text, trimmed.
pub(crate) fn attr_text(path: &std::path::Path) -> Result<Option<String>, Error> {
    attr::read_optional(path)
}
