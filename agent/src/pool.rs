//! VF pools: the devices of one `resourceList` entry, as the device-plugin server advertises them.

use std::collections::BTreeMap;

use serde::Serialize;
use vfcore::paths::drivers::VFIO_PCI;
use vfcore::{PciAddress, VfIndex};

use crate::config::ResourceConfig;

/// A VF (or any PCI network function) in a pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolDevice {
    pub address: PciAddress,
    pub pf: Option<PciAddress>,
    pub vf_index: Option<VfIndex>,
    pub numa_node: Option<u32>,
    pub driver: Option<String>,
    pub iommu_group: Option<u32>,
    pub netdev: Option<String>,
    /// The selector that took this device asked for /dev/vhost-net.
    pub need_vhost_net: bool,
    pub healthy: bool,
}

impl PoolDevice {
    pub fn is_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_PCI)
    }
}

/// One resource pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pool {
    pub config: ResourceConfig,
    pub devices: BTreeMap<PciAddress, PoolDevice>,
}

impl Pool {
    /// `<prefix>/<name>`
    pub fn full_name(&self) -> String {
        self.config.full_name()
    }

    pub fn need_vhost_net(&self) -> bool {
        self.devices.values().any(|d| d.need_vhost_net)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A healthy VF; with a group it is bound to vfio-pci, without one to igbvf.
    pub fn device(addr: &str, vfio_group: Option<u32>) -> PoolDevice {
        PoolDevice {
            address: addr.parse().unwrap(),
            pf: Some("0000:01:00.0".parse().unwrap()),
            vf_index: Some(VfIndex(0)),
            numa_node: None,
            driver: Some(
                if vfio_group.is_some() {
                    VFIO_PCI
                } else {
                    "igbvf"
                }
                .into(),
            ),
            iommu_group: vfio_group,
            netdev: None,
            need_vhost_net: false,
            healthy: true,
        }
    }

    pub fn pool_of(full_name: &str, devices: Vec<PoolDevice>) -> Pool {
        let (prefix, name) = full_name.split_once('/').unwrap();
        Pool {
            config: ResourceConfig {
                resource_name: name.into(),
                resource_prefix: prefix.into(),
                exclude_topology: false,
                selectors: Vec::new(),
                additional_info: BTreeMap::new(),
            },
            devices: devices.into_iter().map(|d| (d.address, d)).collect(),
        }
    }
}
