//! Discovery and pool building at scale on a synthetic 16 PF x 64 VF tree: every VF is found with
//! the right PF, index and driver, and the pools split netdev and vfio VFs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vfagent::config::Config;
use vfcore::SysRoot;

#[test]
fn sixteen_pfs_with_sixty_four_vfs_each() {
    let dir = tempfile::tempdir().unwrap();
    vfgenie_tests::synth::write_tree(dir.path(), 16, 64).unwrap();
    let root = SysRoot::new(dir.path());
    let devices = vfcore::sysfs::discover(&root).unwrap();
    assert_eq!(devices.len(), 16 + 16 * 64);
    let pfs: Vec<_> = devices.iter().filter(|d| d.sriov.is_some()).collect();
    assert_eq!(pfs.len(), 16);
    for pf in pfs {
        let s = pf.sriov.as_ref().unwrap();
        assert_eq!(s.vfs.len(), 64);
        for (i, vf) in s.vfs.iter().enumerate() {
            assert_eq!(vf.index.0 as usize, i);
            let d = devices.iter().find(|d| d.address == vf.address).unwrap();
            assert_eq!(d.physfn.unwrap().pf, pf.address);
        }
    }
    let cfg = Config::from_value(&serde_json::json!({"resourceList": [
        {"resourceName": "net", "selectors": {"drivers": ["ixgbevf"]}},
        {"resourceName": "dpdk", "selectors": {"drivers": ["vfio-pci"]}}
    ]}))
    .unwrap();
    let pools = vfagent::select::build_pools(&root, &devices, &cfg.resource_list);
    assert_eq!(pools[0].devices.len(), 16 * 48);
    assert_eq!(pools[1].devices.len(), 16 * 16);
}
