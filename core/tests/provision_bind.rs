//! Provisioning and binding against temp copies of the fixtures: validation and error paths, and
//! the full flows against a small stand-in for the kernel's side (a thread that reacts to the
//! writes the way the PCI core does). Real kernel behaviour is proven in the QEMU lab.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{pci, snapshot, temp_copy};
use vfcore::paths::attr;
use vfcore::{bind, provision, sysfs, PciAddress, SysRoot};

const SHORT: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(10);

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A stand-in for the kernel: a thread that turns `sriov_numvfs` contents into VF directories and
/// links, and `unbind`/`drivers_probe` writes into driver links (honouring `driver_override`).
struct FakeKernel {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKernel {
    /// `vf_driver` is what a new VF (or a VF probed without override) binds to.
    fn start(root: &SysRoot, pfs: &[&str], vf_driver: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let root = root.clone();
        let pfs: Vec<PciAddress> = pfs.iter().map(|p| pci(p)).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                for pf in &pfs {
                    sync_vfs(&root, pf, vf_driver);
                }
                sync_bus(&root, vf_driver);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn num(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn set_driver(root: &SysRoot, dev: &PciAddress, driver: Option<&str>) {
    let link = root.pci_attr(dev, attr::DRIVER);
    let _ = std::fs::remove_file(&link);
    if let Some(d) = driver {
        std::os::unix::fs::symlink(format!("../../../../bus/pci/drivers/{d}"), &link).unwrap();
        let group = sysfs::read_device(root, dev).unwrap().iommu_group;
        if let (Some(g), "vfio-pci") = (group, d) {
            std::fs::write(root.dev_vfio_group(g, false), "").unwrap();
        }
    }
}

fn sync_vfs(root: &SysRoot, pf: &PciAddress, vf_driver: &str) {
    let Some(want) = num(&root.pci_attr(pf, attr::SRIOV_NUMVFS)) else {
        return;
    };
    let have = sysfs::vfs_of(root, pf).unwrap();
    if have.len() == want as usize {
        return;
    }
    let pf_dir = std::fs::canonicalize(root.pci_device(pf)).unwrap();
    let parent = pf_dir.parent().unwrap();
    for l in &have {
        std::fs::remove_file(pf_dir.join(format!("virtfn{}", l.index))).unwrap();
        std::fs::remove_file(root.pci_device(&l.address)).unwrap();
        std::fs::remove_dir_all(parent.join(l.address.to_string())).unwrap();
    }
    let offset = num(&root.pci_attr(pf, attr::SRIOV_OFFSET)).unwrap();
    let stride = num(&root.pci_attr(pf, attr::SRIOV_STRIDE)).unwrap();
    let autoprobe = num(&root.pci_attr(pf, attr::SRIOV_DRIVERS_AUTOPROBE)) == Some(1);
    let vf_dev = read(root.pci_attr(pf, attr::SRIOV_VF_DEVICE));
    let vendor = read(root.pci_attr(pf, attr::VENDOR));
    for i in 0..want {
        let vf = PciAddress::from_routing_id(
            0,
            (u32::from(pf.routing_id()) + offset + stride * i) as u16,
        );
        let dir = parent.join(vf.to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("vendor"), &vendor).unwrap();
        std::fs::write(dir.join("device"), format!("0x{}", vf_dev.trim())).unwrap();
        std::fs::write(dir.join("class"), "0x020000\n").unwrap();
        std::fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        std::os::unix::fs::symlink(format!("../{pf}"), dir.join("physfn")).unwrap();
        let rel = dir
            .strip_prefix(std::fs::canonicalize(root.root()).unwrap().join("sys"))
            .unwrap();
        std::os::unix::fs::symlink(Path::new("../../..").join(rel), root.pci_device(&vf)).unwrap();
        std::os::unix::fs::symlink(format!("../{vf}"), pf_dir.join(format!("virtfn{i}"))).unwrap();
        if autoprobe {
            set_driver(root, &vf, Some(vf_driver));
        }
    }
}

fn sync_bus(root: &SysRoot, default_driver: &str) {
    for entry in std::fs::read_dir(root.pci_drivers()).unwrap() {
        let unbind = entry.unwrap().path().join(attr::UNBIND);
        let text = read(&unbind);
        if let Ok(dev) = text.trim().parse::<PciAddress>() {
            set_driver(root, &dev, None);
            std::fs::write(&unbind, "").unwrap();
        }
    }
    let probe = root.pci_drivers_probe();
    if let Ok(dev) = read(&probe).trim().parse::<PciAddress>() {
        let over = read(root.pci_attr(&dev, attr::DRIVER_OVERRIDE));
        let over = over.trim();
        let driver = if over.is_empty() || over == "(null)" {
            default_driver
        } else {
            over
        };
        set_driver(root, &dev, Some(driver));
        std::fs::write(&probe, "").unwrap();
    }
}

#[test]
fn more_vfs_than_total_are_refused_before_any_write() {
    let (dir, root) = temp_copy("ixgbe-82599");
    let before = snapshot(dir.path());
    let err = provision::set_num_vfs(&root, &pci("0000:03:00.1"), 64, LONG).unwrap_err();
    assert!(matches!(
        err,
        provision::Error::OutOfRange {
            total: 63,
            want: 64,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "PF 0000:03:00.1 supports at most 63 VFs, 64 requested (ERANGE)"
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn the_current_count_is_a_no_op() {
    let (dir, root) = temp_copy("ixgbe-82599");
    let before = snapshot(dir.path());
    let vfs = provision::set_num_vfs(&root, &pci("0000:03:00.0"), 4, SHORT).unwrap();
    assert_eq!(vfs.len(), 4);
    assert_eq!(vfs[3].address, pci("0000:03:10.6"));
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn non_pfs_and_missing_devices_are_refused() {
    let (_dir, root) = temp_copy("virtio-vm");
    let err = provision::set_num_vfs(&root, &pci("0000:01:00.0"), 1, SHORT).unwrap_err();
    assert!(matches!(err, provision::Error::NotSriov { .. }), "{err:?}");
    let err = provision::set_num_vfs(&root, &pci("0000:09:00.0"), 1, SHORT).unwrap_err();
    assert_eq!(err.to_string(), "PCI device 0000:09:00.0 does not exist");
}

#[test]
fn vfs_that_never_appear_time_out_naming_the_pf() {
    let (_dir, root) = temp_copy("ixgbe-82599");
    let err = provision::set_num_vfs(&root, &pci("0000:03:00.1"), 2, SHORT).unwrap_err();
    assert!(
        matches!(
            err,
            provision::Error::VfsDidNotAppear {
                want: 2,
                found: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("PF 0000:03:00.1 lists 0 VFs, not 2"),
        "{err}"
    );
    assert_eq!(
        read(root.pci_attr(&pci("0000:03:00.1"), attr::SRIOV_NUMVFS)),
        "2\n"
    );
}

#[test]
fn vfs_are_created_changed_and_removed() {
    let (_dir, root) = temp_copy("ixgbe-82599");
    let _kernel = FakeKernel::start(&root, &["0000:03:00.0", "0000:03:00.1"], "ixgbevf");
    let pf1 = pci("0000:03:00.1");
    let vfs = provision::set_num_vfs(&root, &pf1, 3, LONG).unwrap();
    let addrs: Vec<String> = vfs.iter().map(|l| l.address.to_string()).collect();
    assert_eq!(addrs, ["0000:03:10.1", "0000:03:10.3", "0000:03:10.5"]);
    let dev = sysfs::read_device(&root, &vfs[2].address).unwrap();
    assert_eq!(dev.physfn.unwrap().pf, pf1);
    assert_eq!(dev.driver.as_deref(), Some("ixgbevf"));

    // 4 -> 2 on PF0 goes through 0.
    let pf0 = pci("0000:03:00.0");
    assert_eq!(
        provision::set_num_vfs(&root, &pf0, 2, LONG).unwrap().len(),
        2
    );
    assert_eq!(read(root.pci_attr(&pf0, attr::SRIOV_NUMVFS)), "2\n");
    assert!(provision::set_num_vfs(&root, &pf0, 0, LONG)
        .unwrap()
        .is_empty());
    let devs = sysfs::discover(&root).unwrap();
    assert_eq!(devs.iter().filter(|d| d.physfn.is_some()).count(), 3);
}

#[test]
fn autoprobe_off_leaves_new_vfs_unbound() {
    let (_dir, root) = temp_copy("i40e-x710");
    let _kernel = FakeKernel::start(&root, &["0000:3b:00.1"], "iavf");
    let pf1 = pci("0000:3b:00.1");
    let vfs = provision::set_num_vfs(&root, &pf1, 4, LONG).unwrap();
    assert_eq!(vfs.len(), 4);
    for vf in vfs {
        assert_eq!(bind::current_driver(&root, &vf.address).unwrap(), None);
    }
}

#[test]
fn vf_netdevs_are_awaited() {
    let (_dir, root) = temp_copy("ixgbe-82599");
    let vf0 = pci("0000:03:10.0");
    assert_eq!(
        provision::wait_vf_netdev(&root, &vf0, SHORT).unwrap(),
        "enp3s16"
    );
    let dpdk = pci("0000:03:10.6");
    let err = provision::wait_vf_netdev(&root, &dpdk, SHORT).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("VF 0000:03:10.6 has no netdev after"),
        "{err}"
    );
    let dir = root.pci_device(&dpdk).join("net/enp3s16f6");
    let later = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        std::fs::create_dir_all(dir).unwrap();
    });
    assert_eq!(
        provision::wait_vf_netdev(&root, &dpdk, LONG).unwrap(),
        "enp3s16f6"
    );
    later.join().unwrap();
}

#[test]
fn binding_validates_before_writing() {
    let (dir, root) = temp_copy("mlx5-cx5");
    let before = snapshot(dir.path());
    let no_group = pci("0000:5e:00.3");
    let err = bind::bind_vfio(&root, &no_group, SHORT).unwrap_err();
    assert!(matches!(err, bind::Error::NoIommuGroup { .. }));
    assert_eq!(
        err.to_string(),
        "PCI device 0000:5e:00.3 has no IOMMU group, so vfio-pci cannot take it"
    );
    for bad in ["../mlx5_core", "", "..", "a/b"] {
        let err = bind::bind_driver(&root, &no_group, bad, SHORT).unwrap_err();
        assert!(matches!(err, bind::Error::BadDriverName { .. }), "{bad:?}");
    }
    let err = bind::bind_driver(&root, &pci("0000:5e:07.0"), "mlx5_core", SHORT).unwrap_err();
    assert_eq!(err.to_string(), "PCI device 0000:5e:07.0 does not exist");
    let err = bind::bind_driver(&root, &no_group, "igbvf", SHORT).unwrap_err();
    assert!(
        matches!(err, bind::Error::DriverNotLoaded { .. }),
        "{err:?}"
    );
    assert!(bind::current_driver(&root, &pci("0000:5e:07.0")).is_err());
    // Already bound to the target: nothing to do.
    bind::bind_driver(&root, &no_group, "mlx5_core", SHORT).unwrap();
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn a_bind_that_does_not_take_clears_the_override() {
    // Nothing plays the kernel here: the unbind written to the fixture's file never takes.
    let (_dir, root) = temp_copy("ixgbe-82599");
    let vf = pci("0000:03:10.0");
    let err = bind::bind_vfio(&root, &vf, SHORT).unwrap_err();
    assert!(
        matches!(&err, bind::Error::StillBound { driver, .. } if driver == "ixgbevf"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("PCI device 0000:03:10.0 is still bound to ixgbevf"),
        "{err}"
    );
    assert_eq!(
        read(root.pci_driver_attr("ixgbevf", attr::UNBIND).unwrap()),
        "0000:03:10.0"
    );
    // The override is cleared on the failure path too.
    assert_eq!(read(root.pci_attr(&vf, attr::DRIVER_OVERRIDE)), "\n");

    // A probe that binds nothing: the device stays unbound and the override is cleared.
    let (_dir, root) = temp_copy("i40e-x710");
    let unbound = pci("0000:3b:0a.1");
    let err = bind::bind_driver(&root, &unbound, "iavf", SHORT).unwrap_err();
    assert!(
        matches!(err, bind::Error::NotBound { found: None, .. }),
        "{err:?}"
    );
    assert_eq!(read(root.pci_drivers_probe()), "0000:3b:0a.1");
    assert_eq!(read(root.pci_attr(&unbound, attr::DRIVER_OVERRIDE)), "\n");
}

#[test]
fn vfs_move_to_vfio_and_back() {
    let (_dir, root) = temp_copy("ixgbe-82599");
    let _kernel = FakeKernel::start(&root, &[], "ixgbevf");
    let vf = pci("0000:03:10.2");
    let dev = bind::bind_vfio(&root, &vf, LONG).unwrap();
    assert_eq!(dev, root.dev_vfio_group(71, false));
    assert_eq!(
        bind::current_driver(&root, &vf).unwrap().as_deref(),
        Some("vfio-pci")
    );
    assert_eq!(read(root.pci_attr(&vf, attr::DRIVER_OVERRIDE)), "\n");
    assert_eq!(bind::bind_default(&root, &vf, LONG).unwrap(), "ixgbevf");
    // An unbound VF (autoprobe off) is bound without an unbind step.
    let (_dir2, root2) = temp_copy("i40e-x710");
    let _kernel2 = FakeKernel::start(&root2, &[], "iavf");
    let unbound = pci("0000:3b:0a.0");
    bind::bind_driver(&root2, &unbound, "iavf", LONG).unwrap();
    assert_eq!(
        bind::current_driver(&root2, &unbound).unwrap().as_deref(),
        Some("iavf")
    );
}
