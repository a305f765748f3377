//! An in-memory [`LinkOps`] for unit tests of code that drives links and VFs: a [`FakeKernel`]
//! keeps links (name, MAC, MTU, up, namespace, alternative names, the VFs a PF reports) by
//! namespace name, and [`FakeNetlink`] is a handle on one of its namespaces. Faults can be
//! injected: [`FakeKernel::fail`] makes a chosen call of an operation fail once.
//!
//! Namespaces are plain names; `"host"` ([`HOST_NS`]) always exists. [`LinkOps::move_to_netns`]
//! takes the target's name from the [`NetNs`] path; code that has no real namespace uses
//! [`FakeNetlink::move_to`]. Deleting a namespace returns its physical links to the host, as the
//! kernel does (renamed `devN` when their name is taken there).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{IfAddress, LinkInfo, LinkOps, NetlinkError, RouteSpec, VfConfig, VfSettings};
use crate::netns::NetNs;
use crate::types::{IfIndex, IfName, MacAddr, PciAddress, VfIndex};

/// The namespace every fake kernel starts with.
pub const HOST_NS: &str = "host";

/// The operations of [`LinkOps`], to name one for a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    LinkByName,
    LinkByIndex,
    Links,
    VfConfigs,
    SetVf,
    SetName,
    SetMac,
    SetMtu,
    SetUp,
    MoveToNetns,
    AddAddress,
    Addresses,
    AddRoute,
    AddAltName,
    DelAltName,
    Routes,
    DelRoute,
    WaitForLink,
}

/// One link of the fake kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeLink {
    pub index: IfIndex,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    pub netns: String,
    pub alt_names: Vec<String>,
    pub kind: Option<String>,
    /// The PCI function behind the netdev (what sysfs would show), `None` for virtual links.
    pub pci: Option<PciAddress>,
    /// The VFs this link reports as their PF.
    pub vfs: Vec<VfConfig>,
    pub addresses: Vec<IfAddress>,
}

impl FakeLink {
    /// A physical link, down, MTU 1500, in the host namespace, without VFs.
    pub fn physical(name: &str, mac: MacAddr, pci: PciAddress) -> Self {
        Self {
            index: IfIndex(0),
            name: name.to_string(),
            mac: Some(mac),
            mtu: 1500,
            up: false,
            netns: HOST_NS.to_string(),
            alt_names: Vec::new(),
            kind: None,
            pci: Some(pci),
            vfs: Vec::new(),
            addresses: Vec::new(),
        }
    }

    fn info(&self) -> LinkInfo {
        LinkInfo {
            index: self.index,
            name: self.name.clone(),
            mac: self.mac,
            mtu: self.mtu,
            up: self.up,
            oper_state: if self.up { "UP" } else { "DOWN" }.to_string(),
            alt_names: self.alt_names.clone(),
            kind: self.kind.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: FakeOp,
    /// Matching calls to let through before the one that fails.
    skip: usize,
}

/// The state of the fake kernel: links, namespaces, routes and pending faults.
#[derive(Debug)]
pub struct FakeKernel {
    links: Vec<FakeLink>,
    namespaces: BTreeSet<String>,
    routes: Vec<(String, RouteSpec)>,
    next_index: u32,
    faults: Vec<Fault>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self {
            links: Vec::new(),
            namespaces: BTreeSet::from([HOST_NS.to_string()]),
            routes: Vec::new(),
            next_index: 1,
            faults: Vec::new(),
        }
    }
}

fn injected(op: FakeOp) -> NetlinkError {
    NetlinkError::Invalid {
        op: format!("{op:?}"),
        reason: "injected fault".to_string(),
    }
}

fn no_such_link(op: &str, link: IfIndex) -> NetlinkError {
    NetlinkError::NoSuchLink {
        op: op.to_string(),
        link: format!("link {link}"),
    }
}

impl FakeKernel {
    /// A kernel shared between handles.
    pub fn shared() -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self::default()))
    }

    /// Adds `link` (its index is assigned) and returns its index.
    pub fn add_link(&mut self, mut link: FakeLink) -> IfIndex {
        link.index = IfIndex(self.next_index);
        self.next_index += 1;
        self.namespaces.insert(link.netns.clone());
        let index = link.index;
        self.links.push(link);
        index
    }

    pub fn add_netns(&mut self, name: &str) {
        self.namespaces.insert(name.to_string());
    }

    pub fn has_netns(&self, name: &str) -> bool {
        self.namespaces.contains(name)
    }

    /// Deletes a namespace: its physical links go back to the host (as `devN` when their name
    /// is taken there), its virtual links and routes disappear.
    pub fn del_netns(&mut self, name: &str) -> bool {
        if name == HOST_NS || !self.namespaces.remove(name) {
            return false;
        }
        self.links.retain(|l| l.netns != name || l.kind.is_none());
        let returning: Vec<usize> = (0..self.links.len())
            .filter(|&i| self.links[i].netns == name)
            .collect();
        for i in returning {
            let taken = self.find(HOST_NS, &self.links[i].name).is_some();
            let link = &mut self.links[i];
            link.netns = HOST_NS.to_string();
            link.up = false;
            link.addresses.clear();
            if taken {
                link.name = format!("dev{}", link.index);
            }
        }
        self.routes.retain(|(ns, _)| ns != name);
        true
    }

    /// The `skip`+1-th call of `op` from now fails, once.
    pub fn fail(&mut self, op: FakeOp, skip: usize) {
        self.faults.push(Fault { op, skip });
    }

    /// Whether an injected fault is still waiting for its call.
    pub fn faults_pending(&self) -> bool {
        !self.faults.is_empty()
    }

    pub fn link(&self, index: IfIndex) -> Option<&FakeLink> {
        self.links.iter().find(|l| l.index == index)
    }

    pub fn link_mut(&mut self, index: IfIndex) -> Option<&mut FakeLink> {
        self.links.iter_mut().find(|l| l.index == index)
    }

    /// The link named (or alternatively named) `name` in `netns`.
    pub fn find(&self, netns: &str, name: &str) -> Option<&FakeLink> {
        self.links
            .iter()
            .find(|l| l.netns == netns && (l.name == name || l.alt_names.iter().any(|a| a == name)))
    }

    /// The links of the PCI function `pci`, in any namespace.
    pub fn links_of(&self, pci: &PciAddress) -> Vec<&FakeLink> {
        self.links
            .iter()
            .filter(|l| l.pci.as_ref() == Some(pci))
            .collect()
    }

    /// VF `vf` as the link `pf` reports it.
    pub fn vf(&self, pf: IfIndex, vf: VfIndex) -> Option<&VfConfig> {
        self.link(pf)?.vfs.iter().find(|c| c.vf == vf)
    }

    pub fn vf_mut(&mut self, pf: IfIndex, vf: VfIndex) -> Option<&mut VfConfig> {
        self.link_mut(pf)?.vfs.iter_mut().find(|c| c.vf == vf)
    }

    pub fn routes_in(&self, netns: &str) -> Vec<RouteSpec> {
        self.routes
            .iter()
            .filter(|(ns, _)| ns == netns)
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn check_fault(&mut self, op: FakeOp) -> Result<(), NetlinkError> {
        let mut fire = None;
        for (i, f) in self.faults.iter_mut().enumerate() {
            if f.op == op {
                if f.skip == 0 {
                    fire = Some(i);
                    break;
                }
                f.skip -= 1;
            }
        }
        match fire {
            Some(i) => {
                self.faults.remove(i);
                Err(injected(op))
            }
            None => Ok(()),
        }
    }

    /// The link `index` in `netns`, or `NoSuchLink` (a link elsewhere is not visible).
    fn local_mut(
        &mut self,
        netns: &str,
        index: IfIndex,
        op: &str,
    ) -> Result<&mut FakeLink, NetlinkError> {
        self.links
            .iter_mut()
            .find(|l| l.index == index && l.netns == netns)
            .ok_or_else(|| no_such_link(op, index))
    }

    fn exists(op: &str, name: &str) -> NetlinkError {
        NetlinkError::Invalid {
            op: op.to_string(),
            reason: format!("a link named {name} exists (EEXIST)"),
        }
    }

    fn move_link(&mut self, from: &str, index: IfIndex, to: &str) -> Result<(), NetlinkError> {
        let op = "moving a link";
        if !self.namespaces.contains(to) {
            return Err(NetlinkError::Invalid {
                op: op.to_string(),
                reason: format!("no network namespace {to}"),
            });
        }
        let name = self.local_mut(from, index, op)?.name.clone();
        if self.find(to, &name).is_some() {
            return Err(Self::exists(op, &name));
        }
        let link = self.local_mut(from, index, op)?;
        link.netns = to.to_string();
        link.up = false;
        link.addresses.clear();
        Ok(())
    }
}

/// A [`LinkOps`] handle on one namespace of a [`FakeKernel`].
#[derive(Debug, Clone)]
pub struct FakeNetlink {
    kernel: Arc<Mutex<FakeKernel>>,
    netns: String,
}

impl FakeNetlink {
    pub fn new(kernel: Arc<Mutex<FakeKernel>>, netns: &str) -> Self {
        Self {
            kernel,
            netns: netns.to_string(),
        }
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// [`LinkOps::move_to_netns`] by namespace name.
    pub fn move_to(&mut self, link: IfIndex, netns: &str) -> Result<(), NetlinkError> {
        let mut k = self.lock();
        k.check_fault(FakeOp::MoveToNetns)?;
        k.move_link(&self.netns, link, netns)
    }

    fn lock(&self) -> MutexGuard<'_, FakeKernel> {
        // A test that panicked while holding the lock has failed already.
        self.kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks the fault for `op`, then runs `f` on the kernel.
    fn with<T>(
        &self,
        op: FakeOp,
        f: impl FnOnce(&mut FakeKernel, &str) -> Result<T, NetlinkError>,
    ) -> Result<T, NetlinkError> {
        let mut k = self.lock();
        k.check_fault(op)?;
        f(&mut k, &self.netns)
    }
}

impl LinkOps for FakeNetlink {
    fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        self.with(FakeOp::LinkByName, |k, ns| {
            Ok(k.find(ns, name).map(FakeLink::info))
        })
    }

    fn link_by_index(&mut self, index: IfIndex) -> Result<Option<LinkInfo>, NetlinkError> {
        self.with(FakeOp::LinkByIndex, |k, ns| {
            Ok(k.links
                .iter()
                .find(|l| l.index == index && l.netns == ns)
                .map(FakeLink::info))
        })
    }

    fn links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError> {
        self.with(FakeOp::Links, |k, ns| {
            Ok(k.links
                .iter()
                .filter(|l| l.netns == ns)
                .map(FakeLink::info)
                .collect())
        })
    }

    fn vf_configs(&mut self, pf: IfIndex) -> Result<Vec<VfConfig>, NetlinkError> {
        self.with(FakeOp::VfConfigs, |k, ns| {
            Ok(k.local_mut(ns, pf, "reading VF configs")?.vfs.clone())
        })
    }

    fn set_vf(
        &mut self,
        pf: IfIndex,
        vf: VfIndex,
        settings: &VfSettings,
    ) -> Result<(), NetlinkError> {
        // One fault check per attribute, as the real handle sends one request per attribute.
        for (_, one) in settings.split() {
            self.with(FakeOp::SetVf, |k, ns| {
                let op = format!("setting VF {vf}");
                let link = k.local_mut(ns, pf, &op)?;
                let c = link.vfs.iter_mut().find(|c| c.vf == vf).ok_or_else(|| {
                    NetlinkError::Invalid {
                        op: op.clone(),
                        reason: format!("no VF {vf}"),
                    }
                })?;
                if let Some(mac) = one.mac {
                    c.mac = mac;
                }
                if let Some(vlan) = one.vlan {
                    c.vlan = vlan;
                    c.qos = one.qos.unwrap_or(0);
                    c.vlan_proto = one.vlan_proto.unwrap_or_default();
                }
                if let Some(rate) = one.min_tx_rate {
                    c.min_tx_rate = rate;
                }
                if let Some(rate) = one.max_tx_rate {
                    c.max_tx_rate = rate;
                }
                if let Some(on) = one.spoofchk {
                    c.spoofchk = Some(on);
                }
                if let Some(on) = one.trust {
                    c.trust = Some(on);
                }
                if let Some(state) = one.link_state {
                    c.link_state = Some(state);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn set_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError> {
        self.with(FakeOp::SetName, |k, ns| {
            let op = format!("renaming link {link} to {name}");
            if let Err(e) = IfName::new(name) {
                return Err(NetlinkError::Invalid {
                    op,
                    reason: e.to_string(),
                });
            }
            if k.find(ns, name).is_some_and(|l| l.index != link) {
                return Err(FakeKernel::exists(&op, name));
            }
            let l = k.local_mut(ns, link, &op)?;
            if l.up {
                return Err(NetlinkError::LinkUp {
                    op,
                    link: l.name.clone(),
                });
            }
            l.name = name.to_string();
            Ok(())
        })
    }

    fn set_mac(&mut self, link: IfIndex, mac: MacAddr) -> Result<(), NetlinkError> {
        self.with(FakeOp::SetMac, |k, ns| {
            k.local_mut(ns, link, "setting a MAC")?.mac = Some(mac);
            Ok(())
        })
    }

    fn set_mtu(&mut self, link: IfIndex, mtu: u32) -> Result<(), NetlinkError> {
        self.with(FakeOp::SetMtu, |k, ns| {
            k.local_mut(ns, link, "setting an MTU")?.mtu = mtu;
            Ok(())
        })
    }

    fn set_up(&mut self, link: IfIndex, up: bool) -> Result<(), NetlinkError> {
        self.with(FakeOp::SetUp, |k, ns| {
            k.local_mut(ns, link, "setting a link up or down")?.up = up;
            Ok(())
        })
    }

    fn move_to_netns(&mut self, link: IfIndex, netns: &NetNs) -> Result<(), NetlinkError> {
        let to = netns.path().display().to_string();
        self.move_to(link, &to)
    }

    fn add_address(
        &mut self,
        link: IfIndex,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        self.with(FakeOp::AddAddress, |k, ns| {
            k.local_mut(ns, link, "adding an address")?
                .addresses
                .push(IfAddress { addr, prefix_len });
            Ok(())
        })
    }

    fn addresses(&mut self, link: IfIndex) -> Result<Vec<IfAddress>, NetlinkError> {
        self.with(FakeOp::Addresses, |k, ns| {
            Ok(k.local_mut(ns, link, "listing addresses")?
                .addresses
                .clone())
        })
    }

    fn add_route(&mut self, route: &RouteSpec) -> Result<(), NetlinkError> {
        self.with(FakeOp::AddRoute, |k, ns| {
            k.routes.push((ns.to_string(), route.clone()));
            Ok(())
        })
    }

    fn add_alt_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError> {
        self.with(FakeOp::AddAltName, |k, ns| {
            let op = format!("adding alternative name {name}");
            if k.find(ns, name).is_some() {
                return Err(FakeKernel::exists(&op, name));
            }
            k.local_mut(ns, link, &op)?.alt_names.push(name.to_string());
            Ok(())
        })
    }

    fn del_alt_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError> {
        self.with(FakeOp::DelAltName, |k, ns| {
            k.local_mut(ns, link, "removing an alternative name")?
                .alt_names
                .retain(|a| a != name);
            Ok(())
        })
    }

    fn routes(&mut self) -> Result<Vec<RouteSpec>, NetlinkError> {
        self.with(FakeOp::Routes, |k, ns| Ok(k.routes_in(ns)))
    }

    fn del_route(&mut self, route: &RouteSpec) -> Result<(), NetlinkError> {
        self.with(FakeOp::DelRoute, |k, ns| {
            let before = k.routes.len();
            k.routes.retain(|(n, r)| !(n == ns && r == route));
            if k.routes.len() == before {
                return Err(NetlinkError::Invalid {
                    op: "deleting a route".to_string(),
                    reason: "no such route".to_string(),
                });
            }
            Ok(())
        })
    }

    /// Does not wait: the fake kernel changes only when told to.
    fn wait_for_link(&mut self, name: &str, timeout: Duration) -> Result<LinkInfo, NetlinkError> {
        self.with(FakeOp::WaitForLink, |k, ns| {
            k.find(ns, name)
                .map(FakeLink::info)
                .ok_or_else(|| NetlinkError::WaitTimeout {
                    name: name.to_string(),
                    timeout,
                })
        })
    }
}

#[cfg(test)]
#[path = "fake_tests.rs"]
mod tests;
