//! Which devices join which pool: the SR-IOV network device plugin's selectors applied to the
//! discovered devices. Within one selector every key must match; a pool takes a device matching any
//! of its selectors; a device joins the first pool (in config order) that takes it.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};

use vfcore::paths::attr;
use vfcore::sysfs::PciNetDevice;
use vfcore::{PciAddress, SysRoot, VfIndex};

use crate::config::{ResourceConfig, Selector};
use crate::pool::{Pool, PoolDevice};

/// ARPHRD numbers of the link types the device plugin names (`/sys/class/net/<if>/type`).
fn link_type_name(arphrd: u32) -> Option<&'static str> {
    match arphrd {
        1 => Some("ether"),
        32 => Some("infiniband"),
        _ => None,
    }
}

/// Facts about a device that selectors need beyond the device model. Those read from sysfs are
/// read when a selector first asks for them, and at most once per pool building.
struct Facts<'a> {
    root: &'a SysRoot,
    dev: &'a PciNetDevice,
    /// The PF's netdev names (for a VF) or the device's own (for a PF).
    pf_names: Vec<&'a str>,
    /// The device whose netdev tells the link type: its own, or for a VF without one its PF's.
    link_of: Option<&'a str>,
    pf_address: PciAddress,
    vf_index: Option<VfIndex>,
    link_type: OnceCell<Option<&'static str>>,
    acpi_index: OnceCell<Option<String>>,
    rdma: OnceCell<bool>,
}

fn read_trimmed(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

impl<'a> Facts<'a> {
    fn new(
        root: &'a SysRoot,
        dev: &'a PciNetDevice,
        by_addr: &BTreeMap<PciAddress, &'a PciNetDevice>,
    ) -> Self {
        let (pf_dev, pf_address, vf_index) = match &dev.physfn {
            Some(of) => (by_addr.get(&of.pf).copied(), of.pf, Some(of.index)),
            None => (Some(dev), dev.address, None),
        };
        let pf_names: Vec<&str> = pf_dev
            .map(|p| p.netdevs.iter().map(|n| n.name.as_str()).collect())
            .unwrap_or_default();
        // The link type of a VF without a netdev (vfio) is its PF's.
        let link_of = dev
            .netdevs
            .first()
            .or_else(|| pf_dev.and_then(|p| p.netdevs.first()))
            .map(|n| n.name.as_str());
        Self {
            root,
            dev,
            pf_names,
            link_of,
            pf_address,
            vf_index,
            link_type: OnceCell::new(),
            acpi_index: OnceCell::new(),
            rdma: OnceCell::new(),
        }
    }

    fn link_type(&self) -> Option<&'static str> {
        *self.link_type.get_or_init(|| {
            self.link_of
                .and_then(|n| self.root.netdev(n))
                .and_then(|p| read_trimmed(&p.join(attr::NET_TYPE)))
                .and_then(|t| t.parse::<u32>().ok())
                .and_then(link_type_name)
        })
    }

    fn acpi_index(&self) -> Option<&str> {
        self.acpi_index
            .get_or_init(|| read_trimmed(&self.root.pci_attr(&self.dev.address, attr::ACPI_INDEX)))
            .as_deref()
    }

    fn rdma(&self) -> bool {
        *self.rdma.get_or_init(|| {
            self.root
                .pci_attr(&self.dev.address, attr::INFINIBAND)
                .is_dir()
        })
    }
}

fn matches(sel: &Selector, f: &Facts<'_>) -> bool {
    let d = f.dev;
    let in_range = |vfs: &Option<crate::config::VfRange>| match (vfs, f.vf_index) {
        (None, _) => true,
        (Some(r), Some(i)) => r.contains(i.0),
        // `pf#0-3` names VFs; the PF itself is not one of them.
        (Some(_), None) => false,
    };
    (sel.vendors.is_empty() || sel.vendors.contains(&d.vendor_id))
        && (sel.devices.is_empty() || sel.devices.contains(&d.device_id))
        && (sel.drivers.is_empty() || d.driver.as_ref().is_some_and(|x| sel.drivers.contains(x)))
        && (sel.pci_addresses.is_empty() || sel.pci_addresses.contains(&d.address))
        && (sel.acpi_indexes.is_empty()
            || f.acpi_index()
                .is_some_and(|a| sel.acpi_indexes.iter().any(|x| x == a)))
        && (sel.pf_names.is_empty()
            || sel
                .pf_names
                .iter()
                .any(|p| f.pf_names.contains(&p.pf.as_str()) && in_range(&p.vfs)))
        && (sel.root_devices.is_empty()
            || sel
                .root_devices
                .iter()
                .any(|p| p.pf == f.pf_address && in_range(&p.vfs)))
        && (sel.link_types.is_empty()
            || f.link_type()
                .is_some_and(|t| sel.link_types.iter().any(|l| l == t)))
        && (!sel.is_rdma || f.rdma())
}

/// Devices that can be handed to pods: VFs, and network functions that are not PFs with VFs
/// enabled (a PF whose VFs are in use is the VFs' uplink, not a device of its own).
fn candidate(d: &PciNetDevice) -> bool {
    d.physfn.is_some() || d.sriov.as_ref().is_none_or(|s| s.num_vfs == 0)
}

/// Builds the pools of `resources` from `devices`. Health is left `true`; the health check sets it.
pub fn build_pools(
    root: &SysRoot,
    devices: &[PciNetDevice],
    resources: &[ResourceConfig],
) -> Vec<Pool> {
    let by_addr: BTreeMap<PciAddress, &PciNetDevice> =
        devices.iter().map(|d| (d.address, d)).collect();
    let mut taken = BTreeSet::new();
    let facts: Vec<Facts<'_>> = devices
        .iter()
        .filter(|d| candidate(d))
        .map(|d| Facts::new(root, d, &by_addr))
        .collect();
    resources
        .iter()
        .map(|rc| {
            let mut pool = Pool {
                config: rc.clone(),
                devices: BTreeMap::new(),
            };
            for f in &facts {
                let d = f.dev;
                if taken.contains(&d.address) {
                    continue;
                }
                let Some(sel) = rc.selectors.iter().find(|s| matches(s, f)) else {
                    continue;
                };
                taken.insert(d.address);
                pool.devices.insert(
                    d.address,
                    PoolDevice {
                        address: d.address,
                        pf: d.physfn.map(|of| of.pf),
                        vf_index: f.vf_index,
                        numa_node: d.numa_node,
                        driver: d.driver.clone(),
                        iommu_group: d.iommu_group,
                        netdev: d.netdevs.first().map(|n| n.name.clone()),
                        need_vhost_net: sel.need_vhost_net,
                        healthy: true,
                    },
                );
            }
            pool
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::testutil::fixture;
    use serde_json::json;

    fn pools(root: &SysRoot, cfg: serde_json::Value) -> Vec<Pool> {
        let cfg = Config::from_value(&cfg).unwrap();
        let devices = vfcore::sysfs::discover(root).unwrap();
        build_pools(root, &devices, &cfg.resource_list)
    }

    fn ids(p: &Pool) -> Vec<String> {
        p.devices.keys().map(|a| a.to_string()).collect()
    }

    #[test]
    fn drivers_split_netdev_and_vfio_vfs_of_one_nic() {
        let root = fixture("ixgbe-82599");
        let p = pools(
            &root,
            json!({"resourceList": [
                {"resourceName": "dpdk", "selectors": {"vendors": ["8086"], "devices": ["10ed"], "drivers": ["vfio-pci"]}},
                {"resourceName": "net", "selectors": {"vendors": ["8086"], "devices": ["10ed"], "drivers": ["ixgbevf"]}}
            ]}),
        );
        assert_eq!(ids(&p[0]), vec!["0000:03:10.6"]);
        assert_eq!(p[0].devices.values().next().unwrap().iommu_group, Some(73));
        assert_eq!(
            ids(&p[1]),
            vec!["0000:03:10.0", "0000:03:10.2", "0000:03:10.4"]
        );
        let d = &p[1].devices[&"0000:03:10.2".parse().unwrap()];
        assert_eq!(d.vf_index, Some(VfIndex(1)));
        assert_eq!(d.pf, Some("0000:03:00.0".parse().unwrap()));
        assert_eq!(d.numa_node, Some(0));
    }

    #[test]
    fn pf_names_with_vf_ranges_and_first_pool_wins() {
        let root = fixture("ixgbe-82599");
        let p = pools(
            &root,
            json!({"resourceList": [
                {"resourceName": "first", "selectors": {"pfNames": ["enp3s0f0#1-2"]}},
                {"resourceName": "rest", "selectors": [{"pfNames": ["enp3s0f0"]}, {"rootDevices": ["0000:03:00.1"]}]}
            ]}),
        );
        assert_eq!(ids(&p[0]), vec!["0000:03:10.2", "0000:03:10.4"]);
        // PF0 has VFs, so it is not a device of its own; PF1 has none, so rootDevices takes it.
        assert_eq!(
            ids(&p[1]),
            vec!["0000:03:00.1", "0000:03:10.0", "0000:03:10.6"]
        );
    }

    #[test]
    fn numa_less_nics_and_link_types() {
        let root = fixture("mlx5-cx5");
        let p = pools(
            &root,
            json!({"resourceList": [
                {"resourceName": "ib", "selectors": {"linkTypes": ["infiniband"]}},
                {"resourceName": "eth", "selectors": {"vendors": ["15b3"], "devices": ["1018"], "linkTypes": ["ether"]}}
            ]}),
        );
        assert!(p[0].devices.is_empty());
        assert_eq!(p[1].devices.len(), 2);
        assert!(p[1].devices.values().all(|d| d.numa_node.is_none()));
    }

    #[test]
    fn unbound_vfs_match_only_selectors_without_drivers() {
        let root = fixture("i40e-x710");
        let devices = vfcore::sysfs::discover(&root).unwrap();
        let unbound: Vec<_> = devices
            .iter()
            .filter(|d| d.physfn.is_some() && d.driver.is_none())
            .map(|d| d.address)
            .collect();
        assert!(!unbound.is_empty());
        let p = pools(
            &root,
            json!({"resourceList": [
                {"resourceName": "iavf", "selectors": {"drivers": ["iavf"]}},
                {"resourceName": "any", "selectors": {"devices": ["154c"]}}
            ]}),
        );
        assert!(unbound.iter().all(|a| !p[0].devices.contains_key(a)));
        assert!(unbound.iter().all(|a| p[1].devices.contains_key(a)));
    }
}
