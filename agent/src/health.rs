//! Device health, read from the kernel each time: a VF is unhealthy when its PF's link is down, its
//! driver is gone or changed, its vfio group device is missing, or (for a kernel-netdev VF that no
//! pod holds) its netdev has disappeared. A VF that a pod holds has its netdev in the pod's network
//! namespace, where the host cannot see it; that is not a fault.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, warn};
use vfcore::sysfs::{self, Netdev};
use vfcore::{PciAddress, SysRoot};

use crate::pool::{Pool, PoolDevice};

/// Why a device is unhealthy, or `None` when it is fine.
pub fn fault(
    root: &SysRoot,
    dev: &PoolDevice,
    held: &BTreeSet<PciAddress>,
    pf_links: &mut BTreeMap<PciAddress, bool>,
) -> Option<String> {
    if let Some(pf) = dev.pf {
        let up = *pf_links.entry(pf).or_insert_with(|| pf_link_up(root, &pf));
        if !up {
            return Some(format!("PF {pf} link is down"));
        }
    }
    let driver = match vfcore::bind::current_driver(root, &dev.address) {
        Ok(d) => d,
        Err(e) => return Some(format!("cannot read its driver: {e}")),
    };
    if driver != dev.driver {
        return Some(format!(
            "driver changed from {} to {}",
            dev.driver.as_deref().unwrap_or("none"),
            driver.as_deref().unwrap_or("none")
        ));
    }
    if dev.is_vfio() {
        let Some(group) = dev.iommu_group else {
            return Some("no IOMMU group".into());
        };
        let normal = root.dev_vfio_group(group, false);
        let noiommu = root.dev_vfio_group(group, true);
        if !normal.exists() && !noiommu.exists() {
            return Some(format!("{} is missing", normal.display()));
        }
    } else if dev.netdev.is_some() && !held.contains(&dev.address) {
        let visible = sysfs::has_netdev(root, &dev.address).unwrap_or(false);
        if !visible {
            return Some(format!(
                "netdev {} is gone",
                dev.netdev.as_deref().unwrap_or_default()
            ));
        }
    }
    None
}

/// A PF without a netdev in view (bound elsewhere) counts as up: nothing says otherwise.
fn pf_link_up(root: &SysRoot, pf: &PciAddress) -> bool {
    match sysfs::netdevs_of(root, pf) {
        Ok(n) if n.is_empty() => true,
        Ok(n) => n.iter().any(link_up),
        Err(_) => false,
    }
}

fn link_up(n: &Netdev) -> bool {
    n.carrier == Some(true) || n.operstate.as_deref() == Some("up")
}

/// Re-reads the health of every device; returns whether anything changed. Transitions are logged.
pub fn refresh(root: &SysRoot, pools: &mut [Pool], held: &BTreeSet<PciAddress>) -> bool {
    let mut pf_links = BTreeMap::new();
    let mut changed = false;
    for pool in pools.iter_mut() {
        let name = pool.full_name();
        for dev in pool.devices.values_mut() {
            let f = fault(root, dev, held, &mut pf_links);
            let healthy = f.is_none();
            if healthy != dev.healthy {
                changed = true;
                dev.healthy = healthy;
                match &f {
                    Some(reason) => {
                        warn!(pool = %name, vf = %dev.address, %reason, "device unhealthy")
                    }
                    None => info!(pool = %name, vf = %dev.address, "device healthy again"),
                }
                crate::audit::record(vfaudit::Event::HealthChanged, |r| {
                    r.pool = Some(name.clone());
                    r.devices = vec![dev.address.to_string()];
                    r.detail = Some(match &f {
                        Some(reason) => format!("unhealthy: {reason}"),
                        None => "healthy".to_string(),
                    });
                });
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::testutil::copy_fixture;

    fn pools_of(root: &SysRoot) -> Vec<Pool> {
        let cfg = Config::from_value(&serde_json::json!({"resourceList": [
            {"resourceName": "net", "selectors": {"drivers": ["ixgbevf"]}},
            {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"]}}
        ]}))
        .unwrap();
        let devices = sysfs::discover(root).unwrap();
        crate::select::build_pools(root, &devices, &cfg.resource_list)
    }

    fn unhealthy(pools: &[Pool]) -> Vec<String> {
        pools
            .iter()
            .flat_map(|p| p.devices.values())
            .filter(|d| !d.healthy)
            .map(|d| d.address.to_string())
            .collect()
    }

    #[test]
    fn a_pf_link_down_makes_its_vfs_unhealthy_and_back() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let mut pools = pools_of(&root);
        assert!(!refresh(&root, &mut pools, &BTreeSet::new()));
        assert!(unhealthy(&pools).is_empty());

        let pf_net = root.netdev("enp3s0f0").unwrap();
        std::fs::write(pf_net.join("operstate"), "down\n").unwrap();
        std::fs::write(pf_net.join("carrier"), "0\n").unwrap();
        assert!(refresh(&root, &mut pools, &BTreeSet::new()));
        assert_eq!(
            unhealthy(&pools),
            vec![
                "0000:03:10.0",
                "0000:03:10.2",
                "0000:03:10.4",
                "0000:03:10.6"
            ]
        );

        std::fs::write(pf_net.join("operstate"), "up\n").unwrap();
        std::fs::write(pf_net.join("carrier"), "1\n").unwrap();
        assert!(refresh(&root, &mut pools, &BTreeSet::new()));
        assert!(unhealthy(&pools).is_empty());
    }

    #[test]
    fn missing_vfio_group_or_netdev_is_unhealthy_unless_a_pod_holds_it() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let mut pools = pools_of(&root);
        std::fs::remove_file(root.dev_vfio_group(73, false)).unwrap();
        // The netdev of VF 0000:03:10.2 leaves the host's view.
        let vf_dir = root.pci_device(&"0000:03:10.2".parse().unwrap());
        std::fs::remove_dir_all(vf_dir.join("net")).unwrap();
        refresh(&root, &mut pools, &BTreeSet::new());
        assert_eq!(unhealthy(&pools), vec!["0000:03:10.2", "0000:03:10.6"]);

        let held: BTreeSet<PciAddress> = ["0000:03:10.2".parse().unwrap()].into();
        refresh(&root, &mut pools, &held);
        assert_eq!(unhealthy(&pools), vec!["0000:03:10.6"]);
    }

    #[test]
    fn a_driver_change_is_unhealthy() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let mut pools = pools_of(&root);
        let link = root
            .pci_device(&"0000:03:10.0".parse().unwrap())
            .join("driver");
        std::fs::remove_file(&link).unwrap();
        refresh(&root, &mut pools, &BTreeSet::new());
        assert_eq!(unhealthy(&pools), vec!["0000:03:10.0"]);
    }
}
