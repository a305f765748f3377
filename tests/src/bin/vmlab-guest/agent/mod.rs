//! `vmlab-guest agent`: the real `vfgenie-agent run` binary against real igb VFs, served to the
//! kubelet stand-in (in-process, over the real device-plugin gRPC on unix sockets).
//!
//! The agent provisions from a config (PF0 by name: 6 VFs, 0-3 igbvf, 4-5 vfio-pci; PF1 by PCI
//! address: 3 igbvf), registers two pools, answers Allocate for the vfio pool with the group device,
//! follows PF0's link down and up in its ListAndWatch streams (timed), cleans up on SIGTERM, and
//! changes nothing when started again on a node that is already as configured.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use vfcore::netlink::{LinkOps, Netlink};
use vfcore::sysfs;
use vfcore::{PciAddress, SysRoot};
use vfdp::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use vfgenie_tests::kubelet::KubeletStandIn;

use crate::core_checks::{igb_pfs, pf_up};
use crate::report::{note, Report};
use crate::util::wait_for;

const AGENT: &str = "/usr/local/bin/vfgenie-agent";
const WORK: &str = "/tmp/agent";
const NET: &str = "example.com/igb_net";
const VFIO: &str = "example.com/igb_vfio";
/// Creating VFs, binding vfio-pci and the PF link coming back, under TCG.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(45);
const TIMEOUT: Duration = Duration::from_secs(20);
/// The bound on a PF link change reaching the ListAndWatch streams.
const HEALTH_BOUND: Duration = Duration::from_secs(1);

mod node;

use node::*;
pub(crate) use node::{AgentProc, Paths};

pub fn run(report: &mut Report) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report.fail("agent-runtime", &e.to_string());
            return;
        }
    };
    rt.block_on(scenario(report));
}

/// The checks in order; each later check needs the agent serving, so a failure there skips them.
async fn scenario(report: &mut Report) {
    let root = SysRoot::host();
    let mut setup = None;
    report.check("agent-setup", || {
        let pfs = igb_pfs(&root)?;
        ensure!(pfs.len() == 2, "expected 2 igb PFs, found {}", pfs.len());
        // A PF that is down never answers its VFs' mailbox: bring both up before the agent
        // creates VFs.
        for pf in &pfs {
            pf_up(&root, pf)?;
        }
        let paths = Paths::new()?;
        let (pf0, pf1) = (&pfs[0], &pfs[1]);
        let name0 = pf_name(pf0)?;
        let config = serde_json::json!({
            "resourceList": [
                {"resourceName": "igb_net", "resourcePrefix": "example.com",
                 "selectors": {"drivers": ["igbvf"]}},
                {"resourceName": "igb_vfio", "resourcePrefix": "example.com",
                 "selectors": {"drivers": ["vfio-pci"]}}
            ],
            "provisioning": [
                {"pfName": name0, "numVfs": 6,
                 "vfs": [{"range": "0-3", "driver": "netdevice"},
                         {"range": "4-5", "driver": "vfio-pci"}]},
                {"pciAddress": pf1.address.to_string(), "numVfs": 3,
                 "vfs": [{"range": "0-2", "driver": "netdevice"}]}
            ]
        });
        std::fs::write(&paths.config, serde_json::to_string_pretty(&config)?)?;
        note(&format!(
            "config ({}):\n{}",
            paths.config.display(),
            serde_json::to_string_pretty(&config)?
        ));
        setup = Some((paths, pf0.address, name0, pf1.address));
        Ok(())
    });
    let Some((paths, pf0, pf0_name, pf1)) = setup else {
        return;
    };
    let pfs = [pf0, pf1];

    let kubelet = match KubeletStandIn::start(&paths.plugins).await {
        Ok(k) => k,
        Err(e) => {
            report.fail("agent-kubelet", &format!("{e:#}"));
            return;
        }
    };
    let mut agent = match AgentProc::start(&paths, 1) {
        Ok(a) => a,
        Err(e) => {
            report.fail("agent-start", &format!("{e:#}"));
            return;
        }
    };
    let t_start = Instant::now();

    // 1. Provisioning, read back from sysfs.
    let mut state = None;
    let ok = report.check_detail("agent-provisioning", || {
        let mut last = None;
        let s = wait_for("the configured VFs and drivers", PROVISION_TIMEOUT, || {
            let s = node_state(&root, &pfs).ok()?;
            match provisioned(&s, &pf0, &pf1) {
                Ok(()) => Some(s),
                Err(e) => {
                    last = Some(e);
                    None
                }
            }
        })
        .map_err(|e| match last.take() {
            Some(l) => e.context(format!("last seen: {l:#}")),
            None => e,
        })?;
        let took = t_start.elapsed();
        state = Some(s);
        Ok(format!(
            "PF0 6 VFs (0-3 igbvf, 4-5 vfio-pci), PF1 3 igbvf, in {} ms",
            took.as_millis()
        ))
    });
    let Some(state) = state.filter(|_| ok) else {
        agent.show_log(30);
        return;
    };
    let addr_of = |pf: &PciAddress, range: std::ops::Range<usize>| -> BTreeSet<String> {
        state
            .get(pf)
            .map(|(_, vfs)| {
                vfs.get(range)
                    .unwrap_or(&[])
                    .iter()
                    .map(|v| v.address.to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let want_net: BTreeSet<String> = addr_of(&pf0, 0..4)
        .into_iter()
        .chain(addr_of(&pf1, 0..3))
        .collect();
    let want_vfio = addr_of(&pf0, 4..6);
    let pf0_vfs = addr_of(&pf0, 0..6);
    note(&format!(
        "node state after provisioning:\n{}",
        state
            .values()
            .flat_map(|(_, vfs)| vfs)
            .map(|v| format!(
                "{} {} {}",
                v.address,
                v.driver.as_deref().unwrap_or("-"),
                v.netdev.as_ref().map(|n| n.0.as_str()).unwrap_or("-")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    ));

    // 2. Both pools registered; ListAndWatch lists the right devices, all healthy.
    let pools = async {
        let net = kubelet
            .wait_for(NET, TIMEOUT, |r| {
                r.registration.is_some() && ids(r) == want_net && all_healthy(r)
            })
            .await?;
        let vfio = kubelet
            .wait_for(VFIO, TIMEOUT, |r| {
                r.registration.is_some() && ids(r) == want_vfio && all_healthy(r)
            })
            .await?;
        anyhow::Ok(format!(
            "{NET}: {} Healthy, {VFIO}: {} Healthy, {} ms after start",
            net.devices.len(),
            vfio.devices.len(),
            t_start.elapsed().as_millis()
        ))
    }
    .await;
    if !report.check_detail("agent-pools", || pools) {
        agent.show_log(30);
        return;
    }

    // 3. Allocate on the vfio pool: the group device and the container, env with _INFO.
    let vfio_dev = want_vfio.iter().next().cloned().unwrap_or_default();
    let alloc = async {
        let mut client = kubelet.plugin(VFIO).await?;
        let resp = client
            .allocate(AllocateRequest {
                container_requests: vec![ContainerAllocateRequest {
                    devices_ids: vec![vfio_dev.clone()],
                }],
            })
            .await
            .context("Allocate")?
            .into_inner();
        anyhow::Ok(resp)
    }
    .await;
    report.check_detail("agent-allocate-vfio", || {
        let resp = alloc?;
        let c = resp
            .container_responses
            .first()
            .ok_or_else(|| anyhow!("no container response"))?;
        let addr: PciAddress = vfio_dev.parse()?;
        let group = sysfs::read_device(&root, &addr)?
            .iommu_group
            .ok_or_else(|| anyhow!("{addr} has no IOMMU group"))?;
        let group_dev = format!("/dev/vfio/{group}");
        let mut paths: Vec<&str> = c
            .devices
            .iter()
            .map(|d| d.container_path.as_str())
            .collect();
        paths.sort();
        let mut want = vec![group_dev.as_str(), "/dev/vfio/vfio"];
        want.sort();
        ensure!(paths == want, "device specs {paths:?}, want {want:?}");
        for d in &c.devices {
            ensure!(
                d.host_path == d.container_path && d.permissions == "rw",
                "device spec {d:?}"
            );
        }
        ensure!(
            Path::new(&group_dev).exists(),
            "{group_dev} does not exist in the guest"
        );
        let env = "PCIDEVICE_EXAMPLE_COM_IGB_VFIO";
        ensure!(
            c.envs.get(env).map(String::as_str) == Some(vfio_dev.as_str()),
            "{env} = {:?}",
            c.envs.get(env)
        );
        let info = c
            .envs
            .get(&format!("{env}_INFO"))
            .ok_or_else(|| anyhow!("no {env}_INFO"))?;
        let info: serde_json::Value = serde_json::from_str(info).context("_INFO is not JSON")?;
        ensure!(
            info[&vfio_dev]["vfio"]["dev-mount"] == group_dev.as_str(),
            "_INFO {info}"
        );
        Ok(format!("{vfio_dev} -> {}", want.join(" ")))
    });
    report.check("agent-devinfo", || {
        let f = vfdp::devinfo::dp_file(&paths.devinfo, VFIO, &vfio_dev)?;
        let info = vfdp::devinfo::read(&f)?;
        let text = serde_json::to_string(&info)?;
        ensure!(
            text.contains(&vfio_dev),
            "{} does not name {vfio_dev}: {text}",
            f.display()
        );
        Ok(())
    });

    // 4. PF0 link down: its VFs (both pools) Unhealthy, PF1's stay Healthy; timed from the link
    // change (the return of the netlink call: igb applies it, and the kernel announces it, at the
    // end of the call, which itself takes a while under TCG).
    let down = pf_link_change(&kubelet, &pf0_name, false, &pf0_vfs).await;
    let down_ok = report.check_detail("agent-health-pf-down", || {
        let t = down?;
        let (net, vfio) = (t.since_change(t.net), t.since_change(t.vfio));
        ensure!(
            net <= HEALTH_BOUND && vfio <= HEALTH_BOUND,
            "took {} ms (igb_net) and {} ms (igb_vfio), more than {HEALTH_BOUND:?}",
            net.as_millis(),
            vfio.as_millis()
        );
        Ok(format!(
            "PF0's 6 VFs Unhealthy in the streams {} ms (igb_net) / {} ms (igb_vfio) after the netlink call (which took {} ms) set the link down",
            net.as_millis(),
            vfio.as_millis(),
            t.call.as_millis()
        ))
    });
    // 5. PF0 link up: Healthy again once the carrier is back; timed from the link change too.
    let up = if down_ok {
        pf_link_change(&kubelet, &pf0_name, true, &BTreeSet::new()).await
    } else {
        Err(anyhow!("skipped: PF0 link down was not seen"))
    };
    report.check_detail("agent-health-pf-up", || {
        let t = up?;
        let carrier = t
            .carrier
            .ok_or_else(|| anyhow!("PF0 carrier not seen coming back"))?;
        let last = t.net.max(t.vfio);
        ensure!(
            last.saturating_sub(carrier) <= HEALTH_BOUND,
            "Healthy {} ms after the carrier came back, more than {HEALTH_BOUND:?}",
            last.saturating_sub(carrier).as_millis()
        );
        Ok(format!(
            "Healthy again {} ms (igb_net) / {} ms (igb_vfio) after the netlink call (which took {} ms) returned; PF0's carrier was back {} ms after it (sampled every 50 ms)",
            t.since_change(t.net).as_millis(),
            t.since_change(t.vfio).as_millis(),
            t.call.as_millis(),
            t.since_change(carrier).as_millis()
        ))
    });

    // 6. SIGTERM: sockets and device-info files gone.
    let stopped = report.check("agent-stop-cleanup", || {
        let status = agent.stop(TIMEOUT)?;
        ensure!(status.success(), "the agent exited with {status}");
        let left: Vec<PathBuf> = files_under(&paths.plugins)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n != "kubelet.sock"))
            .collect();
        ensure!(left.is_empty(), "left in the plugin dir: {left:?}");
        let left = files_under(&paths.devinfo);
        ensure!(left.is_empty(), "left in the devinfo dir: {left:?}");
        Ok(())
    });
    agent.dump_log();
    if !stopped {
        agent.show_log(30);
        return;
    }

    // 7. Started again on a node as configured: no sysfs change, the same devices served.
    let before = node_state(&root, &pfs);
    let (u_net, u_vfio) = (
        kubelet.resource(NET).await.map_or(0, |r| r.updates),
        kubelet.resource(VFIO).await.map_or(0, |r| r.updates),
    );
    let restarted = async {
        let before = before?;
        let t_restart = Instant::now();
        let mut again = AgentProc::start(&paths, 2)?;
        let served = async {
            kubelet
                .wait_for(NET, TIMEOUT, |r| {
                    r.registrations >= 2
                        && r.updates > u_net
                        && ids(r) == want_net
                        && all_healthy(r)
                })
                .await?;
            kubelet
                .wait_for(VFIO, TIMEOUT, |r| {
                    r.registrations >= 2
                        && r.updates > u_vfio
                        && ids(r) == want_vfio
                        && all_healthy(r)
                })
                .await?;
            anyhow::Ok(())
        }
        .await;
        let took = t_restart.elapsed();
        if let Err(e) = served {
            again.show_log(30);
            return Err(e);
        }
        let after = node_state(&root, &pfs)?;
        let stop = again.stop(TIMEOUT);
        again.dump_log();
        if before != after {
            again.show_log(30);
            bail!("the node changed: before {before:?}, after {after:?}");
        }
        let status = stop?;
        ensure!(status.success(), "the second agent exited with {status}");
        // Nor did it try to: no provisioning or rebinding in its log.
        let log = std::fs::read_to_string(&again.log)?;
        let writes: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("VFs provisioned") || l.contains("VF driver bound"))
            .collect();
        ensure!(writes.is_empty(), "the second agent wrote: {writes:?}");
        anyhow::Ok(took)
    }
    .await;
    report.check_detail("agent-restart-no-change", || {
        let took = restarted?;
        Ok(format!(
            "VF counts, drivers and netdev ifindexes unchanged; the same 7+2 devices served again, {} ms after the restart",
            took.as_millis()
        ))
    });
}

/// Times of one PF link change, all from the start of the netlink call.
struct LinkTiming {
    /// When the netlink call returned: the link has changed.
    call: Duration,
    /// When each pool's stream showed the expected health.
    net: Duration,
    vfio: Duration,
    /// When the PF's operstate read `up` again (link up only).
    carrier: Option<Duration>,
}

impl LinkTiming {
    fn since_change(&self, t: Duration) -> Duration {
        t.saturating_sub(self.call)
    }
}

/// Sets PF0's link up or down through netlink and times the streams of both pools reaching the
/// expected health (exactly `down` Unhealthy). When bringing the link up it also times the PF's
/// carrier coming back (the floor for the Healthy update).
async fn pf_link_change(
    kubelet: &KubeletStandIn,
    pf: &str,
    up: bool,
    down: &BTreeSet<String>,
) -> Result<LinkTiming> {
    let mut nl = Netlink::open()?;
    let link = nl
        .link_by_name(pf)?
        .ok_or_else(|| anyhow!("no link {pf}"))?;
    let operstate = PathBuf::from(format!("/sys/class/net/{pf}/operstate"));
    let t0 = Instant::now();
    nl.set_up(link.index, up)?;
    let call = t0.elapsed();
    note(&format!(
        "{pf} set {} at {} (UTC); the call took {} ms",
        if up { "up" } else { "down" },
        clock(),
        call.as_millis()
    ));
    // Watch the carrier on a thread of its own while the streams are awaited.
    let carrier = up.then(|| {
        std::thread::spawn(move || {
            wait_for("PF carrier", TIMEOUT, || {
                (std::fs::read_to_string(&operstate).ok()?.trim() == "up").then(|| t0.elapsed())
            })
            .ok()
        })
    });
    let bound = if up { TIMEOUT } else { Duration::from_secs(5) };
    let net = async {
        kubelet
            .wait_for(NET, bound, |r| unhealthy_exactly(r, down))
            .await
            .map(|_| t0.elapsed())
    };
    let vfio = async {
        kubelet
            .wait_for(VFIO, bound, |r| unhealthy_exactly(r, down))
            .await
            .map(|_| t0.elapsed())
    };
    let (net, vfio) = tokio::join!(net, vfio);
    let carrier = carrier.and_then(|h| h.join().ok().flatten());
    Ok(LinkTiming {
        call,
        net: net?,
        vfio: vfio?,
        carrier,
    })
}

/// Wall-clock time of day as HH:MM:SS.ffffff, to line up with the agent's log timestamps.
fn clock() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        now.subsec_micros()
    )
}
