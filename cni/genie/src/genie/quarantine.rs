//! What DEL does with what it cannot undo (see the module doc of [`super`] for the rules): the
//! teardown that quarantines attachments whose DEL cannot run, the handling of an unreadable
//! record, and the replay of quarantined attachments that GC calls.

use tracing::{error, info, warn};

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::error::{cni_msg, several, GenieError};
use super::pod_plan::{read_and_plan, Planning};
use super::record::{attachment_record, cached_result};
use super::{del_attachment, delegate, devices, plan::Planned};
use crate::cache::{CacheDir, CacheError, PodAttachment, PodKey, PodRecord};
use crate::exec::{find_plugin, ExecError};
use crate::genieconf::GenieConf;
use crate::spec::env::CniEnv;
use crate::spec::error::chain;

/// What DEL and ADD refuse for the sake of the quarantine's rules.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// ADD of a network one of whose plugins is not installed.
    #[error("network {network} ({ifname})")]
    MissingPlugin {
        network: String,
        ifname: String,
        #[source]
        source: Box<ExecError>,
    },
    /// The first DEL that met an unreadable record: it stays in place until the next DEL.
    #[error("{}; the next DEL of container {container_id} moves it into {}", chain(.error), .quarantine_dir.display())]
    UnreadableRecord {
        error: CacheError,
        container_id: String,
        quarantine_dir: PathBuf,
    },
}

/// Why the DEL of `a` cannot run now (so failing and retrying cannot help), if so.
fn cannot_act(env: &CniEnv, a: &PodAttachment) -> Option<String> {
    let list = match delegate::as_list(&a.conf) {
        Ok(l) => l,
        Err(e) => {
            return Some(format!(
                "its recorded config cannot be used: {}",
                cni_msg(e)
            ))
        }
    };
    if let Err(e) = cached_result(a) {
        return Some(format!(
            "its recorded result cannot be used: {}",
            cni_msg(e)
        ));
    }
    let missing: Vec<String> = list
        .plugins
        .iter()
        .filter_map(|p| find_plugin(&p.plugin_type, &env.path).err())
        .map(|e| e.to_string())
        .collect();
    match missing.is_empty() {
        true => None,
        false => Some(missing.join("; ")),
    }
}

/// ADD refuses a pod whose networks name a plugin that is not installed, before anything is
/// recorded or attached (code 7): so every recorded attachment had its plugins.
pub(super) fn require_plugins(env: &CniEnv, planned: &[Planned]) -> Result<(), GenieError> {
    for p in planned {
        let list = delegate::as_list(&p.config)?;
        for plugin in &list.plugins {
            find_plugin(&plugin.plugin_type, &env.path).map_err(|source| {
                QuarantineError::MissingPlugin {
                    network: p.network.clone(),
                    ifname: p.ifname.clone(),
                    source: Box::new(source),
                }
            })?;
        }
    }
    Ok(())
}

/// DEL of every recorded attachment, newest first, past failures; the attachments whose DEL
/// cannot run are quarantined (only when all the others succeeded: else the record stays whole
/// for the runtime's retry). `Ok` means the pod record may go.
pub(super) fn teardown_or_quarantine(
    env: &CniEnv,
    cache: &CacheDir,
    record: &PodRecord,
) -> Result<(), GenieError> {
    let mut kept = Vec::new();
    let mut reasons = Vec::new();
    let mut errors = Vec::new();
    for a in record.attachments.iter().rev() {
        match cannot_act(env, a) {
            Some(why) => {
                reasons.push(format!("network {} ({}): {why}", a.network, a.if_name));
                kept.push(a.clone());
            }
            None => errors.extend(del_attachment(env, a).err()),
        }
    }
    several(errors)?;
    if kept.is_empty() {
        return Ok(());
    }
    kept.reverse();
    let mut part = record.clone();
    part.attachments = kept;
    let reason = reasons.join("; ");
    let file = cache.quarantine_attachments(&part, &reason)?;
    error!(
        container = %record.container_id,
        ifname = %record.if_name,
        file = %file.display(),
        %reason,
        "attachments whose DEL cannot run were quarantined; GC replays them once their plugins are back"
    );
    Ok(())
}

/// DEL met a record that cannot be read. The pod's networks as ADD would plan them now (its
/// annotations from the API, the node's confs, the kubelet's devices) get their DEL in its place;
/// when all of them succeed, the record is removed and DEL succeeds. When they cannot be planned
/// (the API is out of reach, the pod is gone or is another pod of the same name) or a DEL fails:
/// the first time an error naming the file (it stays in place); when it is still unreadable at
/// the next DEL, it is quarantined and DEL succeeds.
pub(super) fn unreadable_record(
    env: &CniEnv,
    conf: &GenieConf,
    cache: &CacheDir,
    key: &PodKey,
    e: CacheError,
) -> Result<(), GenieError> {
    match teardown_as_planned(env, conf, key) {
        Ok(n) => {
            error!(
                container = %key.container_id,
                ifname = %key.ifname,
                error = %e,
                attachments = n,
                "the pod record could not be read: the pod's networks as planned now were deleted in its place and the record removed"
            );
            cache.remove_pod(key)?;
            cache.clear_suspect(key)?;
            return Ok(());
        }
        Err(te) => {
            warn!(container = %key.container_id, error = %cni_msg(te), "the pod record could not be read, and the pod's networks could not be deleted as planned now")
        }
    }
    let reason = e.to_string();
    if cache.is_suspect(key) {
        let file = cache.quarantine_pod_file(key, &reason)?;
        cache.clear_suspect(key)?;
        error!(
            container = %key.container_id,
            ifname = %key.ifname,
            file = %file.display(),
            %reason,
            "the pod record could not be read by two DELs and was quarantined; DEL reports success, what it recorded may still be attached"
        );
        return Ok(());
    }
    cache.mark_suspect(key, &reason)?;
    Err(QuarantineError::UnreadableRecord {
        error: e,
        container_id: key.container_id.clone(),
        quarantine_dir: cache.quarantine_dir(),
    }
    .into())
}

/// The DEL of every network ADD would plan for the pod now, newest first, without recorded
/// results (CNI DEL tolerates what is missing); a network whose device the kubelet no longer
/// reports is skipped with a warning (its VF returns to the host with the pod's netns). Refused
/// when the API's pod is not the one the runtime names (`K8S_POD_UID`). Returns how many DELs ran.
fn teardown_as_planned(env: &CniEnv, conf: &GenieConf, key: &PodKey) -> Result<usize, GenieError> {
    let Planning {
        pod,
        mut planned,
        pod_uid,
        ..
    } = read_and_plan(env, conf, &key.ifname)?;
    let runtime_uid = env.args.k8s_pod_uid.as_deref().filter(|u| !u.is_empty());
    if let (Some(asked), Some(api)) = (runtime_uid, pod_uid.as_deref()) {
        if asked != api {
            return Err(GenieError::PodReplaced {
                container_id: key.container_id.clone(),
                asked: asked.to_string(),
                api: api.to_string(),
            });
        }
    }
    let identity = pod.as_ref().map(|p| crate::devices::PodIdentity {
        namespace: &p.namespace,
        name: &p.name,
        uid: runtime_uid.or(pod_uid.as_deref()),
    });
    if let Err(de) = devices::prepare(env, conf, identity.as_ref(), &mut planned, &BTreeSet::new())
    {
        let skipped: Vec<String> = planned
            .iter()
            .filter(|p| !p.resources.is_empty())
            .map(|p| format!("{} ({})", p.network, p.ifname))
            .collect();
        warn!(error = %crate::spec::error::chain(&de), skipped = %skipped.join(", "), "the devices of the pod's VF networks are not known any more: their DEL is skipped");
        planned.retain(|p| p.resources.is_empty());
    }
    let errors: Vec<GenieError> = planned
        .iter()
        .rev()
        .filter_map(|p| del_attachment(env, &attachment_record(p)).err())
        .collect();
    several(errors).map(|()| planned.len())
}

/// GC's replay of the quarantine: for every quarantined attachment whose plugins are installed
/// again, its DEL runs (with the container and netns of its record, the plugins from `env`'s
/// CNI_PATH); what succeeds leaves the quarantine, a record with nothing left is removed. Records
/// whose attachment is locked (an ADD, DEL or CHECK of it runs) wait for the next GC, and
/// unreadable records stay for an operator. Returns how many records were cleared; an error
/// combines the DELs that failed.
pub fn retry_quarantined(env: &CniEnv, cache: &CacheDir) -> Result<usize, GenieError> {
    let mut cleared = 0;
    let mut errors = Vec::new();
    for q in cache.quarantined()? {
        let Some(record) = q.replayable() else {
            continue;
        };
        let Ok(key) = record.key() else {
            continue;
        };
        let Some(_lock) = cache.try_lock(&key)? else {
            continue;
        };
        let mut e2 = env.clone();
        e2.container_id = record.container_id.clone();
        e2.netns = record.netns.clone();
        let mut left = Vec::new();
        for a in record.attachments.iter().rev() {
            if cannot_act(&e2, a).is_some() {
                left.push(a.clone());
                continue;
            }
            match del_attachment(&e2, a) {
                Ok(()) => {
                    info!(container = %record.container_id, network = %a.network, ifname = %a.if_name, "quarantined attachment deleted")
                }
                Err(e) => {
                    errors.push(e);
                    left.push(a.clone());
                }
            }
        }
        if left.len() == record.attachments.len() {
            continue;
        }
        left.reverse();
        let mut narrowed = record.clone();
        narrowed.attachments = left;
        cache.update_quarantined(&q.path, &narrowed)?;
        if narrowed.attachments.is_empty() {
            cleared += 1;
        }
    }
    several(errors).map(|()| cleared)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn env(path: &Path) -> CniEnv {
        let m: HashMap<String, String> =
            [("CNI_COMMAND", "GC"), ("CNI_PATH", path.to_str().unwrap())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        CniEnv::from_map(&m).unwrap()
    }

    /// A plugin that appends its command and container to `log` in its directory.
    fn plugin(dir: &Path, name: &str) {
        let p = dir.join(name);
        std::fs::write(
            &p,
            "#!/bin/sh\ncat >/dev/null; echo \"$CNI_COMMAND $CNI_CONTAINERID $CNI_IFNAME\" >> \"$(dirname \"$0\")/log\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn quarantined_record(cid: &str, types: &[&str]) -> PodRecord {
        let key = PodKey::new(cid, "eth0").unwrap();
        let mut r = PodRecord::new(&key, "");
        r.attachments = types
            .iter()
            .enumerate()
            .map(|(n, t)| PodAttachment {
                network: format!("net{n}"),
                if_name: format!("net{n}"),
                conf: serde_json::json!({"cniVersion": "1.0.0", "name": format!("net{n}"), "type": t}),
                result: Some(serde_json::json!({"cniVersion": "1.0.0"})),
                extra: Default::default(),
            })
            .collect();
        r
    }

    #[test]
    fn replay_deletes_what_has_its_plugins_back_and_keeps_the_rest() {
        let bin = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(d.path());
        cache
            .quarantine_attachments(&quarantined_record("q1", &["back", "gone"]), "missing")
            .unwrap();
        cache
            .quarantine_attachments(&quarantined_record("q2", &["back"]), "missing")
            .unwrap();
        let env = env(bin.path());
        // Nothing installed yet: nothing happens.
        assert_eq!(retry_quarantined(&env, &cache).unwrap(), 0);
        assert_eq!(cache.quarantined_count().unwrap(), 2);
        plugin(bin.path(), "back");
        assert_eq!(retry_quarantined(&env, &cache).unwrap(), 1);
        let left = cache.quarantined().unwrap();
        assert_eq!(left.len(), 1);
        let r = left[0].replayable().unwrap();
        assert_eq!(r.container_id, "q1");
        assert_eq!(r.attachments.len(), 1);
        assert_eq!(r.attachments[0].conf["type"], "gone");
        let mut log: Vec<String> = std::fs::read_to_string(bin.path().join("log"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        log.sort();
        assert_eq!(log, ["DEL q1 net0", "DEL q2 net0"]);
        // A locked attachment waits for the next GC.
        plugin(bin.path(), "gone");
        let key = PodKey::new("q1", "eth0").unwrap();
        let held = cache.lock(&key, std::time::Duration::ZERO).unwrap();
        assert_eq!(retry_quarantined(&env, &cache).unwrap(), 0);
        drop(held);
        assert_eq!(retry_quarantined(&env, &cache).unwrap(), 1);
        assert_eq!(cache.quarantined_count().unwrap(), 0);
    }
}
