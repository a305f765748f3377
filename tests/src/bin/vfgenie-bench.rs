//! `vfgenie-bench [agent|cni|controller|all]`: printed figures, not timed tests (run it through `hack/bench`,
//! which builds everything in release mode first). One line per figure, with its unit, its sample
//! size and, where the project has an aim for it, whether the aim was met. A missed aim is
//! reported, not fatal.
//!
//! - agent: discovery of a synthetic 16 PF x 64 VF sysfs tree, pool building over it, Allocate
//!   latency through the real gRPC stack (the real `vfgenie-agent run` process serving a kubelet
//!   stand-in), and that process's resident memory with two pools.
//! - cni: ADD and DEL of a pod with three networks through `genie`, beside the same three delegates
//!   exec'd directly in the same run, and genie's overhead per pod; and genie's API step with its
//!   own client beside kube's ([`api_step`]).
//! - controller: the real `vfgenie-controller serve` over 10,000 NADs and 10,000 LogicalNetworks:
//!   time to ready, pod and LogicalNetwork review latency over HTTPS, resident memory
//!   ([`controller_step`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "vfgenie-bench/api_step.rs"]
mod api_step;
#[path = "vfgenie-bench/controller_step.rs"]
mod controller_step;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use vfcore::SysRoot;
use vfdp::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use vfgenie_tests::kubelet::KubeletStandIn;
use vfgenie_tests::runtime::{run, unique, CniOutput, Node, Sandbox, DEBIAN_CNI_DIR};

const PFS: u32 = 16;
const VFS: u32 = 64;
const DISCOVERY_RUNS: usize = 20;
const ALLOCATE_CALLS: usize = 10_000;
const PODS: usize = 200;
const NS: &str = "team";
const NET: &str = "example.com/net";
const DPDK: &str = "example.com/dpdk";

fn main() -> anyhow::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    match what.as_str() {
        "agent" => agent(),
        "cni" => cni(),
        "controller" => controller_step::controller(),
        // genie's API step alone (also the last figure of `cni`).
        "api" => api_step::api_step(),
        "all" => {
            agent()?;
            cni()?;
            controller_step::controller()
        }
        other => bail!("unknown benchmark {other:?}: use agent, cni, controller, api or all"),
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Sorted samples.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }

    /// Nearest-rank percentile, `q` in 0..=100.
    fn pct(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    fn n(&self) -> usize {
        self.0.len()
    }
}

/// A duration in the unit that reads best: µs below a millisecond, ms otherwise.
fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------------------------------------
// Agent

fn agent() -> anyhow::Result<()> {
    let dir = in_memory_tempdir()?;
    let sys = dir.path().join("node");
    vfgenie_tests::synth::write_tree(&sys, PFS, VFS)?;
    // Flush the tree's thousands of new files now (when it is on a disk), so that their writeback
    // does not run beside the measurement (a real sysfs has none).
    nix::unistd::sync();
    let root = SysRoot::new(&sys);

    // Discovery, warmed once (the first walk fills the dentry cache, as a running node has it).
    let devices = vfcore::sysfs::discover(&root)?;
    if devices.len() != (PFS + PFS * VFS) as usize {
        bail!("discovery found {} devices", devices.len());
    }
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..DISCOVERY_RUNS {
        let c = process_cpu()?;
        let t = Instant::now();
        let d = vfcore::sysfs::discover(&root)?;
        times.push(t.elapsed());
        cpu.push(process_cpu()?.saturating_sub(c));
        std::hint::black_box(d);
    }
    let s = Samples::new(times);
    let c = Samples::new(cpu);
    let aim = Duration::from_millis(50);
    println!(
        "agent.discovery_{PFS}x{VFS}: median {} p90 {} (n={}; CPU time, all threads: median {})  aim < 50 ms: {}",
        fmt(s.pct(50.0)),
        fmt(s.pct(90.0)),
        s.n(),
        fmt(c.pct(50.0)),
        verdict(s.pct(50.0) < aim)
    );

    // Pool building from the discovered devices (two pools: netdev VFs and vfio VFs).
    let cfg = vfagent::config::Config::from_value(&agent_config())
        .map_err(|e| anyhow::anyhow!("bench config: {e:?}"))?;
    let mut times = Vec::new();
    for _ in 0..DISCOVERY_RUNS {
        let t = Instant::now();
        let pools = vfagent::select::build_pools(&root, &devices, &cfg.resource_list);
        times.push(t.elapsed());
        std::hint::black_box(pools);
    }
    let s = Samples::new(times);
    println!(
        "agent.pool_build_{PFS}x{VFS}: median {} p90 {} (n={}, 2 pools over {} devices)",
        fmt(s.pct(50.0)),
        fmt(s.pct(90.0)),
        s.n(),
        devices.len()
    );

    // The kubelet stand-in and its gRPC client on one thread: on a multi-threaded runtime every
    // call would hop between its worker threads, and on a small busy machine those wake-ups, not
    // the agent, made most of the p99 (an empty call's p99 went from about 2 ms to 0.2 ms).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(agent_process(dir.path(), &sys))
}

/// Where the agent's figures are taken: sysfs and the device-info directory (`/run/...`) live in
/// memory on a node, so the synthetic tree and the agent's files go to `/dev/shm` where it is
/// writable. On a disk filesystem the kernel may drop the tree's inodes between runs and read them
/// back in the middle of a measurement, which a real sysfs never does.
fn in_memory_tempdir() -> anyhow::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let dir = match tempfile::Builder::new()
        .prefix("vfgenie-bench")
        .tempdir_in(shm)
    {
        Ok(d) => d,
        Err(e) => {
            println!(
                "agent: {} is not usable ({e}); the tree goes to the temporary directory",
                shm.display()
            );
            tempfile::tempdir()?
        }
    };
    println!(
        "agent: synthetic sysfs tree and agent files in {}",
        dir.path().display()
    );
    Ok(dir)
}

/// CPU time (user and kernel) of the whole process so far, every thread's: discovery reads with
/// several. A busy machine does not inflate it as it does wall time.
fn process_cpu() -> anyhow::Result<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .context("the process CPU clock")?;
    Ok(Duration::from(t))
}

fn agent_config() -> Value {
    json!({"resourceList": [
        {"resourceName": "net", "resourcePrefix": "example.com", "selectors": {"drivers": ["ixgbevf"]}},
        {"resourceName": "dpdk", "resourcePrefix": "example.com", "selectors": {"drivers": ["vfio-pci"]}}
    ]})
}

/// A binary of this build, beside the running executable (target/<profile>/NAME).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no directory")?.join(name);
    if !bin.is_file() {
        bail!(
            "{} is missing: run hack/bench, which builds it",
            bin.display()
        );
    }
    Ok(bin)
}

/// The agent process; SIGTERM and reaped on drop.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = run("kill", &["-TERM", &self.0.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = SysRoot::host().proc_status(pid);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

async fn agent_process(dir: &Path, sys: &Path) -> anyhow::Result<()> {
    let plugins = dir.join("device-plugins");
    let devinfo = dir.join("devinfo");
    std::fs::create_dir_all(&plugins)?;
    let config = dir.join("config.json");
    std::fs::write(&config, agent_config().to_string())?;
    let kubelet = KubeletStandIn::start(&plugins).await?;
    let child = Command::new(sibling_binary("vfgenie-agent")?)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--plugin-dir")
        .arg(&plugins)
        .arg("--devinfo-dir")
        .arg(&devinfo)
        .arg("--pod-resources-socket")
        .arg(dir.join("no-kubelet-pod-resources.sock"))
        .args(["--metrics-addr", "off"])
        .envs(vfagent::DEPLOYED_ENV.iter().copied())
        .env("VFGENIE_SYSFS_ROOT", sys)
        .env("VFGENIE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    let agent = AgentProcess(child);
    let pid = agent.0.id();
    let wait = Duration::from_secs(30);
    let net = kubelet
        .wait_for(NET, wait, |r| {
            r.devices.len() == (PFS * VFS * 3 / 4) as usize
        })
        .await?;
    kubelet
        .wait_for(DPDK, wait, |r| r.devices.len() == (PFS * VFS / 4) as usize)
        .await?;

    // Steady state: serving both pools, a few health rounds done.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(pid)?;
    println!(
        "agent.rss_2_pools: {:.1} MB VmRSS (serving {} devices)  aim < 15 MB: {}",
        rss as f64 / 1024.0,
        net.devices.len() + PFS as usize * VFS as usize / 4,
        verdict(rss < 15 * 1024)
    );

    let mut client = kubelet.plugin(NET).await?;
    let ids: Vec<String> = net.devices.iter().map(|d| d.id.clone()).collect();
    let request = |i: usize| AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![ids[i % ids.len()].clone()],
        }],
    };
    // The first allocation of each device writes its device-info file; later ones find it.
    let mut first = Vec::with_capacity(ids.len());
    for i in 0..ids.len() {
        let req = request(i);
        let t = Instant::now();
        client.allocate(req).await?;
        first.push(t.elapsed());
    }
    // Each Allocate is followed by the plugin's cheapest call, GetDevicePluginOptions (no work
    // behind it): the same connection's round trip on the same machine at the same moment, the
    // floor that Allocate's own work adds to.
    let mut times = Vec::with_capacity(ALLOCATE_CALLS);
    let mut floor = Vec::with_capacity(ALLOCATE_CALLS);
    for i in 0..ALLOCATE_CALLS {
        let req = request(i);
        let t = Instant::now();
        client.allocate(req).await?;
        times.push(t.elapsed());
        let t = Instant::now();
        client.get_device_plugin_options(Empty {}).await?;
        floor.push(t.elapsed());
    }
    let f = Samples::new(first);
    println!(
        "agent.allocate_first: p50 {} p99 {} (n={}, first Allocate of each device)",
        fmt(f.pct(50.0)),
        fmt(f.pct(99.0)),
        f.n()
    );
    let s = Samples::new(times);
    println!(
        "agent.allocate: p50 {} p99 {} (n={}, one device per call, over gRPC)  aim p99 < 1 ms: {}",
        fmt(s.pct(50.0)),
        fmt(s.pct(99.0)),
        s.n(),
        verdict(s.pct(99.0) < Duration::from_millis(1))
    );
    let b = Samples::new(floor);
    println!(
        "agent.grpc_floor: p50 {} p99 {} (n={}, GetDevicePluginOptions after each Allocate, same connection; Allocate/floor: p50 {:.2}, p99 {:.2})",
        fmt(b.pct(50.0)),
        fmt(b.pct(99.0)),
        b.n(),
        s.pct(50.0).as_secs_f64() / b.pct(50.0).as_secs_f64(),
        s.pct(99.0).as_secs_f64() / b.pct(99.0).as_secs_f64()
    );
    let rss = rss_kib(pid)?;
    println!(
        "agent.rss_after_allocates: {:.1} MB VmRSS  aim < 15 MB: {}",
        rss as f64 / 1024.0,
        verdict(rss < 15 * 1024)
    );
    drop(agent);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// CNI

/// The same three networks as the genie_pods tests: the cluster network (bridge, default route),
/// NAD `team/blue` (ptp) and the CNI-Genie conf `red` (macvlan on a veth master).
struct Networks {
    node: Node,
    master: String,
    /// (plugin type, ifname, config) as genie delegates them, in ADD order.
    delegates: Vec<(String, String, Value)>,
}

impl Networks {
    fn new() -> anyhow::Result<Self> {
        let node = Node::new()?;
        let master = unique("gbm");
        run(
            "ip",
            &[
                "link",
                "add",
                &master,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{master}p"),
            ],
        )?;
        run("ip", &["link", "set", &master, "up"])?;
        let cluster = node.cluster_conflist("10.181.0.0/16");
        node.write_conf("10-cluster.conflist", &cluster)?;
        let red = json!({"cniVersion": "1.0.0", "name": "red", "type": "macvlan", "master": master,
                         "mode": "bridge", "ipam": node.ipam("10.183.0.0/16")});
        node.write_conf("20-red.conf", &red)?;
        let blue = json!({"cniVersion": "1.0.0", "name": "blue", "type": "ptp", "ipMasq": false,
                          "ipam": node.ipam("10.182.0.0/16")});
        node.api.add_nad(NS, "blue", &blue.to_string(), None);
        let mut bridge = cluster["plugins"][0].clone();
        bridge["cniVersion"] = json!("1.0.0");
        bridge["name"] = json!("cluster");
        let delegates = vec![
            ("bridge".into(), "eth0".into(), bridge),
            ("ptp".into(), "net1".into(), blue),
            ("macvlan".into(), "eth1".into(), red),
        ];
        Ok(Self {
            node,
            master,
            delegates,
        })
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.master]);
    }
}

fn checked(what: &str, out: CniOutput) -> anyhow::Result<()> {
    if !out.success {
        bail!("{what} failed: {} / {}", out.stdout, out.stderr);
    }
    Ok(())
}

fn cni() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the cni benchmark creates network namespaces and links: run it as root");
    }
    let nets = Networks::new()?;
    let node = &nets.node;
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    let plugin = |t: &str| Path::new(DEBIAN_CNI_DIR).join(t);

    let genie_pod_with = |i: usize, conf: &Value| -> anyhow::Result<(Duration, Duration)> {
        let name = format!("bench{i}");
        node.api.add_pod(
            NS,
            &name,
            &[("k8s.v1.cni.cncf.io/networks", "blue"), ("cni", "red")],
        );
        let sb = Sandbox::new()?;
        let cid = format!("genie{i}");
        let pod = Some((NS, name.as_str()));
        let t = Instant::now();
        let out = node.cni("ADD", &cid, &sb.path, "eth0", pod, conf)?;
        let add = t.elapsed();
        checked("genie ADD", out)?;
        let t = Instant::now();
        let out = node.cni("DEL", &cid, &sb.path, "eth0", pod, conf)?;
        let del = t.elapsed();
        checked("genie DEL", out)?;
        node.api.delete_pod(NS, &name);
        Ok((add, del))
    };
    let genie_pod = |i: usize| genie_pod_with(i, &conf);
    let direct_pod = |i: usize| -> anyhow::Result<(Duration, Duration)> {
        let name = format!("direct{i}");
        let sb = Sandbox::new()?;
        let cid = format!("direct{i}");
        let pod = Some((NS, name.as_str()));
        let t = Instant::now();
        for (ty, ifname, c) in &nets.delegates {
            let out = node.exec_plugin(&plugin(ty), "ADD", &cid, &sb.path, ifname, pod, "", c)?;
            checked(&format!("{ty} ADD"), out)?;
        }
        let add = t.elapsed();
        let t = Instant::now();
        for (ty, ifname, c) in nets.delegates.iter().rev() {
            let out = node.exec_plugin(&plugin(ty), "DEL", &cid, &sb.path, ifname, pod, "", c)?;
            checked(&format!("{ty} DEL"), out)?;
        }
        let del = t.elapsed();
        Ok((add, del))
    };

    // One untimed pod each: page cache and the API stand-in warm.
    genie_pod(PODS)?;
    direct_pod(PODS)?;
    let (mut g_add, mut g_del, mut d_add, mut d_del) = (vec![], vec![], vec![], vec![]);
    let (mut over_add, mut over_del) = (vec![], vec![]);
    let mut ratios = Vec::new();
    let mut writes = Vec::new();
    for i in 0..PODS {
        writes.push(cache_write(node)?);
        // Alternate the order so that neither side always runs on a just-disturbed machine.
        let (g, d) = if i % 2 == 0 {
            let g = genie_pod(i)?;
            (g, direct_pod(i)?)
        } else {
            let d = direct_pod(i)?;
            (genie_pod(i)?, d)
        };
        g_add.push(g.0);
        g_del.push(g.1);
        d_add.push(d.0);
        d_del.push(d.1);
        over_add.push(g.0.saturating_sub(d.0));
        over_del.push(g.1.saturating_sub(d.1));
        ratios.push(g.0.as_secs_f64() / d.0.as_secs_f64() - 1.0);
    }
    if !node.leases().is_empty() || !node.cache_records().is_empty() {
        bail!(
            "pods left leases {:?} or cache records {:?}",
            node.leases(),
            node.cache_records()
        );
    }
    let line = |name: &str, v: Vec<Duration>| {
        let s = Samples::new(v);
        println!(
            "{name}: p50 {} p99 {} (n={})",
            fmt(s.pct(50.0)),
            fmt(s.pct(99.0)),
            s.n()
        );
        s
    };
    line("cni.add_genie_3_networks", g_add);
    let da = line("cni.add_direct_3_delegates", d_add);
    line("cni.del_genie_3_networks", g_del);
    line("cni.del_direct_3_delegates", d_del);
    let oa = Samples::new(over_add);
    println!(
        "cni.add_overhead (genie - direct, per pod): p50 {} p99 {} (n={})  aim p50 < 2 ms: {}",
        fmt(oa.pct(50.0)),
        fmt(oa.pct(99.0)),
        oa.n(),
        verdict(oa.pct(50.0) < Duration::from_millis(2))
    );
    ratios.sort_by(f64::total_cmp);
    let r50 = ratios[ratios.len().div_ceil(2) - 1];
    println!(
        "cni.add_ratio (genie / direct): p50 {:.2} (overhead {:.0}% of the delegates' {})  aim < 10%: {}",
        1.0 + r50,
        r50 * 100.0,
        fmt(da.pct(50.0)),
        verdict(r50 < 0.10)
    );
    let od = Samples::new(over_del);
    println!(
        "cni.del_overhead (genie - direct, per pod): p50 {} p99 {} (n={})",
        fmt(od.pct(50.0)),
        fmt(od.pct(99.0)),
        od.n()
    );
    let w = Samples::new(writes);
    println!(
        "cni.cache_record_write (fsync, rename, fsync dir; ADD makes 2, the first one's directory fsync beside its first delegate): p50 {} p99 {} (n={})",
        fmt(w.pct(50.0)),
        fmt(w.pct(99.0)),
        w.n()
    );

    // Where genie's time goes: more pods with debug logging on, which makes genie log its step
    // timings (vfcni::timing). Measured apart from the figures above, which run without it.
    let log = tempfile::NamedTempFile::new()?;
    let mut logged = conf.clone();
    logged["logLevel"] = json!("debug");
    logged["logFile"] = json!(log.path().display().to_string());
    let mut walls = (Vec::new(), Vec::new());
    for i in 0..BREAKDOWN_PODS {
        let (add, del) = genie_pod_with(PODS + 1 + i, &logged)?;
        walls.0.push(add);
        walls.1.push(del);
    }
    let runs = vfgenie_tests::timings::parse_timings(log.path(), "genie")?;
    for (command, wall) in [("ADD", walls.0), ("DEL", walls.1)] {
        let steps = runs.get(command).map(Vec::as_slice).unwrap_or_default();
        if steps.len() != BREAKDOWN_PODS {
            bail!(
                "{} {command} timing lines for {BREAKDOWN_PODS} pods",
                steps.len()
            );
        }
        println!("{}", breakdown(command, steps, &wall));
    }
    api_step::api_step()
}

/// Genie runs logged with their step timings: pods in the breakdown.
const BREAKDOWN_PODS: usize = 40;

/// One line: the p50 of each of genie's steps over `runs`, of its own code (what no step covers)
/// and of process start and exit (the exec's wall time minus genie's own total), each taken per
/// run before the p50.
fn breakdown(command: &str, runs: &[vfgenie_tests::timings::Steps], wall: &[Duration]) -> String {
    let p50 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len().div_ceil(2) - 1]
    };
    let get = |r: &vfgenie_tests::timings::Steps, k: &str| r.get(k).copied().unwrap_or(0.0);
    let step = |k: &str| p50(runs.iter().map(|r| get(r, k)).collect());
    let own = p50(runs
        .iter()
        .map(|r| get(r, "total") - GENIE_STEPS.iter().map(|k| get(r, k)).sum::<f64>())
        .collect());
    let start_exit = p50(wall
        .iter()
        .zip(runs)
        .map(|(w, r)| w.as_secs_f64() * 1e3 - get(r, "total"))
        .collect());
    let wall_ms = p50(wall.iter().map(|d| d.as_secs_f64() * 1e3).collect());
    let mut line = format!("cni.{}.genie_breakdown:", command.to_lowercase());
    for k in GENIE_STEPS {
        line.push_str(&format!(" {k} {:.2} ms,", step(k)));
    }
    line.push_str(&format!(
        " own code {own:.2} ms, genie total {:.2} ms, process start/exit {start_exit:.2} ms of the exec's {wall_ms:.2} ms (p50s, n={})",
        step("total"),
        runs.len()
    ));
    line
}

/// genie's named steps (see `vfcni::timing`); `finish` is ADD's last one: routes, status write
/// and the results' cache write side by side.
const GENIE_STEPS: [&str; 7] = [
    "delegates",
    "cache",
    "api",
    "plan",
    "finish",
    "podresources",
    "device_info",
];

/// One durable write of a pod record on the cache's filesystem, as genie makes them (temp file,
/// fsync, rename, fsync of the directory): ADD makes two (every attachment, then the results; the
/// first one's directory fsync runs beside the first delegate). Taken once per
/// pod, at the same moments as the pods, because on a busy disk it is what most of genie's
/// overhead is made of.
fn cache_write(node: &Node) -> anyhow::Result<Duration> {
    let cache = vfcni::cache::CacheDir::new(&node.cache_dir);
    let key = vfcni::cache::PodKey::new("benchwrite", "eth0")?;
    let mut record = vfcni::cache::PodRecord::new(&key, "/run/netns/bench");
    record.pod_namespace = Some(NS.into());
    let t = Instant::now();
    cache.write_pod(&record)?;
    let took = t.elapsed();
    cache.remove_pod(&key)?;
    Ok(took)
}
