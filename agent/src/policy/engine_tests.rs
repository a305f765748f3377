//! The engine against a recording applier: what is applied when, and what is forgotten. The
//! "namespaces" are plain files (the engine only needs their identity); the real nft in real
//! namespaces is in `socket_tests.rs` and the host tier.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::*;
use crate::policy::compile::testdata::*;
use crate::policy::model::{NetworkKey, TrafficPath};

#[derive(Default)]
struct Calls {
    applied: Vec<(Option<PathBuf>, Value)>,
    removed: Vec<PathBuf>,
    /// Applies to these namespaces fail.
    failing: BTreeSet<PathBuf>,
    /// Updates in place fail (as when someone changed our table by hand).
    refuse_in_place: bool,
    /// What `nft -j list table inet vfgenie` prints per namespace (a previous agent's tables).
    listed: std::collections::BTreeMap<Option<PathBuf>, Value>,
}

/// Whether a document replaces the table whole (it deletes and re-adds it).
fn whole(doc: &Value) -> bool {
    doc["nftables"]
        .as_array()
        .is_some_and(|cmds| cmds.iter().any(|c| c.pointer("/delete/table").is_some()))
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Calls>>);

impl Recorder {
    fn take(&self) -> Vec<Option<PathBuf>> {
        let mut c = self.0.lock().unwrap();
        std::mem::take(&mut c.applied)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }
    fn fail(&self, netns: &Path, on: bool) {
        let mut c = self.0.lock().unwrap();
        match on {
            true => c.failing.insert(netns.to_path_buf()),
            false => c.failing.remove(netns),
        };
    }
}

impl Apply for Recorder {
    fn apply(&self, netns: Option<&Path>, doc: &Value) -> Result<(), NftError> {
        crate::policy::nft::table_of(doc)?;
        let mut c = self.0.lock().unwrap();
        if netns.is_some_and(|n| c.failing.contains(n)) || (c.refuse_in_place && !whole(doc)) {
            return Err(NftError::Failed {
                netns: netns.map(Path::to_path_buf),
                status: "exit status: 1".into(),
                stderr: "Error: Could not process rule".into(),
            });
        }
        c.applied.push((netns.map(Path::to_path_buf), doc.clone()));
        Ok(())
    }

    fn remove(&self, netns: &Path) -> Result<(), NftError> {
        self.0.lock().unwrap().removed.push(netns.to_path_buf());
        Ok(())
    }

    fn existing(&self, netns: Option<&Path>) -> Result<Option<Existing>, NftError> {
        let c = self.0.lock().unwrap();
        Ok(c.listed
            .get(&netns.map(Path::to_path_buf))
            .and_then(Existing::from_listing))
    }
}

fn blue() -> NetworkKey {
    key("team", "blue")
}

fn green() -> NetworkKey {
    key("team", "green")
}

/// Stands in for namespaces: files in a temp dir.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn netns(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if !p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
        p
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// team/blue and team/green (VF networks); local pods a (blue) and b (green), and a remote
/// client on blue.
fn inputs(w: &World) -> Inputs {
    let mut i = Inputs::default();
    add_net(
        &mut i,
        net("team", "blue", &["10.1.0.0/16"], TrafficPath::InPod),
    );
    add_net(
        &mut i,
        net("team", "green", &["10.2.0.0/16"], TrafficPath::InPod),
    );
    let a = w.netns("a");
    let b = w.netns("b");
    i.pods = vec![
        pod(
            "team",
            "a",
            &[("app", "a")],
            vec![iface(blue(), "net1", &["10.1.0.10"])],
            Some(a.to_str().unwrap()),
        ),
        pod(
            "team",
            "b",
            &[("app", "b")],
            vec![iface(green(), "net1", &["10.2.0.10"])],
            Some(b.to_str().unwrap()),
        ),
        pod(
            "team",
            "client",
            &[("app", "client")],
            vec![iface(blue(), "net1", &["10.1.0.20"])],
            None,
        ),
    ];
    i
}

fn policy_for(network: NetworkKey, app: &str) -> crate::policy::model::MultiPolicy {
    multi(
        "team",
        &format!("only-{app}"),
        &[network],
        json!({"podSelector": {"matchLabels": {"app": app}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    )
}

fn engine() -> (Engine<Recorder>, Recorder) {
    let r = Recorder::default();
    (Engine::new(r.clone()), r)
}

#[test]
fn the_first_reconcile_applies_everything_and_the_next_nothing() {
    let w = World::new();
    let (mut e, r) = engine();
    let i = inputs(&w);
    let report = e.reconcile(&i);
    assert_eq!(
        report.applied,
        vec![None, Some(w.path("a")), Some(w.path("b"))]
    );
    assert_eq!(r.take().len(), 3);
    assert!(report.converged());

    let report = e.reconcile(&i);
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(report.unchanged, 3);
    assert!(r.take().is_empty(), "nft ran for unchanged tables");
}

#[test]
fn a_changed_policy_reapplies_only_the_namespaces_it_changes() {
    let w = World::new();
    let (mut e, r) = engine();
    let mut i = inputs(&w);
    e.reconcile(&i);
    r.take();

    // A policy for blue selecting pod a: only a's table changes.
    i.multi.push(policy_for(blue(), "a"));
    let report = e.reconcile(&i);
    assert_eq!(report.applied, vec![Some(w.path("a"))]);
    assert_eq!(report.unchanged, 2);
    assert_eq!(r.take(), vec![Some(w.path("a"))]);

    // The client's address changes: a's allowed peers change, b's table does not.
    i.pods[2].interfaces[0].ips = vec!["10.1.0.21".parse().unwrap()];
    assert_eq!(e.reconcile(&i).applied, vec![Some(w.path("a"))]);
    let applied = r.0.lock().unwrap().applied.clone();
    assert!(applied[0].1.to_string().contains("10.1.0.21"));
    r.take();

    // Policy gone: a's table goes back to the empty one.
    i.multi.clear();
    assert_eq!(e.reconcile(&i).applied, vec![Some(w.path("a"))]);
}

#[test]
fn a_vanished_namespace_is_forgotten_and_one_without_pods_loses_our_table() {
    let w = World::new();
    let (mut e, r) = engine();
    let mut i = inputs(&w);
    e.reconcile(&i);
    r.take();

    // a's namespace is deleted while the watch still lists the pod.
    std::fs::remove_file(w.path("a")).unwrap();
    let report = e.reconcile(&i);
    assert_eq!(report.forgotten, vec![w.path("a")]);
    assert!(report.applied.is_empty() && report.failed.is_empty());
    assert!(
        r.take().is_empty(),
        "nothing is applied to a missing namespace"
    );

    // b's pod leaves the inputs while its namespace is still there: our table is removed once.
    i.pods.retain(|p| p.name != "b");
    let report = e.reconcile(&i);
    assert_eq!(report.removed, vec![w.path("b")]);
    assert_eq!(r.0.lock().unwrap().removed, vec![w.path("b")]);
    let report = e.reconcile(&i);
    assert!(report.removed.is_empty() && report.applied.is_empty());

    // A new namespace at a's old path (another inode) gets its table again.
    std::fs::write(w.path("a"), b"new").unwrap();
    assert_eq!(e.reconcile(&i).applied, vec![Some(w.path("a"))]);
}

#[test]
fn a_failed_apply_is_reported_and_retried_at_the_next_reconcile() {
    let w = World::new();
    let (mut e, r) = engine();
    let mut i = inputs(&w);
    e.reconcile(&i);
    r.take();

    i.multi.push(policy_for(blue(), "a"));
    r.fail(&w.path("a"), true);
    let report = e.reconcile(&i);
    assert!(!report.converged());
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].netns, Some(w.path("a")));
    assert!(
        report.failed[0]
            .error
            .to_string()
            .contains("Could not process rule"),
        "{}",
        report.failed[0].error
    );

    // Still failing: tried again (not taken as applied).
    assert_eq!(e.reconcile(&i).failed.len(), 1);
    r.fail(&w.path("a"), false);
    let report = e.reconcile(&i);
    assert_eq!(report.applied, vec![Some(w.path("a"))]);
    assert!(report.converged());
    assert!(e.reconcile(&i).applied.is_empty());
}

fn announced(w: &World, name: &str, app: &str) -> PendingPod {
    let ns = w.netns(name);
    PendingPod {
        uid: format!("uid-{name}"),
        pod: pod(
            "team",
            name,
            &[("app", app)],
            vec![iface(blue(), "net1", &[])],
            Some(ns.to_str().unwrap()),
        ),
    }
}

#[test]
fn a_pod_set_up_through_the_socket_stays_until_the_inputs_know_it() {
    let w = World::new();
    let (mut e, r) = engine();
    let mut i = inputs(&w);
    i.multi.push(policy_for(blue(), "new"));
    e.reconcile(&i);
    r.take();

    let applied = e.setup(&i, announced(&w, "new", "new")).unwrap();
    assert!(applied);
    let calls = r.0.lock().unwrap().applied.clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, Some(w.path("new")));
    // Its table isolates net1 and lets the client in.
    let doc = calls[0].1.to_string();
    assert!(
        doc.contains("10.1.0.20") && doc.contains("in_isolated"),
        "{doc}"
    );
    r.take();

    // The same announcement again (a retried ADD): nothing to do.
    assert!(!e.setup(&i, announced(&w, "new", "new")).unwrap());
    // A reconcile before the watch knows the pod keeps its table as it is.
    let report = e.reconcile(&i);
    assert_eq!(report.pending, 1);
    assert!(report.applied.is_empty(), "{report:?}");
    assert!(report.removed.is_empty());

    // The watch learns the pod, first without its namespace: it is merged, no change.
    i.pods.push(pod(
        "team",
        "new",
        &[("app", "new")],
        vec![iface(blue(), "net1", &["10.1.0.30"])],
        None,
    ));
    let report = e.reconcile(&i);
    assert_eq!(report.pending, 1);
    assert!(report.applied.is_empty(), "{report:?}");
    // Then with it: no longer pending, still no change.
    i.pods.last_mut().unwrap().netns = Some(w.path("new"));
    let report = e.reconcile(&i);
    assert_eq!(report.pending, 0);
    assert!(report.applied.is_empty(), "{report:?}");
    assert_eq!(e.pending().count(), 0);
}

#[test]
fn a_pending_pod_whose_namespace_is_gone_is_forgotten() {
    let w = World::new();
    let (mut e, _r) = engine();
    let i = inputs(&w);
    e.setup(&i, announced(&w, "new", "new")).unwrap();
    std::fs::remove_file(w.path("new")).unwrap();
    let report = e.reconcile(&i);
    assert_eq!(report.pending, 0);
    assert_eq!(report.forgotten, vec![w.path("new")]);
    assert!(report.removed.is_empty());
}

#[test]
fn a_setup_that_fails_says_which_pod_and_keeps_nothing() {
    let w = World::new();
    let (mut e, r) = engine();
    let i = inputs(&w);
    r.fail(&w.netns("new"), true);
    let err = e.setup(&i, announced(&w, "new", "new")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "installing the policy table of pod team/new failed"
    );
    assert_eq!(e.pending().count(), 0);

    let mut gone = announced(&w, "gone", "x");
    gone.pod.netns = Some(w.path("missing"));
    let err = e.setup(&i, gone).unwrap_err();
    assert!(
        err.to_string().starts_with("the network namespace ")
            && err.to_string().ends_with("of pod team/gone does not exist"),
        "{err}"
    );
}

#[test]
fn a_change_updates_the_applied_table_in_place_and_falls_back_to_a_whole_install() {
    let w = World::new();
    let (mut e, r) = engine();
    let mut i = inputs(&w);
    e.reconcile(&i);
    let first = std::mem::take(&mut r.0.lock().unwrap().applied);
    assert!(
        first.iter().all(|(_, d)| whole(d)),
        "nothing known yet: whole installs"
    );

    // A policy now isolates a: its table changes and is updated in place (never deleted: a
    // deleted and re-added table's interval sets miss packets for a moment).
    i.multi.push(policy_for(blue(), "a"));
    let report = e.reconcile(&i);
    assert_eq!(report.applied, vec![Some(w.path("a"))]);
    let second = std::mem::take(&mut r.0.lock().unwrap().applied);
    assert_eq!(second.len(), 1);
    assert!(!whole(&second[0].1), "{}", second[0].1);

    // Someone changed our table by hand: the update fails and the table is installed whole.
    r.0.lock().unwrap().refuse_in_place = true;
    i.multi.clear();
    let report = e.reconcile(&i);
    assert!(report.converged(), "{report:?}");
    assert_eq!(report.applied, vec![Some(w.path("a"))]);
    let third = std::mem::take(&mut r.0.lock().unwrap().applied);
    assert_eq!(third.len(), 1);
    assert!(whole(&third[0].1));
}

/// A previous agent's table as nft lists it: both chains, `in_all4` as we declare it, `in_isolated`
/// declared otherwise, and a set this version no longer has.
fn previous_listing() -> Value {
    let t = |o: Value| {
        let mut o = o;
        o["family"] = json!("inet");
        o["table"] = json!("vfgenie");
        o
    };
    json!({"nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "vfgenie", "handle": 3}},
        {"chain": t(json!({"name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}))},
        {"chain": t(json!({"name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}))},
        {"set": t(json!({"name": "in_all4", "handle": 4, "type": ["ifname", "ipv4_addr"], "flags": ["interval"],
                         "elem": [{"concat": ["net1", {"prefix": {"addr": "10.9.0.0", "len": 16}}]}]}))},
        {"set": t(json!({"name": "in_isolated", "handle": 5, "type": "ipv4_addr"}))},
        {"set": t(json!({"name": "retired", "handle": 6, "type": "ipv4_addr", "flags": "interval"}))},
        {"rule": t(json!({"chain": "input", "handle": 7, "expr": []}))},
    ]})
}

#[test]
fn a_table_a_previous_agent_left_is_replaced_in_place() {
    let w = World::new();
    let (mut e, r) = engine();
    let mut inputs = inputs(&w);
    inputs.multi.push(policy_for(blue(), "a"));
    let a = w.netns("a");
    r.0.lock()
        .unwrap()
        .listed
        .insert(Some(a.clone()), previous_listing());
    let report = e.reconcile(&inputs);
    assert!(report.converged());
    assert_eq!(report.adopted, vec![Some(a.clone())]);
    let calls = r.0.lock().unwrap();
    let doc_of = |n: &Option<PathBuf>| {
        calls
            .applied
            .iter()
            .find(|(p, _)| p == n)
            .unwrap()
            .1
            .clone()
    };
    // b (nothing listed) and the host get the whole table; a keeps its table.
    assert!(whole(&doc_of(&Some(w.netns("b")))));
    assert!(whole(&doc_of(&None)));
    let doc = doc_of(&Some(a.clone()));
    assert!(!whole(&doc), "{doc:#}");
    let cmds: Vec<String> = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let (verb, obj) = c.as_object().unwrap().iter().next().unwrap();
            let (kind, body) = obj.as_object().unwrap().iter().next().unwrap();
            format!("{verb} {kind} {}", body["name"].as_str().unwrap_or(""))
        })
        .collect();
    let has = |c: &str| cmds.iter().any(|x| x == c);
    for c in [
        "flush chain input",
        "flush chain output",
        // Same declaration: emptied and refilled in place.
        "flush set in_all4",
        "add element in_all4",
        // Another declaration, or not ours any more: deleted (after the chains' flush).
        "delete set in_isolated",
        "add set in_isolated",
        "delete set retired",
    ] {
        assert!(has(c), "{c} missing from {cmds:?}");
    }
    assert!(
        !has("delete chain input") && !has("add chain input"),
        "{cmds:?}"
    );
    let flush = cmds.iter().position(|c| c == "flush chain input").unwrap();
    let delete = cmds.iter().position(|c| c == "delete set retired").unwrap();
    assert!(flush < delete, "{cmds:?}");
    // The elements that went with the flush are not deleted one by one.
    let text = doc.to_string();
    assert!(!text.contains("10.9.0.0"), "{text}");
    drop(calls);
    // The engine now remembers a's table: nothing to do.
    assert!(e.reconcile(&inputs).applied.is_empty());
}

#[test]
fn a_refused_replacement_installs_the_table_whole() {
    let w = World::new();
    let (mut e, r) = engine();
    let a = w.netns("a");
    {
        let mut c = r.0.lock().unwrap();
        c.listed.insert(Some(a.clone()), previous_listing());
        c.refuse_in_place = true;
    }
    let report = e.reconcile(&inputs(&w));
    assert!(report.converged(), "{:?}", report.failed);
    assert!(report.adopted.is_empty());
    let calls = r.0.lock().unwrap();
    let docs: Vec<&Value> = calls
        .applied
        .iter()
        .filter(|(p, _)| p.as_ref() == Some(&a))
        .map(|(_, d)| d)
        .collect();
    assert_eq!(docs.len(), 1);
    assert!(whole(docs[0]));
}
