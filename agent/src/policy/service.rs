//! The policy engine as the agent runs it: the watches ([`super::watch`]) feed the engine
//! ([`super::engine`]), which reconciles every namespace's table on each change of the cluster
//! (and every `resync`, which also notices namespaces that went away and genie records that
//! changed without a change in the API), and, once the watches are synced, the policy socket
//! ([`super::socket`]) lets genie ask for a new pod's table before its interfaces exist. Before
//! the watches are synced the socket is not there: genie's ADD fails with "try again later"
//! rather than set up a pod whose table could not know the policies.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::compile::Problem;
use super::counters::COUNTERS;
use super::engine::{Engine, Report, Snapshots};
use super::model::Inputs;
use super::nft::{Nft, NftError};
use super::socket::{self, Server, SocketError, SocketOptions};
use super::watch::report::Subject;
use super::watch::{PolicyWatch, WatchConfig, WatchError};

/// How often the engine reconciles without a change.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// This node's name.
    pub node_name: String,
    /// genie's cache directory (its pod records).
    pub genie_cni_dir: PathBuf,
    /// The policy socket (`None`: genie is not asked to wait for a pod's table).
    pub socket: Option<PathBuf>,
    /// The `nft` binary (`None`: from PATH).
    pub nft: Option<PathBuf>,
    pub resync: Duration,
    /// The network namespace of the host's table (the node's forward path). `None`, the
    /// default: the agent's own, which is the host's (it runs with hostNetwork). Tests point it
    /// at a namespace of their own; it is never read from the cluster.
    pub host_netns: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot start the policy watches")]
    Watch(#[from] WatchError),
    #[error("cannot use nft")]
    Nft(#[from] NftError),
    #[error("the policy socket failed")]
    Socket(#[from] SocketError),
}

impl Snapshots for PolicyWatch {
    fn snapshot(&self) -> Inputs {
        PolicyWatch::snapshot(self)
    }
}

/// The object a compile problem names, when it is a policy (those get an Event).
fn subject_of(p: &Problem) -> Option<Subject> {
    let (kind, rest) = p.object.split_once(' ')?;
    let (ns, name) = rest.split_once('/')?;
    let api_version = match kind {
        "MultiNetworkPolicy" => "k8s.cni.cncf.io/v1beta1",
        "NetworkPolicy" => "networking.k8s.io/v1",
        _ => return None,
    };
    Some(Subject::new(api_version, kind, ns, name, None))
}

/// Logs and counts what a reconcile did; a compile problem is reported when it appears (not
/// again every round while it lasts): `known` holds the last round's.
fn log_report(report: &Report, watch: &PolicyWatch, known: &mut BTreeSet<String>) {
    let c = &COUNTERS;
    c.reconciles.fetch_add(1, Ordering::Relaxed);
    c.applied
        .fetch_add(report.applied.len() as u64, Ordering::Relaxed);
    c.failures
        .fetch_add(report.failed.len() as u64, Ordering::Relaxed);
    // Parse problems (counted by the watches' reporter) and this round's compile problems.
    c.problems
        .store(watch.counters().policy_problems, Ordering::Relaxed);
    for f in &report.failed {
        let netns = f
            .netns
            .as_ref()
            .map_or("the host".to_string(), |p| p.display().to_string());
        warn!(netns = %netns, error = %vfcore::error::chain(&f.error), "policy table not applied; retrying");
    }
    let now: BTreeSet<String> = report.problems.iter().map(|p| p.to_string()).collect();
    for p in &report.problems {
        if known.contains(&p.to_string()) {
            continue;
        }
        match subject_of(p) {
            Some(s) => watch.reporter().report(&s, "policy", &p.problem),
            None => warn!(problem = %p, "policy cannot be enforced as written"),
        }
        crate::audit::record(vfaudit::Event::PolicyProblem, |r| {
            r.detail = Some(p.to_string());
        });
    }
    *known = now;
    if !report.applied.is_empty() || !report.removed.is_empty() || !report.failed.is_empty() {
        crate::audit::record(vfaudit::Event::PolicyApplied, |r| {
            r.detail = Some(format!(
                "{} tables applied, {} unchanged, {} removed, {} failed",
                report.applied.len(),
                report.unchanged,
                report.removed.len(),
                report.failed.len()
            ));
        });
    }
    if !report.applied.is_empty() || !report.removed.is_empty() {
        info!(
            applied = report.applied.len(),
            unchanged = report.unchanged,
            removed = report.removed.len(),
            compile_ms = report.compile_time.as_secs_f64() * 1e3,
            apply_ms = report.apply_time.as_secs_f64() * 1e3,
            "policy tables reconciled"
        );
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the policy engine until `stop` turns true.
pub async fn run(
    client: kube::Client,
    options: PolicyOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let nft = Nft::new(options.nft.as_deref())?;
    COUNTERS.enable();
    let policy_watch = Arc::new(PolicyWatch::start(
        client,
        WatchConfig::new(&options.node_name, &options.genie_cni_dir),
    )?);
    tokio::select! {
        _ = policy_watch.synced() => {}
        _ = stopped(&mut stop) => return Ok(()),
    }
    info!("policy watches synced");
    let mut engine = Engine::new(nft);
    if let Some(host) = &options.host_netns {
        engine = engine.with_host_netns(host.clone());
    }
    let engine = Arc::new(Mutex::new(engine));
    let mut changes = policy_watch.changes();
    let mut socket_task = None;
    let mut known = BTreeSet::new();
    if let Some(path) = &options.socket {
        let socket_options = SocketOptions {
            path: path.clone(),
            ..SocketOptions::default()
        };
        let listener = socket::bind(path)?;
        let server = Arc::new(Server {
            engine: Arc::clone(&engine),
            snapshots: Arc::clone(&policy_watch) as Arc<dyn Snapshots>,
            options: socket_options,
        });
        socket_task = Some(tokio::spawn(socket::serve(listener, server, stop.clone())));
        info!(socket = %path.display(), "policy socket open");
    }
    loop {
        let (w, e) = (Arc::clone(&policy_watch), Arc::clone(&engine));
        let done = tokio::task::spawn_blocking(move || {
            let inputs = w.snapshot();
            match e.lock() {
                Ok(mut engine) => Some(engine.reconcile(&inputs)),
                Err(_) => None,
            }
        })
        .await;
        match done {
            Ok(Some(report)) => log_report(&report, &policy_watch, &mut known),
            Ok(None) | Err(_) => warn!("the policy engine failed; reconciling again"),
        }
        tokio::select! {
            alive = changes.changed() => {
                if !alive {
                    warn!("the policy watches are gone");
                    break;
                }
            }
            _ = tokio::time::sleep(options.resync) => {}
            _ = stopped(&mut stop) => break,
        }
    }
    if let Some(t) = socket_task {
        match t.await {
            Ok(r) => r?,
            Err(e) => warn!(error = %e, "the policy socket task failed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_problems_name_their_object_for_an_event() {
        let p = |o: &str| Problem {
            object: o.into(),
            problem: "x".into(),
        };
        let s = subject_of(&p("MultiNetworkPolicy team/deny-all")).unwrap();
        assert_eq!(
            (
                s.api_version.as_str(),
                s.kind.as_str(),
                s.namespace.as_str(),
                s.name.as_str()
            ),
            (
                "k8s.cni.cncf.io/v1beta1",
                "MultiNetworkPolicy",
                "team",
                "deny-all"
            )
        );
        let s = subject_of(&p("NetworkPolicy team/access-nginx")).unwrap();
        assert_eq!(s.api_version, "networking.k8s.io/v1");
        assert!(subject_of(&p("network team/net1")).is_none());
        assert!(subject_of(&p("pod team/web")).is_none());
        assert!(subject_of(&p("garbage")).is_none());
    }
}
