//! `vmlab-guest genie-pods`: pods with real VFs through genie, as on a node (see [`podnet`] for the
//! node: the real agent serving PF0's VFs, the kubelet, PodResources and API-server stand-ins, and
//! the `genie` binary exec'd as a container runtime execs it).
//!
//! Pods A and B get eth0 from the cluster network (bridge, host-local) and net1 from a VF on VLAN
//! 100 (NAD `vlan100`, NPWG annotation) and ping each other over net1; pod C's VF is on VLAN 200
//! in the same subnet and cannot reach A; pod D's VF stays bound to vfio-pci and its
//! network-status carries the device-info of its PCI address, its Allocate env the vfio group
//! device; pod E asks CNI-Genie style (`cni: "sriov"`) and gets a VF of the agent's pool on eth1.
//! Every network-status lists the pod's interfaces with their IPs and MACs. After DEL of every pod
//! the VFs are back in the host as they were (read from the PF through netlink) and nothing is left
//! behind: no lease, no cache record, no device-info copy, no veth. Before that check, hot-plug
//! with a real VF: a running pod's VF network added (genie UPDATE) and pinging over it, then
//! removed with the VF back in the host. Then the same VLAN tenancy through LogicalNetworks (see
//! [`crate::genie_ln`]).
//!
//! [`podnet`]: crate::podnet

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::Value;
use vfcore::{sysfs, PciAddress};

use crate::podnet::{show_mac, vf_table, Cluster, Pod, NETWORKS, NET_POOL, VFIO_POOL};
use crate::report::{note, Report};

pub fn run(report: &mut Report) {
    let t0 = Instant::now();
    let mut cluster = None;
    report.check_detail("genie-pods-setup", || {
        let c = Cluster::start()?;
        note(&format!(
            "PF0 {} VFs before any pod:\n{}",
            c.pf_name,
            vf_table(&c.vfs)
        ));
        cluster = Some(c);
        Ok(format!(
            "agent provisioned PF0 and serves igb_net (4) and igb_vfio (2), in {} ms",
            t0.elapsed().as_millis()
        ))
    });
    let Some(mut c) = cluster else {
        return;
    };
    let mut pods: Vec<Pod> = Vec::new();
    let ok = add_pods(report, &mut c, &mut pods);
    if ok {
        checks(report, &c, &pods);
    } else {
        c.show_logs(20);
    }

    let mut errors = Vec::new();
    let n = pods.len();
    for pod in pods {
        let name = pod.name.clone();
        if let Err(e) = c.del_pod(pod) {
            errors.push(format!("{name}: {e:#}"));
        }
    }
    let del_ok = report.check_detail("genie-pods-del", || {
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        Ok(format!("{n} pods deleted"))
    });
    if del_ok {
        report.check_detail("genie-pods-hotplug-vf", || hotplug(&mut c));
    }
    report.check_detail("genie-pods-vfs-restored", || {
        let lines = c.restored()?;
        note(&format!("PF0's VFs after DEL:\n{}", lines.join("\n")));
        Ok("names, MACs, MTUs, drivers, and PF-side MAC, VLAN, spoofchk, trust as before".into())
    });
    report.check("genie-pods-no-leftovers", || {
        let left = c.leftovers()?;
        ensure!(left.is_empty(), "left behind: {}", left.join(", "));
        Ok(())
    });
    if !del_ok {
        c.show_logs(20);
    }
    // VLAN tenancy through LogicalNetworks, on the VFs the pods above gave back.
    crate::genie_ln::run(report, &mut c);
    c.dump_logs();
    note(&format!(
        "genie-pods: {} ms in the guest",
        t0.elapsed().as_millis()
    ));
}

/// A pod of the scenario: name, its annotation, the pool it holds a device of, the links wanted
/// in it.
type PodPlan = (
    &'static str,
    (&'static str, &'static str),
    &'static str,
    &'static [&'static str],
);

/// The pods of the scenario, each a check; false when one failed (later checks would be moot).
fn add_pods(report: &mut Report, c: &mut Cluster, pods: &mut Vec<Pod>) -> bool {
    let plan: [PodPlan; 5] = [
        ("pod-a", (NETWORKS, "vlan100"), NET_POOL, &["eth0", "net1"]),
        ("pod-b", (NETWORKS, "vlan100"), NET_POOL, &["eth0", "net1"]),
        ("pod-c", (NETWORKS, "vlan200"), NET_POOL, &["eth0", "net1"]),
        ("pod-d", (NETWORKS, "dpdk"), VFIO_POOL, &["eth0"]),
        ("pod-e", ("cni", "sriov"), NET_POOL, &["eth0", "eth1"]),
    ];
    for (name, annotation, pool, want) in plan {
        let ok = report.check_detail(&format!("genie-pods-add-{name}"), || {
            let t = Instant::now();
            let pod = c.add_pod(name, &[annotation], &[(pool, 1)])?;
            let took = t.elapsed();
            let links = pod.links()?;
            let names: Vec<&str> = links.keys().map(String::as_str).collect();
            ensure!(names == want, "{name} has {names:?}, want {want:?}");
            // genie's result names them too, in the pod's sandbox.
            let in_result: Vec<&str> = pod.result["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["sandbox"].as_str().is_some_and(|s| !s.is_empty()))
                .filter_map(|i| i["name"].as_str())
                .collect();
            for n in want {
                ensure!(
                    in_result.contains(n),
                    "genie's result lists {in_result:?} in the sandbox, not {n}: {}",
                    pod.result
                );
            }
            let shown: Vec<String> = links
                .iter()
                .map(|(n, (mac, addrs))| format!("{n} {} {}", show_mac(*mac), addrs.join(",")))
                .collect();
            let devices: Vec<String> = pod.devices.iter().map(|(_, d)| d.clone()).collect();
            pods.push(pod);
            Ok(format!(
                "{}; device {}; ADD took {} ms",
                shown.join("; "),
                devices.join(","),
                took.as_millis()
            ))
        });
        if !ok {
            return false;
        }
    }
    true
}

fn pod<'a>(pods: &'a [Pod], name: &str) -> Result<&'a Pod> {
    pods.iter()
        .find(|p| p.name == name)
        .ok_or_else(|| anyhow!("no {name}"))
}

fn checks(report: &mut Report, c: &Cluster, pods: &[Pod]) {
    report.check_detail("genie-pods-vlan100-ping", || {
        let (a, b) = (pod(pods, "pod-a")?, pod(pods, "pod-b")?);
        a.wait_carrier("net1")?;
        b.wait_carrier("net1")?;
        let (a1, b1) = (a.ipv4("net1")?, b.ipv4("net1")?);
        let (ok, out) = a.reaches(b1, 3)?;
        ensure!(ok, "pod-a cannot ping pod-b's net1 {b1}: {}", out.trim());
        let (ok, out) = b.reaches(a1, 3)?;
        ensure!(ok, "pod-b cannot ping pod-a's net1 {a1}: {}", out.trim());
        let b0 = b.ipv4("eth0")?;
        let (ok, out) = a.reaches(b0, 3)?;
        ensure!(ok, "pod-a cannot ping pod-b's eth0 {b0}: {}", out.trim());
        Ok(format!(
            "pod-a {a1} <-> pod-b {b1} over net1 (VLAN 100); over eth0 to {b0} too"
        ))
    });
    report.check_detail("genie-pods-vlan200-isolated", || {
        let (a, cc) = (pod(pods, "pod-a")?, pod(pods, "pod-c")?);
        cc.wait_carrier("net1")?;
        let (a1, c1) = (a.ipv4("net1")?, cc.ipv4("net1")?);
        let (ok, out) = cc.ping(a1, 2)?;
        ensure!(!ok, "pod-c (VLAN 200) reached pod-a {a1}: {}", out.trim());
        let (ok, out) = a.ping(c1, 2)?;
        ensure!(!ok, "pod-a reached pod-c (VLAN 200) {c1}: {}", out.trim());
        Ok(format!(
            "pod-c {c1} on VLAN 200 and pod-a {a1} on VLAN 100, same subnet: no answer either way"
        ))
    });
    report.check_detail("genie-pods-vfio", || vfio(c, pod(pods, "pod-d")?));
    report.check_detail("genie-pods-network-status", || {
        let mut n = 0;
        for p in pods {
            n += network_status(c, p).with_context(|| p.name.clone())?;
        }
        let a = c.network_status("pod-a")?;
        note(&format!(
            "network-status of pod-a:\n{}",
            serde_json::to_string_pretty(&a)?
        ));
        Ok(format!(
            "{n} interfaces in {} pods, each with its IPs and MAC",
            pods.len()
        ))
    });
    report.check_detail("genie-pods-cni-genie-sriov", || {
        let (e, a) = (pod(pods, "pod-e")?, pod(pods, "pod-a")?);
        e.wait_carrier("eth1")?;
        let (e1, a1) = (e.ipv4("eth1")?, a.ipv4("net1")?);
        let (ok, out) = e.reaches(a1, 3)?;
        ensure!(ok, "pod-e eth1 {e1} cannot ping pod-a {a1}: {}", out.trim());
        let (_, dev) = e
            .devices
            .first()
            .ok_or_else(|| anyhow!("pod-e holds no device"))?;
        Ok(format!(
            "cni: \"sriov\" gave pod-e {dev} as eth1 {e1} from the agent's pools; it pings pod-a {a1}"
        ))
    });
}

/// Hot-plug with a real VF (genie UPDATE, what the agent runs when a pod's annotation changes):
/// pod-f holds a VF of the netdev pool but asks for no VF network; its annotation gains `vlan100`
/// and the UPDATE moves the VF in as net1, which pings pod-g on VLAN 100; the annotation loses it
/// and the UPDATE gives the VF back to the host (checked again with every VF below).
fn hotplug(c: &mut Cluster) -> Result<String> {
    let g = c.add_pod("pod-g", &[(NETWORKS, "vlan100")], &[(NET_POOL, 1)])?;
    let f = c.add_pod("pod-f", &[], &[(NET_POOL, 1)])?;
    let run = |c: &mut Cluster, f: &Pod| -> Result<Value> {
        let out = c.node.cni(
            "UPDATE",
            &f.container_id,
            f.netns.path(),
            "eth0",
            Some((crate::podnet::NS, "pod-f")),
            &c.genie_conf(),
        )?;
        ensure!(out.success, "genie UPDATE: {} {}", out.stdout, out.stderr);
        out.json()
    };
    let outcome = (|| -> Result<String> {
        let before: Vec<String> = f.links()?.keys().cloned().collect();
        ensure!(before == ["eth0"], "pod-f starts with {before:?}");
        let (_, dev) = f
            .devices
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("no device"))?;
        c.node
            .api
            .add_pod(crate::podnet::NS, "pod-f", &[(NETWORKS, "vlan100")]);
        let added = run(c, &f)?;
        ensure!(
            added["added"] == serde_json::json!(["default/vlan100@net1"]),
            "UPDATE answered {added}"
        );
        f.wait_carrier("net1")?;
        let (f1, g1) = (f.ipv4("net1")?, g.ipv4("net1")?);
        let (ok, out) = f.reaches(g1, 3)?;
        ensure!(
            ok,
            "pod-f's hot-added net1 {f1} cannot ping pod-g {g1}: {}",
            out.trim()
        );
        let in_host = |dev: &str| -> bool {
            std::fs::read_dir(format!("/sys/bus/pci/devices/{dev}/net"))
                .map(|d| d.count() > 0)
                .unwrap_or(false)
        };
        ensure!(
            !in_host(&dev),
            "{dev} is still in the host after the hot-add"
        );
        c.node.api.add_pod(crate::podnet::NS, "pod-f", &[]);
        let removed = run(c, &f)?;
        ensure!(
            removed["removed"] == serde_json::json!(["default/vlan100@net1"]),
            "UPDATE answered {removed}"
        );
        let after: Vec<String> = f.links()?.keys().cloned().collect();
        ensure!(
            after == ["eth0"],
            "pod-f has {after:?} after the hot-remove"
        );
        ensure!(
            in_host(&dev),
            "{dev} is not back in the host after the hot-remove"
        );
        Ok(format!(
            "{dev} hot-added to pod-f as net1 {f1} (pinged pod-g {g1} on VLAN 100) and hot-removed back to the host"
        ))
    })();
    let dels = [c.del_pod(f), c.del_pod(g)];
    let detail = outcome?;
    for d in dels {
        d?;
    }
    Ok(detail)
}

/// Pod D: its VF stays on vfio-pci (nothing moved into the pod); network-status names its PCI
/// address in device-info; the Allocate env's `_INFO` names the group device, which exists.
fn vfio(c: &Cluster, d: &Pod) -> Result<String> {
    let (_, dev) = d
        .devices
        .first()
        .ok_or_else(|| anyhow!("pod-d holds no device"))?;
    let status = c.network_status(&d.name)?;
    let entry = status
        .iter()
        .find(|e| e["name"] == "default/dpdk")
        .ok_or_else(|| anyhow!("no default/dpdk entry in {status:?}"))?;
    ensure!(
        entry["device-info"]["pci"]["pci-address"] == dev.as_str(),
        "device-info {} does not name {dev}",
        entry["device-info"]
    );
    let addr: PciAddress = dev.parse()?;
    let root = vfcore::SysRoot::host();
    let driver = vfcore::bind::current_driver(&root, &addr)?;
    ensure!(
        driver.as_deref() == Some("vfio-pci"),
        "{dev} is bound to {driver:?} while pod-d holds it"
    );
    let group = sysfs::read_device(&root, &addr)?
        .iommu_group
        .ok_or_else(|| anyhow!("{dev} has no IOMMU group"))?;
    let key = "PCIDEVICE_EXAMPLE_COM_IGB_VFIO_INFO";
    let info = d
        .envs
        .get(key)
        .ok_or_else(|| anyhow!("Allocate gave no {key}"))?;
    let info: Value = serde_json::from_str(info).with_context(|| format!("{key} is not JSON"))?;
    let mount = info[dev]["vfio"]["dev-mount"]
        .as_str()
        .ok_or_else(|| anyhow!("{key} has no vfio dev-mount for {dev}: {info}"))?;
    ensure!(
        mount == format!("/dev/vfio/{group}"),
        "{key} names {mount}, the group of {dev} is {group}"
    );
    ensure!(Path::new(mount).exists(), "{mount} does not exist");
    Ok(format!(
        "{dev} on vfio-pci; network-status device-info {}; {key} names {mount}, which exists",
        entry["device-info"]
    ))
}

/// Every interface of the pod is in its network-status with its IPs and MAC, the default one
/// marked, VFs with the device-info of the pod's device. Returns how many interfaces.
fn network_status(c: &Cluster, p: &Pod) -> Result<usize> {
    let status = c.network_status(&p.name)?;
    let links = p.links()?;
    let devices: BTreeSet<&str> = p.devices.iter().map(|(_, d)| d.as_str()).collect();
    for (ifname, (mac, addrs)) in &links {
        let e = status
            .iter()
            .find(|e| e["interface"] == ifname.as_str())
            .ok_or_else(|| anyhow!("{ifname} is not in the network-status {status:?}"))?;
        let mac = show_mac(*mac);
        ensure!(
            e["mac"].as_str().map(str::to_ascii_lowercase) == Some(mac.to_ascii_lowercase()),
            "{ifname} has MAC {mac}, network-status says {}",
            e["mac"]
        );
        let mut want: Vec<String> = addrs
            .iter()
            .map(|a| a.split('/').next().unwrap_or_default().to_string())
            .collect();
        want.sort();
        let mut ips: Vec<String> = e["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .filter(|ip| !ip.contains(':'))
            .collect();
        ips.sort();
        ensure!(
            !ips.is_empty() && ips == want,
            "{ifname} has {want:?}, network-status says {ips:?}"
        );
        ensure!(
            (ifname == "eth0") == (e["default"] == true),
            "{ifname}: default is {}",
            e["default"]
        );
        if ifname != "eth0" {
            let pci = e["device-info"]["pci"]["pci-address"]
                .as_str()
                .unwrap_or_default();
            ensure!(
                devices.contains(pci),
                "{ifname}: device-info {} does not name the pod's device {devices:?}",
                e["device-info"]
            );
        }
    }
    let listed: BTreeSet<&str> = status
        .iter()
        .filter_map(|e| e["interface"].as_str())
        .collect();
    ensure!(
        listed.len() == status.len(),
        "an entry without interface or a duplicate in {status:?}"
    );
    Ok(links.len())
}
