//! What the kernel itself says about whether a VF is in use, independent of any kubelet:
//!
//! - a VF without a driver is free;
//! - a VF bound to vfio-pci is in use while its group device (`/dev/vfio/<group>`, or
//!   `/dev/vfio/noiommu-<group>`) is open: the kernel lets one user open a group at a time and
//!   answers EBUSY to the next, so a successful open (closed at once) says nobody holds it;
//! - a VF bound to any other driver is a netdev VF, and it is free only while its netdev is in view
//!   of the host network namespace (`net/<name>` under the device in the host's sysfs). A CNI
//!   moves the netdev into the pod's namespace, where the host's sysfs no longer shows it; a
//!   driver without netdevs (a user-space driver other than vfio-pci) looks the same, and is
//!   treated the same way: in use.
//!
//! Anything that cannot be read is [`Usage::Unknown`]; callers that change VFs treat it as in use.
//! Everything is read under a [`SysRoot`], so fixture trees express each state (a `net` directory
//! left empty, a group device missing or replaced by a directory).

use std::fs::OpenOptions;
use std::path::Path;

use nix::errno::Errno;

use crate::paths::{attr, drivers, SysRoot};
use crate::sysfs;
use crate::types::PciAddress;

/// The kernel's answer for one VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// Nothing in the kernel says the VF is used.
    Free,
    /// The kernel shows a user; the sentence says what shows it.
    InUse(String),
    /// The kernel's state could not be read; the sentence says what failed.
    Unknown(String),
}

impl Usage {
    pub fn is_free(&self) -> bool {
        matches!(self, Usage::Free)
    }
}

/// Whether the kernel shows VF `vf` in use (see the module documentation for the rules).
pub fn vf_usage(root: &SysRoot, vf: &PciAddress) -> Usage {
    if !root.pci_device(vf).exists() {
        // A VF that no longer exists cannot be in use, and nothing can change it either.
        return Usage::Free;
    }
    let driver = match sysfs::link_name(&root.pci_attr(vf, attr::DRIVER)) {
        Ok(d) => d,
        Err(e) => return Usage::Unknown(format!("cannot read the driver of VF {vf}: {e}")),
    };
    match driver.as_deref() {
        None => Usage::Free,
        Some(drivers::VFIO_PCI) => vfio_usage(root, vf),
        Some(driver) => match sysfs::has_netdev(root, vf) {
            Ok(true) => Usage::Free,
            Ok(false) => Usage::InUse(format!(
                "VF {vf} is bound to {driver} but has no netdev in the host network namespace \
                 (a pod's namespace holds it)"
            )),
            Err(e) => Usage::Unknown(format!("cannot read the netdevs of VF {vf}: {e}")),
        },
    }
}

fn vfio_usage(root: &SysRoot, vf: &PciAddress) -> Usage {
    let group = match sysfs::iommu_group_of(root, vf) {
        Ok(Some(g)) => g,
        Ok(None) => {
            return Usage::Unknown(format!(
                "VF {vf} is bound to vfio-pci but has no IOMMU group"
            ))
        }
        Err(e) => return Usage::Unknown(format!("cannot read the IOMMU group of VF {vf}: {e}")),
    };
    let plain = root.dev_vfio_group(group, false);
    let noiommu = root.dev_vfio_group(group, true);
    let Some(path) = [&plain, &noiommu].into_iter().find(|p| p.exists()) else {
        return Usage::Unknown(format!(
            "VF {vf} is bound to vfio-pci but {} is missing",
            plain.display()
        ));
    };
    group_usage(vf, path)
}

/// Opens the group device and closes it again at once.
fn group_usage(vf: &PciAddress, path: &Path) -> Usage {
    let opened = OpenOptions::new().read(true).write(true).open(path);
    match opened {
        Ok(file) => {
            drop(file);
            Usage::Free
        }
        Err(e) => open_error(vf, path, &e),
    }
}

/// The meaning of a failed open of a vfio group device.
fn open_error(vf: &PciAddress, path: &Path, e: &std::io::Error) -> Usage {
    if e.raw_os_error() == Some(Errno::EBUSY as i32) {
        Usage::InUse(format!(
            "VF {vf} is bound to vfio-pci and {} is open (EBUSY)",
            path.display()
        ))
    } else {
        Usage::Unknown(format!(
            "cannot tell whether {} of VF {vf} is open: {e}",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;

    /// A minimal tree: one VF, optionally bound to `driver`, with its IOMMU group.
    fn tree(driver: Option<&str>) -> (tempfile::TempDir, SysRoot, PciAddress) {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot::new(dir.path());
        let vf: PciAddress = "0000:03:10.2".parse().unwrap();
        let dev = root.pci_device(&vf);
        std::fs::create_dir_all(&dev).unwrap();
        if let Some(d) = driver {
            let drv = root.pci_driver(d).unwrap();
            std::fs::create_dir_all(&drv).unwrap();
            symlink(&drv, dev.join(attr::DRIVER)).unwrap();
        }
        let group = root.iommu_groups().join("73");
        std::fs::create_dir_all(&group).unwrap();
        symlink(&group, dev.join(attr::IOMMU_GROUP)).unwrap();
        std::fs::create_dir_all(root.dev_vfio()).unwrap();
        (dir, root, vf)
    }

    fn netdev_dir(root: &SysRoot, vf: &PciAddress) -> PathBuf {
        root.pci_attr(vf, attr::NET)
    }

    #[test]
    fn an_unbound_or_missing_vf_is_free() {
        let (_d, root, vf) = tree(None);
        assert_eq!(vf_usage(&root, &vf), Usage::Free);
        assert_eq!(
            vf_usage(&root, &"0000:03:10.4".parse().unwrap()),
            Usage::Free
        );
    }

    #[test]
    fn a_netdev_vf_is_in_use_once_its_netdev_leaves_the_host_namespace() {
        let (_d, root, vf) = tree(Some("ixgbevf"));
        std::fs::create_dir_all(netdev_dir(&root, &vf).join("enp3s16f2")).unwrap();
        assert_eq!(vf_usage(&root, &vf), Usage::Free);

        // What the host sees once a CNI moved the netdev into a pod: `net/` empty, or gone.
        std::fs::remove_dir(netdev_dir(&root, &vf).join("enp3s16f2")).unwrap();
        let u = vf_usage(&root, &vf);
        assert!(
            matches!(&u, Usage::InUse(why) if why.contains("0000:03:10.2") && why.contains("ixgbevf")),
            "{u:?}"
        );
        std::fs::remove_dir(netdev_dir(&root, &vf)).unwrap();
        assert!(matches!(vf_usage(&root, &vf), Usage::InUse(_)));
    }

    #[test]
    fn a_vfio_vf_is_free_when_its_group_opens_and_unknown_when_it_cannot_be_read() {
        let (_d, root, vf) = tree(Some(drivers::VFIO_PCI));
        // No group device: nothing proves the VF free.
        let u = vf_usage(&root, &vf);
        assert!(
            matches!(&u, Usage::Unknown(why) if why.contains("dev/vfio/73")),
            "{u:?}"
        );
        // A group device that opens is closed again and says free.
        std::fs::write(root.dev_vfio_group(73, false), "").unwrap();
        assert_eq!(vf_usage(&root, &vf), Usage::Free);
        // In no-IOMMU mode the node is noiommu-<group>.
        std::fs::remove_file(root.dev_vfio_group(73, false)).unwrap();
        std::fs::write(root.dev_vfio_group(73, true), "").unwrap();
        assert_eq!(vf_usage(&root, &vf), Usage::Free);
        // A group device that cannot be opened (here a directory: EISDIR) is not proof of free.
        std::fs::remove_file(root.dev_vfio_group(73, true)).unwrap();
        std::fs::create_dir(root.dev_vfio_group(73, false)).unwrap();
        assert!(matches!(vf_usage(&root, &vf), Usage::Unknown(_)));
    }

    #[test]
    fn ebusy_on_the_group_device_means_in_use() {
        let vf: PciAddress = "0000:03:10.6".parse().unwrap();
        let path = Path::new("/dev/vfio/73");
        let busy = std::io::Error::from_raw_os_error(Errno::EBUSY as i32);
        assert!(matches!(
            open_error(&vf, path, &busy),
            Usage::InUse(why) if why.contains("EBUSY") && why.contains("/dev/vfio/73")
        ));
        let denied = std::io::Error::from_raw_os_error(Errno::EACCES as i32);
        assert!(matches!(open_error(&vf, path, &denied), Usage::Unknown(_)));
    }
}
