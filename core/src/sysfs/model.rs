//! The device model's types.

use serde::Serialize;

use crate::types::{MacAddr, PciAddress, VfIndex};

/// A network-class PCI function: a PF, a VF or a NIC without SR-IOV.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PciNetDevice {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    /// From the pci.ids database, for display only; the numeric IDs decide.
    pub vendor_name: Option<String>,
    /// From the pci.ids database, for display only; the numeric IDs decide.
    pub device_name: Option<String>,
    /// The 24-bit class code (`0x020000` for an Ethernet controller).
    pub class: u32,
    /// The bound driver's name, `None` when unbound.
    pub driver: Option<String>,
    /// The netdevs of this function, sorted by name (none when unbound or bound to vfio-pci).
    pub netdevs: Vec<Netdev>,
    /// `None` when the kernel reports `-1` (no NUMA affinity).
    pub numa_node: Option<u32>,
    pub iommu_group: Option<u32>,
    /// Present when the function is an SR-IOV PF.
    pub sriov: Option<SriovPf>,
    /// Present when the function is a VF.
    pub physfn: Option<VfOf>,
}

impl PciNetDevice {
    pub fn is_pf(&self) -> bool {
        self.sriov.is_some()
    }

    pub fn is_vf(&self) -> bool {
        self.physfn.is_some()
    }
}

/// A network interface backed by a PCI function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Netdev {
    pub name: String,
    /// `None` when the address is not an Ethernet MAC (InfiniBand, for one).
    pub mac: Option<MacAddr>,
    pub operstate: Option<String>,
    /// `None` when the interface is administratively down (the kernel refuses to answer).
    pub carrier: Option<bool>,
    /// `None` when the speed is unknown (link down, or the kernel refuses to answer).
    pub speed_mbps: Option<u32>,
    pub mtu: Option<u32>,
}

/// The SR-IOV capability of a PF.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SriovPf {
    pub total_vfs: u32,
    pub num_vfs: u32,
    /// Routing-ID offset of VF 0 from the PF (`sriov_offset`).
    pub vf_offset: Option<u32>,
    /// Routing-ID distance between consecutive VFs (`sriov_stride`).
    pub vf_stride: Option<u32>,
    pub vf_device_id: Option<u16>,
    /// `sriov_drivers_autoprobe`: whether new VFs get a driver on creation.
    pub drivers_autoprobe: Option<bool>,
    /// The PF driver module's legacy `max_vfs` parameter, verbatim, when the module has one.
    pub legacy_max_vfs: Option<String>,
    /// The VFs that exist now, sorted by index.
    pub vfs: Vec<VfLink>,
}

/// One `virtfnN` link of a PF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VfLink {
    pub index: VfIndex,
    pub address: PciAddress,
}

/// A VF's parent: its PF and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VfOf {
    pub pf: PciAddress,
    pub index: VfIndex,
}
