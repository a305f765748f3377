//! `vmlab-guest bench-pods`: how long a pod with an overlay and a VF takes to get its networks,
//! and where that time goes. Not a timed test: it prints figures and checks only that every pod
//! attached and detached and that nothing was left behind.
//!
//! Setup is the `pods` scenario's (VFs on PF0, each known to its PF). Then a node as genie sees
//! it: the API-server stand-in on loopback, the PodResources stand-in on a unix socket, the
//! cluster network (Debian's bridge with host-local) on eth0, and the NAD `bench/vf100` of type
//! `sriov` (VLAN 100, host-local, `capabilities.mac`) with the resourceName annotation. Each of
//! [`PODS`] pods, one after the other, holds VF 0 of the resource and asks for vf100 with its own
//! MAC; genie is exec'd as a runtime does, ADD then DEL:
//!
//! - `pods.add`: exec to return; `pods.add.ready`: exec to the pod's net1 seen up with its
//!   MAC and address (polled by netlink in the pod's netns; ADD configures it before returning,
//!   so this is checked for every pod and the count of pods ready at return is printed);
//! - `delegates_direct`: the same bridge and sriov configs exec'd directly, interleaved with the
//!   pods; `genie_overhead`: ADD minus both, per pod; host-local exec'd alone;
//! - `genie_breakdown`, `sriov_breakdown`: the plugins' own step timings (debug lines in their
//!   `logFile`s, see `vfcni::timing`) from the runs inside the genie pods: genie's delegate execs,
//!   API and PodResources calls (clients and stand-ins), cache writes, its last step (routes,
//!   status write and results' cache write side by side) and its own code; sriov's kernel
//!   netlink, driver rebind, IPAM exec and its own code. Process start and exit is a run's wall
//!   time minus the plugin's own total (for sriov, from the direct runs);
//! - `share`: our code (both plugins' own code and process start/exit), the kernel, the other
//!   delegates (bridge, host-local) and the API/PodResources calls, as parts of the p50.
//!
//! Figures are p50/p90/max in milliseconds; shares are of the p50 of the whole call and come from
//! p50s, so they need not add up to exactly 100%.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};
use vfcore::netlink::{LinkOps, Netlink};
use vfcore::netns::NetNs;
use vfcore::{provision, MacAddr, SysRoot};
use vfgenie_tests::podresources::PodResourcesStandIn;
use vfgenie_tests::runtime::Node;
use vfgenie_tests::timings::{parse_timings, Steps};

use crate::core_checks::igb_pfs;
use crate::pods::{self, Lab, TIMEOUT};
use crate::report::{note, Report};
use crate::util::wait_for;

const GENIE: &str = "/usr/local/bin/genie";
/// Debian's CNI plugins in the guest.
const PLUGINS: &str = "/opt/cni/bin";
/// Where the sriov plugin's logs go (its `logFile` must be under /var/log).
const SRIOV_LOG_DIR: &str = "/var/log/vfgenie-lab";
const PODS: usize = 20;
const NS: &str = "bench";
const RESOURCE: &str = "example.com/igb_net";
const NAD: &str = "vf100";
const CLUSTER_SUBNET: &str = "10.96.0.0/24";
const VF_SUBNET: &str = "10.56.100.0/24";
const VF_PREFIX: &str = "10.56.100.";
const HL_SUBNET: &str = "10.97.0.0/24";

/// sriov plugin steps that are netlink requests to the kernel (see `vfcni::sriov::timing`).
const KERNEL_STEPS: &[&str] = &[
    "read_netlink",
    "pf_netlink",
    "mac_netlink",
    "netns_move",
    "addr_route",
    "netdev_restore",
];

struct Bench {
    node: Node,
    pr: PodResourcesStandIn,
    genie_conf: Value,
    /// The NAD's config with the log file of the direct runs.
    sriov_direct: Value,
    bridge: Value,
    host_local: Value,
    genie_log: PathBuf,
    sriov_log: PathBuf,
    direct_log: PathBuf,
    state_dir: PathBuf,
}

impl Bench {
    fn new() -> Result<Self> {
        let node = Node::with_binaries(Path::new(GENIE), Path::new(PLUGINS))?;
        // genie delegates `"type": "sriov"` to the same binary under that name, as installed.
        std::os::unix::fs::symlink(GENIE, node.bin_dir.join("sriov"))?;
        let dir = node.dir.path().to_path_buf();
        let socket = dir.join("pod-resources.sock");
        let pr = PodResourcesStandIn::start(&socket)?;
        let cluster = node.cluster_conflist(CLUSTER_SUBNET);
        node.write_conf("10-cluster.conflist", &cluster)?;
        let mut bridge = cluster
            .pointer("/plugins/0")
            .cloned()
            .ok_or_else(|| anyhow!("cluster conflist has no plugin"))?;
        bridge["cniVersion"] = json!("1.0.0");
        bridge["name"] = json!("cluster");

        let genie_log = dir.join("genie.log");
        // A network config's logFile must be under /var/log (the plugin refuses anything else).
        let logs = Path::new(SRIOV_LOG_DIR);
        std::fs::create_dir_all(logs)?;
        let (sriov_log, direct_log) = (
            logs.join("bench-sriov-genie.log"),
            logs.join("bench-sriov-direct.log"),
        );
        for log in [&sriov_log, &direct_log] {
            let _ = std::fs::remove_file(log);
        }
        // The default: genie is exec'd with a runtime's bare environment, and the direct runs
        // get the same (no VFGENIE_SRIOV_STATE_DIR).
        let state_dir = PathBuf::from(vfcni::sriov::node::DEFAULT_STATE_DIR);
        let nad = json!({
            "cniVersion": "1.0.0", "name": NAD, "type": "sriov", "vlan": 100, "spoofchk": "on",
            "capabilities": {"mac": true},
            "ipam": node.ipam(VF_SUBNET),
            "logLevel": "debug",
            "logFile": sriov_log.display().to_string(),
        });
        node.api.add_nad(NS, NAD, &nad.to_string(), Some(RESOURCE));
        let mut sriov_direct = nad;
        sriov_direct["logFile"] = json!(direct_log.display().to_string());
        let host_local =
            json!({"cniVersion": "1.0.0", "name": "hl-bench", "ipam": node.ipam(HL_SUBNET)});
        let genie_conf = node.genie_conf(
            "1.0.0",
            json!({
                "clusterNetwork": "cluster",
                "podResourcesSocket": socket.display().to_string(),
                "deviceInfoDir": dir.join("devinfo").display().to_string(),
                "logLevel": "debug",
                "logFile": genie_log.display().to_string(),
                // The NAD's sriov log and host-local leases, where this node lets tenants put them.
                "allowedTenantPaths": {
                    "logFile": [SRIOV_LOG_DIR],
                    "dataDir": [node.ipam_dir.display().to_string()],
                },
            }),
        );
        Ok(Self {
            node,
            pr,
            genie_conf,
            sriov_direct,
            bridge,
            host_local,
            genie_log,
            sriov_log,
            direct_log,
            state_dir,
        })
    }

    /// Execs a plugin directly, as genie or a runtime would; fails unless it succeeds.
    fn exec(
        &self,
        binary: &Path,
        command: &str,
        id: &str,
        netns: &Path,
        ifname: &str,
        conf: &Value,
    ) -> Result<Duration> {
        use std::io::Write;
        let path = format!("{}:{PLUGINS}", self.node.bin_dir.display());
        let started = Instant::now();
        let mut child = Command::new(binary)
            .env_clear()
            .env("PATH", "/usr/local/bin:/bin:/sbin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=true;K8S_POD_NAMESPACE={NS};K8S_POD_NAME={id}"),
            )
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(&serde_json::to_vec(conf)?)?;
        let out = child.wait_with_output()?;
        let took = started.elapsed();
        ensure!(
            out.status.success(),
            "{} {command} {id}: {} {}",
            binary.display(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(took)
    }
}

#[derive(Default)]
struct Samples {
    add: Vec<f64>,
    add_ready: Vec<f64>,
    ready_at_return: usize,
    del: Vec<f64>,
    bridge_add: Vec<f64>,
    bridge_del: Vec<f64>,
    sriov_add: Vec<f64>,
    sriov_del: Vec<f64>,
    hl_add: Vec<f64>,
    hl_del: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pod_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0x64, (i & 0xff) as u8])
}

/// Whether net1 in `ns` is up with `mac` and an address on the VF subnet, and eth0 has one too.
fn pod_ready(ns: &NetNs, mac: MacAddr) -> Result<bool> {
    ns.run(|| -> Result<bool> {
        let mut nl = Netlink::open()?;
        let Some(net1) = nl.link_by_name("net1")? else {
            return Ok(false);
        };
        let Some(eth0) = nl.link_by_name("eth0")? else {
            return Ok(false);
        };
        let has = |nl: &mut Netlink, index, prefix: Option<&str>| -> Result<bool> {
            Ok(nl.addresses(index)?.iter().any(|a| {
                a.addr.is_ipv4() && prefix.is_none_or(|p| a.addr.to_string().starts_with(p))
            }))
        };
        Ok(net1.up
            && net1.mac == Some(mac)
            && has(&mut nl, net1.index, Some(VF_PREFIX))?
            && has(&mut nl, eth0.index, None)?)
    })?
}

/// One pod through genie: ADD, readiness, DEL; its netns is gone afterwards.
fn genie_pod(b: &Bench, lab: &Lab, i: usize, s: &mut Samples) -> Result<()> {
    let root = SysRoot::host();
    let vf = &lab.vfs[0];
    let (id, name, mac) = (format!("bench-{i}"), format!("pod-{i}"), pod_mac(i));
    let selection = json!([{"name": NAD, "mac": mac.to_string()}]).to_string();
    b.node.api.add_pod(
        NS,
        &name,
        &[("k8s.v1.cni.cncf.io/networks", selection.as_str())],
    );
    let pci = vf.pci.to_string();
    b.pr.set_pod(NS, &name, &[("app", RESOURCE, &[pci.as_str()])]);
    let ns = NetNs::create_named(&root, &id)?;
    let path = PathBuf::from("/run/netns").join(&id);
    let result = (|| -> Result<()> {
        let pod = Some((NS, name.as_str()));
        let started = Instant::now();
        let out = b.node.cni("ADD", &id, &path, "eth0", pod, &b.genie_conf)?;
        let returned = started.elapsed();
        ensure!(
            out.success,
            "genie ADD {id}: {} {}",
            out.stdout,
            out.stderr.trim()
        );
        let mut polls = 0;
        wait_for("net1 up with its MAC and address", TIMEOUT, || {
            polls += 1;
            pod_ready(&ns, mac).ok().filter(|r| *r)
        })
        .with_context(|| format!("pod {id}"))?;
        let ready = started.elapsed();
        s.add.push(ms(returned));
        s.add_ready.push(ms(ready));
        if polls == 1 {
            s.ready_at_return += 1;
        }

        let started = Instant::now();
        let out = b.node.cni("DEL", &id, &path, "eth0", pod, &b.genie_conf)?;
        let took = started.elapsed();
        ensure!(
            out.success,
            "genie DEL {id}: {} {}",
            out.stdout,
            out.stderr.trim()
        );
        s.del.push(ms(took));
        provision::wait_vf_netdev(&root, &vf.pci, TIMEOUT)
            .with_context(|| format!("VF {} after DEL of {id}", vf.pci))?;
        Ok(())
    })();
    if result.is_err() {
        // Best effort, so the next scenario step finds the VF free.
        let _ = b
            .node
            .cni("DEL", &id, &path, "eth0", Some((NS, &name)), &b.genie_conf);
    }
    b.node.api.delete_pod(NS, &name);
    let gone = NetNs::delete_named(&root, &id);
    result?;
    Ok(gone?)
}

/// The delegates genie called, with the same configs, exec'd directly; then host-local alone.
fn direct(b: &Bench, lab: &Lab, i: usize, s: &mut Samples) -> Result<()> {
    let root = SysRoot::host();
    let vf = &lab.vfs[0];
    let id = format!("direct-{i}");
    let pci = vf.pci.to_string();
    let mut sriov = b.sriov_direct.clone();
    sriov["deviceID"] = json!(pci);
    sriov["runtimeConfig"] = json!({"mac": pod_mac(i).to_string(), "deviceID": pci});
    let bridge = Path::new(PLUGINS).join("bridge");
    let plugin = b.node.bin_dir.join("sriov");
    NetNs::create_named(&root, &id)?;
    let path = PathBuf::from("/run/netns").join(&id);
    let result = (|| -> Result<()> {
        s.bridge_add
            .push(ms(b.exec(&bridge, "ADD", &id, &path, "eth0", &b.bridge)?));
        s.sriov_add
            .push(ms(b.exec(&plugin, "ADD", &id, &path, "net1", &sriov)?));
        s.sriov_del
            .push(ms(b.exec(&plugin, "DEL", &id, &path, "net1", &sriov)?));
        s.bridge_del
            .push(ms(b.exec(&bridge, "DEL", &id, &path, "eth0", &b.bridge)?));
        let hl = Path::new(PLUGINS).join("host-local");
        s.hl_add
            .push(ms(b.exec(&hl, "ADD", &id, &path, "eth0", &b.host_local)?));
        s.hl_del
            .push(ms(b.exec(&hl, "DEL", &id, &path, "eth0", &b.host_local)?));
        Ok(())
    })();
    if result.is_err() {
        let _ = b.exec(&plugin, "DEL", &id, &path, "net1", &sriov);
        let _ = b.exec(&bridge, "DEL", &id, &path, "eth0", &b.bridge);
    }
    let gone = NetNs::delete_named(&root, &id);
    result?;
    Ok(gone?)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s.get(rank.saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

fn p50(v: &[f64]) -> f64 {
    pct(v, 50.0)
}

fn dist(v: &[f64]) -> String {
    format!(
        "p50 {:.1} ms p90 {:.1} ms max {:.1} ms (n={})",
        p50(v),
        pct(v, 90.0),
        pct(v, 100.0),
        v.len()
    )
}

fn share(part: f64, whole: f64) -> String {
    format!("{:.0}%", 100.0 * part / whole)
}

/// An sriov run's time sorted into (kernel netlink, rebind, ipam exec, own code, cache, total).
fn classify(steps: &Steps) -> [f64; 6] {
    let get = |k: &str| steps.get(k).copied().unwrap_or(0.0);
    let kernel: f64 = KERNEL_STEPS.iter().map(|k| get(k)).sum();
    let (rebind, ipam, total) = (get("rebind"), get("ipam_exec"), get("total"));
    let own = total - kernel - rebind - ipam;
    [kernel, rebind, ipam, own, get("cache"), total]
}

/// A genie run's time sorted into (delegates, API, PodResources, finish, own code, cache, total);
/// `finish` is its last step, the routes, the status write and the results' cache write side by
/// side.
fn classify_genie(steps: &Steps) -> [f64; 7] {
    let get = |k: &str| steps.get(k).copied().unwrap_or(0.0);
    let (delegates, api, pr, finish) = (
        get("delegates"),
        get("api"),
        get("podresources"),
        get("finish"),
    );
    let total = get("total");
    let own = total - delegates - api - pr - finish - get("cache");
    [delegates, api, pr, finish, own, get("cache"), total]
}

/// The p50 of column `i` of each run's classification.
fn col<const N: usize>(runs: &[Steps], f: fn(&Steps) -> [f64; N], i: usize) -> f64 {
    p50(&runs.iter().map(|r| f(r)[i]).collect::<Vec<_>>())
}

/// What one command (`add` or `del`) measured.
struct Measured<'a> {
    what: &'a str,
    /// genie exec'd by the runtime, wall time.
    genie: &'a [f64],
    bridge: &'a [f64],
    sriov: &'a [f64],
    genie_runs: &'a [Steps],
    sriov_in_pods: &'a [Steps],
    sriov_direct: &'a [Steps],
}

/// Wall time minus the plugin's own total, per run: process start and exit.
fn startup(walls: &[f64], runs: &[Steps], total: impl Fn(&Steps) -> f64) -> f64 {
    p50(&walls
        .iter()
        .zip(runs)
        .map(|(w, r)| w - total(r))
        .collect::<Vec<_>>())
}

fn figures(m: &Measured<'_>) -> Vec<String> {
    let what = m.what;
    let mut lines = Vec::new();
    let delegates: Vec<f64> = m.bridge.iter().zip(m.sriov).map(|(a, b)| a + b).collect();
    let overhead: Vec<f64> = m.genie.iter().zip(&delegates).map(|(g, d)| g - d).collect();
    let whole = p50(m.genie);
    lines.push(format!(
        "pods.{what}.delegates_direct: {} (bridge + sriov exec'd directly)",
        dist(&delegates)
    ));
    lines.push(format!("pods.{what}.bridge_direct: {}", dist(m.bridge)));
    lines.push(format!("pods.{what}.sriov_direct: {}", dist(m.sriov)));
    lines.push(format!(
        "pods.{what}.genie_overhead: p50 {:.1} ms ({} of {}; genie {what} minus both delegates exec'd directly, per pod)",
        p50(&overhead),
        share(p50(&overhead), whole),
        what.to_uppercase()
    ));

    let g = |i| col(m.genie_runs, classify_genie, i);
    let (g_deleg, g_api, g_pr, g_finish, g_own, g_cache, g_total) =
        (g(0), g(1), g(2), g(3), g(4), g(5), g(6));
    let g_start = startup(m.genie, m.genie_runs, |r| classify_genie(r)[6]);
    lines.push(format!(
        "pods.{what}.genie_breakdown: delegates exec {g_deleg:.1} ms, API server {g_api:.1} ms, PodResources {g_pr:.1} ms, cache {g_cache:.1} ms, finish (routes, status write and results side by side) {g_finish:.1} ms, own code {g_own:.1} ms, genie total {g_total:.1} ms, process start/exit {g_start:.1} ms (p50s, n={}; API server and PodResources: our clients and the in-process stand-ins on loopback)",
        m.genie_runs.len()
    ));

    let c = |i| col(m.sriov_in_pods, classify, i);
    let (kernel, rebind, ipam, own, cache, total) = (c(0), c(1), c(2), c(3), c(4), c(5));
    let s_start = startup(m.sriov, m.sriov_direct, |r| classify(r)[5]);
    lines.push(format!(
        "pods.{what}.sriov_breakdown: kernel netlink {kernel:.1} ms, driver rebind {rebind:.1} ms, ipam exec {ipam:.1} ms, own code {own:.1} ms (cache {cache:.1} ms), plugin total {total:.1} ms, process start/exit {s_start:.1} ms (p50s; n={} runs inside genie pods, start/exit from {} direct runs)",
        m.sriov_in_pods.len(),
        m.sriov_direct.len()
    ));

    let ours_genie = g_own + g_cache + g_finish + g_start;
    let ours_sriov = own + s_start;
    let bridge = p50(m.bridge);
    lines.push(format!(
        "pods.{what}.share: our code {} (genie {}, sriov {}), kernel {} (netlink {}, driver rebind {}), delegates {} (bridge {}, host-local from sriov {}), API server + PodResources calls {} (of the {} p50 {whole:.1} ms; from p50s, so the parts need not add up to 100%)",
        share(ours_genie + ours_sriov, whole),
        share(ours_genie, whole),
        share(ours_sriov, whole),
        share(kernel + rebind, whole),
        share(kernel, whole),
        share(rebind, whole),
        share(bridge + ipam, whole),
        share(bridge, whole),
        share(ipam, whole),
        share(g_api + g_pr, whole),
        what.to_uppercase(),
    ));
    lines
}

fn records_left(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join("attachments"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn bench(lab: &Lab) -> Result<()> {
    let b = Bench::new()?;
    let mut s = Samples::default();
    let started = Instant::now();
    for i in 0..PODS {
        genie_pod(&b, lab, i, &mut s).with_context(|| format!("pod {i}"))?;
        direct(&b, lab, i, &mut s).with_context(|| format!("direct delegates {i}"))?;
    }
    let took = started.elapsed();

    let genie_runs = parse_timings(&b.genie_log, "genie")?;
    let in_pods = parse_timings(&b.sriov_log, "sriov")?;
    let direct_runs = parse_timings(&b.direct_log, "sriov")?;
    let runs = |m: &BTreeMap<String, Vec<Steps>>, c: &str| m.get(c).cloned().unwrap_or_default();
    let mut lines = vec![
        format!("pods.add: {} (genie ADD, exec to return)", dist(&s.add)),
        format!(
            "pods.add.ready: {} (ADD start to net1 up with its MAC and address; {} of {} pods ready when ADD returned)",
            dist(&s.add_ready),
            s.ready_at_return,
            s.add.len()
        ),
    ];
    for (what, command, genie, bridge, sriov) in [
        ("add", "ADD", &s.add, &s.bridge_add, &s.sriov_add),
        ("del", "DEL", &s.del, &s.bridge_del, &s.sriov_del),
    ] {
        if what == "del" {
            lines.push(format!(
                "pods.del: {} (genie DEL, exec to return)",
                dist(&s.del)
            ));
        }
        lines.extend(figures(&Measured {
            what,
            genie,
            bridge,
            sriov,
            genie_runs: &runs(&genie_runs, command),
            sriov_in_pods: &runs(&in_pods, command),
            sriov_direct: &runs(&direct_runs, command),
        }));
    }
    lines.push(format!(
        "pods.ipam.host_local: ADD {}; DEL {}",
        dist(&s.hl_add),
        dist(&s.hl_del)
    ));
    lines.push(format!(
        "pods.bench: {PODS} pods (VF {} of {}, VLAN 100, own MAC each) and their direct delegates in {:.1} s",
        lab.vfs[0].pci,
        lab.pf_name,
        took.as_secs_f64()
    ));
    note(&lines.join("\n"));

    for (plugin, m) in [("genie", &genie_runs), ("sriov", &in_pods)] {
        let n = runs(m, "ADD").len() + runs(m, "DEL").len();
        ensure!(
            n == 2 * PODS,
            "{n} {plugin} timing lines from the genie pods, want {}",
            2 * PODS
        );
    }
    ensure!(
        s.add.len() == PODS && s.del.len() == PODS,
        "{} ADDs and {} DELs",
        s.add.len(),
        s.del.len()
    );
    let leases = b.node.leases();
    ensure!(leases.is_empty(), "IP leases left: {leases:?}");
    let records = records_left(&b.state_dir);
    ensure!(records.is_empty(), "sriov records left: {records:?}");
    let cache = b.node.cache_records();
    ensure!(cache.is_empty(), "genie cache records left: {cache:?}");
    pods::assert_restored(lab, &lab.vfs[0])?;
    Ok(())
}

pub fn run(report: &mut Report) {
    let root = SysRoot::host();
    let mut lab = None;
    report.check("bench-pods-setup", || {
        lab = Some(pods::setup(&root)?);
        Ok(())
    });
    let Some(lab) = lab else {
        report.fail("bench-pods", "skipped: setup failed");
        return;
    };
    report.check("bench-pods", || bench(&lab));
    report.check("bench-pods-restore", || {
        let pf = igb_pfs(&root)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no igb PF"))?;
        let left = provision::set_num_vfs(&root, &pf.address, 0, TIMEOUT)?;
        ensure!(
            left.is_empty(),
            "{} VFs left on {}",
            left.len(),
            lab.pf_name
        );
        Ok(())
    });
}
