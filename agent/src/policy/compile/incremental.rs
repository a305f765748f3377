//! Incremental compiling: after a change, rebuild only the tables the change can affect.
//!
//! [`Incremental::compile`] keeps the inputs and the plan of its last run. With new inputs it
//! compares the two:
//!
//! - networks, namespaces or genieNetworkpolicies differ: everything is compiled again (the
//!   network level and namespaceSelectors reach every table);
//! - otherwise the namespaces to rebuild are those of the pods that changed (either version),
//!   and those of the local pods in the namespace of a *dirty* MultiNetworkPolicy with an
//!   interface on a network it is for. A policy is dirty when it changed (either version), or
//!   when a changed pod (either version) has an address on a network it is for (the pod may be,
//!   or have been, one of its peers).
//!
//! Everything else keeps last run's table. The set of namespaces is a superset (selectors are
//! not evaluated), so the plan is the one [`super::compile`] makes of the same inputs; the
//! engine still compiles everything now and then ([`Incremental::forget`]) in case of a bug
//! here. Problems are cached by the object they name: a policy's problems depend on the policy
//! and the networks only, a pod's on the pod only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{
    add_pod, check_addresses, network, pod, pod_table, NetnsRules, Plan, Problem, Problems,
};
use crate::policy::model::{Inputs, MultiPolicy, NetworkKey, Pod};

/// Which namespaces the last compile rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every table (and the host's).
    Full,
    /// These namespaces' tables only (some may be gone from the plan); the host's is unchanged.
    Some(BTreeSet<PathBuf>),
}

/// A compiler that remembers its last inputs and plan.
#[derive(Debug, Default)]
pub struct Incremental {
    last: Option<(Inputs, Plan)>,
}

impl Incremental {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next compile is a full one.
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// The plan of `inputs`, equal to [`super::compile`]'s, and which tables were rebuilt.
    pub fn compile(&mut self, inputs: &Inputs) -> (&Plan, Scope) {
        let scope = match self.last.take() {
            Some((old, plan)) => match affected(&old, inputs) {
                Some((netns, pods)) => {
                    let plan = recompile(inputs, plan, &old, &netns, &pods);
                    self.last = Some((inputs.clone(), plan));
                    Scope::Some(netns)
                }
                None => {
                    self.last = Some((inputs.clone(), super::compile(inputs)));
                    Scope::Full
                }
            },
            None => {
                self.last = Some((inputs.clone(), super::compile(inputs)));
                Scope::Full
            }
        };
        let plan = self.last.as_ref().map(|(_, p)| p);
        // `last` was set on every path above.
        (plan.unwrap_or_else(|| unreachable!()), scope)
    }
}

type Name<'a> = (&'a str, &'a str);

/// Groups by namespace and name (a name can be listed twice while the watches catch up).
fn by_name<'a, T>(items: &'a [T], name: impl Fn(&T) -> Name<'_>) -> BTreeMap<Name<'a>, Vec<&'a T>> {
    let mut out: BTreeMap<Name<'a>, Vec<&'a T>> = BTreeMap::new();
    for item in items {
        out.entry(name(item)).or_default().push(item);
    }
    out
}

/// The members of groups that differ between `old` and `new`, both versions.
fn changed<'a, T: PartialEq>(
    old: &BTreeMap<Name<'a>, Vec<&'a T>>,
    new: &BTreeMap<Name<'a>, Vec<&'a T>>,
) -> Vec<&'a T> {
    let mut out = Vec::new();
    let names: BTreeSet<&Name<'a>> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (a, b) = (old.get(name), new.get(name));
        if a != b {
            out.extend(a.into_iter().flatten().copied());
            out.extend(b.into_iter().flatten().copied());
        }
    }
    out
}

fn pod_name(p: &Pod) -> Name<'_> {
    (&p.namespace, &p.name)
}

fn policy_name(p: &MultiPolicy) -> Name<'_> {
    (&p.namespace, &p.name)
}

/// Pods by namespace and name.
type PodNames = BTreeSet<(String, String)>;

/// The namespaces whose tables a change from `old` to `new` can affect, and the pods that
/// changed; `None`: all of them.
fn affected(old: &Inputs, new: &Inputs) -> Option<(BTreeSet<PathBuf>, PodNames)> {
    if old.networks != new.networks || old.namespaces != new.namespaces || old.genie != new.genie {
        return None;
    }
    let (old_pods, new_pods) = (by_name(&old.pods, pod_name), by_name(&new.pods, pod_name));
    // A name listed twice with namespaces: its problems cannot be told apart; compile all.
    let twice = |m: &BTreeMap<Name<'_>, Vec<&Pod>>| {
        m.values()
            .any(|v| v.iter().filter(|p| p.netns.is_some()).count() > 1)
    };
    // A network namespace claimed by two pods fails closed and is reported with both names;
    // rare enough to compile everything.
    let shared = |pods: &[Pod]| {
        let mut seen = BTreeSet::new();
        pods.iter()
            .filter_map(|p| p.netns.as_ref())
            .any(|n| !seen.insert(n))
    };
    if twice(&old_pods) || twice(&new_pods) || shared(&old.pods) || shared(&new.pods) {
        return None;
    }
    let pods = changed(&old_pods, &new_pods);
    let policies = changed(
        &by_name(&old.multi, policy_name),
        &by_name(&new.multi, policy_name),
    );

    let mut out: BTreeSet<PathBuf> = pods.iter().filter_map(|p| p.netns.clone()).collect();
    // Networks on which a changed pod has (or had) an address.
    let peer_nets: BTreeSet<&NetworkKey> = pods
        .iter()
        .flat_map(|p| p.interfaces.iter())
        .filter(|i| !i.ips.is_empty())
        .map(|i| &i.network)
        .collect();
    let dirty = policies.into_iter().chain(
        new.multi
            .iter()
            .filter(|m| m.policy_for.iter().any(|k| peer_nets.contains(k))),
    );
    // Namespace → networks of its dirty policies.
    let mut reach: BTreeMap<&str, BTreeSet<&NetworkKey>> = BTreeMap::new();
    for m in dirty {
        reach
            .entry(m.namespace.as_str())
            .or_default()
            .extend(m.policy_for.iter());
    }
    for p in &new.pods {
        let Some(netns) = &p.netns else { continue };
        let Some(nets) = reach.get(p.namespace.as_str()) else {
            continue;
        };
        if p.interfaces.iter().any(|i| nets.contains(&i.network)) {
            out.insert(netns.clone());
        }
    }
    let names = pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    Some((out, names))
}

/// `plan` (of `old`) with the tables of `netns` rebuilt from `inputs`.
fn recompile(
    inputs: &Inputs,
    mut plan: Plan,
    old: &Inputs,
    netns: &BTreeSet<PathBuf>,
    changed: &PodNames,
) -> Plan {
    let local: Vec<&Pod> = inputs
        .pods
        .iter()
        .filter(|p| p.netns.as_ref().is_some_and(|n| netns.contains(n)))
        .collect();
    let namespaces: BTreeSet<&str> = local.iter().map(|p| p.namespace.as_str()).collect();
    // Objects whose problems are found again here: the policies compiled, every changed or
    // removed policy, and the pods of the rebuilt namespaces (either version).
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let policies: Vec<&MultiPolicy> = inputs
        .multi
        .iter()
        .filter(|m| namespaces.contains(m.namespace.as_str()) || !old.multi.contains(m))
        .collect();
    let removed = old.multi.iter().filter(|m| !inputs.multi.contains(m));
    for m in policies.iter().copied().chain(removed) {
        seen.insert(format!("MultiNetworkPolicy {}/{}", m.namespace, m.name));
    }
    let recheck = |p: &&Pod| {
        p.netns.as_ref().is_some_and(|n| netns.contains(n))
            || changed.contains(&(p.namespace.clone(), p.name.clone()))
    };
    for p in old.pods.iter().chain(inputs.pods.iter()).filter(recheck) {
        seen.insert(format!("pod {}/{}", p.namespace, p.name));
    }

    let mut problems = Problems::default();
    check_addresses(inputs, inputs.pods.iter().filter(recheck), &mut problems);
    // The network level's own problems are unchanged (networks and genie policies are): they
    // go to a scratch list.
    let networks = network::NetworkLevel::new(inputs, &mut Problems::default());
    let compiled = pod::Policies::new_for(inputs, policies.into_iter(), &mut problems);
    let mut rules: BTreeMap<PathBuf, NetnsRules> = BTreeMap::new();
    for p in local {
        let Some(path) = &p.netns else { continue };
        let r = rules.entry(path.clone()).or_default();
        add_pod(&networks, &compiled, p, r, &mut problems);
    }
    for path in netns {
        match rules.remove(path) {
            Some(r) => {
                plan.pods.insert(path.clone(), pod_table(r));
            }
            None => {
                plan.pods.remove(path);
            }
        }
    }
    let mut all: Vec<Problem> = plan
        .problems
        .into_iter()
        .filter(|p| !seen.contains(&p.object))
        .collect();
    all.extend(problems.sorted());
    all.sort();
    all.dedup();
    plan.problems = all;
    plan
}
