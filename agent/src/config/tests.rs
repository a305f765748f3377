use serde_json::json;

use super::*;

fn errors_of(v: Value) -> Vec<String> {
    Config::from_value(&v)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_device_plugin_config_works_unchanged() {
    // The shape of a typical /etc/pcidp/config.json: an object selector, a list selector, Go-style
    // key spellings and keys this agent does not know.
    let v = json!({
        "resourceList": [
            {
                "resourceName": "intel_sriov_netdevice",
                "selectors": {
                    "vendors": ["8086"],
                    "devices": ["154c", "10ed"],
                    "drivers": ["i40evf", "ixgbevf", "iavf"]
                }
            },
            {
                "ResourceName": "intel_sriov_dpdk",
                "resourcePrefix": "example.org",
                "excludeTopology": true,
                "selectors": [
                    {"vendors": ["8086"], "devices": ["154c"], "drivers": ["vfio-pci"], "pfNames": ["enp0s0f0#0-3,8", "enp2s2f1"]},
                    {"rootDevices": ["0000:86:00.0#4-7"], "linkTypes": ["Ether"], "someFutureKey": 1}
                ],
                "additionalInfo": {"*": {"key": "value"}}
            }
        ],
        "unrelated": true
    });
    let cfg = Config::from_value(&v).unwrap();
    assert_eq!(cfg.resource_list.len(), 2);
    let a = &cfg.resource_list[0];
    assert_eq!(a.full_name(), "intel.com/intel_sriov_netdevice");
    assert_eq!(a.selectors[0].vendors, vec![0x8086]);
    assert_eq!(a.selectors[0].devices, vec![0x154c, 0x10ed]);
    let b = &cfg.resource_list[1];
    assert_eq!(b.full_name(), "example.org/intel_sriov_dpdk");
    assert!(b.exclude_topology);
    assert_eq!(b.selectors.len(), 2);
    let pf = &b.selectors[0].pf_names[0];
    assert_eq!(pf.pf, "enp0s0f0");
    let vfs = pf.vfs.as_ref().unwrap();
    assert_eq!(vfs.indexes().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8]);
    assert!(b.selectors[0].pf_names[1].vfs.is_none());
    assert_eq!(
        b.selectors[1].root_devices[0].pf.to_string(),
        "0000:86:00.0"
    );
    assert_eq!(b.selectors[1].link_types, vec!["ether".to_string()]);
    assert_eq!(b.additional_info["*"]["key"], "value");
    assert!(cfg.provisioning.is_empty());
}

#[test]
fn provisioning_reads_counts_drivers_and_mtus() {
    let v = json!({
        "provisioning": [
            {"pfName": "ens1f0", "numVfs": 6, "vfs": [
                {"range": "0-3", "driver": "netdevice", "mtu": 9000},
                {"range": "4-5", "driver": "vfio-pci"}
            ]},
            {"vendor": "8086", "device": "10c9", "numVfs": 3},
            {"PciAddress": "0000:02:00.1", "NumVfs": 0}
        ]
    });
    let cfg = Config::from_value(&v).unwrap();
    let p = &cfg.provisioning[0];
    assert_eq!(p.pf, PfMatch::Name("ens1f0".into()));
    assert_eq!(p.num_vfs, 6);
    assert_eq!(p.driver_of(2), VfDriver::Netdevice);
    assert_eq!(p.group_of(2).unwrap().mtu, Some(9000));
    assert_eq!(p.driver_of(5), VfDriver::VfioPci);
    assert_eq!(
        cfg.provisioning[1].pf,
        PfMatch::Ids {
            vendor: 0x8086,
            device: 0x10c9
        }
    );
    assert_eq!(
        cfg.provisioning[2].pf,
        PfMatch::Address("0000:02:00.1".parse().unwrap())
    );
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let errs = errors_of(json!({
        "resourceList": [
            {"resourceName": "bad name!"},
            {"resourceName": "ok", "selectors": {"vendors": ["xyz1"], "pfNames": ["eth0#3-1", "../../x"]}},
            {"resourceName": "dup"},
            {"resourceName": "dup"},
            {"resourceName": "ddp", "selectors": {"ddpProfiles": ["GTP"]}},
            {"resourceName": "acc", "deviceType": "accelerator"}
        ],
        "provisioning": [
            {"pfName": "ens1f0", "pciAddress": "0000:01:00.0", "numVfs": 2},
            {"pfName": "ens1f1", "numVfs": 4, "vfs": [
                {"range": "0-4", "driver": "vfio-pci"},
                {"range": "1", "driver": "dpdk"},
                {"range": "2", "driver": "vfio-pci", "mtu": 9000}
            ]},
            {"pfName": "ens1f2"},
            {"pfName": "ens1f3", "numVfs": 1},
            {"pfName": "ens1f3", "numVfs": 2}
        ]
    }));
    let expect = [
        "resourceList[0].resourceName: \"bad name!\" does not match ^[a-zA-Z0-9_-]+$",
        "resourceList[1].selectors.vendors[0]: \"xyz1\" is not a hexadecimal PCI ID",
        "resourceList[1].selectors.pfNames[0]: \"eth0#3-1\": a VF range must run from low to high",
        "resourceList[1].selectors.pfNames[1]",
        "resourceList[4].selectors.ddpProfiles: is not supported",
        "resourceList[5].deviceType: \"accelerator\" is not supported",
        "resourceList[3].resourceName: intel.com/dup is defined twice",
        "provisioning[0]: name the PF with exactly one of pfName, pciAddress, or vendor and device",
        "provisioning[1].vfs[0].range: VF 4 does not exist with numVfs 4",
        "provisioning[1].vfs[1].driver: \"dpdk\" is not one of netdevice, vfio-pci",
        "provisioning[1].vfs[2].mtu: a vfio-pci VF has no netdev to set an MTU on",
        "provisioning[2].numVfs: is required",
        "provisioning[4]: names the same PF as provisioning[3]",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn overlapping_ranges_are_refused() {
    let errs = errors_of(json!({
        "provisioning": [{"pfName": "p0", "numVfs": 8, "vfs": [
            {"range": "0-3"}, {"range": "3-5", "driver": "vfio-pci"}
        ]}],
        "resourceList": [{"resourceName": "r", "selectors": {"pfNames": ["p0#0-2", "p0#2"]}}]
    }));
    assert!(
        errs.iter()
            .any(|e| e == "provisioning[0].vfs[1].range: VF 3 is already in range 0-3"),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e == "resourceList[0].selectors[0].pfNames[1]: VF 2 of p0 is listed twice"),
        "{errs:?}"
    );
}

#[test]
fn non_json_and_wrong_shapes_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    std::fs::write(&p, "{not json").unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("not JSON"), "{e}");
    std::fs::write(&p, r#"{"resourceList": {}}"#).unwrap();
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.contains("resourceList: must be a list"), "{e}");
    let e = Config::load(&dir.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
}
