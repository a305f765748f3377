//! The VF a config names, its PF, and the kernel operations on its netdev that ADD and DEL share:
//! making the netdev adopt a MAC, finding it by PCI address, moving it between namespaces.

use std::time::Duration;

use vfcore::netlink::{LinkInfo, LinkOps};
use vfcore::netns::NetNs;
use vfcore::sysfs;
use vfcore::{MacAddr, PciAddress, SysRoot, VfIndex};

use super::host::Host;

use crate::spec::error::CniError;

/// Drivers that take a VF away from the kernel's network stack (DPDK and friends).
pub const USERSPACE_DRIVERS: [&str; 4] = ["vfio-pci", "uio_pci_generic", "igb_uio", "vfio_pci"];

/// How long a kernel change (a netdev appearing, a driver probing) may take.
pub const KERNEL_TIMEOUT: Duration = Duration::from_secs(20);

pub use crate::spec::error::chain;

/// A kernel-side failure (netlink, sysfs, namespaces): CNI code 5.
pub fn kernel(e: impl std::error::Error) -> CniError {
    CniError::io(chain(&e))
}

/// The VF behind a `deviceID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    pub pci: PciAddress,
    pub pf: PciAddress,
    pub index: VfIndex,
    pub driver: Option<String>,
}

impl Vf {
    /// Reads the VF from sysfs. A PCI address that names nothing, or a function that is not a
    /// VF, is code 7 (the config names a device this node does not have).
    pub fn resolve(root: &SysRoot, pci: PciAddress) -> Result<Self, CniError> {
        let dev = match sysfs::read_device_unnamed(root, &pci) {
            Ok(d) => d,
            Err(sysfs::Error::NoDevice { .. }) => {
                return Err(CniError::invalid_config(format!(
                    "sriov: deviceID {pci}: there is no such PCI device on this node"
                )))
            }
            Err(e) => return Err(kernel(e)),
        };
        let Some(of) = dev.physfn else {
            return Err(CniError::invalid_config(format!(
                "sriov: deviceID {pci} is not an SR-IOV VF (it has no physfn)"
            )));
        };
        Ok(Self {
            pci,
            pf: of.pf,
            index: of.index,
            driver: dev.driver,
        })
    }

    pub fn is_userspace(&self) -> bool {
        self.driver
            .as_deref()
            .is_some_and(|d| USERSPACE_DRIVERS.contains(&d))
    }
}

/// The PF's netdev in the calling thread's namespace (the host).
pub fn pf_link<H: Host>(
    host: &H,
    nl: &mut H::Links,
    pf: &PciAddress,
) -> Result<LinkInfo, CniError> {
    let netdevs = host.netdevs_of(pf)?;
    let Some(name) = netdevs.first() else {
        return Err(CniError::io(format!(
            "PF {pf} has no netdev in the host network namespace: its VFs cannot be configured"
        )));
    };
    nl.link_by_name(name)
        .map_err(kernel)?
        .ok_or_else(|| CniError::io(format!("PF {pf}'s netdev {name} vanished")))
}

/// The VF's netdev name in the host, `None` when it has none there.
pub fn host_netdev<H: Host>(host: &H, pci: &PciAddress) -> Result<Option<String>, CniError> {
    Ok(host.netdevs_of(pci)?.into_iter().next())
}

/// Makes the VF's netdev (in the host, named `name`) carry `mac`, and returns its name, which
/// changes when the driver had to be rebound.
///
/// Setting the MAC on the netdev is enough on most drivers. Some VF drivers (igbvf among them)
/// refuse a MAC change once the PF has set an administrative MAC, or keep their old one, and
/// only read the PF's MAC when they probe: then the VF's driver is rebound and the new netdev
/// is checked to carry `mac`. The PF-side MAC must already be `mac` (or cleared) when this runs.
pub fn adopt_mac<H: Host>(
    host: &H,
    nl: &mut H::Links,
    pci: &PciAddress,
    name: &str,
    mac: MacAddr,
) -> Result<String, CniError> {
    let link = nl
        .link_by_name(name)
        .map_err(kernel)?
        .ok_or_else(|| CniError::io(format!("VF {pci}'s netdev {name} vanished")))?;
    if link.mac == Some(mac) {
        return Ok(name.to_string());
    }
    let set = nl.set_mac(link.index, mac);
    let now = nl.link_by_index(link.index).map_err(kernel)?;
    if set.is_ok() && now.as_ref().and_then(|l| l.mac) == Some(mac) {
        return Ok(name.to_string());
    }
    tracing::info!(
        pci = %pci,
        netdev = name,
        mac = %mac,
        refused = ?set.err().map(|e| e.to_string()),
        "the VF driver did not take the MAC; rebinding it so it reads the MAC from its PF"
    );
    let (driver, new_name, link) = crate::timing::timed("rebind", || {
        let driver = host.rebind(pci)?;
        let new_name = host.wait_vf_netdev(pci)?;
        let link = nl
            .wait_for_link(&new_name, KERNEL_TIMEOUT)
            .map_err(kernel)?;
        Ok::<_, CniError>((driver, new_name, link))
    })?;
    if link.mac != Some(mac) {
        return Err(CniError::io(format!(
            "VF {pci} did not adopt MAC {mac}: its netdev {new_name} shows {} even after rebinding it to {driver}",
            link.mac.map(|m| m.to_string()).unwrap_or_else(|| "none".into())
        )));
    }
    Ok(new_name)
}

/// The temporary namespace a VF passes through (one per VF: its lock serialises users).
pub fn temp_netns_name(pci: &PciAddress) -> String {
    format!("vfgenie-sriov-{}", pci.to_string().replace([':', '.'], "-"))
}

/// Opens the named temp namespace, creating it when missing.
pub fn open_or_create_named(root: &SysRoot, name: &str) -> Result<NetNs, CniError> {
    match NetNs::create_named(root, name) {
        Ok(ns) => Ok(ns),
        Err(vfcore::netns::NetNsError::AlreadyExists { .. }) => {
            NetNs::named(root, name).map_err(kernel)
        }
        Err(e) => Err(kernel(e)),
    }
}

/// Inside the current thread's namespace: the physical links other than `lo`.
pub fn physical_links(nl: &mut impl LinkOps) -> Result<Vec<LinkInfo>, CniError> {
    Ok(nl
        .links()
        .map_err(kernel)?
        .into_iter()
        .filter(|l| l.name != "lo" && l.kind.is_none())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_plain_and_unique_per_vf() {
        let a = temp_netns_name(&"0000:01:10.1".parse().unwrap());
        let b = temp_netns_name(&"0000:01:10.3".parse().unwrap());
        assert_eq!(a, "vfgenie-sriov-0000-01-10-1");
        assert_ne!(a, b);
        assert!(vfcore::paths::is_plain_name(&a));
    }

    #[test]
    fn unknown_devices_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let e = Vf::resolve(&root, "0000:01:10.1".parse().unwrap()).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("no such PCI device"), "{}", e.msg);
    }
}
