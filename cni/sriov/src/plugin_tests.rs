//! ADD, DEL and CHECK of the sriov plugin over an in-memory kernel ([`super::fake_host`]): each
//! test asserts the state of the VF, its PF-side settings and its netdev afterwards.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use vfcore::netlink::fake::{FakeKernel, FakeLink, FakeOp, HOST_NS};
use vfcore::netlink::{VfConfig, VfLinkState};
use vfcore::{IfIndex, MacAddr, PciAddress, VfIndex};

use super::device::Vf;
use super::fake_host::FakeHost;
use super::node::NodeDirs;
use super::state::{Stage, StateDir};
use super::{dispatch_on, CrashAt, CODE_CHECK_FAILED};
use crate::spec::error::CniError;

const PF: &str = "0000:03:00.0";
const VF0: &str = "0000:03:10.0";
const VF1: &str = "0000:03:10.2";
const POD: &str = "/var/run/netns/pod1";
const POD2: &str = "/var/run/netns/pod2";
const VF0_MAC: &str = "02:00:00:00:00:10";
const NEW_MAC: &str = "02:aa:bb:cc:dd:ee";

fn pci(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn vf_config(index: u32, m: MacAddr) -> VfConfig {
    crate::record::untouched_vf(index, m)
}

struct World {
    host: FakeHost,
    pf: IfIndex,
    vf0: IfIndex,
    dir: tempfile::TempDir,
}

/// A PF with two VFs: VF 0 has a netdev (ixgbevf, its own MAC mirrored by the PF, an
/// alternative name), VF 1 is bound to vfio-pci. Pods 1 and 2 have namespaces.
fn world() -> World {
    let mut k = FakeKernel::default();
    let mut pf = FakeLink::physical("enp3s0f0", mac("02:00:00:00:00:01"), pci(PF));
    pf.up = true;
    pf.vfs = vec![vf_config(0, mac(VF0_MAC)), vf_config(1, MacAddr::ZERO)];
    let pf = k.add_link(pf);
    let mut vf0 = FakeLink::physical("enp3s0f0v0", mac(VF0_MAC), pci(VF0));
    vf0.up = true;
    vf0.alt_names = vec!["enp3s16".into()];
    let vf0 = k.add_link(vf0);
    k.add_netns(POD);
    k.add_netns(POD2);
    let vfs = vec![
        Vf {
            pci: pci(VF0),
            pf: pci(PF),
            index: VfIndex(0),
            driver: Some("ixgbevf".into()),
        },
        Vf {
            pci: pci(VF1),
            pf: pci(PF),
            index: VfIndex(1),
            driver: Some("vfio-pci".into()),
        },
    ];
    World {
        host: FakeHost {
            kernel: std::sync::Arc::new(std::sync::Mutex::new(k)),
            vfs,
        },
        pf,
        vf0,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn full_conf(device: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": "n", "type": "sriov", "deviceID": device,
        "vlan": 100, "vlanQoS": 3, "mac": NEW_MAC, "spoofchk": "off", "trust": "on",
        "link_state": "enable", "min_tx_rate": 10, "max_tx_rate": 100, "mtu": 9000})
}

/// Everything a test compares before and after: the links and the VFs the PF reports.
type Snapshot = Vec<FakeLink>;

impl World {
    fn node(&self) -> NodeDirs {
        NodeDirs {
            state_dir: self.dir.path().join("state"),
            device_info_dir: self.dir.path().join("devinfo"),
        }
    }

    fn state(&self) -> StateDir {
        StateDir::new(self.node().state_dir)
    }

    fn run(
        &self,
        cmd: &str,
        container: &str,
        netns: &str,
        conf: &Value,
    ) -> Result<String, CniError> {
        let env: HashMap<String, String> = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", container),
            ("CNI_IFNAME", "net1"),
            ("CNI_NETNS", netns),
            ("CNI_PATH", path_str(self.dir.path())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        dispatch_on(
            &self.host,
            &self.node(),
            &env,
            conf.to_string().as_bytes(),
            &CrashAt::default(),
        )
        .map_err(CniError::from)
    }

    fn add(&self, conf: &Value) -> Result<String, CniError> {
        self.run("ADD", "c1", POD, conf)
    }

    fn del(&self, conf: &Value) -> Result<String, CniError> {
        self.run("DEL", "c1", POD, conf)
    }

    fn check(&self, conf: &Value) -> Result<String, CniError> {
        self.run("CHECK", "c1", POD, conf)
    }

    fn snapshot(&self) -> Snapshot {
        let k = self.host.kernel();
        [self.pf, self.vf0]
            .iter()
            .map(|i| k.link(*i).unwrap().clone())
            .collect()
    }

    fn vf(&self, index: u32) -> VfConfig {
        self.host
            .kernel()
            .vf(self.pf, VfIndex(index))
            .unwrap()
            .clone()
    }

    fn vf0_link(&self) -> FakeLink {
        self.host.kernel().link(self.vf0).unwrap().clone()
    }

    fn no_temp_netns(&self) -> bool {
        !self
            .host
            .kernel()
            .has_netns(&super::device::temp_netns_name(&pci(VF0)))
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn add_sets_the_pf_side_settings_and_moves_the_netdev_into_the_pod_as_ifname() {
    let w = world();
    let out = w.add(&full_conf(VF0)).unwrap();

    let vf = w.vf(0);
    assert_eq!((vf.vlan, vf.qos), (100, 3));
    assert_eq!(vf.mac, mac(NEW_MAC));
    assert_eq!(vf.spoofchk, Some(false));
    assert_eq!(vf.trust, Some(true));
    assert_eq!(vf.link_state, Some(VfLinkState::Enable));
    assert_eq!((vf.min_tx_rate, vf.max_tx_rate), (10, 100));

    let link = w.vf0_link();
    assert_eq!(link.netns, POD);
    assert_eq!(link.name, "net1");
    assert_eq!(link.mac, Some(mac(NEW_MAC)));
    assert_eq!(link.mtu, 9000);
    assert!(link.up);
    assert!(link.alt_names.is_empty(), "{:?}", link.alt_names);
    assert!(w.host.kernel().find(HOST_NS, "enp3s0f0v0").is_none());
    assert!(w.no_temp_netns());

    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(result["interfaces"][0]["mac"], NEW_MAC);
    assert_eq!(result["interfaces"][0]["sandbox"], POD);
    let record = w.state().read("c1", "net1").unwrap().unwrap();
    assert_eq!(record.stage, Stage::Done);
}

#[test]
fn del_restores_the_name_mac_mtu_vlan_0_and_every_other_setting() {
    let w = world();
    let before = w.snapshot();
    w.add(&full_conf(VF0)).unwrap();
    w.del(&full_conf(VF0)).unwrap();

    assert_eq!(w.snapshot(), before);
    assert_eq!(w.vf(0).vlan, 0);
    assert!(w.host.kernel().find(POD, "net1").is_none());
    assert!(w.state().read("c1", "net1").unwrap().is_none());
    assert!(w.no_temp_netns());
    // A second DEL finds nothing to do.
    w.del(&full_conf(VF0)).unwrap();
    assert_eq!(w.snapshot(), before);
}

#[test]
fn del_after_the_pod_netns_is_gone_restores_the_vf_the_kernel_returned() {
    let w = world();
    let before = w.snapshot();
    w.add(&full_conf(VF0)).unwrap();
    // The runtime tears the pod's netns down before DEL: the VF comes back as it was named.
    assert!(w.host.kernel().del_netns(POD));
    w.del(&full_conf(VF0)).unwrap();
    assert_eq!(w.snapshot(), before);
}

/// An ADD killed while its record writer had a temp file open (found by `hack/vmlab chaos`):
/// the runtime's DEL leaves no file in the state dir, whether the record itself was in place
/// (killed while rewriting it with the result) or not (killed while writing the intent).
#[test]
fn del_removes_the_temp_file_of_a_record_writer_killed_mid_add() {
    let w = world();
    let before = w.snapshot();
    let attachments = w.node().state_dir.join("attachments");
    let files = || {
        std::fs::read_dir(&attachments)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    w.add(&full_conf(VF0)).unwrap();
    std::fs::write(attachments.join(".c1-net1.json.tmp.24931"), "{\"kind\"").unwrap();
    w.del(&full_conf(VF0)).unwrap();
    assert_eq!(files(), Vec::<String>::new());
    assert_eq!(w.snapshot(), before);

    std::fs::write(attachments.join(".c1-net1.json.tmp.24932"), "").unwrap();
    w.del(&full_conf(VF0)).unwrap();
    assert_eq!(files(), Vec::<String>::new());
    assert_eq!(w.snapshot(), before);
}

/// ADD with a fault at the `skip`+1-th call of `op` fails, and leaves the VF exactly as it was,
/// without a record.
fn add_failing_at(op: FakeOp, skip: usize) {
    let w = world();
    let before = w.snapshot();
    w.host.kernel().fail(op, skip);
    let e = w.add(&full_conf(VF0)).unwrap_err();
    assert!(
        !w.host.kernel().faults_pending(),
        "ADD never reached {op:?} #{skip}"
    );
    assert!(e.msg.contains("injected fault"), "{}", e.msg);
    assert!(!e.msg.contains("record is kept"), "{}", e.msg);
    assert_eq!(w.snapshot(), before, "after a fault at {op:?} #{skip}");
    assert!(w.state().read("c1", "net1").unwrap().is_none());
    assert!(w.state().list().unwrap().is_empty());
    assert!(w.no_temp_netns());
    // The VF is free again: the next ADD succeeds.
    w.add(&full_conf(VF0)).unwrap();
    assert_eq!(w.vf0_link().netns, POD);
}

#[test]
fn a_failure_setting_the_first_pf_side_setting_leaves_the_vf_restored() {
    add_failing_at(FakeOp::SetVf, 0);
}

#[test]
fn a_failure_setting_a_later_pf_side_setting_leaves_the_vf_restored() {
    // MAC, VLAN, rates, spoofchk, trust, link-state: the trust one fails.
    add_failing_at(FakeOp::SetVf, 4);
}

#[test]
fn a_failure_setting_the_netdev_down_leaves_the_vf_restored() {
    add_failing_at(FakeOp::SetUp, 0);
}

#[test]
fn a_vf_driver_that_refuses_the_mac_is_rebound_and_reads_it_from_its_pf() {
    let w = world();
    w.host.kernel().fail(FakeOp::SetMac, 0);
    w.add(&full_conf(VF0)).unwrap();
    assert!(!w.host.kernel().faults_pending());
    let link = w.vf0_link();
    assert_eq!((link.netns.as_str(), link.name.as_str()), (POD, "net1"));
    assert_eq!(link.mac, Some(mac(NEW_MAC)));
}

#[test]
fn a_failure_moving_into_the_temporary_netns_leaves_the_vf_restored() {
    add_failing_at(FakeOp::MoveToNetns, 0);
}

#[test]
fn a_failure_renaming_to_ifname_leaves_the_vf_restored() {
    add_failing_at(FakeOp::SetName, 0);
}

#[test]
fn a_failure_moving_into_the_pod_leaves_the_vf_restored() {
    add_failing_at(FakeOp::MoveToNetns, 1);
}

#[test]
fn a_failure_setting_the_mtu_in_the_pod_leaves_the_vf_restored() {
    add_failing_at(FakeOp::SetMtu, 0);
}

#[test]
fn a_failure_setting_the_netdev_up_in_the_pod_leaves_the_vf_restored() {
    add_failing_at(FakeOp::SetUp, 1);
}

#[test]
fn a_failure_of_the_last_lookup_in_the_pod_leaves_the_vf_restored() {
    // into_pod's lookups by index: adopt_mac's check, then the final one in the pod.
    add_failing_at(FakeOp::LinkByIndex, 1);
}

#[test]
fn check_passes_after_add_and_finds_a_changed_vlan() {
    let w = world();
    w.add(&full_conf(VF0)).unwrap();
    w.check(&full_conf(VF0)).unwrap();
    w.host.kernel().vf_mut(w.pf, VfIndex(0)).unwrap().vlan = 200;
    let e = w.check(&full_conf(VF0)).unwrap_err();
    assert_eq!(e.code, CODE_CHECK_FAILED);
    assert!(e.msg.contains("VLAN 200"), "{}", e.msg);
}

#[test]
fn check_finds_a_changed_mac_in_the_pod_and_on_the_pf() {
    let w = world();
    w.add(&full_conf(VF0)).unwrap();
    w.host.kernel().link_mut(w.vf0).unwrap().mac = Some(mac("02:00:00:00:00:99"));
    let e = w.check(&full_conf(VF0)).unwrap_err();
    assert_eq!(e.code, CODE_CHECK_FAILED);
    assert!(e.msg.contains("02:00:00:00:00:99"), "{}", e.msg);

    w.host.kernel().link_mut(w.vf0).unwrap().mac = Some(mac(NEW_MAC));
    w.check(&full_conf(VF0)).unwrap();
    w.host.kernel().vf_mut(w.pf, VfIndex(0)).unwrap().mac = mac("02:00:00:00:00:98");
    let e = w.check(&full_conf(VF0)).unwrap_err();
    assert_eq!(e.code, CODE_CHECK_FAILED);
    assert!(e.msg.contains("PF-side MAC"), "{}", e.msg);
}

#[test]
fn a_dpdk_vf_gets_only_its_pf_side_settings_and_del_puts_them_back() {
    let w = world();
    let before = w.snapshot();
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "sriov", "deviceID": VF1,
        "vlan": 42, "spoofchk": "off"});
    let out = w.add(&conf).unwrap();
    let vf = w.vf(1);
    assert_eq!(vf.vlan, 42);
    assert_eq!(vf.spoofchk, Some(false));
    // No netdev moved anywhere: the pod's namespace is empty, the host unchanged but the PF.
    let k = w.host.kernel();
    assert!(k.find(POD, "net1").is_none());
    assert_eq!(k.link(w.vf0).unwrap(), &before[1]);
    drop(k);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert!(result["interfaces"][0].get("mac").is_none(), "{result}");
    w.check(&conf).unwrap();

    w.del(&conf).unwrap();
    assert_eq!(w.snapshot(), before);
}

#[test]
fn a_vf_held_by_another_live_attachment_is_refused_with_101() {
    let w = world();
    w.add(&full_conf(VF0)).unwrap();
    let held = w.snapshot();
    let e = w.run("ADD", "c2", POD2, &full_conf(VF0)).unwrap_err();
    assert_eq!(e.code, 101);
    assert!(e.msg.contains("c1"), "{}", e.msg);
    // The first attachment is untouched, and only it has a record.
    assert_eq!(w.snapshot(), held);
    assert_eq!(w.vf0_link().netns, POD);
    let records = w.state().list().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].container_id, "c1");
}

#[test]
fn a_vf_whose_holders_netns_is_gone_is_reclaimed_by_the_next_add() {
    let w = world();
    w.add(&full_conf(VF0)).unwrap();
    assert!(w.host.kernel().del_netns(POD));
    w.run("ADD", "c2", POD2, &full_conf(VF0)).unwrap();
    let link = w.vf0_link();
    assert_eq!((link.netns.as_str(), link.name.as_str()), (POD2, "net1"));
    let records = w.state().list().unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].container_id, "c2");
}
