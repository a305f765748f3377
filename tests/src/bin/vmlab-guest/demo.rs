//! `vmlab-guest demo`: the project's story on one node (the same node as `genie-pods`, see
//! [`podnet`]). The agent provisions PF0's VFs and prints the inventory; two pods ask for the
//! `vlan100` network with the NPWG annotation and the `genie` binary, exec'd as a container
//! runtime execs it, gives each eth0 on the cluster bridge and net1 on a VF (VLAN 100); the demo
//! shows their interfaces and network-status, pings one from the other over net1, deletes both
//! and shows every VF back in the host as it was.
//!
//! [`podnet`]: crate::podnet

use anyhow::{anyhow, ensure, Result};

use crate::podnet::{vf_table, Cluster, Pod, NETWORKS, NET_POOL};
use crate::report::{note, Report};

pub fn run(report: &mut Report) {
    let mut cluster = None;
    report.check("demo-agent", || {
        let c = Cluster::start()?;
        note(&format!(
            "vfgenie-agent run provisioned PF0 {}; its VFs:\n{}",
            c.pf_name,
            vf_table(&c.vfs)
        ));
        cluster = Some(c);
        Ok(())
    });
    let Some(c) = cluster else {
        return;
    };
    report.check("demo-inventory", || {
        note(&format!(
            "$ vfgenie-agent inventory --config {}\n{}",
            c.paths.config.display(),
            c.inventory()?.trim_end()
        ));
        Ok(())
    });

    let mut pods: Vec<Pod> = Vec::new();
    let added = report.check("demo-pods", || {
        for name in ["pod-a", "pod-b"] {
            note(&format!(
                "pod {name}: annotation {NETWORKS}: vlan100 (NAD vlan100: type sriov, vlan 100, resourceName {NET_POOL})"
            ));
            let pod = c.add_pod(name, &[(NETWORKS, "vlan100")], &[(NET_POOL, 1)])?;
            let status = c.network_status(name)?;
            note(&format!(
                "{name} holds {}; inside it:\n$ ip addr\n{}\nnetwork-status:\n{}",
                pod.devices
                    .iter()
                    .map(|(pool, d)| format!("{d} ({pool})"))
                    .collect::<Vec<_>>()
                    .join(", "),
                pod.ip_addr()?.trim_end(),
                serde_json::to_string_pretty(&status)?
            ));
            pods.push(pod);
        }
        Ok(())
    });
    if added {
        report.check("demo-ping", || ping(&pods));
    } else {
        c.show_logs(20);
    }

    report.check("demo-del", || {
        let mut errors = Vec::new();
        for pod in pods.drain(..) {
            let name = pod.name.clone();
            if let Err(e) = c.del_pod(pod) {
                errors.push(format!("{name}: {e:#}"));
            }
        }
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        let lines = c.restored()?;
        note(&format!(
            "after DEL of both pods, PF0's VFs are back as before:\n{}",
            lines.join("\n")
        ));
        let left = c.leftovers()?;
        ensure!(left.is_empty(), "left behind: {}", left.join(", "));
        note("no address lease, cache record, device-info copy or veth left");
        Ok(())
    });
}

fn ping(pods: &[Pod]) -> Result<()> {
    let [a, b] = pods else {
        return Err(anyhow!("two pods expected"));
    };
    a.wait_carrier("net1")?;
    b.wait_carrier("net1")?;
    let target = b.ipv4("net1")?;
    let (ok, out) = a.reaches(target, 3)?;
    note(&format!(
        "from {} over net1:\n$ ping -c 2 {target}\n{}",
        a.name,
        out.trim_end()
    ));
    ensure!(ok, "{} cannot ping {} over net1", a.name, b.name);
    Ok(())
}
