//! The agent process and the node state the agent scenario checks.

use crate::report::note;
use crate::util::{read_trim, run_program, wait_for};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use vfcore::sysfs::{self, PciNetDevice};
use vfcore::{PciAddress, SysRoot};
use vfgenie_tests::kubelet::Resource;

use super::{AGENT, WORK};

/// The agent's files; shared with the pod scenarios (`podnet`).
pub(crate) struct Paths {
    pub(crate) config: PathBuf,
    pub(crate) plugins: PathBuf,
    pub(crate) devinfo: PathBuf,
    pub(crate) podres: PathBuf,
}

impl Paths {
    pub(crate) fn new() -> Result<Self> {
        let work = Path::new(WORK);
        let p = Self {
            config: work.join("config.json"),
            plugins: work.join("device-plugins"),
            devinfo: work.join("devinfo"),
            // Nothing serves it in this scenario (the pod scenarios serve PodResources there).
            podres: work.join("pod-resources/kubelet.sock"),
        };
        std::fs::create_dir_all(&p.plugins).context("creating the device-plugin dir")?;
        std::fs::create_dir_all(&p.devinfo).context("creating the devinfo dir")?;
        Ok(p)
    }
}

/// The agent as a child process, its stderr in a log file.
pub(crate) struct AgentProc {
    child: Child,
    pub(super) log: PathBuf,
}

impl AgentProc {
    pub(crate) fn start(p: &Paths, n: u32) -> Result<Self> {
        let log = Path::new(WORK).join(format!("agent-{n}.log"));
        let file = std::fs::File::create(&log).context("creating the agent log")?;
        let child = Command::new(AGENT)
            .args(["run", "--config"])
            .arg(&p.config)
            .arg("--plugin-dir")
            .arg(&p.plugins)
            .arg("--devinfo-dir")
            .arg(&p.devinfo)
            .arg("--pod-resources-socket")
            .arg(&p.podres)
            .args(["--health-ms", "200", "--resync-seconds", "60"])
            .env("VFGENIE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {AGENT}"))?;
        Ok(Self { child, log })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then a bounded wait for the exit.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the agent had already exited with {status}");
        }
        run_program("kill", &["-TERM", &self.child.id().to_string()])?;
        let status = wait_for("the agent to exit after SIGTERM", timeout, || {
            self.child.try_wait().ok().flatten()
        })?;
        Ok(status)
    }

    /// The whole log into the console log only (the host echoes VMLAB-OUT lines, not these).
    pub(crate) fn dump_log(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let name = self
            .log
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for line in text.lines() {
            println!("VMLAB-LOG {name} | {line}");
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The end of the agent's log, for a failure report.
    pub(crate) fn show_log(&self, lines: usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all.get(all.len().saturating_sub(lines)..).unwrap_or(&[]);
        note(&format!(
            "last lines of {}:\n{}",
            self.log.display(),
            tail.join("\n")
        ));
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a change to a VF would show: its driver, and its netdev's name and ifindex (a rebind or a
/// re-created VF gets a new ifindex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VfState {
    pub(super) address: PciAddress,
    pub(super) driver: Option<String>,
    pub(super) netdev: Option<(String, String)>,
}

/// PF address -> (sriov_numvfs, its VFs by index).
pub(super) type NodeState = BTreeMap<PciAddress, (u32, Vec<VfState>)>;

pub(super) fn node_state(root: &SysRoot, pfs: &[PciAddress]) -> Result<NodeState> {
    let mut out = NodeState::new();
    for pf in pfs {
        let num = read_trim(&root.pci_device(pf).join("sriov_numvfs"))?
            .parse::<u32>()
            .with_context(|| format!("{pf}: sriov_numvfs"))?;
        let mut vfs = sysfs::vfs_of(root, pf)?;
        vfs.sort_by_key(|v| v.index.0);
        let mut states = Vec::new();
        for vf in vfs {
            let driver = vfcore::bind::current_driver(root, &vf.address)?;
            let netdev = sysfs::netdevs_of(root, &vf.address)?
                .into_iter()
                .next()
                .map(|n| {
                    let ifindex = read_trim(
                        &root
                            .pci_device(&vf.address)
                            .join("net")
                            .join(&n.name)
                            .join("ifindex"),
                    )
                    .unwrap_or_default();
                    (n.name, ifindex)
                });
            states.push(VfState {
                address: vf.address,
                driver,
                netdev,
            });
        }
        out.insert(*pf, (num, states));
    }
    Ok(out)
}

/// The driver VF `index` should have.
pub(super) type DriverOf = fn(usize) -> &'static str;

/// Whether the node is as the config asks; the reason when it is not.
pub(super) fn provisioned(state: &NodeState, pf0: &PciAddress, pf1: &PciAddress) -> Result<()> {
    let want: [(&PciAddress, u32, DriverOf); 2] = [
        (pf0, 6, |i| if i < 4 { "igbvf" } else { "vfio-pci" }),
        (pf1, 3, |_| "igbvf"),
    ];
    for (pf, n, driver) in want {
        let (num, vfs) = state.get(pf).ok_or_else(|| anyhow!("{pf} not read"))?;
        ensure!(*num == n, "{pf}: sriov_numvfs is {num}, want {n}");
        ensure!(vfs.len() == n as usize, "{pf}: {} VFs listed", vfs.len());
        for (i, vf) in vfs.iter().enumerate() {
            let want = driver(i);
            ensure!(
                vf.driver.as_deref() == Some(want),
                "{pf} VF {i} ({}): driver {:?}, want {want}",
                vf.address,
                vf.driver
            );
            ensure!(
                (want == "igbvf") == vf.netdev.is_some(),
                "{pf} VF {i} ({}): netdev {:?} with driver {want}",
                vf.address,
                vf.netdev
            );
        }
    }
    Ok(())
}

pub(super) fn ids(r: &Resource) -> BTreeSet<String> {
    r.devices.iter().map(|d| d.id.clone()).collect()
}

pub(super) fn all_healthy(r: &Resource) -> bool {
    r.devices.iter().all(|d| d.health == "Healthy")
}

/// True when exactly the devices in `down` are Unhealthy.
pub(super) fn unhealthy_exactly(r: &Resource, down: &BTreeSet<String>) -> bool {
    r.devices
        .iter()
        .all(|d| (d.health == "Unhealthy") == down.contains(&d.id))
}

pub(super) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub(super) fn pf_name(pf: &PciNetDevice) -> Result<String> {
    pf.netdevs
        .first()
        .map(|n| n.name.clone())
        .ok_or_else(|| anyhow!("PF {} has no netdev", pf.address))
}
