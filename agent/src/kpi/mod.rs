//! Network KPIs of this node, sampled every `--kpi-interval` and published three ways: the KPI
//! file genie reads for its smart selection (`--kpi-file`, written atomically, 0644), the
//! `vfgenie_network_*` gauges on `/metrics`, and a compact summary on the Node ([`node`]).
//!
//! Per network the node can attach (the conf files of `--cni-conf-dir`, every network genie's
//! records show a pod attached to on this node, NADs and LogicalNetworks among them, and any
//! further networks the caller passes): IP occupancy ([`ipam`]), free VFs of
//! the pool the network takes devices from, rx/tx bytes per second of the pods' interfaces on it
//! ([`traffic`]), and the audit-log figures through [`AttachStats`]. Per VF pool: free VFs.
//! Figures that cannot be known are null (`None`), never 0.

pub mod attach;
pub mod ipam;
pub mod node;
pub mod traffic;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tracing::{debug, warn};
use vfkube::kpi::{KpiFile, NetworkKpis, PoolKpis};

use crate::podres::Held;
use crate::pool::Pool;

/// Where the KPIs come from and go.
#[derive(Debug, Clone)]
pub struct KpiOptions {
    pub file: PathBuf,
    pub interval: Duration,
    /// The CNI conf dir: each conf file there is a network.
    pub cni_conf_dir: PathBuf,
    /// genie's `cniDir`: its records give the pods' attachments.
    pub genie_cni_dir: PathBuf,
    /// host-local's data dir for confs without `ipam.dataDir`.
    pub host_local_dir: PathBuf,
    pub node: String,
    /// genie's audit log (its conf's `auditLog.path`): attach latency and error rate.
    pub genie_audit_log: Option<PathBuf>,
}

impl KpiOptions {
    pub fn new(file: PathBuf) -> Self {
        Self {
            file,
            interval: Duration::from_secs(10),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            genie_cni_dir: PathBuf::from("/var/lib/cni/vfgenie"),
            host_local_dir: PathBuf::from(ipam::HOST_LOCAL_DATA_DIR),
            node: String::new(),
            genie_audit_log: None,
        }
    }
}

/// Attach latency and error rate per network, from the audit log ([`attach`]).
pub trait AttachStats: Send {
    /// Brings the figures up to date; called once at the start of each sample.
    fn refresh(&mut self) {}
    fn attach_latency_p50_ms(&self, network: &str) -> Option<f64>;
    fn error_rate(&self, network: &str) -> Option<f64>;
}

/// No audit log: both figures unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAttachStats;

impl AttachStats for NoAttachStats {
    fn attach_latency_p50_ms(&self, _: &str) -> Option<f64> {
        None
    }
    fn error_rate(&self, _: &str) -> Option<f64> {
        None
    }
}

/// A network known from elsewhere than the conf dir (a NetworkAttachmentDefinition, a
/// LogicalNetwork): its name as genie records it, its config, the resource it takes a VF from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraNetwork {
    pub name: String,
    pub config: Value,
    pub resource: Option<String>,
}

/// One sample, owned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub generated_at: f64,
    pub node: String,
    pub networks: BTreeMap<String, NetworkKpis>,
    pub pools: BTreeMap<String, PoolKpis>,
}

impl Sample {
    /// The KPI file's JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let file = KpiFile {
            generated_at: self.generated_at,
            node: Some(self.node.as_str()).filter(|n| !n.is_empty()),
            networks: self
                .networks
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect(),
            pools: self.pools.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
        };
        serde_json::to_vec(&file)
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The networks of the conf dir: `(name, config)` of each `.conf`, `.conflist` and `.json` file
/// with a name, genie's own conf left out.
pub fn conf_networks(dir: &Path) -> Vec<(String, Value)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    for f in files {
        let Ok(bytes) = read_small(&f) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let is_genie = |c: &Value| c.get("type").and_then(Value::as_str) == Some("genie");
        let genie = is_genie(&v)
            || v.get("plugins")
                .and_then(Value::as_array)
                .is_some_and(|p| p.iter().any(is_genie));
        let Some(name) = v.get("name").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        if genie || out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        out.push((name, v));
    }
    out
}

/// A regular file of at most 1 MiB.
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    let m = std::fs::metadata(path)?;
    if !m.is_file() || m.len() > 1024 * 1024 {
        return Err(std::io::Error::other("not a small regular file"));
    }
    std::fs::read(path)
}

/// Free (healthy, held by no pod) VFs of each pool; `None` when the kubelet cannot say.
pub fn free_vfs(pools: &[Pool], held: &Held) -> BTreeMap<String, (Option<u64>, u64)> {
    pools
        .iter()
        .map(|p| {
            let free = match held {
                Held::Unknown(_) => None,
                h => Some(
                    p.devices
                        .values()
                        .filter(|d| d.healthy && !h.may_hold(&d.address))
                        .count() as u64,
                ),
            };
            (p.full_name(), (free, p.devices.len() as u64))
        })
        .collect()
}

/// Samples the KPIs; keeps the previous counters for the rates.
pub struct Collector {
    pub opts: KpiOptions,
    traffic: traffic::TrafficSampler,
    stats: Box<dyn AttachStats>,
}

impl Collector {
    pub fn new(opts: KpiOptions, stats: Box<dyn AttachStats>) -> Self {
        Self {
            opts,
            traffic: traffic::TrafficSampler::default(),
            stats,
        }
    }

    /// One sample (blocking: files, netns threads, netlink).
    pub fn sample(&mut self, pools: &[Pool], held: &Held, extra: &[ExtraNetwork]) -> Sample {
        let now = unix_now();
        self.stats.refresh();
        let free = free_vfs(pools, held);
        let mut nets: Vec<(String, Value, Option<String>)> = conf_networks(&self.opts.cni_conf_dir)
            .into_iter()
            .map(|(n, c)| (n, c, None))
            .collect();
        let recorded = traffic::recorded_networks(&self.opts.genie_cni_dir);
        for e in extra.iter().chain(&recorded) {
            if !nets.iter().any(|(n, _, _)| *n == e.name) {
                nets.push((e.name.clone(), e.config.clone(), e.resource.clone()));
            }
        }
        let attachments = traffic::attachments(&self.opts.genie_cni_dir);
        let traffic = self.traffic.sample(&attachments);
        let mut networks = BTreeMap::new();
        for (name, config, resource) in nets {
            let (ip_used, ip_total) =
                match ipam::occupancy(&name, &config, &self.opts.host_local_dir) {
                    Some((u, t)) => (Some(u), Some(t)),
                    None => (None, None),
                };
            let t = traffic
                .get(&name)
                .copied()
                .unwrap_or(traffic::NetworkTraffic {
                    rx_bytes_per_second: Some(0.0),
                    tx_bytes_per_second: Some(0.0),
                    ..Default::default()
                });
            networks.insert(
                name.clone(),
                NetworkKpis {
                    sampled_at: now,
                    ip_used,
                    ip_total,
                    free_vfs: resource
                        .as_ref()
                        .and_then(|r| free.get(r))
                        .and_then(|(f, _)| *f),
                    rx_bytes_per_second: t.rx_bytes_per_second,
                    tx_bytes_per_second: t.tx_bytes_per_second,
                    attach_latency_p50_ms: self.stats.attach_latency_p50_ms(&name),
                    error_rate: self.stats.error_rate(&name),
                },
            );
        }
        Sample {
            generated_at: now,
            node: self.opts.node.clone(),
            networks,
            pools: free
                .into_iter()
                .map(|(name, (free_vfs, capacity))| {
                    (
                        name,
                        PoolKpis {
                            sampled_at: now,
                            free_vfs,
                            capacity,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync'd, mode 0644, renamed
/// over it, and the directory fsync'd.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        // The umask may have narrowed the mode.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The latest sample, for `/metrics`.
static LATEST: Mutex<Option<Sample>> = Mutex::new(None);

fn latest() -> std::sync::MutexGuard<'static, Option<Sample>> {
    LATEST.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes `s` for [`render_metrics`].
pub fn publish(s: &Sample) {
    *latest() = Some(s.clone());
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `vfgenie_network_*` gauges of the latest sample; nothing before the first (the sampler
/// is off or has not run yet).
pub fn render_metrics() -> String {
    render_sample(latest().as_ref())
}

/// The `vfgenie_network_*` gauges of `sample` (a null figure has no series); nothing without one.
pub fn render_sample(sample: Option<&Sample>) -> String {
    let Some(s) = sample else {
        return String::new();
    };
    type Family = (&'static str, &'static str, fn(&NetworkKpis) -> Option<f64>);
    let families: [Family; 7] = [
        (
            "vfgenie_network_ip_used",
            "Addresses leased on the network (host-local IPAM only).",
            |k| k.ip_used.map(|v| v as f64),
        ),
        (
            "vfgenie_network_ip_total",
            "Addresses the network's host-local ranges can hand out.",
            |k| k.ip_total.map(|v| v as f64),
        ),
        (
            "vfgenie_network_free_vfs",
            "Free VFs of the pool the network takes devices from.",
            |k| k.free_vfs.map(|v| v as f64),
        ),
        (
            "vfgenie_network_rx_bytes_per_second",
            "Bytes per second received by the pods' interfaces on the network.",
            |k| k.rx_bytes_per_second,
        ),
        (
            "vfgenie_network_tx_bytes_per_second",
            "Bytes per second sent by the pods' interfaces on the network.",
            |k| k.tx_bytes_per_second,
        ),
        (
            "vfgenie_network_attach_latency_p50_milliseconds",
            "Median time genie's delegates took to attach a pod to the network (successful ADDs of the last 15 minutes, from genie's audit log).",
            |k| k.attach_latency_p50_ms,
        ),
        (
            "vfgenie_network_attach_error_ratio",
            "Failed ADDs / all ADDs on the network in the last 15 minutes (genie's audit log).",
            |k| k.error_rate,
        ),
    ];
    let mut out = String::new();
    for (name, help, get) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (net, k) in &s.networks {
            if let Some(v) = get(k) {
                out.push_str(&format!(
                    "{name}{{network=\"{}\",node=\"{}\"}} {v}\n",
                    escape(net),
                    escape(&s.node)
                ));
            }
        }
    }
    out
}

/// Samples every `opts.interval` until `shutdown`, writing the file and the gauges. The pools come
/// from the agent's published state, the held devices from the kubelet.
pub async fn run(
    opts: KpiOptions,
    state: tokio::sync::watch::Receiver<crate::state::Snapshot>,
    pod_resources_socket: PathBuf,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut node: Option<node::NodeAnnotation>,
) {
    let stats: Box<dyn AttachStats> = match &opts.genie_audit_log {
        Some(log) => Box::new(attach::AuditAttachStats::new(log.clone())),
        None => Box::new(NoAttachStats),
    };
    let collector = std::sync::Arc::new(Mutex::new(Collector::new(opts.clone(), stats)));
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let pools = state.borrow().pools.clone();
        let resources = pools.iter().map(Pool::full_name).collect();
        let held =
            crate::podres::held_devices(&pod_resources_socket, &resources, Duration::from_secs(2))
                .await;
        let c = collector.clone();
        let file = opts.file.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            let s = c.sample(&pools, &held, &[]);
            publish(&s);
            let written = s
                .to_json()
                .map_err(std::io::Error::other)
                .and_then(|b| write_atomic(&file, &b));
            (s, written)
        })
        .await;
        match done {
            Ok((s, written)) => {
                match written {
                    Ok(()) => debug!(networks = s.networks.len(), "KPIs written"),
                    Err(e) => {
                        warn!(file = %opts.file.display(), error = %e, "cannot write the KPI file")
                    }
                }
                if let Some(n) = node.as_mut() {
                    n.publish(&s).await;
                }
            }
            Err(e) => warn!(error = %e, "the KPI sample failed"),
        }
    }
}

#[cfg(test)]
mod tests;
