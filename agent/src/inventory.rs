//! The node inventory: what the agent sees on this node, as a table for people and JSON for
//! scripts. Pools and health columns join once the agent serves pools.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use vfcore::sysfs::{self, PciNetDevice};
use vfcore::SysRoot;

use crate::config::Config;

/// One row of the inventory: a PF, a VF, or a NIC without SR-IOV.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub address: String,
    pub role: Role,
    pub vendor_device: String,
    pub name: String,
    pub driver: String,
    pub netdevs: Vec<String>,
    pub numa: Option<u32>,
    pub iommu_group: Option<u32>,
    /// For a PF: `numvfs/totalvfs` (and the legacy `max_vfs` module parameter when the driver has
    /// one); for a VF: `<pf>#<index>`.
    pub sriov: String,
    /// The pool (`<prefix>/<name>`) the device is in, when a config was given and one takes it.
    pub pool: Option<String>,
    /// `Healthy` or `Unhealthy: <reason>` for pool members.
    pub health: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Pf,
    Vf,
    Nic,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Pf => "PF",
            Role::Vf => "VF",
            Role::Nic => "NIC",
        }
    }
}

/// The node's inventory, read from sysfs under `root`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inventory {
    pub devices: Vec<Row>,
}

impl Inventory {
    pub fn read(root: &SysRoot) -> Result<Self, sysfs::Error> {
        Ok(Self::from_devices(&sysfs::discover(root)?))
    }

    /// The inventory with each device's pool and health, as the agent would serve them under
    /// `config` (no pod holds anything as far as this offline view knows).
    pub fn read_with_pools(root: &SysRoot, config: &Config) -> Result<Self, sysfs::Error> {
        let devices = sysfs::discover(root)?;
        let mut inv = Self::from_devices(&devices);
        let pools = crate::select::build_pools(root, &devices, &config.resource_list);
        let mut pf_links = BTreeMap::new();
        let held = BTreeSet::new();
        for pool in &pools {
            for dev in pool.devices.values() {
                let Some(row) = inv
                    .devices
                    .iter_mut()
                    .find(|r| r.address == dev.address.to_string())
                else {
                    continue;
                };
                row.pool = Some(pool.full_name());
                row.health = Some(
                    match crate::health::fault(root, dev, &held, &mut pf_links) {
                        None => "Healthy".to_string(),
                        Some(reason) => format!("Unhealthy: {reason}"),
                    },
                );
            }
        }
        Ok(inv)
    }

    pub fn from_devices(devices: &[PciNetDevice]) -> Self {
        let devices = devices
            .iter()
            .map(|d| {
                let (role, sriov) = match (&d.sriov, &d.physfn) {
                    (Some(pf), _) => (
                        Role::Pf,
                        match &pf.legacy_max_vfs {
                            // The legacy module parameter, reported beside what sysfs says.
                            Some(m) => format!("{}/{} max_vfs={m}", pf.num_vfs, pf.total_vfs),
                            None => format!("{}/{}", pf.num_vfs, pf.total_vfs),
                        },
                    ),
                    (None, Some(of)) => (Role::Vf, format!("{}#{}", of.pf, of.index)),
                    (None, None) => (Role::Nic, String::new()),
                };
                let name = match (&d.vendor_name, &d.device_name) {
                    (Some(v), Some(n)) => format!("{v} {n}"),
                    (Some(v), None) => v.clone(),
                    (None, Some(n)) => n.clone(),
                    (None, None) => String::new(),
                };
                Row {
                    address: d.address.to_string(),
                    role,
                    vendor_device: format!("{:04x}:{:04x}", d.vendor_id, d.device_id),
                    name,
                    driver: d.driver.clone().unwrap_or_default(),
                    netdevs: d.netdevs.iter().map(|n| n.name.clone()).collect(),
                    numa: d.numa_node,
                    iommu_group: d.iommu_group,
                    sriov,
                    pool: None,
                    health: None,
                }
            })
            .collect();
        Self { devices }
    }

    /// A fixed-width table, one line per device, PFs followed by their VFs.
    pub fn table(&self) -> String {
        const HEADERS: [&str; 11] = [
            "PCI", "ROLE", "ID", "DRIVER", "NETDEV", "NUMA", "IOMMU", "SRIOV", "POOL", "HEALTH",
            "NAME",
        ];
        let cells: Vec<[String; 11]> = self
            .devices
            .iter()
            .map(|r| {
                let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
                let dash = |s: &str| {
                    if s.is_empty() {
                        "-".to_string()
                    } else {
                        s.to_string()
                    }
                };
                [
                    r.address.clone(),
                    r.role.as_str().to_string(),
                    r.vendor_device.clone(),
                    dash(&r.driver),
                    dash(&r.netdevs.join(",")),
                    opt(r.numa),
                    opt(r.iommu_group),
                    dash(&r.sriov),
                    dash(r.pool.as_deref().unwrap_or_default()),
                    dash(r.health.as_deref().unwrap_or_default()),
                    dash(&r.name),
                ]
            })
            .collect();
        let mut widths = HEADERS.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.len());
            }
        }
        let mut out = String::new();
        let mut line = |cols: &[String]| {
            let mut l = String::new();
            for (i, c) in cols.iter().enumerate() {
                if i + 1 == cols.len() {
                    l.push_str(c);
                } else {
                    let _ = write!(l, "{:<w$}  ", c, w = widths[i]);
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&HEADERS.map(String::from));
        for row in &cells {
            line(row);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fixture;

    #[test]
    fn ixgbe_inventory_lists_pfs_vfs_and_legacy_max_vfs() {
        let inv = Inventory::read(&fixture("ixgbe-82599")).unwrap();
        let pf = &inv.devices[0];
        assert_eq!(pf.role, Role::Pf);
        assert_eq!(pf.vendor_device, "8086:10fb");
        assert_eq!(pf.sriov, "4/63 max_vfs=0");
        assert!(pf.name.contains("82599"), "{}", pf.name);
        let vfio = inv.devices.iter().find(|r| r.driver == "vfio-pci").unwrap();
        assert_eq!(vfio.role, Role::Vf);
        assert!(vfio.netdevs.is_empty());
        assert!(vfio.sriov.starts_with("0000:03:00.0#"));
        let table = inv.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("PCI "));
        assert_eq!(lines.len(), inv.devices.len() + 1);
        assert!(lines
            .iter()
            .any(|l| l.contains("vfio-pci") && l.contains(" - ")));
    }

    #[test]
    fn with_a_config_each_device_shows_its_pool_and_health() {
        let cfg = Config::from_value(&serde_json::json!({"resourceList": [
            {"resourceName": "net", "selectors": {"drivers": ["ixgbevf"]}},
            {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"]}}
        ]}))
        .unwrap();
        let inv = Inventory::read_with_pools(&fixture("ixgbe-82599"), &cfg).unwrap();
        let vfio = inv.devices.iter().find(|r| r.driver == "vfio-pci").unwrap();
        assert_eq!(vfio.pool.as_deref(), Some("intel.com/dpdk"));
        assert_eq!(vfio.health.as_deref(), Some("Healthy"));
        let pf = &inv.devices[0];
        assert_eq!((pf.pool.as_deref(), pf.health.as_deref()), (None, None));
        let table = inv.table();
        assert!(table.lines().next().unwrap().contains("POOL"));
        assert!(table
            .lines()
            .any(|l| l.contains("intel.com/net") && l.contains("Healthy")));
    }

    #[test]
    fn every_fixture_renders() {
        for name in [
            "ixgbe-82599",
            "i40e-x710",
            "mlx5-cx5",
            "virtio-vm",
            "lab-igb",
        ] {
            let inv = Inventory::read(&fixture(name)).unwrap();
            assert!(!inv.devices.is_empty(), "{name}");
            // Missing NUMA (-1) and absent IOMMU groups show as '-', never as a number.
            for r in &inv.devices {
                assert_ne!(r.numa, Some(u32::MAX), "{name}");
            }
        }
        let virtio = Inventory::read(&fixture("virtio-vm")).unwrap();
        assert!(virtio.devices.iter().all(|r| r.role == Role::Nic));
    }
}
