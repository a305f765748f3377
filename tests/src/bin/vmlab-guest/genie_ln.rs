//! The genie-pods scenario's VLAN tenancy through LogicalNetworks: `ln100` and `ln200` both name
//! plugin `sriov` (the genie conf's `sriov` key, the agent's pool on PF0) with the same subnet and
//! `spec.vlan` 100 and 200. Pods ln-a and ln-b ask CNI-Genie style (`cni: ""`,
//! `networks: "ln100@eth1"`), pod ln-c for `ln200`; ln-a pings ln-b over its VF, ln-c reaches
//! neither, the PF reads back VLANs 100/100/200 on their VFs and 0 after DEL.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, ensure, Result};
use serde_json::json;
use vfcore::netlink::{LinkOps, Netlink};

use crate::podnet::{Cluster, Pod, NET_POOL, NS};
use crate::report::{note, Report};

/// The subnet of both LogicalNetworks: inside the `sriov` key's range (10.56.0.0/24), so only
/// the VLAN keeps them apart.
const LN_SUBNET: &str = "10.56.0.96/27";

pub fn run(report: &mut Report, c: &mut Cluster) {
    let t0 = Instant::now();
    for (name, vlan) in [("ln100", 100), ("ln200", 200)] {
        let ln = json!({
            "apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"physicalNet": "pf0", "plugin": "sriov", "subnet": LN_SUBNET, "vlan": vlan}
        });
        if let Err(e) = c.node.api.create(ln) {
            report.fail("genie-ln-setup", &format!("{name}: {e:#}"));
            return;
        }
    }
    let mut pods: Vec<Pod> = Vec::new();
    let mut ok = true;
    for (name, ln) in [("ln-a", "ln100"), ("ln-b", "ln100"), ("ln-c", "ln200")] {
        ok = report.check_detail(&format!("genie-ln-add-{name}"), || {
            let t = Instant::now();
            let networks = format!("{ln}@eth1");
            let pod = c.add_pod(
                name,
                &[("cni", ""), ("networks", &networks)],
                &[(NET_POOL, 1)],
            )?;
            let took = t.elapsed();
            pod.wait_carrier("eth1")?;
            let ip = pod.ipv4("eth1")?;
            let o = ip.octets();
            ensure!(
                o[..3] == [10, 56, 0] && (96..128).contains(&o[3]),
                "{name} eth1 {ip} is not in {ln}'s subnet {LN_SUBNET}"
            );
            let dev = pod.devices.first().map(|(_, d)| d.clone());
            pods.push(pod);
            Ok(format!(
                "{name} eth1 {ip} from {ln} ({LN_SUBNET}); device {}; ADD took {} ms",
                dev.unwrap_or_default(),
                took.as_millis()
            ))
        });
        if !ok {
            break;
        }
    }
    if ok {
        checks(report, c, &pods);
    } else {
        c.show_logs(20);
    }
    let held: Vec<String> = pods
        .iter()
        .flat_map(|p| p.devices.iter().map(|(_, d)| d.clone()))
        .collect();
    let mut errors = Vec::new();
    for pod in pods {
        let name = pod.name.clone();
        if let Err(e) = c.del_pod(pod) {
            errors.push(format!("{name}: {e:#}"));
        }
    }
    report.check_detail("genie-ln-del-vlan-cleared", || {
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        let vlans = vf_vlans(c)?;
        let shown: Vec<String> = held
            .iter()
            .map(|d| format!("{d} vlan {:?}", vlans.get(d)))
            .collect();
        ensure!(
            held.iter().all(|d| vlans.get(d) == Some(&0)),
            "after DEL: {}",
            shown.join(", ")
        );
        Ok(format!("after DEL: {}", shown.join(", ")))
    });
    report.check("genie-ln-no-leftovers", || {
        let left = c.leftovers()?;
        ensure!(left.is_empty(), "left behind: {}", left.join(", "));
        Ok(())
    });
    note(&format!(
        "genie-ln: {} ms in the guest",
        t0.elapsed().as_millis()
    ));
}

fn pod<'a>(pods: &'a [Pod], name: &str) -> Result<&'a Pod> {
    pods.iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow!("no {name}"))
}

fn checks(report: &mut Report, c: &Cluster, pods: &[Pod]) {
    report.check_detail("genie-ln-vlan100-ping", || {
        let (a, b) = (pod(pods, "ln-a")?, pod(pods, "ln-b")?);
        let (a1, b1) = (a.ipv4("eth1")?, b.ipv4("eth1")?);
        let (ok, out) = a.reaches(b1, 3)?;
        ensure!(ok, "ln-a cannot ping ln-b's eth1 {b1}: {}", out.trim());
        Ok(format!(
            "ln-a {a1} <-> ln-b {b1} over their VFs (ln100, VLAN 100)"
        ))
    });
    report.check_detail("genie-ln-vlan200-isolated", || {
        let cc = pod(pods, "ln-c")?;
        let c1 = cc.ipv4("eth1")?;
        let mut seen = Vec::new();
        for other in ["ln-a", "ln-b"] {
            let ip = pod(pods, other)?.ipv4("eth1")?;
            let (ok, out) = cc.ping(ip, 2)?;
            ensure!(!ok, "ln-c (VLAN 200) reached {other} {ip}: {}", out.trim());
            seen.push(format!("{other} {ip}"));
        }
        Ok(format!(
            "ln-c {c1} (ln200, VLAN 200, same subnet) reaches neither {}",
            seen.join(" nor ")
        ))
    });
    report.check_detail("genie-ln-pf-vlans", || {
        let vlans = vf_vlans(c)?;
        let mut shown = Vec::new();
        for (name, want) in [("ln-a", 100), ("ln-b", 100), ("ln-c", 200)] {
            let p = pod(pods, name)?;
            let (_, dev) = p
                .devices
                .first()
                .ok_or_else(|| anyhow!("{name} holds no device"))?;
            let got = vlans.get(dev).copied();
            ensure!(
                got == Some(want),
                "{name}'s VF {dev}: PF says vlan {got:?}, want {want}"
            );
            shown.push(format!("{name} {dev} vlan {want}"));
        }
        Ok(format!(
            "read back from {}: {}",
            c.pf_name,
            shown.join(", ")
        ))
    });
}

/// The PF-side VLAN of each VF of PF0, by PCI address.
fn vf_vlans(c: &Cluster) -> Result<BTreeMap<String, u16>> {
    let mut nl = Netlink::open()?;
    let pf = nl
        .link_by_name(&c.pf_name)?
        .ok_or_else(|| anyhow!("no link {}", c.pf_name))?;
    let configs = nl.vf_configs(pf.index)?;
    let mut out = BTreeMap::new();
    for vf in &c.vfs {
        if let Some(cfg) = configs.iter().find(|x| x.vf == vf.index) {
            out.insert(vf.pci.to_string(), cfg.vlan);
        }
    }
    Ok(out)
}
