//! `vmlab-guest demo`: what a node looks like to the project. Shows the inventory (the agent's own
//! `vfgenie-agent inventory` when the build has it, else the core library's discovery table), then
//! creates VFs, moves one into a network namespace under the name a pod would see, addresses it and
//! shows `ip addr` from inside that namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};
use vfcore::netlink::{LinkOps, Netlink};
use vfcore::netns::NetNs;
use vfcore::{provision, sysfs, SysRoot};

use crate::core_checks::{discovery_table, igb_pfs, pf_up};
use crate::report::{note, Report};
use crate::util::{run_program, wait_for};

const TIMEOUT: Duration = Duration::from_secs(20);
const AGENT: &str = "/usr/local/bin/vfgenie-agent";
const NETNS: &str = "demo-pod";

pub fn run(report: &mut Report) {
    let root = SysRoot::host();
    let mut pf = None;
    report.check("demo-vfs", || {
        let pfs = igb_pfs(&root)?;
        let first = pfs.first().ok_or_else(|| anyhow!("no igb PF"))?;
        // VFs created under a PF that is down never get the PF's answer to their mailbox reset
        // and stay without carrier; bring the PF up first.
        pf_up(&root, first)?;
        let vfs = provision::set_num_vfs(&root, &first.address, 2, TIMEOUT)?;
        for vf in &vfs {
            provision::wait_vf_netdev(&root, &vf.address, TIMEOUT)?;
        }
        // Creating VFs resets the PF; wait for its link to come back (VFs follow it).
        pf_up(&root, first)?;
        pf = Some(first.address);
        Ok(())
    });
    report.check("demo-inventory", || {
        if Path::new(AGENT).exists() {
            match run_program(AGENT, &["inventory"]) {
                Ok(out) if !out.trim().is_empty() => {
                    note(&format!("$ vfgenie-agent inventory\n{}", out.trim_end()));
                    return Ok(());
                }
                Ok(_) => {
                    note("vfgenie-agent inventory printed nothing; showing the discovery table")
                }
                Err(e) => note(&format!(
                    "vfgenie-agent inventory failed ({e:#}); showing the discovery table"
                )),
            }
        }
        note(&discovery_table(&sysfs::discover(&root)?));
        Ok(())
    });
    report.check("demo-netns", || {
        let pf = pf.ok_or_else(|| anyhow!("skipped: no VFs were created"))?;
        let vf = sysfs::vfs_of(&root, &pf)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{pf} has no VFs"))?;
        let name = provision::wait_vf_netdev(&root, &vf.address, TIMEOUT)?;
        let ns = NetNs::create_named(&root, NETNS)?;
        let result = (|| -> Result<String> {
            let mut nl = Netlink::open()?;
            let link = nl
                .link_by_name(&name)?
                .ok_or_else(|| anyhow!("no link {name}"))?;
            nl.move_to_netns(link.index, &ns)?;
            let name = name.clone();
            ns.run(move || -> Result<String> {
                let mut nl = Netlink::open()?;
                let link = nl.wait_for_link(&name, TIMEOUT)?;
                nl.set_name(link.index, "net1")?;
                nl.add_address(link.index, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), 24)?;
                nl.set_up(link.index, true)?;
                // Show the link with its carrier when it comes (the VF follows its PF's link).
                let _ = wait_for("net1 carrier", Duration::from_secs(10), || {
                    nl.link_by_name("net1")
                        .ok()
                        .flatten()
                        .filter(|l| l.oper_state.eq_ignore_ascii_case("up"))
                });
                run_program("ip", &["addr"])
            })?
        })();
        // Deleting the namespace returns the VF to the initial one.
        let deleted = NetNs::delete_named(&root, NETNS);
        let shown = result?;
        note(&format!(
            "VF {} ({name}) as pod interface net1, inside netns {NETNS}:\n$ ip addr\n{}",
            vf.address,
            shown.trim_end()
        ));
        deleted?;
        Ok(())
    });
}
