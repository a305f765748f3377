//! The seam between the plugin's logic and the node: netlink handles, network namespaces and
//! the sysfs facts ADD, DEL and CHECK read (which VF a PCI address is, which netdev a PCI
//! function has in the host), and the driver rebind that makes a VF read its MAC from its PF.
//!
//! [`RealHost`] is the node itself: [`Netlink`] handles, [`NetNs`] namespaces, sysfs under a
//! [`SysRoot`]. Unit tests drive the same logic over an in-memory kernel
//! ([`vfcore::netlink::fake`]).

use vfcore::netlink::{LinkOps, Netlink};
use vfcore::netns::NetNs;
use vfcore::{bind, provision, sysfs, IfIndex, PciAddress, SysRoot};

use super::device::{self, kernel, DeviceError, Vf, KERNEL_TIMEOUT};

/// What the plugin needs from the node.
pub trait Host: Sync {
    /// A netlink handle in one namespace.
    type Links: LinkOps;
    /// An open network namespace.
    type Ns: Send + Sync;

    /// The VF at `pci` (code 7 when it is not a VF of this node).
    fn resolve_vf(&self, pci: PciAddress) -> Result<Vf, DeviceError>;
    /// A handle in the host's (the calling thread's) namespace.
    fn links(&self) -> Result<Self::Links, DeviceError>;
    /// Runs `f` with a handle inside `ns`.
    fn run_in<T, F>(&self, ns: &Self::Ns, f: F) -> Result<T, DeviceError>
    where
        T: Send,
        F: FnOnce(&mut Self::Links) -> Result<T, DeviceError> + Send;
    /// Moves `link`, seen through `nl`, into `to`.
    fn move_link(
        &self,
        nl: &mut Self::Links,
        link: IfIndex,
        to: &Self::Ns,
    ) -> Result<(), DeviceError>;

    /// The namespace at a path (CNI_NETNS).
    fn open_netns(&self, path: &str) -> Result<Self::Ns, DeviceError>;
    /// Whether a netns path still names a live namespace.
    fn netns_alive(&self, path: &str) -> bool;
    /// The host's namespace (the calling thread's).
    fn current_netns(&self) -> Result<Self::Ns, DeviceError>;
    /// The named namespace (`/run/netns/<name>`).
    fn named_netns(&self, name: &str) -> Result<Self::Ns, DeviceError>;
    /// The named namespace, created when missing.
    fn open_or_create_named(&self, name: &str) -> Result<Self::Ns, DeviceError>;
    fn delete_named(&self, name: &str) -> Result<(), DeviceError>;

    /// The names of the netdevs of a PCI function in the host.
    fn netdevs_of(&self, pci: &PciAddress) -> Result<Vec<String>, DeviceError>;
    /// Rebinds the VF to its default driver; returns the driver.
    fn rebind(&self, pci: &PciAddress) -> Result<String, DeviceError>;
    /// Waits for the VF's netdev to appear in the host; returns its name.
    fn wait_vf_netdev(&self, pci: &PciAddress) -> Result<String, DeviceError>;
}

/// The node: netlink, namespaces and sysfs under `root`.
#[derive(Debug, Clone, Copy)]
pub struct RealHost<'a> {
    pub root: &'a SysRoot,
}

impl<'a> RealHost<'a> {
    pub fn new(root: &'a SysRoot) -> Self {
        Self { root }
    }
}

/// Whether a netns path still names a live namespace.
pub fn netns_alive(path: &str) -> bool {
    !path.is_empty() && NetNs::open(path).is_ok()
}

impl Host for RealHost<'_> {
    type Links = Netlink;
    type Ns = NetNs;

    fn resolve_vf(&self, pci: PciAddress) -> Result<Vf, DeviceError> {
        Vf::resolve(self.root, pci)
    }

    fn links(&self) -> Result<Netlink, DeviceError> {
        Netlink::open().map_err(kernel)
    }

    fn run_in<T, F>(&self, ns: &NetNs, f: F) -> Result<T, DeviceError>
    where
        T: Send,
        F: FnOnce(&mut Netlink) -> Result<T, DeviceError> + Send,
    {
        ns.run(|| -> Result<T, DeviceError> {
            let mut nl = Netlink::open().map_err(kernel)?;
            f(&mut nl)
        })
        .map_err(kernel)?
    }

    fn move_link(&self, nl: &mut Netlink, link: IfIndex, to: &NetNs) -> Result<(), DeviceError> {
        nl.move_to_netns(link, to).map_err(kernel)
    }

    fn open_netns(&self, path: &str) -> Result<NetNs, DeviceError> {
        NetNs::open(path).map_err(kernel)
    }

    fn netns_alive(&self, path: &str) -> bool {
        netns_alive(path)
    }

    fn current_netns(&self) -> Result<NetNs, DeviceError> {
        NetNs::current().map_err(kernel)
    }

    fn named_netns(&self, name: &str) -> Result<NetNs, DeviceError> {
        NetNs::named(self.root, name).map_err(kernel)
    }

    fn open_or_create_named(&self, name: &str) -> Result<NetNs, DeviceError> {
        device::open_or_create_named(self.root, name)
    }

    fn delete_named(&self, name: &str) -> Result<(), DeviceError> {
        NetNs::delete_named(self.root, name).map_err(kernel)
    }

    fn netdevs_of(&self, pci: &PciAddress) -> Result<Vec<String>, DeviceError> {
        Ok(sysfs::netdevs_of(self.root, pci)
            .map_err(kernel)?
            .into_iter()
            .map(|n| n.name)
            .collect())
    }

    fn rebind(&self, pci: &PciAddress) -> Result<String, DeviceError> {
        bind::bind_default(self.root, pci, KERNEL_TIMEOUT).map_err(kernel)
    }

    fn wait_vf_netdev(&self, pci: &PciAddress) -> Result<String, DeviceError> {
        provision::wait_vf_netdev(self.root, pci, KERNEL_TIMEOUT).map_err(kernel)
    }
}
