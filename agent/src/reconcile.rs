//! One reconcile: bring the node to the configured VF counts and drivers, then rebuild the pools
//! and read their health. Blocking (sysfs writes can stall): run it on a blocking thread.
//!
//! It never changes a PF's VF count or rebinds a VF unless both the kubelet and the kernel say the
//! VFs concerned are free ([`crate::guard`]; changing a non-zero count removes every VF first); a
//! refusal becomes a condition, is counted, and is retried. On a node already as configured it
//! writes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use tracing::{info, warn};
use vfcore::netlink::{LinkOps, Netlink};
use vfcore::paths::drivers::VFIO_PCI;
use vfcore::sysfs::{self, PciNetDevice};
use vfcore::{bind, provision, PciAddress, SysRoot};

use crate::config::{Config, PfMatch, PfProvision, VfDriver};
use crate::guard;
use crate::podres::Held;
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
    /// VF count changes and driver rebinds refused because a VF is or may be in use.
    pub refused: u64,
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

/// Reconciles the node under `root` to `cfg`. `held` is what the kubelet says pods hold now.
pub fn reconcile(root: &SysRoot, cfg: &Config, held: &Held, opts: &Options) -> Outcome {
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
    crate::health::refresh(root, &mut out.pools, &held_for_health(held, &devices));
    out
}

/// The devices whose missing netdev is not a fault: those pods hold, or every VF when the kubelet
/// cannot tell.
pub fn held_for_health(held: &Held, devices: &[PciNetDevice]) -> BTreeSet<PciAddress> {
    match held {
        Held::NoKubelet => BTreeSet::new(),
        Held::Known(h) => h.clone(),
        Held::Unknown(_) => devices
            .iter()
            .filter(|d| d.physfn.is_some())
            .map(|d| d.address)
            .collect(),
    }
}

fn provision_pf(
    root: &SysRoot,
    pf: &PciNetDevice,
    p: &PfProvision,
    held: &Held,
    opts: &Options,
    out: &mut Outcome,
) {
    let object = pf.address.to_string();
    let Some(sriov) = &pf.sriov else {
        out.condition(object, "NotSriov", "the PF has no SR-IOV capability");
        return;
    };
    // VFs this reconcile created: nothing can hold them yet.
    let mut created = false;
    if sriov.num_vfs != p.num_vfs {
        let existing = sriov.vfs.iter().map(|v| &v.address);
        if let Some(r) = guard::refusal(root, existing, held) {
            out.refused += 1;
            out.condition(
                object,
                r.reason("VfsInUse", "VfsMaybeInUse"),
                format!(
                    "changing {} VFs to {} would remove VFs that are or may be in use ({}); \
                     retrying later",
                    sriov.num_vfs,
                    p.num_vfs,
                    r.details.join("; ")
                ),
            );
            return;
        }
        out.changes += 1;
        match provision::set_num_vfs(root, &pf.address, p.num_vfs, opts.provision_timeout) {
            Ok(vfs) => {
                created = true;
                info!(pf = %pf.address, vfs = vfs.len(), "VFs provisioned");
                crate::audit::record(vfaudit::Event::VfsProvisioned, |r| {
                    r.devices = vfs.iter().map(|v| v.address.to_string()).collect();
                    r.detail = Some(format!("pf {}", pf.address));
                });
            }
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
            if matches!(held, Held::Known(h) if h.contains(&vf.address)) {
                out.refused += 1;
                out.condition(
                    vf.address.to_string(),
                    "VfInUse",
                    "a pod holds this VF; its driver is changed once it is free",
                );
                continue;
            }
            if !created {
                if let Some(r) = guard::refusal(root, [&vf.address], held) {
                    out.refused += 1;
                    out.condition(
                        vf.address.to_string(),
                        r.reason("VfInUse", "VfMaybeInUse"),
                        format!(
                            "{}; its driver is changed once it is free",
                            r.details.join("; ")
                        ),
                    );
                    continue;
                }
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
            if !held.may_hold(&vf.address) {
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
        let out = reconcile(&root, &cfg, &Held::Known(BTreeSet::new()), &quick());
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
        let held = Held::Known(["0000:03:10.2".parse().unwrap()].into());
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
        let out = reconcile(&root, &cfg, &Held::Known(BTreeSet::new()), &quick());
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

    fn numvfs(root: &SysRoot, pf: &str) -> String {
        std::fs::read_to_string(root.pci_attr(&pf.parse().unwrap(), "sriov_numvfs")).unwrap()
    }

    #[test]
    fn a_vf_whose_netdev_left_the_host_is_never_removed_or_rebound() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        // VF 1 (0000:03:10.2) is bound to ixgbevf, but its netdev is in a pod's namespace.
        std::fs::remove_dir_all(root.pci_attr(&"0000:03:10.2".parse().unwrap(), "net")).unwrap();
        let before = contents(tree.path());
        // Whether or not a kubelet runs here, and though it says nothing is held.
        for held in [Held::NoKubelet, Held::Known(BTreeSet::new())] {
            let cfg = config(serde_json::json!({"provisioning": [
                {"pfName": "enp3s0f0", "numVfs": 2}
            ]}));
            let out = reconcile(&root, &cfg, &held, &quick());
            let c = &out.conditions[0];
            assert_eq!(
                (c.object.as_str(), c.reason.as_str()),
                ("0000:03:00.0", "VfsInUse")
            );
            assert!(c.message.contains("0000:03:10.2"), "{}", c.message);
            assert!(c.message.contains("network namespace"), "{}", c.message);
            assert_eq!((out.changes, out.refused), (0, 1));

            let cfg = config(serde_json::json!({"provisioning": [
                {"pfName": "enp3s0f0", "numVfs": 4, "vfs": [{"range": "1,3", "driver": "vfio-pci"}]}
            ]}));
            let out = reconcile(&root, &cfg, &held, &quick());
            assert_eq!(out.conditions.len(), 1, "{:#?}", out.conditions);
            assert_eq!(out.conditions[0].object, "0000:03:10.2");
            assert_eq!(out.conditions[0].reason, "VfInUse");
            assert_eq!((out.changes, out.refused), (0, 1));
        }
        assert!(contents(tree.path()) == before, "a VF in use was touched");
    }

    #[test]
    fn a_kubelet_that_does_not_answer_refuses_changes_to_existing_vfs_only() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let unknown = Held::Unknown("the PodResources socket is missing".into());
        let before = contents(tree.path());
        let cfg = config(serde_json::json!({"provisioning": [
            {"pfName": "enp3s0f0", "numVfs": 2}
        ]}));
        let out = reconcile(&root, &cfg, &unknown, &quick());
        let c = &out.conditions[0];
        assert_eq!(
            (c.object.as_str(), c.reason.as_str()),
            ("0000:03:00.0", "VfsMaybeInUse")
        );
        assert!(c.message.contains("socket is missing"), "{}", c.message);
        assert_eq!((out.changes, out.refused), (0, 1));
        assert!(contents(tree.path()) == before, "the PF's VFs were touched");

        // A PF without VFs has nothing a pod could hold: its VFs are created.
        let cfg = config(serde_json::json!({"provisioning": [
            {"pciAddress": "0000:03:00.1", "numVfs": 2}
        ]}));
        let out = reconcile(&root, &cfg, &unknown, &quick());
        assert_eq!(out.refused, 0);
        assert_eq!(out.changes, 1);
        assert_eq!(numvfs(&root, "0000:03:00.1").trim(), "2");
    }

    #[test]
    fn without_a_kubelet_free_vfs_are_changed_as_before() {
        let tree = copy_fixture("ixgbe-82599");
        let root = SysRoot::new(tree.path());
        let cfg = config(serde_json::json!({"provisioning": [
            {"pfName": "enp3s0f0", "numVfs": 2}
        ]}));
        let out = reconcile(&root, &cfg, &Held::NoKubelet, &quick());
        assert_eq!(out.refused, 0, "{:#?}", out.conditions);
        assert_eq!(out.changes, 1);
        // The fixture has no kernel behind it: the count is written, no VFs follow.
        assert_eq!(numvfs(&root, "0000:03:00.0").trim(), "2");
        assert_eq!(out.conditions[0].reason, "ProvisioningFailed");
    }
}
