//! `vfgenie-bench [agent|cni|audit|controller|all]`: printed figures, not timed tests (run it through `hack/bench`,
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
//! - audit: a report over a generated 1,000,000-line audit log: lines per second and total time
//!   ([`audit_step`]).
//! - controller: the real `vfgenie-controller serve` over 10,000 NADs and 10,000 LogicalNetworks:
//!   time to ready, pod and LogicalNetwork review latency over HTTPS, resident memory
//!   ([`controller_step`]).
//! - policy: the network policy engine over 200 pod namespaces: change-to-enforcement latency,
//!   CPU, table sizes, TCP throughput with and without the rules ([`policy_step`]).
//! - switch: hot-plug latency from an annotation change to the interface, and packets lost
//!   through make-before-break switches ([`switch_step`]).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "vfgenie-bench/api_step.rs"]
mod api_step;
#[path = "vfgenie-bench/audit_step.rs"]
mod audit_step;
#[path = "vfgenie-bench/cni_step.rs"]
mod cni_step;
#[path = "vfgenie-bench/controller_step.rs"]
mod controller_step;
#[path = "vfgenie-bench/policy_step.rs"]
mod policy_step;
#[path = "vfgenie-bench/switch_step.rs"]
mod switch_step;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use vfcore::SysRoot;
use vfdp::v1beta1::{AllocateRequest, ContainerAllocateRequest, Empty};
use vfgenie_tests::kubelet::KubeletStandIn;
use vfgenie_tests::runtime::run;

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
        "cni" => cni_step::cni(),
        "audit" => audit_step::audit(),
        "controller" => controller_step::controller(),
        "policy" => policy_step::policy(),
        "switch" => switch_step::switch(),
        // genie's API step alone (also the last figure of `cni`).
        "api" => api_step::api_step(),
        "all" => {
            agent()?;
            cni_step::cni()?;
            audit_step::audit()?;
            controller_step::controller()?;
            policy_step::policy()?;
            switch_step::switch()
        }
        other => {
            bail!("unknown benchmark {other:?}: use agent, cni, audit, controller, policy, switch, api or all")
        }
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
