//! One reconcile: bring the node to the configured VF counts and drivers, then rebuild the pools
//! and read their health. Blocking (sysfs writes can stall): run it on a blocking thread.
//!
//! It never changes a PF's VF count or rebinds a VF while a pod holds one of the VFs concerned
//! (changing a non-zero count removes every VF first); that becomes a condition and is retried.
//! On a node already as configured it writes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use tracing::{info, warn};
use vfcore::netlink::{LinkOps, Netlink};
use vfcore::paths::drivers::VFIO_PCI;
use vfcore::sysfs::{self, PciNetDevice};
use vfcore::{bind, provision, PciAddress, SysRoot};

use crate::config::{Config, PfMatch, PfProvision, VfDriver};
use crate::pool::Pool;
use crate::state::Condition;

/// Bounds on kernel operations.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bound on creating VFs and waiting for them and their drivers.
    pub provision_timeout: Duration,
    /// Bound on one driver rebind.
    pub bind_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            provision_timeout: Duration::from_secs(30),
            bind_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub pools: Vec<Pool>,
    pub conditions: Vec<Condition>,
    /// Kernel operations that failed in this reconcile.
    pub errors: u64,
    /// Kernel writes made (0 on a node already as configured).
    pub changes: u64,
}

impl Outcome {
    fn condition(&mut self, object: impl Into<String>, reason: &str, message: impl Into<String>) {
        let c = Condition {
            object: object.into(),
            reason: reason.into(),
            message: message.into(),
        };
        warn!(object = %c.object, reason = %c.reason, "{}", c.message);
        self.conditions.push(c);
    }
}

fn matching_pfs<'a>(devices: &'a [PciNetDevice], m: &PfMatch) -> Vec<&'a PciNetDevice> {
    devices
        .iter()
        .filter(|d| d.physfn.is_none())
        .filter(|d| match m {
            PfMatch::Name(n) => d.netdevs.iter().any(|x| &x.name == n),
            PfMatch::Address(a) => d.address == *a,
            PfMatch::Ids { vendor, device } => d.vendor_id == *vendor && d.device_id == *device,
        })
        .collect()
}

/// Reconciles the node under `root` to `cfg`. `held` are the devices pods hold now.
pub fn reconcile(
    root: &SysRoot,
    cfg: &Config,
    held: &BTreeSet<PciAddress>,
    opts: &Options,
) -> Outcome {
    let mut out = Outcome::default();
    let devices = match sysfs::discover(root) {
        Ok(d) => d,
        Err(e) => {
            out.errors += 1;
            out.condition("node", "DiscoveryFailed", e.to_string());
            return out;
        }
    };
    for (i, p) in cfg.provisioning.iter().enumerate() {
        let pfs = matching_pfs(&devices, &p.pf);
        if pfs.is_empty() {
            out.condition(
                format!("provisioning[{i}]"),
                "PfNotFound",
                format!("no PF matches {:?}", p.pf),
            );
        }
        for pf in pfs {
            provision_pf(root, pf, p, held, opts, &mut out);
        }
    }
    let devices = if out.changes > 0 {
        match sysfs::discover(root) {
            Ok(d) => d,
            Err(e) => {
                out.errors += 1;
                out.condition("node", "DiscoveryFailed", e.to_string());
                return out;
            }
        }
    } else {
        devices
    };
    out.pools = crate::select::build_pools(root, &devices, &cfg.resource_list);
    crate::health::refresh(root, &mut out.pools, held);
    out
}

fn provision_pf(
    root: &SysRoot,
    pf: &PciNetDevice,
    p: &PfProvision,
    held: &BTreeSet<PciAddress>,
    opts: &Options,
    out: &mut Outcome,
) {
    let object = pf.address.to_string();
    let Some(sriov) = &pf.sriov else {
        out.condition(object, "NotSriov", "the PF has no SR-IOV capability");
        return;
    };
    if sriov.num_vfs != p.num_vfs {
        let busy: Vec<String> = sriov
            .vfs
            .iter()
            .filter(|v| held.contains(&v.address))
            .map(|v| v.address.to_string())
            .collect();
        if !busy.is_empty() {
            out.condition(
                object,
                "VfsInUse",
                format!(
                    "changing {} VFs to {} would remove VFs pods hold ({}); retrying later",
                    sriov.num_vfs,
                    p.num_vfs,
                    busy.join(", ")
                ),
            );
            return;
        }
        out.changes += 1;
        match provision::set_num_vfs(root, &pf.address, p.num_vfs, opts.provision_timeout) {
            Ok(vfs) => info!(pf = %pf.address, vfs = vfs.len(), "VFs provisioned"),
            Err(e) => {
                out.errors += 1;
                out.condition(object, "ProvisioningFailed", e.to_string());
                return;
            }
        }
    }
    let vfs = match sysfs::vfs_of(root, &pf.address) {
        Ok(v) => v,
        Err(e) => {
            out.errors += 1;
            out.condition(object, "DiscoveryFailed", e.to_string());
            return;
        }
    };
    let mut netlink: Option<Netlink> = None;
    for vf in vfs {
        let want = p.driver_of(vf.index.0);
        let current = match bind::current_driver(root, &vf.address) {
            Ok(d) => d,
            Err(e) => {
                out.errors += 1;
                out.condition(vf.address.to_string(), "DiscoveryFailed", e.to_string());
                continue;
            }
        };
        let rebind = match want {
            VfDriver::VfioPci => current.as_deref() != Some(VFIO_PCI),
            VfDriver::Netdevice => current.is_none() || current.as_deref() == Some(VFIO_PCI),
        };
        if rebind {
            if held.contains(&vf.address) {
                out.condition(
                    vf.address.to_string(),
                    "VfInUse",
                    "a pod holds this VF; its driver is changed once it is free",
                );
                continue;
            }
            out.changes += 1;
            let result = match want {
                VfDriver::VfioPci => {
                    bind::bind_vfio(root, &vf.address, opts.bind_timeout).map(|_| ())
                }
                VfDriver::Netdevice => {
                    bind::bind_default(root, &vf.address, opts.bind_timeout).map(|_| ())
                }
            };
            match result {
                Ok(()) => info!(vf = %vf.address, driver = ?want, "VF driver bound"),
                Err(e) => {
                    out.errors += 1;
                    out.condition(vf.address.to_string(), "BindFailed", e.to_string());
                    continue;
                }
            }
        }
        if let (VfDriver::Netdevice, Some(mtu)) = (want, p.group_of(vf.index.0).and_then(|g| g.mtu))
        {
            if !held.contains(&vf.address) {
                set_mtu(root, &vf.address, mtu, opts, &mut netlink, out);
            }
        }
    }
}

fn set_mtu(
    root: &SysRoot,
    vf: &PciAddress,
    mtu: u32,
    opts: &Options,
    netlink: &mut Option<Netlink>,
    out: &mut Outcome,
) {
    let name = match provision::wait_vf_netdev(root, vf, opts.bind_timeout) {
        Ok(n) => n,
        Err(e) => {
            out.errors += 1;
            out.condition(vf.to_string(), "MtuFailed", e.to_string());
            return;
        }
    };
    let nl = match netlink {
        Some(nl) => nl,
        None => match Netlink::open() {
            Ok(nl) => netlink.insert(nl),
            Err(e) => {
                out.errors += 1;
                out.condition(vf.to_string(), "MtuFailed", e.to_string());
                return;
            }
        },
    };
    let result = nl.link_by_name(&name).and_then(|link| match link {
        Some(l) if l.mtu == mtu => Ok(false),
        Some(l) => nl.set_mtu(l.index, mtu).map(|()| true),
        None => Ok(false),
    });
    match result {
        Ok(true) => {
            out.changes += 1;
            info!(vf = %vf, netdev = %name, mtu, "VF MTU set");
        }
        Ok(false) => {}
        Err(e) => {
            out.errors += 1;
            out.condition(vf.to_string(), "MtuFailed", e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{contents, copy_fixture};

    fn config(v: serde_json::Value) -> Config {
        Config::from_value(&v).unwrap()
    }

    fn quick() -> Options {
        Options {
            provision_timeout: Duration::from_millis(300),
            bind_timeout: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_node_already_as_configured_is_left_alone() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let before = contents(tree.path());
        let cfg = config(serde_json::json!({
            "provisioning": [
                {"pfName": "enp3s0f0", "numVfs": 4, "vfs": [{"range": "3", "driver": "vfio-pci"}]},
                {"pciAddress": "0000:03:00.1", "numVfs": 0}
            ],
            "resourceList": [
                {"resourceName": "net", "selectors": {"drivers": ["ixgbevf"]}},
                {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"]}}
            ]
        }));
        let out = reconcile(&root, &cfg, &BTreeSet::new(), &quick());
        assert!(out.conditions.is_empty(), "{:#?}", out.conditions);
        assert_eq!((out.changes, out.errors), (0, 0));
        assert_eq!(out.pools[0].devices.len(), 3);
        assert_eq!(out.pools[1].devices.len(), 1);
        assert!(out
            .pools
            .iter()
            .flat_map(|p| p.devices.values())
            .all(|d| d.healthy));
        assert!(
            contents(tree.path()) == before,
            "the reconcile wrote to sysfs"
        );
    }

    #[test]
    fn vfs_pods_hold_are_never_removed_or_rebound() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let before = contents(tree.path());
        let held: BTreeSet<PciAddress> = ["0000:03:10.2".parse().unwrap()].into();
        let cfg = config(serde_json::json!({"provisioning": [
            {"pfName": "enp3s0f0", "numVfs": 2}
        ]}));
        let out = reconcile(&root, &cfg, &held, &quick());
        assert_eq!(out.conditions.len(), 1, "{:#?}", out.conditions);
        let c = &out.conditions[0];
        assert_eq!(
            (c.object.as_str(), c.reason.as_str()),
            ("0000:03:00.0", "VfsInUse")
        );
        assert!(c.message.contains("0000:03:10.2"), "{}", c.message);

        // Rebinding a held VF to vfio-pci is refused the same way.
        let cfg = config(serde_json::json!({"provisioning": [
            {"pfName": "enp3s0f0", "numVfs": 4, "vfs": [{"range": "1,3", "driver": "vfio-pci"}]}
        ]}));
        let out = reconcile(&root, &cfg, &held, &quick());
        assert_eq!(out.conditions[0].reason, "VfInUse");
        assert_eq!(out.conditions[0].object, "0000:03:10.2");
        assert_eq!(out.changes, 0);
        assert!(
            contents(tree.path()) == before,
            "a held VF's PF or driver was touched"
        );
    }

    #[test]
    fn kernel_failures_become_conditions_naming_the_pf() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        // A fixture has no kernel behind it: the write lands but no VFs appear.
        let cfg = config(serde_json::json!({"provisioning": [
            {"pciAddress": "0000:03:00.1", "numVfs": 2},
            {"pfName": "nosuchpf", "numVfs": 1}
        ]}));
        let out = reconcile(&root, &cfg, &BTreeSet::new(), &quick());
        let reasons: Vec<(&str, &str)> = out
            .conditions
            .iter()
            .map(|c| (c.object.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("0000:03:00.1", "ProvisioningFailed"),
                ("provisioning[1]", "PfNotFound")
            ]
        );
        assert_eq!(out.errors, 1);
    }
}
