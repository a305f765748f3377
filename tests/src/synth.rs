//! Synthetic sysfs trees of any size, laid out as the kernel lays out SR-IOV NICs (an 82599-like
//! PF with VFs at routing ID + offset + stride * index), for benchmarks and scale tests.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use vfcore::PciAddress;

fn put(path: &Path, value: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, format!("{value}\n"))
}

/// Writes `pfs` PFs with `vfs` VFs each under `root` (PF n at bus n+1; VFs bound to ixgbevf with
/// netdevs, except every fourth bound to vfio-pci with an IOMMU group and /dev/vfio entry).
pub fn write_tree(root: &Path, pfs: u32, vfs: u32) -> io::Result<()> {
    let devices = root.join("sys/devices/pci0000:00");
    let bus = root.join("sys/bus/pci/devices");
    let drivers = root.join("sys/bus/pci/drivers");
    let class_net = root.join("sys/class/net");
    let groups = root.join("sys/kernel/iommu_groups");
    let dev_vfio = root.join("dev/vfio");
    for d in [&bus, &class_net, &groups, &dev_vfio] {
        fs::create_dir_all(d)?;
    }
    for drv in ["ixgbe", "ixgbevf", "vfio-pci"] {
        fs::create_dir_all(drivers.join(drv))?;
    }
    put(&dev_vfio.join("vfio"), "")?;
    let mut ifindex = 10;
    let mut group = 100;
    let (offset, stride) = (0x80u16, 2u16);
    for p in 0..pfs {
        let pf = PciAddress::new(0, (p + 1) as u8, 0, 0);
        let pf_dir = devices.join(pf.to_string());
        let attrs = [
            ("vendor", "0x8086".to_string()),
            ("device", "0x10fb".to_string()),
            ("class", "0x020000".to_string()),
            ("numa_node", (p % 2).to_string()),
            ("sriov_totalvfs", "64".to_string()),
            ("sriov_numvfs", vfs.to_string()),
            ("sriov_offset", offset.to_string()),
            ("sriov_stride", stride.to_string()),
            ("sriov_vf_device", "10ed".to_string()),
            ("sriov_drivers_autoprobe", "1".to_string()),
        ];
        for (k, v) in attrs {
            put(&pf_dir.join(k), &v)?;
        }
        symlink("../../../bus/pci/drivers/ixgbe", pf_dir.join("driver"))?;
        symlink(
            format!("../../../devices/pci0000:00/{pf}"),
            bus.join(pf.to_string()),
        )?;
        let pf_name = format!("enp{}s0f0", p + 1);
        netdev(&pf_dir, &pf_name, &class_net, &pf, ifindex)?;
        ifindex += 1;
        for v in 0..vfs {
            let rid = pf.routing_id() + offset + stride * v as u16;
            let vf = PciAddress::from_routing_id(0, rid);
            let vf_dir = devices.join(vf.to_string());
            for (k, val) in [
                ("vendor", "0x8086"),
                ("device", "0x10ed"),
                ("class", "0x020000"),
            ] {
                put(&vf_dir.join(k), val)?;
            }
            put(&vf_dir.join("numa_node"), &(p % 2).to_string())?;
            symlink(format!("../{pf}"), vf_dir.join("physfn"))?;
            symlink(format!("../{vf}"), pf_dir.join(format!("virtfn{v}")))?;
            symlink(
                format!("../../../devices/pci0000:00/{vf}"),
                bus.join(vf.to_string()),
            )?;
            fs::create_dir_all(groups.join(group.to_string()))?;
            symlink(
                format!("../../kernel/iommu_groups/{group}"),
                vf_dir.join("iommu_group"),
            )?;
            if v % 4 == 3 {
                symlink("../../../bus/pci/drivers/vfio-pci", vf_dir.join("driver"))?;
                put(&dev_vfio.join(group.to_string()), "")?;
            } else {
                symlink("../../../bus/pci/drivers/ixgbevf", vf_dir.join("driver"))?;
                netdev(
                    &vf_dir,
                    &format!("enp{}s0f0v{v}", p + 1),
                    &class_net,
                    &vf,
                    ifindex,
                )?;
                ifindex += 1;
            }
            group += 1;
        }
    }
    Ok(())
}

fn netdev(
    dev_dir: &Path,
    name: &str,
    class_net: &Path,
    addr: &PciAddress,
    ifindex: u32,
) -> io::Result<()> {
    let n = dev_dir.join("net").join(name);
    put(
        &n.join("address"),
        &format!("02:00:00:00:{:02x}:{:02x}", ifindex >> 8, ifindex & 0xff),
    )?;
    put(&n.join("operstate"), "up")?;
    put(&n.join("carrier"), "1")?;
    put(&n.join("speed"), "10000")?;
    put(&n.join("mtu"), "1500")?;
    put(&n.join("ifindex"), &ifindex.to_string())?;
    put(&n.join("type"), "1")?;
    symlink(
        format!("../../devices/pci0000:00/{addr}/net/{name}"),
        class_net.join(name),
    )
}
