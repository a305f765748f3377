//! Reading PCI functions: discovery, one device, a PF's VFs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use pci_ids::FromId;

use super::attr;
use super::model::{PciNetDevice, SriovPf, VfLink, VfOf};
use super::netdev::read_netdevs_in;
use super::{Error, PCI_CLASS_NETWORK};
use crate::paths::{attr as a, params, SysRoot};
use crate::types::{PciAddress, VfIndex};

/// The PCI vendor ID of virtio functions, whose netdevs hang off a `virtioN` child device.
const VIRTIO_VENDOR: u16 = 0x1af4;

/// A vendor's and a device's name from the PCI ID database.
type Names = (Option<String>, Option<String>);

/// What one read already learnt, kept for the rest of it and shared by its threads: each PF's
/// `virtfnN` links (listed once, not once for the PF and again for every one of its VFs) and the
/// names of each vendor and device ID pair.
#[derive(Default)]
struct Seen {
    vfs: Mutex<HashMap<PciAddress, Arc<[VfLink]>>>,
    names: Mutex<HashMap<(u16, u16), Names>>,
}

impl Seen {
    /// The VFs of `pf` as listed the first time this read asked. Within one discovery a PF and its
    /// VFs thus agree on one listing even while `sriov_numvfs` changes underneath. The lock is held
    /// while the listing is read, so two threads never list one PF twice.
    fn vfs_of(&self, root: &SysRoot, pf: &PciAddress) -> Result<Arc<[VfLink]>, Error> {
        let mut vfs = self.vfs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(listed) = vfs.get(pf) {
            return Ok(listed.clone());
        }
        let listed: Arc<[VfLink]> = vfs_of(root, pf)?.into();
        vfs.insert(*pf, listed.clone());
        Ok(listed)
    }

    /// `dev` with its vendor and device names.
    fn named(&self, mut dev: PciNetDevice) -> PciNetDevice {
        (dev.vendor_name, dev.device_name) = self.names(dev.vendor_id, dev.device_id);
        dev
    }

    /// Vendor and device names from the PCI ID database.
    fn names(&self, vendor_id: u16, device_id: u16) -> Names {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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

/// Functions per discovery thread at least: below that a thread costs more than it saves.
const FUNCTIONS_PER_THREAD: usize = 128;
/// Discovery threads at most (sysfs lookups scale with CPUs, not without end).
const MAX_THREADS: usize = 8;

/// Every network-class PCI function (class `0x02xxxx`), PFs and VFs alike, sorted by address.
///
/// Devices that vanish while they are being read (VFs removed by a concurrent `sriov_numvfs`
/// write) are skipped; any other read error fails the scan. A node with many functions is read
/// by several threads, one slice of the addresses each.
pub fn discover(root: &SysRoot) -> Result<Vec<PciNetDevice>, Error> {
    let devices = attr::Dir::open(&root.pci_devices())?;
    let mut addrs = Vec::new();
    for (name, _) in devices.list_sub(".")? {
        match name.parse::<PciAddress>() {
            Ok(addr) => addrs.push(addr),
            Err(_) => tracing::debug!(entry = %name, "skipping a non-PCI-address entry"),
        }
    }
    addrs.sort();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (addrs.len() / FUNCTIONS_PER_THREAD).clamp(1, cpus.min(MAX_THREADS));
    discover_in_threads(root, &devices, &addrs, threads)
}

/// The network functions among `addrs` (sorted), read by `threads` threads, one contiguous slice
/// of the addresses each.
fn discover_in_threads(
    root: &SysRoot,
    devices: &attr::Dir,
    addrs: &[PciAddress],
    threads: usize,
) -> Result<Vec<PciNetDevice>, Error> {
    let seen = Seen::default();
    if threads <= 1 {
        return discover_among(root, devices, addrs, &seen);
    }
    let slice = addrs.len().div_ceil(threads);
    let parts: Vec<Result<Vec<PciNetDevice>, Error>> = std::thread::scope(|scope| {
        let running: Vec<_> = addrs
            .chunks(slice)
            .map(|part| scope.spawn(|| discover_among(root, devices, part, &seen)))
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(addrs.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// The network functions among `addrs` (sorted), in their order.
fn discover_among(
    root: &SysRoot,
    devices: &attr::Dir,
    addrs: &[PciAddress],
    seen: &Seen,
) -> Result<Vec<PciNetDevice>, Error> {
    let mut out = Vec::new();
    for addr in addrs {
        // Relative to the held `devices` directory: the path up to it is looked up only once.
        let dev_dir = match devices.sub(&addr.to_string()) {
            Ok(d) => d,
            Err(e) if e.is_vanished() => continue,
            Err(e) => return Err(e),
        };
        let Some(class) = dev_dir.optional(a::CLASS, |p, v| attr::parse_hex(p, v, 0xff_ffff))?
        else {
            continue;
        };
        if class >> 16 != PCI_CLASS_NETWORK {
            continue;
        }
        match read_device_at(root, addr, &dev_dir, Some(class), seen) {
            Ok(dev) => out.push(seen.named(dev)),
            Err(e) if e.is_vanished() && !device_exists(root, addr) => {
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
    Ok(out)
}

fn device_exists(root: &SysRoot, addr: &PciAddress) -> bool {
    root.pci_device(addr).exists()
}

/// One PCI function's full record.
pub fn read_device(root: &SysRoot, addr: &PciAddress) -> Result<PciNetDevice, Error> {
    let seen = Seen::default();
    read_device_unnamed_with(root, addr, &seen).map(|d| seen.named(d))
}

/// [`read_device`] without the names from the PCI ID database (`vendor_name` and `device_name`
/// are `None`). A program that never asks for names does not link the database, whose pointers
/// the loader would otherwise relocate at every start (milliseconds, for a plugin exec'd per pod).
pub fn read_device_unnamed(root: &SysRoot, addr: &PciAddress) -> Result<PciNetDevice, Error> {
    read_device_unnamed_with(root, addr, &Seen::default())
}

fn read_device_unnamed_with(
    root: &SysRoot,
    addr: &PciAddress,
    seen: &Seen,
) -> Result<PciNetDevice, Error> {
    let dev_dir = match attr::Dir::open(&root.pci_device(addr)) {
        Ok(d) => d,
        Err(e) if e.is_vanished() => return Err(Error::NoDevice { pci: *addr }),
        Err(e) => return Err(e),
    };
    read_device_at(root, addr, &dev_dir, None, seen)
}

/// The record of the device in `dev_dir`; `class` when the caller has just read it.
fn read_device_at(
    root: &SysRoot,
    addr: &PciAddress,
    dev_dir: &attr::Dir,
    class: Option<u32>,
    seen: &Seen,
) -> Result<PciNetDevice, Error> {
    let class = match class {
        Some(class) => class,
        None => dev_dir.parsed(a::CLASS, |p, v| attr::parse_hex(p, v, 0xff_ffff))?,
    };
    let vendor_id = dev_dir.parsed(a::VENDOR, attr::parse_hex16)?;
    let device_id = dev_dir.parsed(a::DEVICE, attr::parse_hex16)?;

    let driver = dev_dir.link_name(a::DRIVER)?;
    let numa_node = dev_dir
        .optional(a::NUMA_NODE, attr::parse_u32_or_negative)?
        .flatten();
    let iommu_group = match dev_dir.link_name(a::IOMMU_GROUP)? {
        Some(name) => Some(name.parse().map_err(|_| Error::BadLink {
            path: dev_dir.join(a::IOMMU_GROUP),
        })?),
        None => None,
    };
    let netdevs = read_netdevs_in(dev_dir, vendor_id == VIRTIO_VENDOR)?;
    let physfn = read_physfn(root, addr, dev_dir, seen)?;
    // A VF is never itself a PF: it has no `sriov_*` attributes to look for.
    let sriov = match physfn {
        Some(_) => None,
        None => read_sriov(root, addr, dev_dir, driver.as_deref(), seen)?,
    };

    Ok(PciNetDevice {
        address: *addr,
        vendor_id,
        device_id,
        vendor_name: None,
        device_name: None,
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
    dev_dir: &attr::Dir,
    driver: Option<&str>,
    seen: &Seen,
) -> Result<Option<SriovPf>, Error> {
    let Some(total_vfs) = dev_dir.optional(a::SRIOV_TOTALVFS, attr::parse_u32)? else {
        return Ok(None);
    };
    let num_vfs = dev_dir.parsed(a::SRIOV_NUMVFS, attr::parse_u32)?;
    let vf_offset = dev_dir.optional(a::SRIOV_OFFSET, attr::parse_u32)?;
    let vf_stride = dev_dir.optional(a::SRIOV_STRIDE, attr::parse_u32)?;
    let vf_device_id = dev_dir.optional(a::SRIOV_VF_DEVICE, attr::parse_hex16)?;
    let drivers_autoprobe = dev_dir.optional(a::SRIOV_DRIVERS_AUTOPROBE, attr::parse_bool)?;
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
    dev_dir: &attr::Dir,
    seen: &Seen,
) -> Result<Option<VfOf>, Error> {
    let Some(pf) = dev_dir.link_pci(a::PHYSFN)? else {
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
    let dir = match attr::Dir::open(&root.pci_device(pf)) {
        Ok(d) => d,
        Err(e) if e.is_vanished() => return Err(Error::NoDevice { pci: *pf }),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (name, _) in dir.list_sub(".")? {
        let Some(index) = name.strip_prefix(a::VIRTFN_PREFIX).and_then(parse_index) else {
            continue;
        };
        match dir.link_pci(&name)? {
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

    /// Two PFs with `per_pf` VFs each (twelve: `virtfn10` lists before `virtfn2`), the VFs of
    /// both PFs interleaved by address.
    fn two_pf_tree(root: &Path, per_pf: u16) -> Vec<(PciAddress, PciAddress, u32)> {
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
            put(&pf_dir, "sriov_totalvfs", &per_pf.to_string());
            put(&pf_dir, "sriov_numvfs", &per_pf.to_string());
            for i in 0..per_pf {
                // PF 0's VFs at even routing IDs, PF 1's at odd ones: interleaved by address.
                let rid = 0x180 + i * 2 + u16::from(p);
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
        let expected = two_pf_tree(dir.path(), 12);
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
    fn threads_read_the_same_devices_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let expected = two_pf_tree(dir.path(), 150);
        let root = SysRoot::new(dir.path());
        let mut addrs: Vec<PciAddress> = std::fs::read_dir(root.pci_devices())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        addrs.sort();
        let devices = attr::Dir::open(&root.pci_devices()).unwrap();
        let one = discover_in_threads(&root, &devices, &addrs, 1).unwrap();
        assert_eq!(one.len(), 2 + expected.len());
        // A PF's VFs fall into other threads' slices than the PF itself.
        for threads in [2, 3, 7] {
            assert_eq!(
                discover_in_threads(&root, &devices, &addrs, threads).unwrap(),
                one
            );
        }
        assert_eq!(discover(&root).unwrap(), one);
        for (vf, pf, index) in &expected {
            let d = one.iter().find(|d| d.address == *vf).unwrap();
            let of = d.physfn.unwrap();
            assert_eq!((of.pf, of.index), (*pf, VfIndex(*index)), "VF {vf}");
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
