//! What a user checks on each fixture tree: PFs, IDs and names, drivers, SR-IOV numbers, VF
//! indexes and addresses, physfn links, netdevs, NUMA, IOMMU groups, legacy max_vfs.

// Test helpers outside #[test] functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, pci, FIXTURES};
use vfcore::sysfs::{self, PciNetDevice, VfLink};
use vfcore::{MacAddr, PciAddress, SysRoot, VfIndex};

fn by_addr<'a>(devs: &'a [PciNetDevice], addr: &str) -> &'a PciNetDevice {
    let a = pci(addr);
    devs.iter()
        .find(|d| d.address == a)
        .unwrap_or_else(|| panic!("{addr} not discovered"))
}

fn addrs(devs: &[PciNetDevice], f: impl Fn(&PciNetDevice) -> bool) -> Vec<String> {
    devs.iter()
        .filter(|d| f(d))
        .map(|d| d.address.to_string())
        .collect()
}

fn netdev_names(d: &PciNetDevice) -> Vec<&str> {
    d.netdevs.iter().map(|n| n.name.as_str()).collect()
}

/// Every VF link of every PF lies where the SR-IOV capability puts it (PF routing ID + offset +
/// stride * index), and the VF's own record points back at the PF with the same index.
fn assert_vf_arithmetic(root: &SysRoot, devs: &[PciNetDevice]) {
    for pf in devs.iter().filter(|d| d.is_pf()) {
        let sriov = pf.sriov.as_ref().unwrap();
        assert_eq!(sriov.vfs.len() as u32, sriov.num_vfs, "PF {}", pf.address);
        assert_eq!(sysfs::vfs_of(root, &pf.address).unwrap(), sriov.vfs);
        for link in &sriov.vfs {
            let rid = u32::from(pf.address.routing_id())
                + sriov.vf_offset.unwrap()
                + sriov.vf_stride.unwrap() * link.index.0;
            let expected = PciAddress::from_routing_id(pf.address.domain, rid as u16);
            assert_eq!(
                link.address, expected,
                "VF {} of PF {}",
                link.index, pf.address
            );
            let vf = by_addr(devs, &link.address.to_string());
            let of = vf.physfn.unwrap();
            assert_eq!((of.pf, of.index), (pf.address, link.index));
            assert_eq!(Some(vf.device_id), sriov.vf_device_id);
            assert!(vf.sriov.is_none());
        }
    }
}

#[test]
fn ixgbe_82599() {
    let root = fixture("ixgbe-82599");
    let devs = sysfs::discover(&root).unwrap();
    // The root port and the SATA controller are not network devices.
    assert_eq!(
        addrs(&devs, |_| true),
        [
            "0000:03:00.0",
            "0000:03:00.1",
            "0000:03:10.0",
            "0000:03:10.2",
            "0000:03:10.4",
            "0000:03:10.6"
        ]
    );
    assert_eq!(
        addrs(&devs, |d| d.is_pf()),
        ["0000:03:00.0", "0000:03:00.1"]
    );

    let pf0 = by_addr(&devs, "0000:03:00.0");
    assert_eq!((pf0.vendor_id, pf0.device_id), (0x8086, 0x10fb));
    assert_eq!(pf0.vendor_name.as_deref(), Some("Intel Corporation"));
    assert_eq!(
        pf0.device_name.as_deref(),
        Some("82599ES 10-Gigabit SFI/SFP+ Network Connection")
    );
    assert_eq!(pf0.class, 0x020000);
    assert_eq!(pf0.driver.as_deref(), Some("ixgbe"));
    assert_eq!(pf0.numa_node, Some(0));
    assert_eq!(pf0.iommu_group, Some(30));
    let s0 = pf0.sriov.as_ref().unwrap();
    assert_eq!((s0.total_vfs, s0.num_vfs), (63, 4));
    assert_eq!((s0.vf_offset, s0.vf_stride), (Some(0x80), Some(2)));
    assert_eq!(s0.vf_device_id, Some(0x10ed));
    assert_eq!(s0.drivers_autoprobe, Some(true));
    assert_eq!(s0.legacy_max_vfs.as_deref(), Some("0"));
    assert_eq!(
        s0.vfs,
        [
            (0, "0000:03:10.0"),
            (1, "0000:03:10.2"),
            (2, "0000:03:10.4"),
            (3, "0000:03:10.6")
        ]
        .map(|(i, a)| VfLink {
            index: VfIndex(i),
            address: pci(a)
        })
    );
    assert_eq!(netdev_names(pf0), ["enp3s0f0"]);
    let n = &pf0.netdevs[0];
    assert_eq!(n.mac, Some("90:e2:ba:5c:1a:40".parse::<MacAddr>().unwrap()));
    assert_eq!(n.operstate.as_deref(), Some("up"));
    assert_eq!(
        (n.carrier, n.speed_mbps, n.mtu),
        (Some(true), Some(10000), Some(1500))
    );

    let pf1 = by_addr(&devs, "0000:03:00.1");
    let s1 = pf1.sriov.as_ref().unwrap();
    assert_eq!((s1.total_vfs, s1.num_vfs), (63, 0));
    assert!(s1.vfs.is_empty());
    // Link down: the kernel reports speed -1, which is "unknown", not an error.
    let n1 = &pf1.netdevs[0];
    assert_eq!(
        (n1.name.as_str(), n1.carrier, n1.speed_mbps),
        ("enp3s0f1", Some(false), None)
    );

    let vf0 = by_addr(&devs, "0000:03:10.0");
    assert_eq!(
        vf0.device_name.as_deref(),
        Some("82599 Ethernet Controller Virtual Function")
    );
    assert_eq!(vf0.driver.as_deref(), Some("ixgbevf"));
    assert_eq!(netdev_names(vf0), ["enp3s16"]);
    assert_eq!(vf0.iommu_group, Some(70));
    assert_eq!(vf0.numa_node, Some(0));
    // An administratively down VF netdev: carrier and speed unreadable, so None.
    let vf1 = by_addr(&devs, "0000:03:10.2");
    assert_eq!(
        (vf1.netdevs[0].carrier, vf1.netdevs[0].speed_mbps),
        (None, None)
    );
    // The VF given to DPDK: vfio-pci, no netdev, its group device exists.
    let vf3 = by_addr(&devs, "0000:03:10.6");
    assert_eq!(vf3.driver.as_deref(), Some("vfio-pci"));
    assert!(vf3.netdevs.is_empty());
    assert_eq!(vf3.iommu_group, Some(73));
    assert!(root.dev_vfio_group(73, false).exists());
    assert!(root.dev_vfio_container().exists());

    assert_vf_arithmetic(&root, &devs);
}

#[test]
fn i40e_x710() {
    let root = fixture("i40e-x710");
    let devs = sysfs::discover(&root).unwrap();
    assert_eq!(
        addrs(&devs, |d| d.is_pf()),
        ["0000:3b:00.0", "0000:3b:00.1"]
    );
    assert_eq!(
        addrs(&devs, |d| d.is_vf()),
        [
            "0000:3b:02.0",
            "0000:3b:02.1",
            "0000:3b:0a.0",
            "0000:3b:0a.1"
        ]
    );
    assert!(devs.iter().all(|d| d.numa_node == Some(1)));

    let pf0 = by_addr(&devs, "0000:3b:00.0");
    assert_eq!((pf0.vendor_id, pf0.device_id), (0x8086, 0x1572));
    assert_eq!(
        pf0.device_name.as_deref(),
        Some("Ethernet Controller X710 for 10GbE SFP+")
    );
    assert_eq!(pf0.driver.as_deref(), Some("i40e"));
    let s0 = pf0.sriov.as_ref().unwrap();
    assert_eq!(
        (s0.total_vfs, s0.num_vfs, s0.vf_offset, s0.vf_stride),
        (64, 2, Some(16), Some(1))
    );
    assert_eq!(s0.vf_device_id, Some(0x154c));
    assert_eq!(s0.drivers_autoprobe, Some(true));
    // i40e has no legacy max_vfs parameter.
    assert_eq!(s0.legacy_max_vfs, None);
    assert_eq!(netdev_names(pf0), ["ens785f0"]);
    assert_eq!(pf0.netdevs[0].mtu, Some(9000));

    let pf1 = by_addr(&devs, "0000:3b:00.1");
    let s1 = pf1.sriov.as_ref().unwrap();
    assert_eq!(
        (s1.num_vfs, s1.vf_offset, s1.drivers_autoprobe),
        (2, Some(79), Some(false))
    );

    let vf = by_addr(&devs, "0000:3b:02.1");
    assert_eq!(
        vf.device_name.as_deref(),
        Some("Ethernet Virtual Function 700 Series")
    );
    assert_eq!(vf.driver.as_deref(), Some("iavf"));
    assert_eq!(netdev_names(vf), ["ens785f0v1"]);
    // Autoprobe off: the VFs of port 1 exist but have no driver and no netdev.
    for a in ["0000:3b:0a.0", "0000:3b:0a.1"] {
        let vf = by_addr(&devs, a);
        assert_eq!(vf.driver, None);
        assert!(vf.netdevs.is_empty());
        assert!(vf.iommu_group.is_some());
        assert_eq!(vf.physfn.unwrap().pf, pci("0000:3b:00.1"));
    }
    assert_vf_arithmetic(&root, &devs);
}

#[test]
fn mlx5_cx5() {
    let root = fixture("mlx5-cx5");
    let devs = sysfs::discover(&root).unwrap();
    assert_eq!(
        addrs(&devs, |_| true),
        [
            "0000:5e:00.0",
            "0000:5e:00.1",
            "0000:5e:00.2",
            "0000:5e:00.3"
        ]
    );
    let pf0 = by_addr(&devs, "0000:5e:00.0");
    assert_eq!((pf0.vendor_id, pf0.device_id), (0x15b3, 0x1017));
    assert_eq!(pf0.vendor_name.as_deref(), Some("Mellanox Technologies"));
    assert_eq!(
        pf0.device_name.as_deref(),
        Some("MT27800 Family [ConnectX-5]")
    );
    assert_eq!(pf0.driver.as_deref(), Some("mlx5_core"));
    let s0 = pf0.sriov.as_ref().unwrap();
    assert_eq!(
        (s0.total_vfs, s0.num_vfs, s0.vf_offset, s0.vf_stride),
        (8, 2, Some(2), Some(1))
    );
    assert_eq!(s0.vf_device_id, Some(0x1018));
    assert_eq!(netdev_names(pf0), ["enp94s0f0np0"]);
    assert_eq!(pf0.netdevs[0].speed_mbps, Some(25000));
    // numa_node -1 means no affinity.
    assert!(devs.iter().all(|d| d.numa_node.is_none()));
    let pf1 = by_addr(&devs, "0000:5e:00.1");
    assert_eq!(pf1.sriov.as_ref().unwrap().vf_offset, Some(9));

    let vf0 = by_addr(&devs, "0000:5e:00.2");
    assert_eq!(
        vf0.device_name.as_deref(),
        Some("MT27800 Family [ConnectX-5 Virtual Function]")
    );
    assert_eq!(vf0.iommu_group, Some(82));
    assert_eq!(netdev_names(vf0), ["enp94s0f0v0"]);
    let vf1 = by_addr(&devs, "0000:5e:00.3");
    assert_eq!(vf1.iommu_group, None);
    assert_eq!(vf1.physfn.unwrap().index, VfIndex(1));
    assert_vf_arithmetic(&root, &devs);
}

/// Captured from the QEMU lab by `hack/vmlab capture`: what the real igb driver shows.
#[test]
fn lab_igb_captured_from_real_vfs() {
    let root = fixture("lab-igb");
    let devs = sysfs::discover(&root).unwrap();
    let pfs = addrs(&devs, |d| d.is_pf());
    assert_eq!(pfs, vec!["0000:01:00.0", "0000:02:00.0"]);
    for pf in &pfs {
        let d = by_addr(&devs, pf);
        assert_eq!((d.vendor_id, d.device_id), (0x8086, 0x10c9));
        assert_eq!(d.driver.as_deref(), Some("igb"));
        let s = d.sriov.as_ref().unwrap();
        assert_eq!(s.total_vfs, 7);
        assert_eq!(s.vf_device_id, Some(0x10ca));
        // The Debian kernel's igb exposes the legacy module parameter too.
        assert_eq!(s.legacy_max_vfs.as_deref(), Some("0"));
        assert!(d.vendor_name.as_deref().unwrap().contains("Intel"));
        assert!(d.device_name.as_deref().unwrap().contains("82576"));
    }
    let pf0 = by_addr(&devs, "0000:01:00.0").sriov.as_ref().unwrap();
    assert_eq!(pf0.num_vfs, 4);
    assert_eq!((pf0.vf_offset, pf0.vf_stride), (Some(0x80), Some(2)));
    let vfio = addrs(&devs, |d| d.driver.as_deref() == Some("vfio-pci"));
    assert_eq!(vfio, vec!["0000:01:10.6"]);
    let v = by_addr(&devs, "0000:01:10.6");
    assert!(v.netdevs.is_empty());
    let group = v.iommu_group.unwrap();
    assert!(root.dev_vfio_group(group, false).exists());
    for vf in ["0000:01:10.0", "0000:01:10.2", "0000:01:10.4"] {
        let d = by_addr(&devs, vf);
        assert_eq!(d.driver.as_deref(), Some("igbvf"));
        assert_eq!(d.netdevs.len(), 1, "{vf}");
    }
    assert_eq!(
        by_addr(&devs, "0000:02:00.0")
            .sriov
            .as_ref()
            .unwrap()
            .num_vfs,
        0
    );
    assert_vf_arithmetic(&root, &devs);
}

#[test]
fn virtio_vm_has_a_nic_without_sriov() {
    let root = fixture("virtio-vm");
    let devs = sysfs::discover(&root).unwrap();
    // The virtio-blk disk and the root ports are skipped; loopback is not a PCI device.
    assert_eq!(addrs(&devs, |_| true), ["0000:01:00.0"]);
    let nic = &devs[0];
    assert_eq!((nic.vendor_id, nic.device_id), (0x1af4, 0x1041));
    assert_eq!(nic.driver.as_deref(), Some("virtio-pci"));
    assert!(nic.sriov.is_none() && nic.physfn.is_none());
    assert_eq!((nic.numa_node, nic.iommu_group), (None, None));
    // virtio-net's netdev hangs off the virtio bus device under the PCI function.
    assert_eq!(netdev_names(nic), ["enp1s0"]);
    assert_eq!(nic.netdevs[0].speed_mbps, None);
}

#[test]
fn read_device_matches_discovery_and_reports_non_network_devices() {
    for name in FIXTURES {
        let root = fixture(name);
        for d in sysfs::discover(&root).unwrap() {
            assert_eq!(sysfs::read_device(&root, &d.address).unwrap(), d);
            let unnamed = sysfs::read_device_unnamed(&root, &d.address).unwrap();
            assert_eq!((&unnamed.vendor_name, &unnamed.device_name), (&None, &None));
            let unnamed_ids = (unnamed.vendor_id, unnamed.device_id, unnamed.sriov.as_ref());
            assert_eq!(unnamed_ids, (d.vendor_id, d.device_id, d.sriov.as_ref()));
        }
    }
    // A SATA controller read directly is reported, without SR-IOV.
    let sata = sysfs::read_device(&fixture("ixgbe-82599"), &pci("0000:00:1f.2")).unwrap();
    assert_eq!(sata.class >> 16, 0x01);
    assert!(sata.sriov.is_none() && sata.netdevs.is_empty());
}

#[test]
fn missing_devices_are_errors_naming_the_address() {
    let root = fixture("ixgbe-82599");
    let err = sysfs::read_device(&root, &pci("0000:99:00.0")).unwrap_err();
    assert_eq!(err.to_string(), "PCI device 0000:99:00.0 does not exist");
    assert!(sysfs::vfs_of(&root, &pci("0000:99:00.0")).is_err());
    // A VF has no virtfn links.
    assert!(sysfs::vfs_of(&root, &pci("0000:03:10.0"))
        .unwrap()
        .is_empty());
    // A root without sysfs is an error naming the path, not an empty list.
    let empty = tempfile::tempdir().unwrap();
    let err = sysfs::discover(&SysRoot::new(empty.path())).unwrap_err();
    assert!(err.to_string().contains("sys/bus/pci/devices"), "{err}");
}

#[test]
fn model_serializes_for_the_inventory() {
    let devs = sysfs::discover(&fixture("ixgbe-82599")).unwrap();
    let v = serde_json::to_value(&devs[0]).unwrap();
    assert_eq!(v["address"], "0000:03:00.0");
    assert_eq!(v["sriov"]["vfs"][3]["address"], "0000:03:10.6");
    assert_eq!(v["netdevs"][0]["mac"], "90:e2:ba:5c:1a:40");
    assert_eq!(v["physfn"], serde_json::Value::Null);
}

#[test]
fn vanished_devices_are_skipped_and_other_read_errors_name_the_path() {
    let (_dir, root) = common::temp_copy("ixgbe-82599");
    // A device removed between listing and reading leaves a dangling bus link behind.
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:00:03.0/0000:03:10.8",
        root.pci_devices().join("0000:03:10.8"),
    )
    .unwrap();
    assert_eq!(sysfs::discover(&root).unwrap().len(), 6);
    // A VF whose PF already dropped its virtfn link (removal in progress) is skipped by
    // discovery and reported as such when read directly.
    let pf0 = root.pci_device(&pci("0000:03:00.0"));
    std::fs::remove_file(pf0.join("virtfn3")).unwrap();
    let devs = sysfs::discover(&root).unwrap();
    assert_eq!(devs.len(), 5);
    assert!(!devs.iter().any(|d| d.address == pci("0000:03:10.6")));
    let err = sysfs::read_device(&root, &pci("0000:03:10.6")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VF 0000:03:10.6 is not among the virtfn links of its PF 0000:03:00.0"
    );

    // An attribute that cannot be read for another reason fails the scan, naming it.
    let vendor = root.pci_attr(&pci("0000:03:10.2"), "vendor");
    std::fs::remove_file(&vendor).unwrap();
    std::fs::create_dir(&vendor).unwrap();
    let err = sysfs::discover(&root).unwrap_err();
    assert!(!err.is_vanished());
    assert_eq!(err.to_string(), format!("cannot read {}", vendor.display()));

    // Garbage in an attribute is reported with the value and the path.
    std::fs::remove_dir(&vendor).unwrap();
    std::fs::write(&vendor, "intel\n").unwrap();
    let err = sysfs::discover(&root).unwrap_err();
    assert!(err.to_string().contains("holds \"intel\""), "{err}");
}
