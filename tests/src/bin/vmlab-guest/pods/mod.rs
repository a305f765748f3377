//! `vmlab-guest pods`: the `sriov` CNI plugin (the `genie` binary given `"type": "sriov"`)
//! exec'd directly, as Multus would, against real igb VFs, with Debian's host-local for IPAM.
//!
//! PF0 gets 6 VFs. Pods A and B (VFs 0 and 1, VLAN 100) ping each other from the MACs the
//! plugin set; pod C (VF 2, VLAN 200) cannot reach them; CHECK passes, then fails once the
//! interface is tampered with; a second ADD of a VF in use is refused; DEL restores names,
//! MACs, VLAN 0 and releases the addresses. VF 3 bound to vfio-pci is reported by PCI address
//! with nothing moved. VF 4 is killed mid-ADD at three steps and each time DEL restores it.
//! VF 5's pod netns is deleted before DEL, which finds the VF back in the host. Then VFs 0-2
//! carry a MultiNetworkPolicy case: the agent's policy engine and nft in the pods' namespaces,
//! proven with traffic over the VFs (see `policy`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};
use vfcore::netlink::{LinkOps, Netlink, VfConfig};
use vfcore::netns::NetNs;
use vfcore::sysfs;
use vfcore::{bind, provision, MacAddr, PciAddress, SysRoot, VfIndex};

use crate::core_checks::{igb_pfs, pf_up};
use crate::report::{note, Report};

mod cases;
mod plugin;
mod policy;

use cases::*;
pub(crate) use plugin::assert_restored;
use plugin::*;

const PLUGIN: &str = "/usr/local/bin/genie";
const WORK: &str = "/tmp/pods";
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// The plugin's state dir, given to it as a runtime's environment would
/// (`VFGENIE_SRIOV_STATE_DIR`; a network config cannot move it).
fn state_dir() -> String {
    format!("{WORK}/state")
}
/// The device-info dir (`VFGENIE_DEVICE_INFO_DIR`): `CNIDeviceInfoFile` must be in its `cni/`.
fn devinfo_dir() -> String {
    format!("{WORK}/devinfo")
}
/// The plugin's log: a config's `logFile` must be under /var/log.
const SRIOV_LOG: &str = "/var/log/vfgenie-lab/pods-sriov.log";
fn ipam_dir() -> String {
    format!("{WORK}/ipam")
}

/// A VF's state in the host before any pod.
#[derive(Debug, Clone)]
pub(crate) struct Original {
    pub(crate) pci: PciAddress,
    pub(crate) index: VfIndex,
    pub(crate) name: String,
    pub(crate) mac: Option<MacAddr>,
    mtu: u32,
    pf_side: VfConfig,
}

pub(crate) struct Lab {
    root: SysRoot,
    pub(crate) pf_name: String,
    pub(crate) vfs: Vec<Original>,
}

impl Lab {
    fn pf_side(&self, index: VfIndex) -> Result<VfConfig> {
        let mut nl = Netlink::open()?;
        let link = nl
            .link_by_name(&self.pf_name)?
            .ok_or_else(|| anyhow!("no PF link {}", self.pf_name))?;
        nl.vf_configs(link.index)?
            .into_iter()
            .find(|c| c.vf == index)
            .ok_or_else(|| anyhow!("{} reports no VF {index}", self.pf_name))
    }
}

/// The output of one plugin run.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    signal: Option<i32>,
}

impl Run {
    fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("plugin output is not JSON: {:?}", self.stdout))
    }
    fn require_ok(&self, what: &str) -> Result<&Self> {
        ensure!(
            self.ok,
            "{what} failed: {} {}",
            self.stdout.trim(),
            self.stderr.trim()
        );
        Ok(self)
    }
}

struct Pod {
    id: String,
    netns: String,
    conf: Value,
}

impl Pod {
    fn new(id: &str, conf: Value) -> Self {
        Self {
            id: id.to_string(),
            netns: format!("/run/netns/{id}"),
            conf,
        }
    }

    fn create_netns(&self, root: &SysRoot) -> Result<NetNs> {
        Ok(NetNs::create_named(root, &self.id)?)
    }

    fn ns(&self) -> Result<NetNs> {
        Ok(NetNs::open(&self.netns)?)
    }

    fn call(&self, command: &str, crash: Option<&str>) -> Result<Run> {
        call_plugin(PLUGIN, command, &self.id, &self.netns, &self.conf, crash)
    }
}

pub(crate) fn setup(root: &SysRoot) -> Result<Lab> {
    std::fs::create_dir_all(WORK)?;
    if let Some(dir) = Path::new(SRIOV_LOG).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(SRIOV_LOG);
    let pfs = igb_pfs(root)?;
    ensure!(pfs.len() == 2, "expected 2 igb PFs, found {}", pfs.len());
    for pf in &pfs {
        pf_up(root, pf)?;
    }
    let pf = pfs[0].clone();
    let vfs = provision::set_num_vfs(root, &pf.address, 6, TIMEOUT)?;
    ensure!(vfs.len() == 6, "{} VFs, want 6", vfs.len());
    for v in &vfs {
        provision::wait_vf_netdev(root, &v.address, TIMEOUT)?;
    }
    // Creating VFs resets the PF: wait for its link again before configuring VFs.
    pf_up(root, &pf)?;
    let pf_name = pf
        .netdevs
        .first()
        .map(|n| n.name.clone())
        .ok_or_else(|| anyhow!("PF has no netdev"))?;
    let mut nl = Netlink::open()?;
    let pf_link = nl
        .link_by_name(&pf_name)?
        .ok_or_else(|| anyhow!("no link {pf_name}"))?;
    // A VF that probed while creating VFs reset the PF never registered its MAC with the PF (the
    // PF shows 00:00:00:00:00:00) and passes no traffic; a node's VFs are created with the PF up.
    // Rebinding such a VF's driver lets it complete its handshake with the PF.
    let configs = nl.vf_configs(pf_link.index)?;
    for v in &vfs {
        let name = provision::wait_vf_netdev(root, &v.address, TIMEOUT)?;
        let netdev_mac = nl.link_by_name(&name)?.and_then(|l| l.mac);
        let pf_mac = configs.iter().find(|c| c.vf == v.index).map(|c| c.mac);
        if netdev_mac != pf_mac {
            let show = |m: Option<MacAddr>| m.map(|m| m.to_string()).unwrap_or_default();
            note(&format!(
                "VF {} ({name}) MAC {} is unknown to its PF ({}): rebinding it",
                v.index,
                show(netdev_mac),
                show(pf_mac)
            ));
            bind::bind_default(root, &v.address, TIMEOUT)?;
            provision::wait_vf_netdev(root, &v.address, TIMEOUT)?;
        }
    }
    let configs = nl.vf_configs(pf_link.index)?;
    let mut originals = Vec::new();
    for v in &vfs {
        let name = provision::wait_vf_netdev(root, &v.address, TIMEOUT)?;
        let link = nl
            .link_by_name(&name)?
            .ok_or_else(|| anyhow!("no link {name}"))?;
        let pf_side = configs
            .iter()
            .find(|c| c.vf == v.index)
            .cloned()
            .ok_or_else(|| anyhow!("no PF-side config of VF {}", v.index))?;
        ensure!(
            link.mac == Some(pf_side.mac),
            "VF {} ({name}) MAC {:?} is still unknown to its PF ({})",
            v.index,
            link.mac,
            pf_side.mac
        );
        originals.push(Original {
            pci: v.address,
            index: v.index,
            name,
            mac: link.mac,
            mtu: link.mtu,
            pf_side,
        });
    }
    let table: Vec<String> = originals
        .iter()
        .map(|o| {
            format!(
                "VF {} {} {} mac {} pf-side mac {} vlan {}",
                o.index,
                o.pci,
                o.name,
                o.mac.map(|m| m.to_string()).unwrap_or_default(),
                o.pf_side.mac,
                o.pf_side.vlan
            )
        })
        .collect();
    note(&table.join("\n"));
    Ok(Lab {
        root: root.clone(),
        pf_name,
        vfs: originals,
    })
}

pub fn run(report: &mut Report) {
    let root = SysRoot::host();
    let mut lab = None;
    report.check("pods-setup", || {
        lab = Some(setup(&root)?);
        Ok(())
    });
    let Some(lab) = lab else {
        report.fail("pods-rest", "skipped: setup failed");
        return;
    };
    let t0 = Instant::now();
    let vf = |i: usize| lab.vfs[i].clone();
    let mac_a: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x0a]);
    let mac_b: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x0b]);
    let pod_a = Pod::new(
        "pod-a",
        conf(
            "vlan100",
            &vf(0),
            100,
            "10.56.100.0/24",
            json!({"mac": mac_a.to_string()}),
        ),
    );
    // B's MAC comes from runtimeConfig, which wins over the conf's.
    let pod_b = Pod::new(
        "pod-b",
        conf(
            "vlan100",
            &vf(1),
            100,
            "10.56.100.0/24",
            json!({"mac": "02:00:00:00:01:ff", "runtimeConfig": {"mac": mac_b.to_string()}, "mtu": 1400}),
        ),
    );
    let pod_c = Pod::new(
        "pod-c",
        conf("vlan200", &vf(2), 200, "10.56.100.0/24", json!({})),
    );
    let mut ips = BTreeMap::new();

    let added = report.check_detail("pods-add-vlan100", || {
        let mut detail = Vec::new();
        for (pod, mac) in [(&pod_a, mac_a), (&pod_b, mac_b)] {
            pod.create_netns(&root)?;
            let started = Instant::now();
            let r = pod.call("ADD", None)?;
            r.require_ok(&format!("ADD {}", pod.id))?;
            let took = started.elapsed();
            let v = r.json()?;
            ensure!(
                v.pointer("/interfaces/0/name") == Some(&json!("net1")),
                "result interface: {v}"
            );
            ensure!(
                v.pointer("/interfaces/0/mac") == Some(&json!(mac.to_string())),
                "result MAC is not {mac}: {v}"
            );
            ensure!(
                v.pointer("/interfaces/0/sandbox") == Some(&json!(pod.netns)),
                "result sandbox: {v}"
            );
            ips.insert(pod.id.clone(), result_ip(&v)?);
            detail.push(format!("{} {:?}", pod.id, took));
        }
        note(&format!("pod-a result IP {:?}", ips.get("pod-a")));
        Ok(format!("ADD took {}", detail.join(", ")))
    });

    report.check("pods-state-in-pod", || {
        ensure!(added, "skipped: ADD failed");
        for (pod, vfi, mac, mtu) in [(&pod_a, 0, mac_a, 1500), (&pod_b, 1, mac_b, 1400)] {
            let (link, names) = pod_links(&pod.ns()?)?;
            let link = link.ok_or_else(|| anyhow!("no net1 in {}: {names:?}", pod.id))?;
            ensure!(link.up, "net1 in {} is down", pod.id);
            ensure!(
                link.mac == Some(mac),
                "net1 in {} has MAC {:?}",
                pod.id,
                link.mac
            );
            ensure!(link.mtu == mtu, "net1 in {} has MTU {}", pod.id, link.mtu);
            ensure!(
                !link.alt_names.iter().any(|a| a == &lab.vfs[vfi].name),
                "net1 kept the host name as altname"
            );
            let pf_side = lab.pf_side(lab.vfs[vfi].index)?;
            ensure!(
                pf_side.vlan == 100 && pf_side.mac == mac && pf_side.spoofchk == Some(true),
                "VF {vfi} PF-side {pf_side:?}"
            );
            ensure!(
                provision::wait_vf_netdev(&root, &lab.vfs[vfi].pci, Duration::from_millis(200))
                    .is_err(),
                "VF {vfi} still has a netdev in the host"
            );
        }
        Ok(())
    });

    report.check("pods-ping-vlan100", || {
        ensure!(added, "skipped: ADD failed");
        let b = *ips.get("pod-b").ok_or_else(|| anyhow!("no IP for pod-b"))?;
        let ns = pod_a.ns()?;
        let (ok, out) = ping(&ns, b, 3)?;
        ensure!(ok, "pod-a got no answer from pod-b at {b}: {}", out.trim());
        // The answer came from B's admin MAC: B's VF really adopted it.
        let neigh =
            ns.run(|| crate::util::run_program("ip", &["neigh", "show", "dev", "net1"]))??;
        note(&format!("pod-a neighbours: {}", neigh.trim()));
        ensure!(
            neigh.to_ascii_lowercase().contains(&mac_b.to_string()),
            "pod-b did not answer from {mac_b}: {}",
            neigh.trim()
        );
        Ok(())
    });

    report.check("pods-vlan200-isolated", || {
        ensure!(added, "skipped: ADD failed");
        pod_c.create_netns(&root)?;
        // Installed under the name `sriov`, the same binary is the SR-IOV plugin.
        std::fs::create_dir_all(format!("{WORK}/bin"))?;
        let sriov = format!("{WORK}/bin/sriov");
        if !Path::new(&sriov).exists() {
            std::os::unix::fs::symlink(PLUGIN, &sriov)?;
        }
        let r = call_plugin(&sriov, "ADD", &pod_c.id, &pod_c.netns, &pod_c.conf, None)?;
        r.require_ok("ADD pod-c")?;
        let a = *ips.get("pod-a").ok_or_else(|| anyhow!("no IP for pod-a"))?;
        let (ok, out) = ping(&pod_c.ns()?, a, 2)?;
        ensure!(
            !ok,
            "pod-c on VLAN 200 reached pod-a on VLAN 100: {}",
            out.trim()
        );
        Ok(())
    });

    report.check("pods-check", || {
        ensure!(added, "skipped: ADD failed");
        pod_a.call("CHECK", None)?.require_ok("CHECK pod-a")?;
        // Tamper: rename net1 in the pod; CHECK must notice.
        let ns = pod_a.ns()?;
        let rename = |from: &'static str, to: &'static str, up: bool| -> Result<()> {
            ns.run(|| -> Result<()> {
                let mut nl = Netlink::open()?;
                let l = nl.link_by_name(from)?.ok_or_else(|| anyhow!("no {from}"))?;
                nl.set_up(l.index, false)?;
                nl.set_name(l.index, to)?;
                nl.set_up(l.index, up)?;
                Ok(())
            })?
        };
        rename("net1", "tampered0", true)?;
        let r = pod_a.call("CHECK", None)?;
        rename("tampered0", "net1", true)?;
        ensure!(!r.ok, "CHECK passed with net1 renamed");
        let code = r.json()?.get("code").cloned();
        note(&format!("CHECK after tampering: {}", r.stdout.trim()));
        ensure!(code == Some(json!(102)), "CHECK error code {code:?}");
        pod_a
            .call("CHECK", None)?
            .require_ok("CHECK pod-a after repair")?;
        Ok(())
    });

    report.check("pods-vf-busy", || {
        ensure!(added, "skipped: ADD failed");
        let thief = Pod::new("pod-thief", pod_a.conf.clone());
        thief.create_netns(&root)?;
        let r = thief.call("ADD", None)?;
        let _ = NetNs::delete_named(&root, &thief.id);
        ensure!(!r.ok, "a second ADD of pod-a's VF succeeded");
        let code = r.json()?.get("code").cloned();
        ensure!(
            code == Some(json!(101)),
            "busy error code {code:?}: {}",
            r.stdout
        );
        let (link, _) = pod_links(&pod_a.ns()?)?;
        ensure!(link.is_some(), "pod-a lost net1");
        Ok(())
    });

    report.check("pods-del-restores", || {
        for (pod, vfi) in [(&pod_a, 0), (&pod_b, 1), (&pod_c, 2)] {
            pod.call("DEL", None)?
                .require_ok(&format!("DEL {}", pod.id))?;
            // Idempotent.
            pod.call("DEL", None)?
                .require_ok(&format!("second DEL {}", pod.id))?;
            assert_restored(&lab, &lab.vfs[vfi])?;
            if vfi == 0 {
                vf_sets_own_mac(&lab.vfs[0])?;
            }
            let (link, names) = pod_links(&pod.ns()?)?;
            ensure!(link.is_none(), "{} still has net1 ({names:?})", pod.id);
            NetNs::delete_named(&root, &pod.id)?;
        }
        let left = [leases("vlan100")?, leases("vlan200")?].concat();
        ensure!(left.is_empty(), "IP leases left: {left:?}");
        let recs = records()?;
        ensure!(recs.is_empty(), "records left: {recs:?}");
        Ok(())
    });

    report.check("pods-concurrent-add-one-wins", || concurrent(&lab, &root));
    report.check("pods-gc", || gc(&lab, &root));
    report.check("pods-dpdk-vfio", || dpdk(&lab, &root));

    report.check("pods-add-failure-rolls-back", || rollback(&lab, &root));

    for step in [
        "after-pf-config",
        "after-temp-netns",
        "after-move",
        "after-ipam",
    ] {
        report.check(&format!("pods-crash-{step}"), || crash(&lab, &root, step));
    }

    report.check("pods-netns-gone", || netns_gone(&lab, &root));

    policy::run(report, &lab, &root);

    // How the VFs came to carry their MACs, from the plugin's own log.
    if let Ok(log) = std::fs::read_to_string(SRIOV_LOG) {
        let rebinds = log.lines().filter(|l| l.contains("rebinding")).count();
        note(&format!(
            "plugin log: {rebinds} MAC changes needed a VF driver rebind; first: {}",
            log.lines()
                .find(|l| l.contains("rebinding"))
                .unwrap_or("none")
        ));
    }
    note(&format!("pods scenario: {:?} after setup", t0.elapsed()));
}
