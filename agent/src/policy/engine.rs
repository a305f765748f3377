//! The policy engine: keeps each network namespace's `inet vfgenie` table equal to what the
//! compiler makes of the current inputs.
//!
//! [`Engine::reconcile`] compiles the node (incrementally: only the namespaces the change since
//! the last reconcile can affect, see [`crate::policy::compile::incremental`]; everything every
//! [`FULL_COMPILE_EVERY`]) and applies only the tables whose content differs from what it last
//! applied. A table it applied before is updated in place ([`Table::update_json`]); one it does
//! not remember (the first reconcile after the agent starts) is read back from the namespace
//! and, when a table of ours is there (a previous agent's), replaced in place as well
//! ([`Table::replace_json`]); only a namespace without one gets the whole table. Every change is
//! one nftables transaction that never deletes the table, so a packet sees the old rules or the
//! new ones and never none (deleting and re-adding a table loses packets now and then, see
//! docs/architecture.md).
//!
//! A namespace is remembered with its identity (the device and inode of its nsfs file): when
//! the file is gone the namespace is forgotten (its table went with it), and when another
//! namespace appears at the same path its table is applied again.
//!
//! Pods announced by genie through the agent's socket ([`crate::policy::socket`]) before the
//! watches know them are kept as *pending* and merged into every compile, until the inputs list
//! a pod in the same namespace or the namespace is gone, so a reconcile that runs between the
//! announcement and the watch catching up does not take the new pod's table away.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{debug, warn};

use crate::policy::compile::incremental::{Incremental, Scope};
use crate::policy::compile::{compile_pod, Problem};
use crate::policy::model::{Inputs, Pod};
use crate::policy::nft::{Family, Nft, NftError};
use crate::policy::ruleset::{Existing, Table, TABLE_NAME};

/// One table to apply: where, that namespace's identity, the table, its document, and whether
/// that document updates the applied table in place (else it installs the table whole).
type Job = (Option<PathBuf>, Option<NetnsId>, Table, Value, bool);

/// How often a reconcile compiles everything instead of only what the change since the last
/// one can affect (a safety net: the incremental compile is tested to equal the full one).
pub const FULL_COMPILE_EVERY: Duration = Duration::from_secs(30);

/// At most this many `nft` runs at once when a reconcile changes many namespaces.
pub const APPLY_WORKERS: usize = 4;

/// What the engine compiles from: the watches' current view of the cluster.
pub trait Snapshots: Send + Sync {
    fn snapshot(&self) -> Inputs;
}

/// A fixed view (tests, and an agent without watches).
impl Snapshots for Inputs {
    fn snapshot(&self) -> Inputs {
        self.clone()
    }
}

/// Where the engine's tables go: `nft` in production ([`Nft`]).
pub trait Apply: Send + Sync {
    /// Applies one table's document (one transaction) in `netns`, or in the agent's own
    /// namespace for `None`.
    fn apply(&self, netns: Option<&Path>, doc: &Value) -> Result<(), NftError>;
    /// Removes our table from `netns`.
    fn remove(&self, netns: &Path) -> Result<(), NftError>;
    /// The structure of the table of ours that `netns` (`None`: the agent's own) holds, so a
    /// table the engine does not remember applying (a previous agent's) can be replaced in
    /// place; `None` when there is none (or it cannot be read: the table is installed whole).
    fn existing(&self, netns: Option<&Path>) -> Result<Option<Existing>, NftError> {
        let _ = netns;
        Ok(None)
    }
}

impl Apply for Nft {
    fn apply(&self, netns: Option<&Path>, doc: &Value) -> Result<(), NftError> {
        Nft::apply(self, netns, doc)
    }

    fn remove(&self, netns: &Path) -> Result<(), NftError> {
        Nft::remove(self, Some(netns), Family::Inet, TABLE_NAME)
    }

    fn existing(&self, netns: Option<&Path>) -> Result<Option<Existing>, NftError> {
        let listed = Nft::list(self, netns, Family::Inet, TABLE_NAME)?;
        Ok(listed.as_ref().and_then(Existing::from_listing))
    }
}

/// Why the table of a pod being set up is not in place.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the network namespace {} of pod {pod} does not exist", .netns.display())]
    NetnsGone { pod: String, netns: PathBuf },
    #[error("installing the policy table of pod {pod} failed")]
    Apply {
        pod: String,
        #[source]
        source: NftError,
    },
}

/// A table that could not be applied (it is tried again at the next reconcile).
#[derive(Debug)]
pub struct Failure {
    /// `None`: the host's table.
    pub netns: Option<PathBuf>,
    pub error: NftError,
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct Report {
    /// Tables replaced (`None`: the host's).
    pub applied: Vec<Option<PathBuf>>,
    /// Of those, the ones the engine did not remember but found in place (a previous agent's)
    /// and replaced in place ([`Table::replace_json`]).
    pub adopted: Vec<Option<PathBuf>>,
    /// Tables already as compiled, not touched.
    pub unchanged: usize,
    /// Namespaces that still exist but no longer hold a local pod: our table was removed.
    pub removed: Vec<PathBuf>,
    /// Namespaces that are gone (remembered ones, pods' and pending ones): forgotten.
    pub forgotten: Vec<PathBuf>,
    pub failed: Vec<Failure>,
    /// Namespaces whose tables were compiled again (`None`: all, a full compile).
    pub compiled: Option<usize>,
    /// What the compiler could not enforce as written.
    pub problems: Vec<Problem>,
    /// Pods announced through the socket that the inputs do not know yet.
    pub pending: usize,
    pub compile_time: Duration,
    pub apply_time: Duration,
}

impl Report {
    /// Every table is as compiled.
    pub fn converged(&self) -> bool {
        self.failed.is_empty()
    }
}

/// The identity of a namespace file: the device and inode `stat` finds behind the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NetnsId(u64, u64);

/// The identity of the namespace at `path`, `None` when there is no file there.
fn netns_id(path: &Path) -> Option<NetnsId> {
    std::fs::metadata(path)
        .ok()
        .map(|m| NetnsId(m.dev(), m.ino()))
}

#[derive(Debug)]
struct Applied {
    /// `None` for the host.
    id: Option<NetnsId>,
    table: Table,
}

/// A pod genie announced, not yet known to the inputs.
#[derive(Debug, Clone)]
pub struct PendingPod {
    pub uid: String,
    /// With its netns and its interfaces (no addresses yet).
    pub pod: Pod,
}

pub struct Engine<A: Apply = Nft> {
    applier: A,
    /// Where the host's table goes: `None` is the agent's own namespace.
    host_netns: Option<PathBuf>,
    /// By namespace (`None`: the host), what was last applied there.
    applied: BTreeMap<Option<PathBuf>, Applied>,
    /// By namespace path.
    pending: BTreeMap<PathBuf, PendingPod>,
    /// The compiler, with the inputs and plan of the last reconcile.
    compiler: Incremental,
    /// When the last full compile ran.
    last_full: Option<Instant>,
}

impl<A: Apply> Engine<A> {
    pub fn new(applier: A) -> Self {
        Self {
            applier,
            host_netns: None,
            applied: BTreeMap::new(),
            pending: BTreeMap::new(),
            compiler: Incremental::new(),
            last_full: None,
        }
    }

    /// Puts the host's table into the namespace at `netns` instead of the agent's own (tests
    /// run the engine without touching their host).
    pub fn with_host_netns(mut self, netns: PathBuf) -> Self {
        self.host_netns = Some(netns);
        self
    }

    pub fn applier(&self) -> &A {
        &self.applier
    }

    /// The pods announced through the socket that the inputs did not know at the last look.
    pub fn pending(&self) -> impl Iterator<Item = &PendingPod> {
        self.pending.values()
    }

    /// Brings every table in line with `inputs` (plus the pending pods).
    pub fn reconcile(&mut self, inputs: &Inputs) -> Report {
        let mut report = Report::default();
        self.pending.retain(|path, p| {
            let known = inputs
                .pods
                .iter()
                .any(|q| q.netns.as_deref() == Some(path.as_path()));
            let gone = netns_id(path).is_none();
            if gone {
                debug!(pod = %pod_name(&p.pod), netns = %path.display(), "pending pod's namespace is gone");
                report.forgotten.push(path.clone());
            }
            !known && !gone
        });
        report.pending = self.pending.len();
        let merged = self.merged(inputs);

        let started = Instant::now();
        if self
            .last_full
            .is_none_or(|t| t.elapsed() >= FULL_COMPILE_EVERY)
        {
            self.compiler.forget();
            self.last_full = Some(Instant::now());
        }
        let (plan, scope) = self.compiler.compile(&merged);
        report.compiled = match scope {
            Scope::Full => None,
            Scope::Some(netns) => Some(netns.len()),
        };
        report.compile_time = started.elapsed();
        report.problems = plan.problems.clone();

        let started = Instant::now();
        // Every table is compared with what is applied (equal ones cost a comparison), not only
        // the recompiled ones: a table that failed, or that `setup` installed, is caught up.
        let mut todo = Vec::new();
        changed(
            &self.applied,
            None,
            None,
            &plan.host,
            &mut todo,
            &mut report,
        );
        let mut wanted: Vec<PathBuf> = Vec::with_capacity(plan.pods.len());
        for (path, table) in &plan.pods {
            let Some(id) = netns_id(path) else {
                // A pod whose namespace is gone: nothing to apply, nothing to remember.
                self.applied.remove(&Some(path.clone()));
                report.forgotten.push(path.clone());
                continue;
            };
            wanted.push(path.clone());
            let key = Some(path.clone());
            changed(&self.applied, key, Some(id), table, &mut todo, &mut report);
        }
        self.install_all(todo, &mut report);
        let stale: Vec<PathBuf> = self
            .applied
            .keys()
            .flatten()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect();
        for path in stale {
            let key = Some(path.clone());
            let same = match (netns_id(&path), self.applied.get(&key)) {
                (Some(now), Some(a)) => a.id == Some(now),
                _ => false,
            };
            if !same {
                // Gone, or another namespace at that path: it holds no table of ours.
                self.applied.remove(&key);
                report.forgotten.push(path);
                continue;
            }
            match self.applier.remove(&path) {
                Ok(()) => {
                    self.applied.remove(&key);
                    report.removed.push(path);
                }
                Err(error) => report.failed.push(Failure {
                    netns: Some(path),
                    error,
                }),
            }
        }
        report.apply_time = started.elapsed();
        report.forgotten.sort();
        report.forgotten.dedup();
        report
    }

    /// Installs the table of a pod genie is setting up, in its namespace, from `inputs` plus
    /// this pod (and the other pending ones), and keeps the pod pending until the inputs know
    /// it. `Ok(true)` when nft ran, `Ok(false)` when that table was already in place.
    pub fn setup(&mut self, inputs: &Inputs, pending: PendingPod) -> Result<bool, SetupError> {
        let name = pod_name(&pending.pod);
        let Some(netns) = pending.pod.netns.clone() else {
            return Err(SetupError::NetnsGone {
                pod: name,
                netns: PathBuf::new(),
            });
        };
        let Some(id) = netns_id(&netns) else {
            return Err(SetupError::NetnsGone { pod: name, netns });
        };
        let previous = self.pending.insert(netns.clone(), pending);
        let merged = self.merged(inputs);
        let (table, problems) = compile_pod(&merged, &netns);
        for p in &problems {
            debug!(problem = %p, "policy problem");
        }
        let key = Some(netns.clone());
        let applied = self
            .applied
            .get(&key)
            .filter(|a| a.id == Some(id))
            .map(|a| &a.table);
        let in_place = applied.is_some();
        let Some(doc) = table.update_json(applied) else {
            return Ok(false);
        };
        match apply_doc(&self.applier, Some(&netns), &table, &doc, in_place) {
            Ok(()) => {
                self.applied.insert(
                    key,
                    Applied {
                        id: Some(id),
                        table,
                    },
                );
                Ok(true)
            }
            Err(source) => {
                // Nothing was installed: forget what may be there, and the announcement
                // (genie's ADD fails and the runtime starts over).
                self.applied.remove(&key);
                match previous {
                    Some(p) => self.pending.insert(netns, p),
                    None => self.pending.remove(&netns),
                };
                Err(SetupError::Apply { pod: name, source })
            }
        }
    }

    /// `inputs` with the pending pods the inputs do not know: a pod the inputs list without a
    /// namespace (the watch has it but not genie's record yet) gets the pending one's namespace
    /// and interfaces; any other is added as announced.
    fn merged<'a>(&self, inputs: &'a Inputs) -> std::borrow::Cow<'a, Inputs> {
        let missing: Vec<&PendingPod> = self
            .pending
            .iter()
            .filter(|(path, _)| {
                !inputs
                    .pods
                    .iter()
                    .any(|q| q.netns.as_deref() == Some(path.as_path()))
            })
            .map(|(_, p)| p)
            .collect();
        if missing.is_empty() {
            return std::borrow::Cow::Borrowed(inputs);
        }
        let mut merged = inputs.clone();
        for p in missing {
            let same = merged.pods.iter_mut().find(|q| {
                q.netns.is_none() && q.namespace == p.pod.namespace && q.name == p.pod.name
            });
            match same {
                Some(q) => {
                    q.netns = p.pod.netns.clone();
                    for iface in &p.pod.interfaces {
                        if !q.interfaces.iter().any(|i| i.ifname == iface.ifname) {
                            q.interfaces.push(iface.clone());
                        }
                    }
                }
                None => merged.pods.push(p.pod.clone()),
            }
        }
        std::borrow::Cow::Owned(merged)
    }

    /// Applies the tables of `todo`: the tables that changed are applied by up to
    /// [`APPLY_WORKERS`] threads at once (each `nft` run waits mostly on the kernel's commit; a
    /// policy change that touches many namespaces would otherwise take the sum of their runs).
    fn install_all(&mut self, todo: Vec<Job>, report: &mut Report) {
        let workers = APPLY_WORKERS.min(todo.len()).max(1);
        let mut lanes: Vec<Vec<Job>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, item) in todo.into_iter().enumerate() {
            if let Some(lane) = lanes.get_mut(i % workers) {
                lane.push(item);
            }
        }
        let (applier, host) = (&self.applier, self.host_netns.as_deref());
        let run_lane = |lane: Vec<Job>| {
            lane.into_iter()
                .map(|(netns, id, table, mut doc, in_place)| {
                    let target = netns.as_deref().or(host);
                    // Not remembered: a table of ours may be there all the same (the agent
                    // restarted); replace it in place rather than re-adding it.
                    let mut adopted = false;
                    if !in_place {
                        match applier.existing(target) {
                            Ok(Some(existing)) => {
                                doc = table.replace_json(&existing);
                                adopted = true;
                            }
                            Ok(None) => {}
                            Err(error) => {
                                debug!(netns = ?target, error = %vfcore::error::chain(&error), "could not list our table; installing it whole");
                            }
                        }
                    }
                    let r = if adopted {
                        applier.apply(target, &doc).or_else(|error| {
                            debug!(netns = ?target, error = %vfcore::error::chain(&error), "in-place replacement refused; installing the table whole");
                            adopted = false;
                            applier.apply(target, &table.to_nft_json())
                        })
                    } else {
                        apply_doc(applier, target, &table, &doc, in_place)
                    };
                    (netns, id, table, r, adopted)
                })
                .collect::<Vec<_>>()
        };
        let done: Vec<_> = if workers == 1 {
            lanes.into_iter().flat_map(run_lane).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = lanes
                    .into_iter()
                    .map(|lane| s.spawn(move || run_lane(lane)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            })
        };
        for (netns, id, table, result, adopted) in done {
            match result {
                Ok(()) => {
                    self.applied.insert(netns.clone(), Applied { id, table });
                    if adopted {
                        report.adopted.push(netns.clone());
                    }
                    report.applied.push(netns);
                }
                Err(error) => {
                    warn!(netns = ?netns, error = %vfcore::error::chain(&error), "policy table not applied; retried at the next reconcile");
                    self.applied.remove(&netns);
                    report.failed.push(Failure { netns, error });
                }
            }
        }
    }
}

/// Adds `table` for `netns` to `todo` unless it is what was last applied there: in place over
/// what is applied (lossless; see Table::update_json), whole when nothing is known there.
fn changed(
    applied: &BTreeMap<Option<PathBuf>, Applied>,
    netns: Option<PathBuf>,
    id: Option<NetnsId>,
    table: &Table,
    todo: &mut Vec<Job>,
    report: &mut Report,
) {
    let applied = applied.get(&netns).filter(|a| a.id == id).map(|a| &a.table);
    let in_place = applied.is_some();
    match table.update_json(applied) {
        None => report.unchanged += 1,
        Some(doc) => todo.push((netns, id, table.clone(), doc, in_place)),
    }
}

/// Applies `doc` (from [`Table::update_json`]) for `table` in `target`. An update in place that
/// nft refuses means our table is not what we applied (changed by hand, or gone): the table is
/// then installed whole.
fn apply_doc<A: Apply>(
    applier: &A,
    target: Option<&Path>,
    table: &Table,
    doc: &Value,
    in_place: bool,
) -> Result<(), NftError> {
    let r = applier.apply(target, doc);
    if r.is_err() && in_place {
        debug!(netns = ?target, "policy table update refused; installing it whole");
        return applier.apply(target, &table.to_nft_json());
    }
    r
}

fn pod_name(p: &Pod) -> String {
    format!("{}/{}", p.namespace, p.name)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
