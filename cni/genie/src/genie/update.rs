//! UPDATE: the networks of a running pod brought in line with its annotations (hot-plug). Not a
//! CNI verb: the node agent runs genie with `CNI_COMMAND=UPDATE` and the pod's container,
//! netns and `CNI_IFNAME` from genie's record, when the pod's `k8s.v1.cni.cncf.io/networks` or
//! CNI-Genie `cni`/`networks` annotation changes.
//!
//! The pod is planned as for ADD (same annotations, validation, NADs, smart selection, devices)
//! and the plan compared with genie's record by (network, interface name):
//! - the default network (the runtime's `CNI_IFNAME`, eth0) is never touched;
//! - attachments in the plan and not in the record are added, those in the record and not in the
//!   plan are removed; an interface renamed is the old one removed and the new one added (an IPAM
//!   keys its lease by container and interface);
//! - the additions run first, except that a removal whose interface name or network an addition
//!   takes runs before them; if an addition fails, those added are removed again and those
//!   removed for them are added back (a new lease may differ from the old): the pod is left with
//!   the networks it had, and the error is the call's;
//! - a VF network takes a device the pod holds and no running attachment uses;
//! - the record is written before each change (a crash is undone by the pod's DEL, or converged
//!   by the next UPDATE: an attachment recorded without a result, cut off mid-add, is removed and
//!   planned again), then network-status is written with every attachment.
//!
//! The pod's attachment lock serializes UPDATEs of one pod with each other and with its DEL; a
//! pod being deleted (`deletionTimestamp`) is left alone; a pod without a record is not genie's
//! (code 3); the record of another pod of the same name (UID) is refused.

use std::collections::BTreeSet;
use std::time::Instant;

use tracing::{info, warn};

use super::error::GenieError;
use super::plan::Planned;
use super::record::{
    attachment_record, group_of, link_name, mark_groups, planned_of, status_of, EXTRA_LINK_NAME,
};
use super::{
    add_attachment, del_attachment, devices, key_of, policy, read_and_plan, report, Planning,
};
use crate::cache::lock::LOCK_WAIT;
use crate::cache::{CacheDir, PodAttachment};
use crate::genieconf::GenieConf;
use crate::netstatus::AttachmentStatus;
use crate::spec::env::CniEnv;
use crate::spec::version::CniVersion;
use crate::timing::timed;

/// `CNI_COMMAND` of an UPDATE.
pub const UPDATE: &str = "UPDATE";

/// What an UPDATE did, printed as JSON on stdout.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Updated {
    /// `network@ifname` of the attachments added and removed.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// `old@ifname -> new` of each switch made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub switched: Vec<String>,
    /// Nothing was done: the pod is being deleted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

fn label(network: &str, ifname: &str) -> String {
    format!("{network}@{ifname}")
}

pub(super) fn update(
    env: &CniEnv,
    conf: &GenieConf,
    cache: &CacheDir,
    version: CniVersion,
    deadline: Instant,
) -> Result<String, GenieError> {
    let key = key_of(env)?;
    let wait = LOCK_WAIT.min(deadline.saturating_duration_since(Instant::now()));
    let _lock = timed("lock", || cache.lock(&key, wait))?;
    let mut record =
        timed("cache", || cache.read_pod(&key))?.ok_or_else(|| GenieError::NothingRecorded {
            container_id: env.container_id.clone(),
        })?;
    let Planning {
        pod,
        client,
        pod_obj,
        pod_whole,
        planned,
        smart,
        pod_uid,
    } = read_and_plan(env, conf, &key.ifname)?;
    let (Some(pod), Some(obj)) = (pod, pod_obj) else {
        return Err(GenieError::UpdateWithoutPod {
            container_id: env.container_id.clone(),
        });
    };
    if record.pod_namespace.as_deref() != Some(pod.namespace.as_str())
        || record.pod_name.as_deref() != Some(pod.name.as_str())
        || (record.pod_uid.is_some() && record.pod_uid != pod_uid)
    {
        return Err(GenieError::UpdateOtherPod {
            container_id: env.container_id.clone(),
            recorded: format!(
                "{}/{} (uid {})",
                record.pod_namespace.as_deref().unwrap_or("?"),
                record.pod_name.as_deref().unwrap_or("?"),
                record.pod_uid.as_deref().unwrap_or("?")
            ),
            asked: format!("{pod} (uid {})", pod_uid.as_deref().unwrap_or("?")),
        });
    }
    if obj.metadata.deletion_timestamp.is_some() {
        info!(%pod, "the pod is being deleted: its networks are left as they are");
        return to_json(&Updated {
            deleting: true,
            ..Updated::default()
        });
    }

    // The difference, the default network aside. A running attachment is known by its network and
    // the name its interface has in the pod.
    let same = |a: &PodAttachment, p: &Planned| a.network == p.network && link_name(a) == p.ifname;
    // An attachment recorded without a result was being added when an earlier UPDATE (or the
    // agent running it) was cut off: undone first (a delegate's DEL tolerates what is missing),
    // then planned like any other.
    let unfinished: Vec<PodAttachment> = record
        .attachments
        .iter()
        .filter(|a| a.result.is_none() && !is_default(a, &key.ifname))
        .cloned()
        .collect();
    for a in &unfinished {
        warn!(network = %a.network, ifname = %link_name(a), "an attachment an earlier UPDATE did not finish is removed first");
        remove(env, cache, &mut record, a)?;
    }
    let running: Vec<PodAttachment> = record.attachments.clone();
    // A group's attachment keeps the member it has (the selection of an UPDATE picks again from
    // the KPIs of now) unless the pod asks for a switch (vfgenie.io/switch-to).
    let mut planned = planned;
    let mut switches: Vec<(PodAttachment, Planned)> = Vec::new();
    for s in smart.iter().filter(|s| s.group.is_some()) {
        let Some(i) = planned.iter().position(|p| p.network == s.chosen) else {
            continue;
        };
        let Some(a) = running
            .iter()
            .find(|a| group_of(a) == s.group.as_deref() && link_name(a) == planned[i].ifname)
        else {
            continue;
        };
        if a.network == planned[i].network {
            continue;
        }
        let p = planned.remove(i);
        if s.requested {
            switches.push((a.clone(), p));
        } else {
            let mut keep = planned_of(a);
            keep.ifname = link_name(a).to_string();
            planned.push(keep);
        }
    }
    let leaving: Vec<PodAttachment> = switches.iter().map(|(o, _)| o.clone()).collect();
    let switched_from = |a: &PodAttachment| leaving.iter().any(|o| same_attachment(o, a));
    let removes: Vec<PodAttachment> = running
        .iter()
        .filter(|a| !is_default(a, &key.ifname) && !switched_from(a))
        .filter(|a| !planned.iter().any(|p| same(a, p)))
        .cloned()
        .collect();
    let adds: Vec<Planned> = planned
        .into_iter()
        .filter(|p| !p.default && p.ifname != key.ifname)
        .filter(|p| !running.iter().any(|a| same(a, p)))
        .collect();
    if adds.is_empty() && removes.is_empty() && switches.is_empty() {
        return to_json(&Updated::default());
    }
    // New attachments take devices no running attachment has (a switch's old one included: it
    // stays until the new one is up).
    let in_use: BTreeSet<String> = running
        .iter()
        .filter(|a| !removes.iter().any(|r| same_attachment(a, r)))
        .filter_map(|a| planned_of(a).device.map(|d| d.id))
        .collect();
    let identity = crate::devices::PodIdentity {
        namespace: &pod.namespace,
        name: &pod.name,
        uid: pod_uid.as_deref(),
    };
    let n_adds = adds.len();
    let mut news: Vec<Planned> = adds
        .into_iter()
        .chain(switches.iter().map(|(_, p)| p.clone()))
        .collect();
    devices::prepare(env, conf, Some(&identity), &mut news, &in_use)?;
    let switch_news = news.split_off(n_adds);
    let adds = news;
    for ((_, p), prepared) in switches.iter_mut().zip(switch_news) {
        *p = prepared;
    }
    // The policy table first, with the interfaces the pod will have.
    if let Some(socket) = &conf.policy_socket {
        let after: Vec<Planned> = running
            .iter()
            .filter(|a| !removes.iter().any(|r| same_attachment(a, r)) && !switched_from(a))
            .map(|a| {
                let mut p = planned_of(a);
                p.ifname = link_name(a).to_string();
                p
            })
            .chain(adds.iter().cloned())
            .chain(switches.iter().map(|(_, p)| p.clone()))
            .collect();
        let request = policy::SetupRequest {
            version: policy::VERSION,
            op: "setup",
            namespace: &pod.namespace,
            name: &pod.name,
            uid: pod_uid.as_deref().unwrap_or_default(),
            netns: &env.netns,
            labels: &obj.metadata.labels,
            interfaces: policy::interfaces(&after),
        };
        timed("policy", || policy::setup(socket, &request, deadline))?;
    }

    // Removed attachments go first when an addition takes their interface name, or is of their
    // network (a rename: two attachments of one network at once can clash in the pod, e.g. the
    // same gateway route).
    let (freeing, later): (Vec<PodAttachment>, Vec<PodAttachment>) =
        removes.into_iter().partition(|r| {
            adds.iter()
                .any(|p| p.ifname == link_name(r) || p.network == r.network)
        });
    let mut done = Updated::default();
    let mut removed_first: Vec<PodAttachment> = Vec::new();
    for r in &freeing {
        if let Err(e) = remove(env, cache, &mut record, r) {
            restore(
                env,
                conf,
                cache,
                &mut record,
                &removed_first,
                version,
                deadline,
            );
            return Err(e);
        }
        removed_first.push(r.clone());
    }
    // The additions, recorded before they run.
    let first_new = record.attachments.len();
    record
        .attachments
        .extend(adds.iter().map(attachment_record));
    mark_groups(&mut record.attachments[first_new..], &smart);
    timed("cache", || cache.write_pod(&record))?;
    for (n, p) in adds.iter().enumerate() {
        match add_attachment(env, conf, p, version, deadline) {
            Ok(r) => record.attachments[first_new + n].result = Some(r.to_value()),
            Err(e) => {
                // Back to what the pod had: the ones added go, the ones removed for them return.
                // One whose DEL fails stays recorded for the pod's DEL (or the next UPDATE) to
                // retry: an added one always, the failed one when its plugin was cut off mid-way.
                let added: Vec<PodAttachment> =
                    record.attachments[first_new..=first_new + n].to_vec();
                let mut kept = Vec::new();
                for (i, a) in added.iter().enumerate().rev() {
                    if let Err(de) = del_attachment(env, a) {
                        let keep = i < n || e.cut_off_mid_way();
                        warn!(network = %a.network, ifname = %a.if_name, error = %super::error::cni_msg(de), kept = keep, "undoing a failed hot-add");
                        if keep {
                            kept.push(a.clone());
                        }
                    }
                }
                record.attachments.truncate(first_new);
                record.attachments.extend(kept.into_iter().rev());
                if let Err(ce) = cache.write_pod(&record) {
                    warn!(error = %ce, "the record of a failed hot-add was not rolled back");
                }
                restore(
                    env,
                    conf,
                    cache,
                    &mut record,
                    &removed_first,
                    version,
                    deadline,
                );
                return Err(e);
            }
        }
        done.added.push(label(&p.network, &p.ifname));
    }
    timed("cache", || cache.write_pod(&record))?;
    done.removed
        .extend(removed_first.iter().map(|r| label(&r.network, &r.if_name)));
    // The switches, make-before-break.
    for (old, new) in &switches {
        match switch_one(
            env,
            conf,
            cache,
            &mut record,
            old,
            new,
            &smart,
            version,
            deadline,
        ) {
            Ok(note) => done.switched.push(note),
            Err(e) => return Err(e),
        }
    }
    // The other removals. One that fails stays in the record (the pod's DEL retries it).
    let mut failed = Vec::new();
    for r in &later {
        match remove(env, cache, &mut record, r) {
            Ok(()) => done.removed.push(label(&r.network, &r.if_name)),
            Err(e) => failed.push(e),
        }
    }

    // network-status with every attachment the pod now has.
    let statuses: Vec<AttachmentStatus> = record
        .attachments
        .iter()
        .filter_map(|a| {
            let r = super::record::cached_result(a).ok().flatten()?;
            let mut st = status_of(&planned_of(a), &r, &env.netns);
            st.interface = Some(link_name(a).to_string());
            Some(st)
        })
        .collect();
    report(&Some(pod.clone()), &client, pod_whole, &statuses, &smart)?;
    super::error::several(failed)?;
    info!(%pod, added = ?done.added, removed = ?done.removed, "pod networks updated");
    to_json(&done)
}

/// Moves the pod from `old` to `new` (a member of the same group, same interface name): `new`
/// is attached under a temporary name, then `old` is removed, then `new` takes its name. A
/// failure before `old` is touched leaves the pod as it was.
#[allow(clippy::too_many_arguments)]
fn switch_one(
    env: &CniEnv,
    conf: &GenieConf,
    cache: &CacheDir,
    record: &mut crate::cache::PodRecord,
    old: &PodAttachment,
    new: &Planned,
    smart: &[vfkube::kpi::Selection],
    version: CniVersion,
    deadline: Instant,
) -> Result<String, GenieError> {
    let final_name = new.ifname.clone();
    let taken: Vec<&str> = record
        .attachments
        .iter()
        .flat_map(|a| [a.if_name.as_str(), link_name(a)])
        .collect();
    let mut p = new.clone();
    p.ifname = super::switch::temp_name(&taken);
    let mut rec = attachment_record(&p);
    rec.extra.insert(
        EXTRA_LINK_NAME.into(),
        serde_json::Value::String(final_name.clone()),
    );
    let n = record.attachments.len();
    record.attachments.push(rec);
    mark_groups(&mut record.attachments[n..], smart);
    timed("cache", || cache.write_pod(record))?;
    match add_attachment(env, conf, &p, version, deadline) {
        Ok(r) => record.attachments[n].result = Some(r.to_value()),
        Err(e) => {
            if let Err(de) = del_attachment(env, &record.attachments[n]) {
                warn!(network = %p.network, error = %super::error::cni_msg(de), "undoing a failed switch");
            }
            record.attachments.truncate(n);
            if let Err(ce) = cache.write_pod(record) {
                warn!(error = %ce, "the record of a failed switch was not rolled back");
            }
            return Err(e);
        }
    }
    timed("cache", || cache.write_pod(record))?;
    // The new one is up: the old one goes, then the new one takes its name.
    remove(env, cache, record, old)?;
    let temp = p.ifname.clone();
    if let Err(e) = super::switch::rename(&env.netns, &temp, &final_name) {
        warn!(network = %p.network, temp = %temp, name = %final_name, error = %crate::spec::error::chain(&e), "the switched interface keeps its temporary name");
        if let Some(a) = record.attachments.iter_mut().find(|a| a.if_name == temp) {
            a.extra.remove(EXTRA_LINK_NAME);
        }
        timed("cache", || cache.write_pod(record))?;
    }
    info!(from = %old.network, to = %p.network, ifname = %final_name, "pod switched");
    Ok(format!("{}@{final_name} -> {}", old.network, p.network))
}

fn same_attachment(a: &PodAttachment, b: &PodAttachment) -> bool {
    a.network == b.network && a.if_name == b.if_name
}

/// DEL of one running attachment; gone from the record once it is gone from the pod.
fn remove(
    env: &CniEnv,
    cache: &CacheDir,
    record: &mut crate::cache::PodRecord,
    a: &PodAttachment,
) -> Result<(), GenieError> {
    del_attachment(env, a)?;
    record.attachments.retain(|x| !same_attachment(x, a));
    timed("cache", || cache.write_pod(record))?;
    Ok(())
}

/// Adds back attachments removed for a hot-add that failed (best effort: a new lease may differ
/// from the old one). What cannot be added back is logged and left out of the record.
fn restore(
    env: &CniEnv,
    conf: &GenieConf,
    cache: &CacheDir,
    record: &mut crate::cache::PodRecord,
    removed: &[PodAttachment],
    version: CniVersion,
    deadline: Instant,
) {
    for a in removed {
        let mut back = a.clone();
        back.result = None;
        record.attachments.push(back);
        let n = record.attachments.len() - 1;
        if let Err(e) = cache.write_pod(record) {
            warn!(error = %e, "restoring an attachment: record not written");
        }
        match add_attachment(env, conf, &planned_of(a), version, deadline) {
            Ok(r) => record.attachments[n].result = Some(r.to_value()),
            Err(e) => {
                warn!(network = %a.network, ifname = %a.if_name, error = %super::error::cni_msg(e), "an attachment removed for a failed hot-add could not be added back");
                let _ = del_attachment(env, &record.attachments[n]);
                record.attachments.pop();
            }
        }
        if let Err(e) = cache.write_pod(record) {
            warn!(error = %e, "restoring an attachment: record not written");
        }
    }
}

fn is_default(a: &PodAttachment, ifname: &str) -> bool {
    planned_of(a).default || link_name(a) == ifname
}

fn to_json(u: &Updated) -> Result<String, GenieError> {
    serde_json::to_string(u).map_err(GenieError::StatusEncode)
}
