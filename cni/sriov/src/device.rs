//! The VF a config names, its PF, and the kernel operations on its netdev that ADD and DEL share:
//! making the netdev adopt a MAC, finding it by PCI address, moving it between namespaces.

use std::time::Duration;

use vfcore::netlink::{LinkInfo, LinkOps};
use vfcore::netns::NetNs;
use vfcore::sysfs;
use vfcore::{MacAddr, PciAddress, SysRoot, VfIndex};

use super::host::Host;

/// Drivers that take a VF away from the kernel's network stack (DPDK and friends).
pub const USERSPACE_DRIVERS: [&str; 4] = ["vfio-pci", "uio_pci_generic", "igb_uio", "vfio_pci"];

/// How long a kernel change (a netdev appearing, a driver probing) may take.
pub const KERNEL_TIMEOUT: Duration = Duration::from_secs(20);

pub use crate::spec::error::chain;

/// What went wrong with the VF, its PF or their netdevs. Naming a device the node does not have
/// as a VF is the config's fault (CNI code 7); the rest is the node's (code 5).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A kernel-side failure (netlink, sysfs, namespaces, driver binding).
    #[error(transparent)]
    Kernel(Box<dyn std::error::Error + Send + Sync>),
    #[error("sriov: deviceID {pci}: there is no such PCI device on this node")]
    NoSuchDevice { pci: PciAddress },
    #[error("sriov: deviceID {pci} is not an SR-IOV VF (it has no physfn)")]
    NotAVf { pci: PciAddress },
    /// Not one of the VFs a test host knows.
    #[error("sriov: deviceID {pci}: no such VF")]
    UnknownVf { pci: PciAddress },
    #[error("PF {pf} has no netdev in the host network namespace: its VFs cannot be configured")]
    PfWithoutNetdev { pf: PciAddress },
    #[error("PF {pf}'s netdev {name} vanished")]
    PfNetdevVanished { pf: PciAddress, name: String },
    #[error("PF {pf} ({pf_name}) reports no VF {vf} for {pci}")]
    NoSuchVfOnPf {
        pf: PciAddress,
        pf_name: String,
        vf: VfIndex,
        pci: PciAddress,
    },
    #[error("VF {pci}'s netdev {name} vanished")]
    NetdevVanished { pci: PciAddress, name: String },
    #[error("VF {pci} (driver {driver}) has no netdev in the host network namespace; is it in use elsewhere?")]
    NoHostNetdev { pci: PciAddress, driver: String },
    #[error("VF {pci} has no netdev")]
    NoNetdev { pci: PciAddress },
    #[error("VF {pci} has no netdev in the host")]
    NoNetdevInHost { pci: PciAddress },
    #[error(
        "VF {pci} has no netdev in the host, in the temporary netns or as {ifname} in {netns}"
    )]
    NetdevLost {
        pci: PciAddress,
        ifname: String,
        netns: String,
    },
    #[error("{ifname} vanished in the pod")]
    VanishedInPod { ifname: String },
    #[error("VF {pci} did not adopt MAC {mac}: its netdev {netdev} shows {shows} even after rebinding it to {driver}")]
    MacNotAdopted {
        pci: PciAddress,
        mac: MacAddr,
        netdev: String,
        shows: String,
        driver: String,
    },
    /// A namespace a test host does not have.
    #[error("opening network namespace {path} failed: no such file or directory")]
    NoNetns { path: String },
}

impl DeviceError {
    /// Whether the config is at fault: it names a device this node does not have as a VF.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            DeviceError::NoSuchDevice { .. }
                | DeviceError::NotAVf { .. }
                | DeviceError::UnknownVf { .. }
        )
    }
}

/// A kernel-side failure (netlink, sysfs, namespaces).
pub fn kernel(e: impl std::error::Error + Send + Sync + 'static) -> DeviceError {
    DeviceError::Kernel(Box::new(e))
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
    pub fn resolve(root: &SysRoot, pci: PciAddress) -> Result<Self, DeviceError> {
        let dev = match sysfs::read_device_unnamed(root, &pci) {
            Ok(d) => d,
            Err(sysfs::Error::NoDevice { .. }) => return Err(DeviceError::NoSuchDevice { pci }),
            Err(e) => return Err(kernel(e)),
        };
        let Some(of) = dev.physfn else {
            return Err(DeviceError::NotAVf { pci });
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
) -> Result<LinkInfo, DeviceError> {
    let netdevs = host.netdevs_of(pf)?;
    let Some(name) = netdevs.first() else {
        return Err(DeviceError::PfWithoutNetdev { pf: *pf });
    };
    nl.link_by_name(name)
        .map_err(kernel)?
        .ok_or_else(|| DeviceError::PfNetdevVanished {
            pf: *pf,
            name: name.clone(),
        })
}

/// The VF's netdev name in the host, `None` when it has none there.
pub fn host_netdev<H: Host>(host: &H, pci: &PciAddress) -> Result<Option<String>, DeviceError> {
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
) -> Result<String, DeviceError> {
    let link =
        nl.link_by_name(name)
            .map_err(kernel)?
            .ok_or_else(|| DeviceError::NetdevVanished {
                pci: *pci,
                name: name.to_string(),
            })?;
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
        Ok::<_, DeviceError>((driver, new_name, link))
    })?;
    if link.mac != Some(mac) {
        return Err(DeviceError::MacNotAdopted {
            pci: *pci,
            mac,
            netdev: new_name,
            shows: link
                .mac
                .map(|m| m.to_string())
                .unwrap_or_else(|| "none".into()),
            driver,
        });
    }
    Ok(new_name)
}

/// The temporary namespace a VF passes through (one per VF: its lock serialises users).
pub fn temp_netns_name(pci: &PciAddress) -> String {
    format!("vfgenie-sriov-{}", pci.to_string().replace([':', '.'], "-"))
}

/// Opens the named temp namespace, creating it when missing.
pub fn open_or_create_named(root: &SysRoot, name: &str) -> Result<NetNs, DeviceError> {
    match NetNs::create_named(root, name) {
        Ok(ns) => Ok(ns),
        Err(vfcore::netns::NetNsError::AlreadyExists { .. }) => {
            NetNs::named(root, name).map_err(kernel)
        }
        Err(e) => Err(kernel(e)),
    }
}

/// Inside the current thread's namespace: the physical links other than `lo`.
pub fn physical_links(nl: &mut impl LinkOps) -> Result<Vec<LinkInfo>, DeviceError> {
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
        assert!(e.is_config(), "{e}");
        assert!(e.to_string().contains("no such PCI device"), "{e}");
    }
}
