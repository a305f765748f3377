//! A [`Host`] over the in-memory kernel of [`vfcore::netlink::fake`], for unit tests: namespaces
//! are names, the VFs are given, and a PCI function's netdevs are the fake links it owns in the
//! host namespace.

use std::sync::{Arc, Mutex, MutexGuard};

use vfcore::netlink::fake::{FakeKernel, FakeNetlink, HOST_NS};
use vfcore::{IfIndex, PciAddress};

use super::device::{kernel, DeviceError, Vf};
use super::host::Host;

pub struct FakeHost {
    pub kernel: Arc<Mutex<FakeKernel>>,
    pub vfs: Vec<Vf>,
}

impl FakeHost {
    pub fn kernel(&self) -> MutexGuard<'_, FakeKernel> {
        self.kernel
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self, path: &str) -> Result<String, DeviceError> {
        if self.kernel().has_netns(path) {
            Ok(path.to_string())
        } else {
            Err(DeviceError::NoNetns {
                path: path.to_string(),
            })
        }
    }
}

impl Host for FakeHost {
    type Links = FakeNetlink;
    type Ns = String;

    fn resolve_vf(&self, pci: PciAddress) -> Result<Vf, DeviceError> {
        self.vfs
            .iter()
            .find(|v| v.pci == pci)
            .cloned()
            .ok_or(DeviceError::UnknownVf { pci })
    }

    fn links(&self) -> Result<FakeNetlink, DeviceError> {
        Ok(FakeNetlink::new(self.kernel.clone(), HOST_NS))
    }

    fn run_in<T, F>(&self, ns: &String, f: F) -> Result<T, DeviceError>
    where
        T: Send,
        F: FnOnce(&mut FakeNetlink) -> Result<T, DeviceError> + Send,
    {
        let mut nl = FakeNetlink::new(self.kernel.clone(), ns);
        f(&mut nl)
    }

    fn move_link(
        &self,
        nl: &mut FakeNetlink,
        link: IfIndex,
        to: &String,
    ) -> Result<(), DeviceError> {
        nl.move_to(link, to).map_err(kernel)
    }

    fn open_netns(&self, path: &str) -> Result<String, DeviceError> {
        self.open(path)
    }

    fn netns_alive(&self, path: &str) -> bool {
        !path.is_empty() && self.kernel().has_netns(path)
    }

    fn current_netns(&self) -> Result<String, DeviceError> {
        Ok(HOST_NS.to_string())
    }

    fn named_netns(&self, name: &str) -> Result<String, DeviceError> {
        self.open(name)
    }

    fn open_or_create_named(&self, name: &str) -> Result<String, DeviceError> {
        self.kernel().add_netns(name);
        Ok(name.to_string())
    }

    fn delete_named(&self, name: &str) -> Result<(), DeviceError> {
        self.kernel().del_netns(name);
        Ok(())
    }

    fn netdevs_of(&self, pci: &PciAddress) -> Result<Vec<String>, DeviceError> {
        Ok(self
            .kernel()
            .links_of(pci)
            .into_iter()
            .filter(|l| l.netns == HOST_NS)
            .map(|l| l.name.clone())
            .collect())
    }

    /// As a VF driver does when it probes: the netdev takes the MAC its PF holds for it.
    fn rebind(&self, pci: &PciAddress) -> Result<String, DeviceError> {
        let vf = self.resolve_vf(*pci)?;
        let mut k = self.kernel();
        let pf = k.links_of(&vf.pf).first().map(|l| l.index);
        let admin = pf.and_then(|pf| k.vf(pf, vf.index)).map(|c| c.mac);
        let netdev = k.links_of(pci).first().map(|l| l.index);
        if let (Some(admin), Some(netdev)) = (admin.filter(|m| !m.is_zero()), netdev) {
            if let Some(link) = k.link_mut(netdev) {
                link.mac = Some(admin);
            }
        }
        Ok(vf.driver.unwrap_or_default())
    }

    fn wait_vf_netdev(&self, pci: &PciAddress) -> Result<String, DeviceError> {
        self.netdevs_of(pci)?
            .into_iter()
            .next()
            .ok_or(DeviceError::NoNetdevInHost { pci: *pci })
    }
}
