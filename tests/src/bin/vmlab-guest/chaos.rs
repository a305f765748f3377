//! `vmlab-guest chaos`: `hack/chaos`'s lab variant, with real VFs. The node of [`crate::podnet`]
//! with all 7 VFs of PF0 (5 netdevs, 2 on vfio-pci), then two parts:
//!
//! - **Lifecycles** (`VMLAB_CHAOS_LIFECYCLES`, seed `VMLAB_CHAOS_SEED`): pods with three networks
//!   (the cluster bridge on eth0, a VF on VLAN 100 through a shim of the sriov plugin that can kill
//!   it, a bridge NAD), one fault each at a random point: `kill -9` of genie during ADD or DEL, of
//!   the sriov plugin, of the agent (then started again); the kubelet restarted between Allocate
//!   and ADD; the PF's link flapped during ADD; another process writing `sriov_numvfs` during ADD;
//!   a corrupted genie record; an API outage during DEL. A failed ADD is followed by DEL, a DEL is
//!   retried with the faults cleared. After each: nothing left (leases, genie and sriov records,
//!   device-info files, veths, processes), every VF back in the host as it was, and a successful
//!   ADD's network-status equal to the pod's netns and naming the VF the kubelet allocated.
//! - **Competition** (`VMLAB_CHAOS_PODS`, default 50): that many pods at once, eight at a time,
//!   for the 7 VFs. The kubelet stand-in admits a pod when a device is free and frees it when the
//!   pod ends, before its sandbox's DEL (as a kubelet may): a new pod can be given a VF still in
//!   the old pod's netns, and its ADD must be refused as busy (code 101) and retried, never take
//!   it. Every pod ends attached; no VF is ever taken from a pod before its DEL; nothing is left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::json;
use vfcore::netns::NetNs;
use vfgenie_tests::chaos::{self, Call, Rng};

use crate::podnet::{netns_name, Cluster, Pod, NETWORKS, NET_POOL, NS, VFIO_POOL};
use crate::report::{note, Report};
use crate::util::run_program;

const FAULTS: [&str; 10] = [
    "none",
    "kill-genie-add",
    "kill-genie-del",
    "kill-sriov",
    "kill-agent",
    "kubelet-restart",
    "pf-flap",
    "numvfs-write",
    "corrupt-record",
    "api-outage-del",
];
const DEL_TRIES: usize = 5;
/// The VF network of the lifecycles: the sriov plugin behind the killing shim.
const VF_NAD: &str = "vfchaos";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn run(report: &mut Report) {
    let seed = env_num("VMLAB_CHAOS_SEED", 42);
    let lifecycles = env_num("VMLAB_CHAOS_LIFECYCLES", 24) as usize;
    let pods = env_num("VMLAB_CHAOS_PODS", 50) as usize;
    note(&format!(
        "chaos: seed {seed}, {lifecycles} lifecycles, {pods} competing pods (replay: hack/vmlab chaos --seed {seed} --lifecycles {lifecycles} --pods {pods})"
    ));
    let mut cluster = None;
    report.check_detail("chaos-setup", || {
        let c = Cluster::start_with(5, 2)?;
        setup(&c)?;
        cluster = Some(c);
        Ok("agent serves igb_net (5) and igb_vfio (2) of PF0's 7 VFs".into())
    });
    let Some(mut c) = cluster else {
        return;
    };
    let lifecycles_ok = report.check_detail("chaos-lifecycles", || {
        let f = lifecycles_run(&mut c, seed, lifecycles)?;
        note(&f.line());
        ensure!(f.clean(), "{}", f.line());
        Ok(format!(
            "{} lifecycles, {} ADDs succeeded, nothing leaked",
            f.lifecycles, f.adds_ok
        ))
    });
    if !lifecycles_ok {
        c.show_logs(30);
    }
    report.check_detail("chaos-competition", || compete(&c, pods));
    report.check("chaos-no-leftovers", || {
        let left = c.leftovers()?;
        ensure!(left.is_empty(), "left behind: {}", left.join(", "));
        c.restored()?;
        Ok(())
    });
    c.dump_logs();
}

/// The shim in front of the sriov plugin (kills it, and itself, mid-way while the flag exists)
/// and the NADs `vfchaos` (a VF on VLAN 100) and `blue` (a bridge).
fn setup(c: &Cluster) -> Result<()> {
    let shim = c.node.bin_dir.join("chaossriov");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nin=$(cat)\nif [ -e '{flag}' ]; then\n  printf '%s' \"$in\" | '{sriov}' & p=$!\n  sleep 0.0$(( $$ % 9 + 1 ))\n  kill -9 $p 2>/dev/null\n  kill -9 $$\nfi\nprintf '%s' \"$in\" | exec '{sriov}'\n",
            flag = kill_flag(c).display(),
            sriov = c.node.bin_dir.join("sriov").display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))?;
    let mut vf = c.sriov_netconf(VF_NAD, 100, Some("10.56.0.150"));
    vf["type"] = json!("chaossriov");
    c.node
        .api
        .add_nad(NS, VF_NAD, &vf.to_string(), Some(NET_POOL));
    let blue = json!({"cniVersion": "1.0.0", "name": "blue", "type": "bridge", "bridge": "chbr1",
                      "ipam": c.node.ipam("10.57.0.0/24")});
    c.node.api.add_nad(NS, "blue", &blue.to_string(), None);
    Ok(())
}

fn kill_flag(c: &Cluster) -> PathBuf {
    c.node.dir.path().join("kill-sriov")
}

#[derive(Default)]
struct Figures {
    lifecycles: usize,
    faults: BTreeMap<&'static str, usize>,
    failed_adds: BTreeMap<&'static str, usize>,
    adds_ok: usize,
    leaked: BTreeMap<&'static str, usize>,
    status_mismatches: usize,
    wrong_devices: usize,
    stuck_dels: usize,
    started: Option<Instant>,
}

impl Figures {
    fn clean(&self) -> bool {
        self.leaked.values().all(|n| *n == 0)
            && self.status_mismatches == 0
            && self.wrong_devices == 0
            && self.stuck_dels == 0
    }

    fn line(&self) -> String {
        let leaked = |k: &str| self.leaked.get(k).copied().unwrap_or(0);
        format!(
            "chaos (lab): lifecycles {}, faults injected: {}, ADDs that succeeded {}, leaked: links={} leases={} VFs={} records={} files={} processes={}, network-status mismatches {}, double assignments {}, stuck DELs {}, in {:.1} s",
            self.lifecycles,
            chaos::faults_summary(&self.faults, &self.failed_adds),
            self.adds_ok,
            leaked("links"),
            leaked("leases"),
            leaked("VFs"),
            leaked("records"),
            leaked("files"),
            leaked("processes"),
            self.status_mismatches,
            self.wrong_devices,
            self.stuck_dels,
            self.started.map_or(0.0, |t| t.elapsed().as_secs_f64())
        )
    }
}

/// The kind of a [`Cluster::leftovers`] line, as the figures count it.
fn kind_of(leftover: &str) -> &'static str {
    match leftover.split(' ').next().unwrap_or_default() {
        "lease" => "leases",
        "genie" | "sriov" => "records",
        "device-info" => "files",
        _ => "links",
    }
}

fn lifecycles_run(c: &mut Cluster, seed: u64, lifecycles: usize) -> Result<Figures> {
    let mut rng = Rng::new(seed);
    let mut f = Figures {
        started: Some(Instant::now()),
        ..Figures::default()
    };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut vfs_broken = false;
    for i in 0..lifecycles {
        let fault = FAULTS[rng.below(FAULTS.len() as u64) as usize];
        *f.faults.entry(fault).or_default() += 1;
        let after = Duration::from_millis(20 + rng.below(400));
        let added = lifecycle(c, i, fault, after, &mut f)?;
        if !added {
            *f.failed_adds.entry(fault).or_default() += 1;
        }
        // What this lifecycle left (earlier leftovers counted once).
        let left: Vec<String> = c
            .leftovers()?
            .into_iter()
            .filter(|l| seen.insert(l.clone()))
            .collect();
        for l in &left {
            *f.leaked.entry(kind_of(l)).or_default() += 1;
        }
        let procs = chaos::node_processes(&c.node)?;
        *f.leaked.entry("processes").or_default() += procs.len();
        let vfs = c.restored().err();
        if let (Some(e), false) = (&vfs, vfs_broken) {
            *f.leaked.entry("VFs").or_default() += 1;
            vfs_broken = true;
            note(&format!(
                "chaos: lifecycle {i} ({fault}): VFs not as before: {e:#}"
            ));
        }
        if !left.is_empty() || !procs.is_empty() {
            note(&format!(
                "chaos: lifecycle {i} ({fault}) left {left:?} processes {procs:?}"
            ));
        }
        f.lifecycles += 1;
    }
    Ok(f)
}

/// One pod's lifecycle under `fault`; whether its ADD succeeded.
fn lifecycle(
    c: &mut Cluster,
    i: usize,
    fault: &'static str,
    after: Duration,
    f: &mut Figures,
) -> Result<bool> {
    let name = format!("chaos-{i}");
    let networks = format!("{VF_NAD},blue");
    let admitted = c.admit(&name, &[(NETWORKS, networks.as_str())], &[(NET_POOL, 1)])?;
    let device = admitted
        .devices
        .first()
        .map(|(_, id)| id.clone())
        .ok_or_else(|| anyhow!("{name}: no device allocated"))?;
    if fault == "kubelet-restart" {
        c.restart_kubelet().context("kubelet restart")?;
    }
    let netns = NetNs::create_named(&c.root, &netns_name(&name))?;
    let cid = format!("sandbox-{name}");
    let conf = c.genie_conf();
    let call = |command| Call {
        command,
        container_id: &cid,
        netns: netns.path(),
        namespace: NS,
        pod: &name,
    };
    if fault == "kill-sriov" {
        std::fs::write(kill_flag(c), b"")?;
    }
    let (pf, agent) = (c.pf_name.clone(), c.agent_pid());
    let added = std::thread::scope(|s| -> Result<bool> {
        let side = s.spawn(|| side_fault(fault, after, &pf, agent));
        let added = match fault {
            "kill-genie-add" => {
                chaos::kill_genie_during(&c.node, &call("ADD"), &conf, after)?;
                false
            }
            _ => {
                let out =
                    c.node
                        .cni("ADD", &cid, netns.path(), "eth0", Some((NS, &name)), &conf)?;
                if !out.success {
                    note(&format!(
                        "chaos: {name} ({fault}): ADD failed: {}",
                        out.stdout.trim()
                    ));
                }
                out.success
            }
        };
        match side.join() {
            Ok(r) => r.with_context(|| format!("{fault} during the ADD of {name}"))?,
            Err(_) => return Err(anyhow!("the {fault} thread panicked")),
        }
        Ok(added)
    })?;
    let _ = std::fs::remove_file(kill_flag(c));
    match fault {
        "kill-agent" => c.restart_agent().context("agent restart")?,
        "pf-flap" => crate::util::wait_for("the PF's link", Duration::from_secs(30), || {
            let state = std::fs::read_to_string(format!("/sys/class/net/{pf}/operstate"));
            state.ok().filter(|s| s.trim() == "up")
        })
        .map(drop)?,
        _ => {}
    }
    if added {
        f.adds_ok += 1;
        let pod = Pod {
            name: name.clone(),
            container_id: cid.clone(),
            netns,
            devices: Vec::new(),
            envs: Default::default(),
            result: json!({}),
        };
        let have = chaos::addresses_of(pod.links()?.into_iter().map(|(n, (_, a))| (n, a)));
        let said = chaos::status_addresses(&c.node, &name)?;
        if said.as_ref() != Some(&have) {
            f.status_mismatches += 1;
            note(&format!(
                "chaos: {name}: network-status {said:?}, netns {have:?}"
            ));
        }
        let status = c.network_status(&name)?;
        let vf = status
            .iter()
            .find(|s| s["name"] == format!("{NS}/{VF_NAD}"))
            .and_then(|s| {
                s["device-info"]["pci"]["pci-address"]
                    .as_str()
                    .map(str::to_string)
            });
        if vf.as_deref() != Some(device.as_str()) {
            f.wrong_devices += 1;
            note(&format!(
                "chaos: {name} was allocated {device}, its network-status names {vf:?}"
            ));
        }
        return teardown(
            c,
            &name,
            &cid,
            pod.netns,
            &admitted.devices,
            fault,
            after,
            f,
        )
        .map(|()| true);
    }
    teardown(c, &name, &cid, netns, &admitted.devices, fault, after, f).map(|()| false)
}

/// A fault beside the ADD, `after` into it.
fn side_fault(fault: &str, after: Duration, pf: &str, agent: u32) -> Result<()> {
    std::thread::sleep(after);
    match fault {
        "kill-agent" => run_program("kill", &["-9", &agent.to_string()]).map(drop),
        "pf-flap" => {
            run_program("ip", &["link", "set", pf, "down"])?;
            std::thread::sleep(Duration::from_millis(300));
            run_program("ip", &["link", "set", pf, "up"]).map(drop)
        }
        "numvfs-write" => {
            // Another process asks for a different VF count while VFs are enabled: the kernel
            // refuses it (EBUSY), and nothing of the node may change.
            let path = format!("/sys/class/net/{pf}/device/sriov_numvfs");
            match std::fs::write(&path, b"3") {
                Ok(()) => Err(anyhow!("{path}: writing 3 while 7 VFs exist succeeded")),
                Err(e) if e.raw_os_error() == Some(16) => Ok(()),
                Err(e) => Err(anyhow!("{path}: {e}")),
            }
        }
        _ => Ok(()),
    }
}

/// The faults before DEL, then DEL (retried with the faults cleared) and the sandbox gone.
#[allow(clippy::too_many_arguments)]
fn teardown(
    c: &Cluster,
    name: &str,
    cid: &str,
    netns: NetNs,
    devices: &[(String, String)],
    fault: &str,
    after: Duration,
    f: &mut Figures,
) -> Result<()> {
    let conf = c.genie_conf();
    match fault {
        "corrupt-record" => {
            let record = c.node.cache_dir.join(format!("vfgenie/{cid}-eth0.json"));
            if record.exists() {
                std::fs::write(&record, b"{\"kind\": 7, ")?;
            }
        }
        "api-outage-del" => c.node.api.set_available(false),
        "kill-genie-del" => {
            let call = Call {
                command: "DEL",
                container_id: cid,
                netns: netns.path(),
                namespace: NS,
                pod: name,
            };
            chaos::kill_genie_during(&c.node, &call, &conf, after)?;
        }
        _ => {}
    }
    let mut deleted = false;
    for _ in 0..DEL_TRIES {
        let out = c
            .node
            .cni("DEL", cid, netns.path(), "eth0", Some((NS, name)), &conf)?;
        c.node.api.set_available(true);
        if out.success {
            deleted = true;
            break;
        }
    }
    if !deleted {
        f.stuck_dels += 1;
        note(&format!("chaos: {name} ({fault}): DEL never succeeded"));
    }
    c.release(name, devices);
    drop(netns);
    NetNs::delete_named(&c.root, &netns_name(name))?;
    c.node.api.delete_pod(NS, name);
    Ok(())
}

/// `pods` pods, eight at a time, for the 7 VFs; see the module doc.
fn compete(c: &Cluster, pods: usize) -> Result<String> {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Result<(usize, usize), String>>> = Mutex::new(Vec::new());
    let doubles = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= pods {
                    break;
                }
                let r = competitor(c, i, &doubles).map_err(|e| format!("{e:#}"));
                if let Ok(mut o) = outcomes.lock() {
                    o.push(r);
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().map_err(|_| anyhow!("poisoned"))?;
    let attached = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let busy: usize = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|o| o.0)
        .sum();
    let later: usize = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .map(|o| o.1)
        .sum();
    let doubles = doubles.load(Ordering::SeqCst);
    let line = format!(
        "{pods} pods for 7 VFs: {attached} attached, {} refused, {busy} ADDs refused while the VF was still in an ended pod and retried, {later} ADDs that failed for now (code 11) retried, double assignments {doubles}, in {:.1} s",
        refused.len(),
        started.elapsed().as_secs_f64()
    );
    note(&format!("chaos (lab): {line}"));
    for r in &refused {
        note(&format!("chaos: refused: {r}"));
    }
    ensure!(doubles == 0, "{line}");
    ensure!(outcomes.len() == pods, "{line}");
    // Every pod is admitted once a VF is free, and its ADD gets through once the VF is back.
    ensure!(refused.is_empty(), "{line}");
    let left = c.leftovers()?;
    ensure!(left.is_empty(), "{line}; left behind: {}", left.join(", "));
    Ok(line)
}

/// One competing pod: admitted when a device is free (up to 60 s), attached (a refused ADD is
/// followed by DEL and retried, up to 20 times), held a moment; its devices freed by the kubelet,
/// and a while later, still holding its VF (else another pod took it: a double assignment), its
/// sandbox's DEL. Returns how many of its ADDs were refused before one succeeded: as busy, and
/// with "try again later" (code 11, e.g. the kubelet's PodResources API slow to answer).
fn competitor(c: &Cluster, i: usize, doubles: &AtomicUsize) -> Result<(usize, usize)> {
    let name = format!("race-{i}");
    let (networks, pool) = match i % 7 < 5 {
        true => ("vlan100", NET_POOL),
        false => ("dpdk", VFIO_POOL),
    };
    let t = Instant::now();
    let admitted = loop {
        match c.admit(&name, &[(NETWORKS, networks)], &[(pool, 1)]) {
            Ok(a) => break a,
            Err(_) if t.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e.context(format!("{name}: not admitted within 60 s"))),
        }
    };
    let pod = Pod {
        name: name.clone(),
        container_id: format!("sandbox-{name}"),
        netns: NetNs::create_named(&c.root, &netns_name(&name))?,
        devices: Vec::new(),
        envs: Default::default(),
        result: json!({}),
    };
    let conf = c.genie_conf();
    let cni = |command: &str| {
        c.node.cni(
            command,
            &pod.container_id,
            pod.netns.path(),
            "eth0",
            Some((NS, &name)),
            &conf,
        )
    };
    let mut refused = 0;
    let mut later = 0;
    let attached = loop {
        let out = cni("ADD")?;
        if out.success {
            break Ok(());
        }
        // A VF still in an ended pod's netns is refused as busy (the sriov plugin's code 101,
        // naming the holder); a transient failure (code 11, "try again later") is retried as a
        // kubelet retries a sandbox; anything else fails the pod.
        let code = out.json().ok().map(|e| e["code"].clone());
        if code == Some(json!(11)) {
            note(&format!(
                "chaos: {name}: ADD failed for now, retried: {}",
                out.stdout.trim()
            ));
            later += 1;
        } else if code != Some(json!(101)) {
            let _ = cni("DEL");
            break Err(anyhow!("{name}: ADD failed: {}", out.stdout.trim()));
        }
        if code == Some(json!(101)) && refused == later {
            note(&format!(
                "chaos: {name}: ADD refused, retried: {}",
                out.stdout.trim()
            ));
        }
        // The runtime's DEL after a failed ADD, then a retry a moment later.
        let _ = cni("DEL");
        refused += 1;
        if refused == 20 {
            break Err(anyhow!(
                "{name}: ADD refused 20 times: {}",
                out.stdout.trim()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_millis((i as u64 * 37) % 300));
    // The kubelet frees the device as the pod ends; its sandbox's DEL comes later (a slow
    // teardown), while another pod may already have been given the VF.
    c.release(&name, &admitted.devices);
    std::thread::sleep(Duration::from_millis(1500 + (i as u64 * 53) % 1500));
    if attached.is_ok() && pool == NET_POOL && !pod.links()?.contains_key("net1") {
        doubles.fetch_add(1, Ordering::SeqCst);
        note(&format!(
            "chaos: {name} lost its VF {} to another pod before its DEL",
            admitted.devices[0].1
        ));
    }
    let mut deleted = Err(anyhow!("{name}: DEL never succeeded"));
    for _ in 0..DEL_TRIES {
        if cni("DEL")?.success {
            deleted = Ok(());
            break;
        }
    }
    drop(pod.netns);
    NetNs::delete_named(&c.root, &netns_name(&name))?;
    c.node.api.delete_pod(NS, &name);
    deleted?;
    attached.map(|()| (refused - later, later))
}
