//! Reading PCI functions: discovery, one device, a PF's VFs.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::Path;

use pci_ids::FromId;

use super::attr;
use super::model::{PciNetDevice, SriovPf, VfLink, VfOf};
use super::netdev::read_netdevs;
use super::{Error, PCI_CLASS_NETWORK};
use crate::paths::{attr as a, params, SysRoot};
use crate::types::{PciAddress, VfIndex};

/// What one read already learnt, kept for the rest of it: each PF's `virtfnN` links (listed once,
/// not once for the PF and again for every one of its VFs) and the names of each vendor and device
/// ID pair.
#[derive(Default)]
struct Seen {
    vfs: HashMap<PciAddress, Vec<VfLink>>,
    names: HashMap<(u16, u16), (Option<String>, Option<String>)>,
}

impl Seen {
    /// The VFs of `pf` as listed the first time this read asked. Within one discovery a PF and its
    /// VFs thus agree on one listing even while `sriov_numvfs` changes underneath.
    fn vfs_of(&mut self, root: &SysRoot, pf: &PciAddress) -> Result<&[VfLink], Error> {
        let vfs = match self.vfs.entry(*pf) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(vfs_of(root, pf)?),
        };
        Ok(vfs)
    }

    /// Vendor and device names from the PCI ID database.
    fn names(&mut self, vendor_id: u16, device_id: u16) -> (Option<String>, Option<String>) {
        self.names
            .entry((vendor_id, device_id))
            .or_insert_with(|| {
                let vendor = pci_ids::Vendor::from_id(vendor_id).map(|v| v.name().to_string());
                let device = pci_ids::Device::from_vid_pid(vendor_id, device_id)
                    .map(|d| d.name().to_string());
                (vendor, device)
            })
            .clone()
    }
}

/// Every network-class PCI function (class `0x02xxxx`), PFs and VFs alike, sorted by address.
///
/// Devices that vanish while they are being read (VFs removed by a concurrent `sriov_numvfs`
/// write) are skipped; any other read error fails the scan.
pub fn discover(root: &SysRoot) -> Result<Vec<PciNetDevice>, Error> {
    let mut seen = Seen::default();
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
        let dev_dir = root.pci_device(&addr);
        let class_path = dev_dir.join(a::CLASS);
        let Some(class) = attr::optional(&class_path, |p, v| attr::parse_hex(p, v, 0xff_ffff))?
        else {
            continue;
        };
        if class >> 16 != PCI_CLASS_NETWORK {
            continue;
        }
        match read_device_at(root, &addr, &dev_dir, Some(class), &mut seen) {
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
    read_device_at(
        root,
        addr,
        &root.pci_device(addr),
        None,
        &mut Seen::default(),
    )
}

/// The record of the device in `dev_dir`; `class` when the caller has just read it.
fn read_device_at(
    root: &SysRoot,
    addr: &PciAddress,
    dev_dir: &Path,
    class: Option<u32>,
    seen: &mut Seen,
) -> Result<PciNetDevice, Error> {
    let path = |name: &str| dev_dir.join(name);
    let class = match class {
        Some(class) => class,
        None => {
            if !dev_dir.exists() {
                return Err(Error::NoDevice { pci: *addr });
            }
            let class_path = path(a::CLASS);
            attr::parse_hex(&class_path, &attr::read(&class_path)?, 0xff_ffff)?
        }
    };
    let vendor_path = path(a::VENDOR);
    let vendor_id = attr::parse_hex16(&vendor_path, &attr::read(&vendor_path)?)?;
    let device_path = path(a::DEVICE);
    let device_id = attr::parse_hex16(&device_path, &attr::read(&device_path)?)?;

    let (vendor_name, device_name) = seen.names(vendor_id, device_id);

    let driver = attr::link_name(&path(a::DRIVER))?;
    let numa_node = attr::optional(&path(a::NUMA_NODE), attr::parse_u32_or_negative)?.flatten();
    let iommu_group = iommu_group_at(&path(a::IOMMU_GROUP))?;
    let netdevs = read_netdevs(dev_dir)?;
    let sriov = read_sriov(root, addr, dev_dir, driver.as_deref(), seen)?;
    let physfn = read_physfn(root, addr, dev_dir, seen)?;

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
    iommu_group_at(&root.pci_attr(addr, a::IOMMU_GROUP))
}

fn iommu_group_at(link: &Path) -> Result<Option<u32>, Error> {
    match attr::link_name(link)? {
        Some(name) => name.parse().map(Some).map_err(|_| Error::BadLink {
            path: link.to_path_buf(),
        }),
        None => Ok(None),
    }
}

fn read_sriov(
    root: &SysRoot,
    addr: &PciAddress,
    dev_dir: &Path,
    driver: Option<&str>,
    seen: &mut Seen,
) -> Result<Option<SriovPf>, Error> {
    let path = |name: &str| dev_dir.join(name);
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
    let vfs = seen.vfs_of(root, addr)?.to_vec();
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

fn read_physfn(
    root: &SysRoot,
    addr: &PciAddress,
    dev_dir: &Path,
    seen: &mut Seen,
) -> Result<Option<VfOf>, Error> {
    let Some(pf) = attr::link_pci(&dev_dir.join(a::PHYSFN))? else {
        return Ok(None);
    };
    let vfs = seen.vfs_of(root, &pf)?;
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
    use std::os::unix::fs::symlink;

    fn put(dir: &Path, name: &str, value: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }

    /// Two PFs with twelve VFs each (so `virtfn10` lists before `virtfn2`), the VFs of both PFs
    /// interleaved by address.
    fn two_pf_tree(root: &Path) -> Vec<(PciAddress, PciAddress, u32)> {
        let devices = root.join("sys/bus/pci/devices");
        let mut vfs = Vec::new();
        for p in 0..2u8 {
            let pf = PciAddress::new(0, 1, 0, p);
            let pf_dir = devices.join(pf.to_string());
            for (k, v) in [
                ("vendor", "0x8086"),
                ("device", "0x10fb"),
                ("class", "0x020000"),
            ] {
                put(&pf_dir, k, v);
            }
            put(&pf_dir, "sriov_totalvfs", "12");
            put(&pf_dir, "sriov_numvfs", "12");
            for i in 0..12u8 {
                // PF 0's VFs at even routing IDs, PF 1's at odd ones: interleaved by address.
                let rid = 0x180 + u16::from(i) * 2 + u16::from(p);
                let vf = PciAddress::from_routing_id(0, rid);
                let vf_dir = devices.join(vf.to_string());
                for (k, v) in [
                    ("vendor", "0x8086"),
                    ("device", "0x10ed"),
                    ("class", "0x020000"),
                ] {
                    put(&vf_dir, k, v);
                }
                symlink(format!("../{pf}"), vf_dir.join("physfn")).unwrap();
                symlink(format!("../{vf}"), pf_dir.join(format!("virtfn{i}"))).unwrap();
                vfs.push((vf, pf, u32::from(i)));
            }
        }
        vfs
    }

    #[test]
    fn discovery_gives_every_vf_its_pf_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let expected = two_pf_tree(dir.path());
        let root = SysRoot::new(dir.path());
        let found = discover(&root).unwrap();
        assert_eq!(found.len(), 2 + expected.len());
        for (vf, pf, index) in &expected {
            let d = found.iter().find(|d| d.address == *vf).unwrap();
            let of = d.physfn.unwrap();
            assert_eq!((of.pf, of.index), (*pf, VfIndex(*index)), "VF {vf}");
            // The same record as reading the device alone.
            assert_eq!(*d, read_device(&root, vf).unwrap());
        }
        for pf in found.iter().filter(|d| d.sriov.is_some()) {
            let links = &pf.sriov.as_ref().unwrap().vfs;
            let want: Vec<_> = expected
                .iter()
                .filter(|(_, p, _)| *p == pf.address)
                .map(|(vf, _, i)| (VfIndex(*i), *vf))
                .collect();
            let got: Vec<_> = links.iter().map(|l| (l.index, l.address)).collect();
            assert_eq!(got, want);
            assert_eq!(*pf, read_device(&root, &pf.address).unwrap());
        }
    }

    #[test]
    fn virtfn_index_is_strict_decimal() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("62"), Some(62));
        assert_eq!(parse_index(""), None);
        assert_eq!(parse_index("+1"), None);
        assert_eq!(parse_index("1x"), None);
    }
}
