//! The agent's main loop: reconcile at start, then again when the config file changes, a device
//! comes or goes (uevents), a retryable condition is pending, or the periodic resync is due; refresh
//! health on link events and on a short tick. Each pool gets a device-plugin server of its own,
//! supervised ([`crate::supervise`]): one that fails is restarted, one whose pool leaves the config
//! is stopped.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};
use vfcore::SysRoot;

use crate::config::Config;
use crate::events::Event;
use crate::podres::Held;
use crate::pool::Pool;
use crate::reconcile::{self, Outcome};
use crate::state::{Condition, Snapshot};
use crate::supervise::Servers;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub root: SysRoot,
    /// The kubelet's device-plugin directory (`kubelet.sock` and our sockets).
    pub plugin_dir: PathBuf,
    pub devinfo_dir: PathBuf,
    pub pod_resources_socket: PathBuf,
    /// Health is re-read this often even without link events.
    pub health_interval: Duration,
    /// A full reconcile runs this often even without events.
    pub resync_interval: Duration,
    /// Pending conditions are retried this often.
    pub retry_interval: Duration,
    /// The config file is checked for changes this often.
    pub config_poll: Duration,
    /// Listen for kernel uevents and link events (off for fixture trees).
    pub kernel_events: bool,
    pub reconcile: reconcile::Options,
    /// The CNI plugins' quarantine directories, by component, counted into the metrics.
    pub quarantine_dirs: Vec<(String, PathBuf)>,
}

/// genie's quarantine under its default `cniDir` (`--genie-cni-dir`).
pub const GENIE_QUARANTINE_DIR: &str = "/var/lib/cni/vfgenie/quarantine";
/// The sriov plugin's quarantine under its default state directory (`--sriov-state-dir`).
pub const SRIOV_QUARANTINE_DIR: &str = "/var/lib/cni/vfgenie/sriov/quarantine";

/// Records in a quarantine directory (not the `.reason` notes beside them); none when it does not
/// exist.
pub fn quarantined_records(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    !n.starts_with('.') && !n.ends_with(".reason")
                })
                .count() as u64
        })
        .unwrap_or(0)
}

impl RunOptions {
    pub fn new(config: PathBuf) -> Self {
        Self {
            config,
            root: SysRoot::host(),
            plugin_dir: PathBuf::from(vfdp::paths::DEVICE_PLUGIN_DIR),
            devinfo_dir: PathBuf::from(vfdp::devinfo::DEVINFO_DIR),
            pod_resources_socket: PathBuf::from(vfdp::paths::POD_RESOURCES_SOCKET),
            health_interval: Duration::from_secs(1),
            resync_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(5),
            config_poll: Duration::from_secs(1),
            kernel_events: true,
            reconcile: reconcile::Options::default(),
            quarantine_dirs: vec![
                ("genie".into(), PathBuf::from(GENIE_QUARANTINE_DIR)),
                ("sriov".into(), PathBuf::from(SRIOV_QUARANTINE_DIR)),
            ],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    #[error("a reconcile task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What identifies a version of the config file (a ConfigMap update swaps the file behind a
/// symlink, which changes the inode).
fn stamp(path: &Path) -> Option<(u64, u64, i64, i64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

struct Agent {
    opts: RunOptions,
    config: Config,
    servers: Servers,
    conditions: Vec<Condition>,
    config_condition: Option<Condition>,
    snapshot: Snapshot,
    /// The kubelet was expected but did not answer at the last look.
    kubelet_silent: bool,
}

impl Agent {
    fn resource_names(&self) -> BTreeSet<String> {
        self.config
            .resource_list
            .iter()
            .map(|r| r.full_name())
            .collect()
    }

    /// What the kubelet says pods hold. When it is expected but does not answer, that is said
    /// (with a warning naming why), so that nothing a pod may use is removed or rebound.
    /// Logged once when the kubelet falls silent and once when it answers again, not on every
    /// health tick.
    async fn held(&mut self) -> Held {
        let held = crate::podres::held_devices(
            &self.opts.pod_resources_socket,
            &self.resource_names(),
            Duration::from_secs(2),
        )
        .await;
        let silent = matches!(held, Held::Unknown(_));
        if silent != self.kubelet_silent {
            let socket = self.opts.pod_resources_socket.display();
            match &held {
                Held::Unknown(why) => warn!(
                    socket = %socket,
                    reason = %why,
                    "cannot tell which devices pods hold; VFs that exist are not removed or rebound"
                ),
                _ => info!(socket = %socket, "the kubelet tells which devices pods hold again"),
            }
            self.kubelet_silent = silent;
        }
        held
    }

    async fn full(&mut self) -> Result<(), Error> {
        let held = self.held().await;
        let (root, cfg, opts) = (
            self.opts.root.clone(),
            self.config.clone(),
            self.opts.reconcile.clone(),
        );
        let out: Outcome =
            tokio::task::spawn_blocking(move || reconcile::reconcile(&root, &cfg, &held, &opts))
                .await?;
        self.snapshot.provisioning_errors += out.errors;
        self.snapshot.refused_changes += out.refused;
        self.snapshot.reconciles += 1;
        self.conditions = out.conditions;
        self.apply(out.pools);
        self.snapshot.ready = true;
        Ok(())
    }

    async fn health(&mut self) -> Result<(), Error> {
        let held = self.held().await;
        let root = self.opts.root.clone();
        let mut pools: Vec<Pool> = self.servers.pools();
        let pools = tokio::task::spawn_blocking(move || {
            let held = match held {
                Held::Unknown(_) => vfcore::sysfs::discover(&root)
                    .map(|d| reconcile::held_for_health(&held, &d))
                    .unwrap_or_default(),
                held => reconcile::held_for_health(&held, &[]),
            };
            crate::health::refresh(&root, &mut pools, &held);
            pools
        })
        .await?;
        self.apply(pools);
        Ok(())
    }

    /// Publishes `pools`: changed pools reach their servers, new ones get a server, pools that
    /// left the config are stopped.
    fn apply(&mut self, pools: Vec<Pool>) {
        let wanted: BTreeSet<String> = self.resource_names();
        let gone: Vec<String> = self
            .servers
            .names()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            self.servers.remove(&name);
        }
        for pool in pools {
            self.servers.publish(pool);
        }
    }

    fn publish(&mut self, state: &watch::Sender<Snapshot>) {
        self.snapshot.quarantined = self
            .opts
            .quarantine_dirs
            .iter()
            .map(|(c, d)| (c.clone(), quarantined_records(d)))
            .collect();
        let order: Vec<String> = self
            .config
            .resource_list
            .iter()
            .map(|r| r.full_name())
            .collect();
        self.snapshot.pools = order.iter().filter_map(|n| self.servers.pool(n)).collect();
        self.snapshot.pool_server_restarts = self.servers.restarts();
        self.snapshot.conditions = self
            .config_condition
            .iter()
            .chain(self.conditions.iter())
            .cloned()
            .chain(self.servers.conditions())
            .collect();
        let snap = self.snapshot.clone();
        state.send_if_modified(|cur| {
            if *cur == snap {
                false
            } else {
                *cur = snap;
                true
            }
        });
    }

    fn reload(&mut self) -> bool {
        match Config::load(&self.opts.config) {
            Ok(cfg) => {
                self.config_condition = None;
                if cfg == self.config {
                    return false;
                }
                info!(config = %self.opts.config.display(), "config changed; reconciling");
                self.config = cfg;
                true
            }
            Err(e) => {
                self.snapshot.config_errors += 1;
                error!(error = %e, "config reload refused; the last good config stays in force");
                self.config_condition = Some(Condition {
                    object: self.opts.config.display().to_string(),
                    reason: "ConfigInvalid".into(),
                    message: e.to_string(),
                });
                false
            }
        }
    }

    async fn stop(self) {
        self.servers.stop().await;
    }
}

/// Runs until `shutdown` turns true, publishing into `state`. An invalid config at start is an
/// error; later an invalid config is refused and the last good one kept.
pub async fn run(
    opts: RunOptions,
    state: watch::Sender<Snapshot>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let config = Config::load(&opts.config)?;
    let mut config_stamp = stamp(&opts.config);
    let (ev_tx, mut ev_rx) = mpsc::channel(4);
    if opts.kernel_events {
        crate::events::spawn(ev_tx.clone());
    }
    let mut health_tick = tokio::time::interval(opts.health_interval);
    let mut resync_tick = tokio::time::interval(opts.resync_interval);
    let mut retry_tick = tokio::time::interval(opts.retry_interval);
    let mut config_tick = tokio::time::interval(opts.config_poll);
    for t in [
        &mut health_tick,
        &mut resync_tick,
        &mut retry_tick,
        &mut config_tick,
    ] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t.reset();
    }
    let servers = Servers::new(opts.plugin_dir.clone(), opts.devinfo_dir.clone());
    let mut agent = Agent {
        opts,
        config,
        servers,
        conditions: Vec::new(),
        config_condition: None,
        snapshot: Snapshot::default(),
        kubelet_silent: false,
    };
    agent.full().await?;
    agent.publish(&state);
    loop {
        let full = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            changed = agent.servers.next() => {
                if changed {
                    agent.publish(&state);
                }
                continue;
            }
            Some(ev) = ev_rx.recv() => ev == Event::Device,
            _ = health_tick.tick() => false,
            _ = resync_tick.tick() => true,
            _ = retry_tick.tick() => !agent.conditions.is_empty(),
            _ = config_tick.tick() => {
                let now = stamp(&agent.opts.config);
                if now != config_stamp {
                    config_stamp = now;
                    agent.reload()
                } else {
                    false
                }
            }
        };
        if full {
            agent.full().await?;
        } else {
            agent.health().await?;
        }
        agent.publish(&state);
    }
    drop(ev_tx);
    agent.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::quarantined_records;

    #[test]
    fn quarantined_records_are_counted_without_their_notes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(quarantined_records(&dir.path().join("missing")), 0);
        for f in [
            "c1-eth0.json",
            "c1-eth0.json.reason",
            "c2-net1.corrupt",
            ".tmp",
        ] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        assert_eq!(quarantined_records(dir.path()), 2);
    }
}
