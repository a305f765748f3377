//! What the lab node shows about itself: network-status, the VFs restored, leftovers, logs, the
//! inventory; and the VF helpers setting the node up uses.

use super::*;

impl Cluster {
    /// The network-status genie last wrote on pod `name`.
    pub fn network_status(&self, name: &str) -> Result<Vec<Value>> {
        let writes = self.node.api.writes();
        let w = writes
            .iter()
            .rev()
            .find(|w| w.name == name)
            .ok_or_else(|| anyhow!("no status write for {name}"))?;
        let text = w
            .annotation(NETWORK_STATUS)
            .ok_or_else(|| anyhow!("the status write of {name} has no {NETWORK_STATUS}"))?;
        let v: Value = serde_json::from_str(text).context("network-status is not JSON")?;
        v.as_array()
            .cloned()
            .ok_or_else(|| anyhow!("network-status is not a list: {v}"))
    }

    /// Every VF of PF0 as before any pod: netdev name, MAC and MTU, driver, and the PF-side MAC,
    /// VLAN, spoof check and trust. A summary line per VF.
    pub fn restored(&self) -> Result<Vec<String>> {
        let mut nl = Netlink::open()?;
        let pf = nl
            .link_by_name(&self.pf_name)?
            .ok_or_else(|| anyhow!("no link {}", self.pf_name))?;
        let configs = nl.vf_configs(pf.index)?;
        let mut out = Vec::new();
        for vf in &self.vfs {
            let now = configs
                .iter()
                .find(|c| c.vf == vf.index)
                .ok_or_else(|| anyhow!("{} reports no VF {}", self.pf_name, vf.index))?;
            let o = &vf.pf_side;
            ensure!(
                (now.mac, now.vlan, now.qos, now.spoofchk, now.trust)
                    == (o.mac, o.vlan, o.qos, o.spoofchk, o.trust),
                "VF {} PF-side mac {} vlan {} qos {} spoofchk {:?} trust {:?}, was mac {} vlan {} qos {} spoofchk {:?} trust {:?}",
                vf.index, now.mac, now.vlan, now.qos, now.spoofchk, now.trust,
                o.mac, o.vlan, o.qos, o.spoofchk, o.trust
            );
            let line = match &vf.netdev {
                Some((name, mac, mtu)) => {
                    let back = provision::wait_vf_netdev(&self.root, &vf.pci, TIMEOUT)?;
                    ensure!(
                        back == *name,
                        "VF {} is back as {back}, not {name}",
                        vf.index
                    );
                    let link = nl
                        .link_by_name(name)?
                        .ok_or_else(|| anyhow!("no link {name} in the host"))?;
                    ensure!(
                        link.mac == *mac && link.mtu == *mtu,
                        "{name}: MAC {} MTU {}, was {} {mtu}",
                        show_mac(link.mac),
                        link.mtu,
                        show_mac(*mac)
                    );
                    format!(
                        "VF {} {} {name} mac {} vlan {}",
                        vf.index,
                        vf.pci,
                        show_mac(link.mac),
                        now.vlan
                    )
                }
                None => {
                    let driver = bind::current_driver(&self.root, &vf.pci)?;
                    ensure!(
                        driver.as_deref() == Some("vfio-pci"),
                        "VF {} is bound to {driver:?}, not vfio-pci",
                        vf.index
                    );
                    format!("VF {} {} vfio-pci vlan {}", vf.index, vf.pci, now.vlan)
                }
            };
            out.push(line);
        }
        Ok(out)
    }

    /// What a pod could leave behind: host-local leases, genie's cache records, the sriov
    /// plugin's attachment records, the device-info copies genie made, the host ends of the
    /// bridge plugin's veth pairs.
    pub fn leftovers(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .node
            .leases()
            .into_iter()
            .map(|l| format!("lease {l}"))
            .collect();
        out.extend(
            self.node
                .cache_records()
                .into_iter()
                .map(|r| format!("genie cache {r}")),
        );
        out.extend(
            file_names(&self.state_dir.join("attachments"))
                .into_iter()
                .map(|r| format!("sriov record {r}")),
        );
        out.extend(
            file_names(&self.paths.devinfo.join("cni"))
                .into_iter()
                .map(|r| format!("device-info {r}")),
        );
        let mut nl = Netlink::open()?;
        out.extend(
            nl.links()?
                .into_iter()
                .filter(|l| l.kind.as_deref() == Some("veth"))
                .map(|l| format!("veth {}", l.name)),
        );
        Ok(out)
    }

    /// genie's and the sriov plugin's logs: (name, path).
    pub(super) fn logs() -> [(&'static str, PathBuf); 2] {
        [
            ("genie.log", Path::new(WORK).join("genie.log")),
            ("sriov.log", PathBuf::from(SRIOV_LOG)),
        ]
    }

    /// The ends of genie's and the sriov plugin's logs, and the agent's, for a failure report.
    pub fn show_logs(&self, lines: usize) {
        for (log, path) in Self::logs() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            note(&format!(
                "last lines of {log}:\n{}",
                last_lines(&text, lines)
            ));
        }
        self.agent.show_log(lines);
    }

    /// genie's, the sriov plugin's and the agent's whole logs into the console log only (the
    /// host echoes VMLAB-OUT lines, not these).
    pub fn dump_logs(&self) {
        for (log, path) in Self::logs() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                println!("VMLAB-LOG {log} | {line}");
            }
        }
        self.agent.dump_log();
    }

    /// `vfgenie-agent inventory --config` of this node.
    pub fn inventory(&self) -> Result<String> {
        let config = self.paths.config.display().to_string();
        run_program(
            "/usr/local/bin/vfgenie-agent",
            &["inventory", "--config", &config],
        )
    }
}

pub fn netns_name(pod: &str) -> String {
    format!("genie-{pod}")
}

pub(super) fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all.get(all.len().saturating_sub(n)..)
        .unwrap_or(&[])
        .join("\n")
}

pub fn show_mac(mac: Option<MacAddr>) -> String {
    mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into())
}

/// Waits for the agent's provisioning of PF0: `net + vfio` VFs, the first `net` on igbvf with a
/// netdev, the others on vfio-pci. Returns them in index order.
pub(super) fn provisioned(
    root: &SysRoot,
    pf: &PciAddress,
    net: u32,
    vfio: u32,
) -> Result<Vec<sysfs::VfLink>> {
    let mut last = String::new();
    wait_for("PF0 provisioned by the agent", PROVISION_TIMEOUT, || {
        let check = || -> Result<Vec<sysfs::VfLink>> {
            let mut vfs = sysfs::vfs_of(root, pf)?;
            vfs.sort_by_key(|v| v.index.0);
            ensure!(vfs.len() == (net + vfio) as usize, "{} VFs", vfs.len());
            for vf in &vfs {
                let want = if vf.index.0 < net {
                    "igbvf"
                } else {
                    "vfio-pci"
                };
                let driver = bind::current_driver(root, &vf.address)?;
                ensure!(
                    driver.as_deref() == Some(want),
                    "VF {} driver {driver:?}",
                    vf.index
                );
                if want == "igbvf" {
                    ensure!(
                        !sysfs::netdevs_of(root, &vf.address)?.is_empty(),
                        "VF {} has no netdev yet",
                        vf.index
                    );
                }
            }
            Ok(vfs)
        };
        match check() {
            Ok(v) => Some(v),
            Err(e) => {
                last = format!("{e:#}");
                None
            }
        }
    })
    .with_context(|| format!("last seen: {last}"))
}

/// A VF that probed while the PF was resetting for VF creation never registered its MAC with the
/// PF (the PF shows another MAC) and passes no traffic; rebinding its driver completes the
/// handshake. The kubelet would see the same VF; a real node's VFs are not created under load.
pub(super) fn repair_mailbox(root: &SysRoot, pf_name: &str, vfs: &[sysfs::VfLink]) -> Result<()> {
    let mut nl = Netlink::open()?;
    let pf = nl
        .link_by_name(pf_name)?
        .ok_or_else(|| anyhow!("no link {pf_name}"))?;
    let configs = nl.vf_configs(pf.index)?;
    for vf in vfs {
        if !on_igbvf(root, vf)? {
            continue;
        }
        let name = provision::wait_vf_netdev(root, &vf.address, TIMEOUT)?;
        let mac = nl.link_by_name(&name)?.and_then(|l| l.mac);
        let pf_mac = configs.iter().find(|c| c.vf == vf.index).map(|c| c.mac);
        if mac != pf_mac {
            note(&format!(
                "VF {} ({name}) MAC {} is unknown to its PF ({}): rebinding igbvf",
                vf.index,
                show_mac(mac),
                show_mac(pf_mac)
            ));
            bind::bind_default(root, &vf.address, TIMEOUT)?;
            provision::wait_vf_netdev(root, &vf.address, TIMEOUT)?;
        }
    }
    Ok(())
}

/// The VF is a netdev (igbvf), not on vfio-pci.
fn on_igbvf(root: &SysRoot, vf: &sysfs::VfLink) -> Result<bool> {
    Ok(bind::current_driver(root, &vf.address)?.as_deref() == Some("igbvf"))
}

/// Each VF's state before any pod (after [`repair_mailbox`]).
pub(super) fn originals(pf_name: &str, vfs: &[sysfs::VfLink]) -> Result<Vec<VfOriginal>> {
    let root = SysRoot::host();
    let mut nl = Netlink::open()?;
    let pf = nl
        .link_by_name(pf_name)?
        .ok_or_else(|| anyhow!("no link {pf_name}"))?;
    let configs = nl.vf_configs(pf.index)?;
    let mut out = Vec::new();
    for vf in vfs {
        let pf_side = configs
            .iter()
            .find(|c| c.vf == vf.index)
            .cloned()
            .ok_or_else(|| anyhow!("{pf_name} reports no VF {}", vf.index))?;
        let netdev = if on_igbvf(&root, vf)? {
            let name = provision::wait_vf_netdev(&root, &vf.address, TIMEOUT)?;
            let link = nl
                .link_by_name(&name)?
                .ok_or_else(|| anyhow!("no link {name}"))?;
            ensure!(
                link.mac == Some(pf_side.mac),
                "VF {} ({name}) MAC {} is still unknown to its PF ({})",
                vf.index,
                show_mac(link.mac),
                pf_side.mac
            );
            Some((name, link.mac, link.mtu))
        } else {
            None
        };
        out.push(VfOriginal {
            pci: vf.address,
            index: vf.index,
            netdev,
            pf_side,
        });
    }
    Ok(out)
}

/// One line per VF: index, PCI address, netdev or driver, MAC, PF-side VLAN.
pub fn vf_table(vfs: &[VfOriginal]) -> String {
    vfs.iter()
        .map(|v| match &v.netdev {
            Some((name, mac, _)) => format!(
                "VF {} {} {name} mac {} vlan {}",
                v.index,
                v.pci,
                show_mac(*mac),
                v.pf_side.vlan
            ),
            None => format!("VF {} {} vfio-pci vlan {}", v.index, v.pci, v.pf_side.vlan),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
