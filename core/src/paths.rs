//! Every sysfs, /dev, /proc and /run path the project touches, resolved under a configurable root.
//!
//! Production uses [`SysRoot::host`] (`/`); tests point a [`SysRoot`] at a fixture tree. No other
//! module spells a kernel path literal: they ask this one.

use std::path::{Path, PathBuf};

use crate::types::PciAddress;

/// Attribute file names inside a PCI device directory.
pub mod attr {
    pub const VENDOR: &str = "vendor";
    pub const DEVICE: &str = "device";
    pub const CLASS: &str = "class";
    pub const SUBSYSTEM_VENDOR: &str = "subsystem_vendor";
    pub const SUBSYSTEM_DEVICE: &str = "subsystem_device";
    pub const NUMA_NODE: &str = "numa_node";
    pub const DRIVER: &str = "driver";
    pub const DRIVER_OVERRIDE: &str = "driver_override";
    pub const IOMMU_GROUP: &str = "iommu_group";
    pub const NET: &str = "net";
    pub const PHYSFN: &str = "physfn";
    pub const VIRTFN_PREFIX: &str = "virtfn";
    pub const SRIOV_TOTALVFS: &str = "sriov_totalvfs";
    pub const SRIOV_NUMVFS: &str = "sriov_numvfs";
    pub const SRIOV_OFFSET: &str = "sriov_offset";
    pub const SRIOV_STRIDE: &str = "sriov_stride";
    pub const SRIOV_VF_DEVICE: &str = "sriov_vf_device";
    pub const SRIOV_DRIVERS_AUTOPROBE: &str = "sriov_drivers_autoprobe";
    pub const ACPI_INDEX: &str = "acpi_index";
    pub const MODULE: &str = "module";
    pub const UNBIND: &str = "unbind";
    pub const BIND: &str = "bind";
    /// Attributes of a netdev directory under `/sys/class/net/<name>`.
    pub const OPERSTATE: &str = "operstate";
    pub const CARRIER: &str = "carrier";
    pub const SPEED: &str = "speed";
    pub const ADDRESS: &str = "address";
    pub const MTU: &str = "mtu";
    pub const IFINDEX: &str = "ifindex";
    /// The ARPHRD link type (1 Ethernet, 32 InfiniBand).
    pub const NET_TYPE: &str = "type";
    /// Present on PCI functions that have an RDMA device.
    pub const INFINIBAND: &str = "infiniband";
    pub const PHYS_PORT_NAME: &str = "phys_port_name";
    pub const PHYS_SWITCH_ID: &str = "phys_switch_id";
    /// Prefix of the virtio bus device under a virtio PCI function (`virtio0`), whose `net`
    /// directory holds the netdev.
    pub const VIRTIO_PREFIX: &str = "virtio";
}

/// Module parameters under `/sys/module/<module>/parameters`.
pub mod params {
    /// The legacy VF count parameter of ixgbe-style drivers.
    pub const MAX_VFS: &str = "max_vfs";
    /// `vfio`'s switch for no-IOMMU mode (`Y`/`N`).
    pub const ENABLE_UNSAFE_NOIOMMU_MODE: &str = "enable_unsafe_noiommu_mode";
}

/// Kernel module names.
pub mod modules {
    pub const VFIO: &str = "vfio";
}

/// Well-known driver names.
pub mod drivers {
    pub const VFIO_PCI: &str = "vfio-pci";
}

/// The root under which kernel paths are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        Self::host()
    }
}

impl SysRoot {
    /// The running host's kernel interfaces.
    pub fn host() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A tree rooted elsewhere (a fixture, a captured node, a chroot).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn join(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `/sys/bus/pci/devices`
    pub fn pci_devices(&self) -> PathBuf {
        self.join("sys/bus/pci/devices")
    }

    /// `/sys/bus/pci/devices/<addr>`
    pub fn pci_device(&self, addr: &PciAddress) -> PathBuf {
        self.pci_devices().join(addr.to_string())
    }

    /// `/sys/bus/pci/devices/<addr>/<attr>`
    pub fn pci_attr(&self, addr: &PciAddress, attr: &str) -> PathBuf {
        self.pci_device(addr).join(attr)
    }

    /// `/sys/bus/pci/drivers`
    pub fn pci_drivers(&self) -> PathBuf {
        self.join("sys/bus/pci/drivers")
    }

    /// `/sys/bus/pci/drivers/<name>`, or `None` when `name` is not a plain file name.
    pub fn pci_driver(&self, name: &str) -> Option<PathBuf> {
        is_plain_name(name).then(|| self.pci_drivers().join(name))
    }

    /// `/sys/bus/pci/drivers/<name>/<attr>` (`unbind`, `module`), or `None` for a name that is
    /// not plain.
    pub fn pci_driver_attr(&self, name: &str, attr: &str) -> Option<PathBuf> {
        self.pci_driver(name).map(|d| d.join(attr))
    }

    /// `/sys/bus/pci/drivers_probe`
    pub fn pci_drivers_probe(&self) -> PathBuf {
        self.join("sys/bus/pci/drivers_probe")
    }

    /// `/sys/class/net`
    pub fn net_class(&self) -> PathBuf {
        self.join("sys/class/net")
    }

    /// `/sys/class/net/<ifname>`, or `None` when `ifname` is not a plain file name.
    pub fn netdev(&self, ifname: &str) -> Option<PathBuf> {
        is_plain_name(ifname).then(|| self.net_class().join(ifname))
    }

    /// `/sys/module/<module>/parameters/<param>`, or `None` for names that are not plain.
    pub fn module_parameter(&self, module: &str, param: &str) -> Option<PathBuf> {
        (is_plain_name(module) && is_plain_name(param)).then(|| {
            self.join("sys/module")
                .join(module)
                .join("parameters")
                .join(param)
        })
    }

    /// `/sys/kernel/iommu_groups`
    pub fn iommu_groups(&self) -> PathBuf {
        self.join("sys/kernel/iommu_groups")
    }

    /// `/dev/vfio`
    pub fn dev_vfio(&self) -> PathBuf {
        self.join("dev/vfio")
    }

    /// `/dev/vfio/vfio`, the container device every vfio user opens.
    pub fn dev_vfio_container(&self) -> PathBuf {
        self.dev_vfio().join("vfio")
    }

    /// `/dev/vfio/<group>`, or `/dev/vfio/noiommu-<group>` for no-IOMMU mode.
    pub fn dev_vfio_group(&self, group: u32, noiommu: bool) -> PathBuf {
        if noiommu {
            self.dev_vfio().join(format!("noiommu-{group}"))
        } else {
            self.dev_vfio().join(group.to_string())
        }
    }

    /// `/dev/vhost-net`
    pub fn dev_vhost_net(&self) -> PathBuf {
        self.join("dev/vhost-net")
    }

    /// `/dev/net/tun`
    pub fn dev_net_tun(&self) -> PathBuf {
        self.join("dev/net/tun")
    }

    /// `/run/netns`, where `ip netns` keeps named namespaces.
    pub fn run_netns(&self) -> PathBuf {
        self.join("run/netns")
    }

    /// `/proc/<pid>/ns/net`
    pub fn proc_netns(&self, pid: u32) -> PathBuf {
        self.join("proc").join(pid.to_string()).join("ns/net")
    }

    /// `/proc/<pid>/status` (memory figures such as `VmRSS`)
    pub fn proc_status(&self, pid: u32) -> PathBuf {
        self.join("proc").join(pid.to_string()).join("status")
    }

    /// `/proc/self/ns/net`
    pub fn proc_self_netns(&self) -> PathBuf {
        self.join("proc/self/ns/net")
    }

    /// `/proc/thread-self/ns/net`: the namespace of the calling thread, which may differ from the
    /// process's while a thread works inside another namespace.
    pub fn proc_thread_self_netns(&self) -> PathBuf {
        self.join("proc/thread-self/ns/net")
    }
}

/// A single path component that cannot climb or descend: non-empty, not `.`/`..`, no `/` or NUL.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_under_root() {
        let r = SysRoot::new("/tmp/fx");
        let a: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(
            r.pci_attr(&a, attr::SRIOV_NUMVFS),
            PathBuf::from("/tmp/fx/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs")
        );
        assert_eq!(
            r.dev_vfio_group(12, false),
            PathBuf::from("/tmp/fx/dev/vfio/12")
        );
        assert_eq!(
            r.dev_vfio_group(3, true),
            PathBuf::from("/tmp/fx/dev/vfio/noiommu-3")
        );
        assert_eq!(
            SysRoot::host().proc_netns(42),
            PathBuf::from("/proc/42/ns/net")
        );
    }

    #[test]
    fn names_from_outside_cannot_traverse() {
        let r = SysRoot::host();
        assert!(r.pci_driver("../../../etc").is_none());
        assert!(r.pci_driver("..").is_none());
        assert!(r.netdev("a/b").is_none());
        assert!(r.module_parameter("ixgbe", "../x").is_none());
        assert_eq!(
            r.pci_driver("igbvf"),
            Some(PathBuf::from("/sys/bus/pci/drivers/igbvf"))
        );
    }
}
