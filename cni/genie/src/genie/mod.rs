//! The meta-plugin (`"type": "genie"`): one invocation from the container runtime, many delegates.
//!
//! ADD plans the pod's attachments ([`plan`]), records each one in the pod's cache record *before*
//! running its delegates (so that whatever a crash leaves behind is known to the DEL that follows),
//! runs them in order, tears down what it added in reverse when one fails, writes the pod's
//! network-status, and prints the merged result. DEL works from the cache record alone (no API
//! server needed), runs every delegate's DEL even after one fails, and removes the record only when
//! all succeeded. A corrupt record is an error, never "nothing to delete".
//!
//! ADD, DEL and CHECK of one attachment (container ID + CNI_IFNAME) hold its lock
//! ([`crate::cache::lock`]) for their whole run, and the delegates inherit it: a DEL that arrives
//! while an ADD (or the delegates of a killed ADD) still runs waits for it, up to
//! [`LOCK_WAIT`], then fails with code 11 (try again later).
//!
//! With `policySocket` in the conf, ADD has the node agent install the pod's policy table in the
//! pod's namespace after planning and before the first delegate ([`policy`]); when the agent
//! refuses or is unreachable, ADD fails with code 11 and nothing was created.
//!
//! Bounds on one ADD: at most `maxNetworksPerPod` attachments (refused with code 7 before anything
//! is attached) and `addTimeoutSeconds` for the whole ADD (each delegate gets the lesser of its
//! own bound and what is left; what was attached is undone when time runs out).
//!
//! When DEL cannot undo everything ([`quarantine`]): DEL succeeds only when nothing is left that
//! it could still undo by failing and being retried, and it never drops what it could not undo:
//! - *Nothing left to undo* means: there is no record (it is written before any delegate runs),
//!   or every recorded attachment had its plugins' DELs succeed. ADD refuses a pod before
//!   recording it when a plugin of any of its networks is not installed, so every recorded
//!   attachment may have been (partly) attached; having no result proves nothing (an ADD killed
//!   mid-way records no results), so no recorded attachment is ever dropped as "empty".
//! - An attachment whose DEL cannot run (a plugin binary is gone, its recorded config or result
//!   cannot be used) cannot be undone by retrying: its part of the record is quarantined (written
//!   into `<cniDir>/quarantine/` with the reason, logged at error level with the container and the
//!   file) and DEL goes on with the others and succeeds. GC replays quarantined attachments once
//!   their plugins are back ([`retry_quarantined`]).
//! - A record that cannot be read: nothing about it can be proven. The first DEL fails with code 6
//!   naming the file and leaves it in place (the runtime reports the error on the pod); the next
//!   DEL that finds it still unreadable moves it into the quarantine as it is, logs an error
//!   naming the container, the file and the reason, and succeeds (else the runtime would retry
//!   forever). Nothing is released blindly: what it recorded stays attached for an operator.

mod audit;
pub mod delegate;
pub mod devices;
pub mod error;
pub mod plan;
mod pod_plan;
pub mod policy;
mod quarantine;
pub mod reads;
pub mod record;
pub mod routes;
pub mod switch;
pub mod update;

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde_json::Value;
use tracing::{info, warn};

use self::error::{cni_msg, several, GenieError};
use self::plan::Planned;
use self::record::{
    attachment_record, cached_result, injected_of, status_of, EXTRA_DEVICE_INFO_FILE,
};
use crate::annotations::PodRef;
use crate::cache::lock::LOCK_WAIT;
use crate::cache::{CacheDir, CacheError, PodAttachment, PodKey, PodRecord};
use crate::genieconf::GenieConf;
use crate::k8s::{Client, ClientOptions, InClusterPaths};
use crate::netstatus::{status_annotations, AttachmentStatus};
use crate::spec::conf::NetConf;
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::{CniVersion, VersionInfo};
use crate::timing::timed;

use self::pod_plan::{read_and_plan, Planning};
pub use self::quarantine::retry_quarantined;
pub use crate::invocation::Outcome;

/// One invocation: `env` holds the `CNI_*` variables, `stdin` the network config.
pub fn run(env: &HashMap<String, String>, stdin: &[u8]) -> Outcome {
    crate::invocation::invoke("genie", env, stdin, || dispatch(env, stdin))
}

/// The boundary: whatever failed gets its CNI code here ([`error`]).
/// The call's audit record is written here, with the error as the runtime sees it ([`audit`]).
fn dispatch(env_map: &HashMap<String, String>, stdin: &[u8]) -> Result<String, CniError> {
    let started = Instant::now();
    let out = serve(env_map, stdin).map_err(CniError::from);
    audit::finish(started, out.as_ref().map(drop));
    out
}

fn serve(env_map: &HashMap<String, String>, stdin: &[u8]) -> Result<String, GenieError> {
    let started = Instant::now();
    // UPDATE (the node agent's hot-plug, not a CNI verb) reads the environment as ADD does.
    let updating = env_map.get("CNI_COMMAND").map(String::as_str) == Some(update::UPDATE);
    let env = match updating {
        true => {
            let mut m = env_map.clone();
            m.insert("CNI_COMMAND".into(), "ADD".into());
            CniEnv::from_map(&m)?
        }
        false => CniEnv::from_map(env_map)?,
    };
    if env.command == CniCommand::Version {
        return Ok(VersionInfo::ours().to_json());
    }
    let netconf = NetConf::from_bytes(stdin)?;
    let version = CniVersion::parse_or_default(netconf.cni_version.as_deref())?;
    version.require(env.command)?;
    let conf = GenieConf::from_slice(stdin)?;
    let cache = CacheDir::new(&conf.cni_dir);
    audit::begin(
        conf.audit_log.as_ref(),
        &env,
        if updating {
            update::UPDATE
        } else {
            env.command.as_str()
        },
    );
    let span = tracing::info_span!("genie", command = ?env.command, container = %env.container_id);
    let _guard = span.enter();
    if updating {
        return update::update(&env, &conf, &cache, version, started + conf.add_timeout);
    }
    match env.command {
        CniCommand::Add => add(&env, &conf, &cache, version, started + conf.add_timeout),
        CniCommand::Del => del(&env, &conf, &cache).map(|()| String::new()),
        CniCommand::Check => check(&env, &cache).map(|()| String::new()),
        CniCommand::Gc => gc(&env, &netconf, &cache).map(|()| String::new()),
        CniCommand::Status => status(&conf).map(|()| String::new()),
        CniCommand::Version => Ok(VersionInfo::ours().to_json()),
    }
}

fn key_of(env: &CniEnv) -> Result<PodKey, GenieError> {
    let ifname = env
        .ifname
        .as_ref()
        .map(|i| i.to_string())
        .unwrap_or_default();
    Ok(PodKey::new(&env.container_id, ifname)?)
}

/// The pod this call is for, from CNI_ARGS.
fn pod_ref(env: &CniEnv) -> Option<PodRef> {
    match (
        env.args.k8s_pod_namespace.as_deref(),
        env.args.k8s_pod_name.as_deref(),
    ) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Some(PodRef::new(ns, name)),
        _ => None,
    }
}

fn client_for(conf: &GenieConf) -> Result<Client, GenieError> {
    let cluster = conf
        .cluster_config(&InClusterPaths::default())
        .map_err(GenieError::ApiConfig)?;
    Client::new(cluster, ClientOptions::default()).map_err(|e| GenieError::ApiClient(Box::new(e)))
}

/// DEL of one recorded attachment, then its device-info file.
fn del_attachment(env: &CniEnv, a: &PodAttachment) -> Result<(), GenieError> {
    let started = Instant::now();
    // A switched interface gets back the name its delegates know it by.
    if record::link_name(a) != a.if_name {
        if let Err(e) = switch::rename(&env.netns, record::link_name(a), &a.if_name) {
            info!(network = %a.network, error = %crate::spec::error::chain(&e), "the switched interface could not be named back before its DEL");
        }
    }
    let mut released = Vec::new();
    let deleted = delegate::as_list(&a.conf).and_then(|list| {
        let cached = cached_result(a)?;
        released = cached.as_ref().map(audit::addresses_of).unwrap_or_default();
        delegate::del(
            env,
            &a.network,
            &a.if_name,
            &list,
            &injected_of(a),
            cached.as_ref(),
        )
    });
    let deleted = audited(
        audit::Delegated {
            command: CniCommand::Del,
            container_id: &env.container_id,
            network: &a.network,
            ifname: &a.if_name,
            config: &a.conf,
            device: record::device_of(a),
            started,
        },
        deleted.map(|()| released),
    );
    let info_removed = match a.extra.get(EXTRA_DEVICE_INFO_FILE) {
        Some(Value::String(f)) => timed("device_info", || {
            crate::devices::info::remove(std::path::Path::new(f))
        }),
        _ => Ok(()),
    };
    several(
        [deleted.map(drop), info_removed.map_err(GenieError::from)]
            .into_iter()
            .filter_map(Result::err)
            .collect(),
    )
}

/// Writes the delegate record of `outcome` (the error as the runtime would see it, which is what
/// is returned in its place, with the same code and message).
fn audited<E: Into<GenieError>>(
    d: audit::Delegated<'_>,
    outcome: Result<Vec<String>, E>,
) -> Result<Vec<String>, GenieError> {
    match outcome {
        Ok(addresses) => {
            audit::delegate(d, Ok(addresses.clone()));
            Ok(addresses)
        }
        Err(e) => {
            let e = CniError::from(e.into());
            audit::delegate(d, Err(&e));
            Err(GenieError::Cni(e))
        }
    }
}

fn add(
    env: &CniEnv,
    conf: &GenieConf,
    cache: &CacheDir,
    version: CniVersion,
    deadline: Instant,
) -> Result<String, GenieError> {
    let key = key_of(env)?;
    let wait = LOCK_WAIT.min(deadline.saturating_duration_since(Instant::now()));
    let _lock = timed("lock", || cache.lock(&key, wait))?;
    // A record left by an ADD that never got its DEL: undo it before starting again.
    if let Some(stale) = timed("cache", || cache.read_pod(&key))? {
        warn!("an earlier ADD of this container left attachments; removing them first");
        quarantine::teardown_or_quarantine(env, cache, &stale)?;
        cache.remove_pod(&key)?;
    }
    let Planning {
        pod,
        client,
        pod_obj,
        pod_whole,
        mut planned,
        smart,
        pod_uid,
    } = read_and_plan(env, conf, &key.ifname)?;
    // The checkpoint knows the pod the kubelet is creating this sandbox for by the UID the kubelet
    // passes; the API's object can be a newer pod of the same name.
    let kubelet_uid = env
        .args
        .k8s_pod_uid
        .as_deref()
        .filter(|u| !u.is_empty())
        .or(pod_uid.as_deref());
    let identity = pod.as_ref().map(|p| crate::devices::PodIdentity {
        namespace: &p.namespace,
        name: &p.name,
        uid: kubelet_uid,
    });
    devices::prepare(env, conf, identity.as_ref(), &mut planned, &BTreeSet::new())?;
    // Before anything is created: the pod's policy table, so its interfaces are covered from
    // their first packet ([`policy`]).
    if let (Some(socket), Some(p)) = (&conf.policy_socket, &pod) {
        let no_labels = Default::default();
        let request = policy::SetupRequest {
            version: policy::VERSION,
            op: "setup",
            namespace: &p.namespace,
            name: &p.name,
            uid: pod_uid.as_deref().unwrap_or_default(),
            netns: &env.netns,
            labels: pod_obj.as_ref().map_or(&no_labels, |o| &o.metadata.labels),
            interfaces: policy::interfaces(&planned),
        };
        timed("policy", || policy::setup(socket, &request, deadline))?;
    }

    let mut record = PodRecord::new(&key, env.netns.clone());
    if let Some(p) = &pod {
        record.pod_namespace = Some(p.namespace.clone());
        record.pod_name = Some(p.name.clone());
        record.pod_uid = pod_uid.clone();
    }
    // Every planned attachment is in the record on disk before the first delegate runs, so a
    // DEL after a crash at any point knows all of them; DEL of an attachment whose ADD never ran
    // is harmless (CNI DEL tolerates what is missing). The directory's fsync, which makes the
    // record's name durable against a power loss, overlaps the first delegate. The results follow
    // in one more durable write before ADD returns: two writes for any number of networks.
    record.attachments = planned.iter().map(attachment_record).collect();
    record::mark_groups(&mut record.attachments, &smart);
    let dir_sync = match planned.is_empty() {
        true => None,
        false => Some(timed("cache", || cache.write_pod_syncing(&record))?),
    };
    let mut results = Vec::with_capacity(planned.len());
    for (n, p) in planned.iter().enumerate() {
        match add_attachment(env, conf, p, version, deadline) {
            Ok(r) => {
                record.attachments[n].result = Some(r.to_value());
                results.push(r);
            }
            Err(e) => {
                let e = match Instant::now() >= deadline {
                    true => GenieError::AddTimedOut {
                        container_id: env.container_id.clone(),
                        limit_secs: conf.add_timeout.as_secs(),
                        source: Box::new(e),
                    },
                    false => e,
                };
                return Err(undo(env, cache, &key, &record, n, e));
            }
        }
    }
    // Three things left, each waiting on something else, so they run side by side: the results
    // go to disk, the pod's default routes are settled, the network-status is written back. ADD
    // returns (or undoes) only after all three are done. The status does not depend on the routes.
    let statuses: Vec<AttachmentStatus> = planned
        .iter()
        .zip(results.iter())
        .map(|(p, r)| status_of(p, r, &env.netns))
        .collect();
    let (written, settled, reported) = timed("finish", || {
        std::thread::scope(|scope| {
            let writer = scope.spawn(|| -> Result<(), GenieError> {
                if let Some(s) = dir_sync {
                    s.wait()?;
                    cache.write_pod(&record)?;
                }
                Ok(())
            });
            let router = (planned.len() > 1).then(|| {
                scope.spawn(|| {
                    routes::settle(&env.netns, &planned, &mut results).map_err(GenieError::from)
                })
            });
            let reported = report(&pod, &client, pod_whole, &statuses, &smart);
            let joined = |r: std::thread::Result<Result<(), GenieError>>, what: &str| {
                r.unwrap_or_else(|_| {
                    Err(GenieError::Panicked {
                        what: what.to_string(),
                    })
                })
            };
            let settled = router.map_or(Ok(()), |t| joined(t.join(), "settling the routes"));
            (joined(writer.join(), "the cache writer"), settled, reported)
        })
    });
    if let Err(e) = settled.and(reported) {
        return Err(undo(env, cache, &key, &record, planned.len(), e));
    }
    written?;
    let merged = CniResult::merge(version, &results);
    info!(attachments = planned.len(), "pod attached");
    Ok(merged.to_version(version).to_json())
}

/// ADD of one planned attachment: its device-info file, then its delegates within `deadline`;
/// audited.
fn add_attachment(
    env: &CniEnv,
    conf: &GenieConf,
    p: &Planned,
    version: CniVersion,
    deadline: Instant,
) -> Result<CniResult, GenieError> {
    let started = Instant::now();
    let outcome = timed("device_info", || publish_device_info(conf, p))
        .map_err(GenieError::from)
        .and_then(|()| {
            let list = delegate::as_list(&p.config)?;
            Ok(delegate::add_until(
                env,
                &p.network,
                &p.ifname,
                &list,
                &p.injected,
                Some(deadline),
            )?)
        });
    match outcome {
        Ok(r) => audited::<GenieError>(audit_add(env, p, started), Ok(audit::addresses_of(&r)))
            .map(|_| r),
        Err(e) => {
            let cut_off = e.cut_off_mid_way();
            match audited(audit_add(env, p, started), Err(e)) {
                Err(GenieError::Cni(c)) if cut_off => Err(GenieError::CutOff(c)),
                other => other.map(|_| CniResult::empty(version)),
            }
        }
    }
}

fn audit_add<'a>(env: &'a CniEnv, p: &'a Planned, started: Instant) -> audit::Delegated<'a> {
    audit::Delegated {
        command: CniCommand::Add,
        container_id: &env.container_id,
        network: &p.network,
        ifname: &p.ifname,
        config: &p.config,
        device: p.device.as_ref().map(|d| d.id.as_str()),
        started,
    }
}

/// The pod's network-status written back (nothing without a pod and an API client), with the
/// smart selections made for it, when there were any ([`vfkube::kpi::SMART_SELECTION`], a list:
/// the default network's first, then the selectable groups').
fn report(
    pod: &Option<PodRef>,
    client: &Option<Client>,
    pod_whole: Option<Value>,
    statuses: &[AttachmentStatus],
    smart: &[vfkube::kpi::Selection],
) -> Result<(), GenieError> {
    let (Some(p), Some(c)) = (pod, client) else {
        return Ok(());
    };
    let mut changes = status_annotations(statuses).map_err(GenieError::StatusEncode)?;
    if !smart.is_empty() {
        let sel = smart;
        changes.insert(
            vfkube::kpi::SMART_SELECTION.to_string(),
            Some(serde_json::to_string(sel).map_err(GenieError::StatusEncode)?),
        );
    }
    c.set_pod_annotations_from(&p.namespace, &p.name, pod_whole, &changes)
        .map(drop)
        .map_err(|source| GenieError::StatusWrite {
            pod: p.clone(),
            source: Box::new(source),
        })
}

/// Copies the device plugin's device-info file of the attachment's device to the attachment's own
/// file, before its plugins run (they may read it).
fn publish_device_info(conf: &GenieConf, p: &Planned) -> Result<(), crate::devices::DeviceError> {
    if let (Some(d), Some(f)) = (&p.device, &p.device_info_file) {
        let copied = crate::devices::info::publish(&conf.device_info_dir, &d.resource, &d.id, f)?;
        info!(network = %p.network, device = %d.id, copied, "device-info");
    }
    Ok(())
}

/// A failed ADD: tear down what was added, newest first. `failed` is the index of the attachment
/// whose ADD failed (the number of attachments when all succeeded and a later step failed); those
/// after it never ran. The failed one gets a best-effort DEL (its plugin is responsible for what its
/// failed ADD left, and may refuse DEL for the same reason it refused ADD); the ones that succeeded
/// must come down, or the record stays so that the runtime's DEL finds it and tries again.
fn undo(
    env: &CniEnv,
    cache: &CacheDir,
    key: &PodKey,
    record: &PodRecord,
    failed: usize,
    e: GenieError,
) -> GenieError {
    let done = &record.attachments[..failed.min(record.attachments.len())];
    // The failed attachment's DEL: when its plugin answered with an error, a refused DEL is only
    // logged (the plugin reported what it did); when its plugin was cut off mid-way, whatever it
    // began stays recorded for the runtime's DEL to retry.
    let mut keep_failed = None;
    if let Some(f) = record.attachments.get(failed) {
        if let Err(de) = del_attachment(env, f) {
            match e.cut_off_mid_way() {
                true => {
                    warn!(network = %f.network, ifname = %f.if_name, error = %cni_msg(de), "DEL of an attachment whose plugin was cut off failed; it stays recorded for the runtime's DEL");
                    keep_failed = Some(f.clone());
                }
                false => {
                    info!(network = %f.network, error = %cni_msg(de), "DEL of the failed attachment was refused")
                }
            }
        }
    }
    let errors: Vec<GenieError> = done
        .iter()
        .rev()
        .filter_map(|a| del_attachment(env, a).err())
        .collect();
    let left = match (several(errors), keep_failed) {
        (Ok(()), None) => {
            if let Err(ce) = cache.remove_pod(key) {
                warn!(error = %ce, "cache record of a failed ADD left behind");
            }
            return e;
        }
        (Ok(()), Some(f)) => vec![f],
        (Err(te), _) => {
            warn!(error = %cni_msg(te), "teardown after a failed ADD was incomplete; DEL will retry");
            // The attachments that ran, with their results, not the ones that never did.
            record.attachments[..(failed + 1).min(record.attachments.len())].to_vec()
        }
    };
    let mut ran = record.clone();
    ran.attachments = left;
    if let Err(ce) = cache.write_pod(&ran) {
        warn!(error = %ce, "cache record of a failed ADD not narrowed to what ran");
    }
    e
}

fn del(env: &CniEnv, conf: &GenieConf, cache: &CacheDir) -> Result<(), GenieError> {
    let key = key_of(env)?;
    let lock = timed("lock", || cache.lock(&key, LOCK_WAIT))?;
    let record = match timed("cache", || cache.read_pod(&key)) {
        Ok(Some(r)) => r,
        Ok(None) => {
            // The record is written before any delegate runs: no record, nothing was attached.
            info!("nothing recorded for this container; nothing to delete");
            // A writer killed before its first record's rename left its temporary file.
            cache.remove_pod(&key)?;
            cache.clear_suspect(&key)?;
            lock.remove();
            return Ok(());
        }
        Err(e @ CacheError::Corrupt { .. }) => {
            quarantine::unreadable_record(env, conf, cache, &key, e)?;
            lock.remove();
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    audit::pod_seen(
        record.pod_namespace.as_deref(),
        record.pod_name.as_deref(),
        record.pod_uid.as_deref(),
    );
    quarantine::teardown_or_quarantine(env, cache, &record)?;
    timed("cache", || cache.remove_pod(&key))?;
    cache.clear_suspect(&key)?;
    lock.remove();
    info!(attachments = record.attachments.len(), "pod detached");
    Ok(())
}

fn check(env: &CniEnv, cache: &CacheDir) -> Result<(), GenieError> {
    let key = key_of(env)?;
    let _lock = cache.lock(&key, LOCK_WAIT)?;
    let record = cache
        .read_pod(&key)?
        .ok_or_else(|| GenieError::NothingRecorded {
            container_id: env.container_id.clone(),
        })?;
    for a in &record.attachments {
        let started = Instant::now();
        let injected = injected_of(a);
        let checked = delegate::as_list(&a.conf)
            .map_err(GenieError::from)
            .and_then(|list| {
                let cached = cached_result(a)?;
                delegate::check(
                    env,
                    &a.network,
                    &a.if_name,
                    &list,
                    &injected,
                    cached.as_ref(),
                )?;
                Ok(Vec::new())
            });
        audited(
            audit::Delegated {
                command: CniCommand::Check,
                container_id: &env.container_id,
                network: &a.network,
                ifname: &a.if_name,
                config: &a.conf,
                device: record::device_of(a),
                started,
            },
            checked,
        )?;
    }
    Ok(())
}

/// GC: every recorded pod that is not in `cni.dev/valid-attachments` is deleted, as DEL would
/// (an attachment whose plugin is gone is quarantined). Without that key the runtime said nothing
/// about which attachments live, so nothing is deleted (an empty list means "none live"; a missing
/// one is not that). A record whose ADD, DEL or CHECK is still running is left to them. Either way,
/// quarantined attachments whose plugins are back are replayed.
fn gc(env: &CniEnv, netconf: &NetConf, cache: &CacheDir) -> Result<(), GenieError> {
    let Some(valid) = netconf.valid_attachments()? else {
        info!("GC without cni.dev/valid-attachments: every attachment is kept");
        // Quarantined attachments belong to pods already deleted: replaying them is always safe.
        return replay_quarantined(env, cache);
    };
    let keep: BTreeSet<(String, String)> = valid
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect();
    let mut errors = Vec::new();
    for listed in cache.list_pods()? {
        let record = match listed.record {
            Ok(r) => r,
            Err(e) => {
                errors.push(e.into());
                continue;
            }
        };
        if keep.contains(&(record.container_id.clone(), record.if_name.clone())) {
            continue;
        }
        if let Err(e) = gc_one(env, cache, &record) {
            errors.push(e);
        }
    }
    if let Err(e) = replay_quarantined(env, cache) {
        errors.push(e);
    }
    several(errors)
}

fn replay_quarantined(env: &CniEnv, cache: &CacheDir) -> Result<(), GenieError> {
    let n = quarantine::retry_quarantined(env, cache)?;
    if n > 0 {
        info!(attachments = n, "quarantined attachments replayed");
    }
    Ok(())
}

/// One stale record of GC, under its attachment's lock (skipped while another call holds it).
fn gc_one(env: &CniEnv, cache: &CacheDir, record: &PodRecord) -> Result<(), GenieError> {
    let key = record.key()?;
    let Some(lock) = cache.try_lock(&key)? else {
        info!(container = %record.container_id, "attachment busy; GC leaves it to the call that holds it");
        return Ok(());
    };
    // Read again under the lock: a DEL may have removed it since the listing.
    let Some(record) = cache.read_pod(&key)? else {
        return Ok(());
    };
    let mut e2 = env.clone();
    e2.container_id = record.container_id.clone();
    e2.netns = record.netns.clone();
    info!(container = %record.container_id, "collecting a stale attachment record");
    quarantine::teardown_or_quarantine(&e2, cache, &record)?;
    cache.remove_pod(&key)?;
    cache.clear_suspect(&key)?;
    lock.remove();
    Ok(())
}

/// STATUS: ready when the readiness indicator file (the default network's) exists.
fn status(conf: &GenieConf) -> Result<(), GenieError> {
    match &conf.readiness_indicator_file {
        Some(f) if !f.exists() => Err(GenieError::NotReady { file: f.clone() }),
        _ => Ok(()),
    }
}
