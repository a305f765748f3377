//! Reading PCI functions: discovery, one device, a PF's VFs.

use std::io::ErrorKind;

use pci_ids::FromId;

use super::attr;
use super::model::{PciNetDevice, SriovPf, VfLink, VfOf};
use super::netdev::read_netdevs;
use super::{Error, PCI_CLASS_NETWORK};
use crate::paths::{attr as a, params, SysRoot};
use crate::types::{PciAddress, VfIndex};

/// Every network-class PCI function (class `0x02xxxx`), PFs and VFs alike, sorted by address.
///
/// Devices that vanish while they are being read (VFs removed by a concurrent `sriov_numvfs`
/// write) are skipped; any other read error fails the scan.
pub fn discover(root: &SysRoot) -> Result<Vec<PciNetDevice>, Error> {
    let dir = root.pci_devices();
    let entries = std::fs::read_dir(&dir).map_err(|source| Error::Read {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        let Some(addr) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<PciAddress>().ok())
        else {
            tracing::debug!(entry = ?entry.file_name(), "skipping a non-PCI-address entry");
            continue;
        };
        let class_path = root.pci_attr(&addr, a::CLASS);
        let Some(class) = attr::optional(&class_path, |p, v| attr::parse_hex(p, v, 0xff_ffff))?
        else {
            continue;
        };
        if class >> 16 != PCI_CLASS_NETWORK {
            continue;
        }
        match read_device(root, &addr) {
            Ok(dev) => out.push(dev),
            Err(e) if e.is_vanished() && !device_exists(root, &addr) => {
                tracing::debug!(pci = %addr, "device vanished during discovery");
            }
            // The kernel removes a VF's virtfn link before the VF itself: a VF its PF no longer
            // lists is on its way out.
            Err(Error::NotListedByPf { vf, pf }) => {
                tracing::debug!(pci = %vf, pf = %pf, "VF being removed during discovery");
            }
            Err(e) => return Err(e),
        }
    }
    out.sort_by_key(|d| d.address);
    Ok(out)
}

fn device_exists(root: &SysRoot, addr: &PciAddress) -> bool {
    root.pci_device(addr).exists()
}

/// One PCI function's full record.
pub fn read_device(root: &SysRoot, addr: &PciAddress) -> Result<PciNetDevice, Error> {
    if !device_exists(root, addr) {
        return Err(Error::NoDevice { pci: *addr });
    }
    let path = |name: &str| root.pci_attr(addr, name);

    let vendor_path = path(a::VENDOR);
    let vendor_id = attr::parse_hex16(&vendor_path, &attr::read(&vendor_path)?)?;
    let device_path = path(a::DEVICE);
    let device_id = attr::parse_hex16(&device_path, &attr::read(&device_path)?)?;
    let class_path = path(a::CLASS);
    let class = attr::parse_hex(&class_path, &attr::read(&class_path)?, 0xff_ffff)?;

    let vendor = pci_ids::Vendor::from_id(vendor_id);
    let vendor_name = vendor.map(|v| v.name().to_string());
    let device_name =
        pci_ids::Device::from_vid_pid(vendor_id, device_id).map(|d| d.name().to_string());

    let driver = attr::link_name(&path(a::DRIVER))?;
    let numa_node = attr::optional(&path(a::NUMA_NODE), attr::parse_u32_or_negative)?.flatten();
    let iommu_group = iommu_group_of(root, addr)?;
    let netdevs = read_netdevs(&root.pci_device(addr))?;
    let sriov = read_sriov(root, addr, driver.as_deref())?;
    let physfn = read_physfn(root, addr)?;

    Ok(PciNetDevice {
        address: *addr,
        vendor_id,
        device_id,
        vendor_name,
        device_name,
        class,
        driver,
        netdevs,
        numa_node,
        iommu_group,
        sriov,
        physfn,
    })
}

/// The IOMMU group number from the `iommu_group` link, `None` when there is none.
pub(crate) fn iommu_group_of(root: &SysRoot, addr: &PciAddress) -> Result<Option<u32>, Error> {
    let link = root.pci_attr(addr, a::IOMMU_GROUP);
    match attr::link_name(&link)? {
        Some(name) => name
            .parse()
            .map(Some)
            .map_err(|_| Error::BadLink { path: link }),
        None => Ok(None),
    }
}

fn read_sriov(
    root: &SysRoot,
    addr: &PciAddress,
    driver: Option<&str>,
) -> Result<Option<SriovPf>, Error> {
    let path = |name: &str| root.pci_attr(addr, name);
    let Some(total_vfs) = attr::optional(&path(a::SRIOV_TOTALVFS), attr::parse_u32)? else {
        return Ok(None);
    };
    let numvfs_path = path(a::SRIOV_NUMVFS);
    let num_vfs = attr::parse_u32(&numvfs_path, &attr::read(&numvfs_path)?)?;
    let vf_offset = attr::optional(&path(a::SRIOV_OFFSET), attr::parse_u32)?;
    let vf_stride = attr::optional(&path(a::SRIOV_STRIDE), attr::parse_u32)?;
    let vf_device_id = attr::optional(&path(a::SRIOV_VF_DEVICE), attr::parse_hex16)?;
    let drivers_autoprobe = attr::optional(&path(a::SRIOV_DRIVERS_AUTOPROBE), attr::parse_bool)?;
    let legacy_max_vfs = match driver {
        Some(driver) => legacy_max_vfs(root, driver)?,
        None => None,
    };
    let vfs = vfs_of(root, addr)?;
    Ok(Some(SriovPf {
        total_vfs,
        num_vfs,
        vf_offset,
        vf_stride,
        vf_device_id,
        drivers_autoprobe,
        legacy_max_vfs,
        vfs,
    }))
}

/// The driver module's `max_vfs` parameter. The module is named by the driver's `module` link
/// (driver `vfio-pci` lives in module `vfio_pci`); built-in drivers have no such link.
fn legacy_max_vfs(root: &SysRoot, driver: &str) -> Result<Option<String>, Error> {
    let module = match root.pci_driver_attr(driver, a::MODULE) {
        Some(link) => attr::link_name(&link)?,
        None => None,
    };
    let module = module.unwrap_or_else(|| driver.replace('-', "_"));
    match root.module_parameter(&module, params::MAX_VFS) {
        Some(p) => attr::read_optional(&p),
        None => Ok(None),
    }
}

fn read_physfn(root: &SysRoot, addr: &PciAddress) -> Result<Option<VfOf>, Error> {
    let Some(pf) = attr::link_pci(&root.pci_attr(addr, a::PHYSFN))? else {
        return Ok(None);
    };
    let vfs = vfs_of(root, &pf)?;
    match vfs.iter().find(|l| l.address == *addr) {
        Some(link) => Ok(Some(VfOf {
            pf,
            index: link.index,
        })),
        None => Err(Error::NotListedByPf { vf: *addr, pf }),
    }
}

/// A PF's VFs from its `virtfnN` links, sorted by index.
pub fn vfs_of(root: &SysRoot, pf: &PciAddress) -> Result<Vec<VfLink>, Error> {
    let dir = root.pci_device(pf);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::NoDevice { pci: *pf }),
        Err(source) => return Err(Error::Read { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(index) = name
            .to_str()
            .and_then(|n| n.strip_prefix(a::VIRTFN_PREFIX))
            .and_then(parse_index)
        else {
            continue;
        };
        let link = entry.path();
        match attr::link_pci(&link)? {
            Some(address) => out.push(VfLink {
                index: VfIndex(index),
                address,
            }),
            // Removed between listing and reading: the VF is going away.
            None => continue,
        }
    }
    out.sort_by_key(|l| l.index);
    Ok(out)
}

/// The N of `virtfnN`: plain decimal digits only.
fn parse_index(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtfn_index_is_strict_decimal() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("62"), Some(62));
        assert_eq!(parse_index(""), None);
        assert_eq!(parse_index("+1"), None);
        assert_eq!(parse_index("1x"), None);
    }
}
