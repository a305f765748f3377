//! Hot-plug: the networks of running pods follow their annotations. The agent watches the pods
//! on its node (`spec.nodeName`, metadata only); when a pod's `k8s.v1.cni.cncf.io/networks`,
//! CNI-Genie `cni` or `networks`, or `vfgenie.io/switch-to` (a switch asked for, by
//! [`request_switch`]) annotation changes, it runs genie with `CNI_COMMAND=UPDATE`
//! and the pod's container, netns and interface from genie's record, the way a runtime runs it
//! (the node's genie conf on stdin, `CNI_PATH` the node's plugin directory). genie does the rest
//! (its module `update`): the same delegates, validation and devices as ADD, rollback of a failed
//! addition, network-status.
//!
//! - Changes are serialized: one worker runs the UPDATEs in the order the changes were seen
//!   (genie's per-pod lock serializes them with the runtime's own calls too).
//! - When the watch starts (the agent started, or the watch relisted), every pod on the node with
//!   a genie record is updated once: a change made while the agent was down, or an UPDATE cut
//!   off by a restart, converges from genie's records (an UPDATE with nothing to do changes
//!   nothing).
//! - A pod being deleted, or one genie has no record of (not attached yet, or not genie's), is
//!   left alone.
//! - A failed UPDATE is logged naming the pod and posted as a Warning Event on it (reason
//!   `NetworkUpdateFailed`, genie's message), and counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use vfmeta::cache::{CacheDir, PodRecord};

use crate::policy::watch::report::{event, Subject};

pub mod threshold;

/// The annotations whose change is a change of the pod's networks.
pub const WATCHED: [&str; 4] = [
    "k8s.v1.cni.cncf.io/networks",
    "cni",
    "networks",
    vfkube::kpi::SWITCH_TO,
];
/// Where genie and the node's CNI plugins are, unless configured.
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin";
/// The node's CNI conf dir, unless configured.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// The Event reason of a failed UPDATE.
pub const REASON: &str = "NetworkUpdateFailed";

/// Hot-plug runs in this process (its counters are on `/metrics`).
pub static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// UPDATEs run, by outcome (for `/metrics`).
pub static UPDATES_OK: AtomicU64 = AtomicU64::new(0);
pub static UPDATES_FAILED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct HotplugOptions {
    pub node_name: String,
    /// genie's `cniDir` (its records).
    pub genie_cni_dir: PathBuf,
    /// Where genie's conf is (the file of type `genie`, or the conflist with a `genie` plugin).
    pub cni_conf_dir: PathBuf,
    /// The node's CNI plugin directory: `genie` is run from there.
    pub cni_bin_dir: PathBuf,
    /// genie's `CNI_PATH` (default: `cni_bin_dir`).
    pub cni_path: Option<String>,
    /// How long one UPDATE may take before it is killed.
    pub timeout: Duration,
    /// The KPI file: with it, pods annotated `vfgenie.io/switch-when` are moved when their
    /// group member crosses the threshold ([`threshold`]).
    pub kpi_file: Option<PathBuf>,
    /// How often the thresholds are checked, and the least time between two switches of a pod.
    pub threshold_interval: Duration,
    pub switch_cooldown: Duration,
}

impl HotplugOptions {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            genie_cni_dir: PathBuf::from("/var/lib/cni/vfgenie"),
            cni_conf_dir: PathBuf::from(DEFAULT_CNI_CONF_DIR),
            cni_bin_dir: PathBuf::from(DEFAULT_CNI_BIN_DIR),
            cni_path: None,
            timeout: Duration::from_secs(120),
            kpi_file: None,
            threshold_interval: Duration::from_secs(10),
            switch_cooldown: Duration::from_secs(120),
        }
    }
}

/// One pod to bring in line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    namespace: String,
    name: String,
    uid: String,
}

/// The watched annotations' values, as one comparable key.
fn request_key(annotations: &std::collections::BTreeMap<String, String>) -> String {
    WATCHED
        .iter()
        .map(|k| annotations.get(*k).map_or("\u{0}", String::as_str))
        .collect::<Vec<_>>()
        .join("\u{1}")
}

/// Watches the node's pods and runs UPDATEs until `stop`.
pub async fn run(client: Client, opts: HotplugOptions, mut stop: watch::Receiver<bool>) {
    ENABLED.store(true, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let worker = tokio::spawn(worker(client.clone(), opts.clone(), rx));
    let client_for_thresholds = client.clone();
    let api: Api<PartialObjectMeta<Pod>> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", opts.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut seen: HashMap<String, String> = HashMap::new();
    let watched = threshold::Watched::default();
    let thresholds = opts.kpi_file.clone().map(|kpi_file| {
        tokio::spawn(threshold::run(
            client_for_thresholds.clone(),
            opts.clone(),
            kpi_file,
            watched.clone(),
            stop.clone(),
        ))
    });
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = stop.changed() => break,
        };
        let Some(ev) = ev else { break };
        let (pod, initial) = match ev {
            Ok(watcher::Event::Apply(p)) => (p, false),
            Ok(watcher::Event::InitApply(p)) => (p, true),
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid {
                    seen.remove(&uid);
                    watched.forget(&uid);
                }
                continue;
            }
            Ok(watcher::Event::Init) | Ok(watcher::Event::InitDone) => continue,
            Err(e) => {
                warn!(error = %e, "the pod watch failed; it retries");
                continue;
            }
        };
        let m = pod.metadata;
        let (Some(namespace), Some(name), Some(uid)) = (m.namespace, m.name, m.uid) else {
            continue;
        };
        if m.deletion_timestamp.is_some() {
            continue;
        }
        let annotations = m.annotations.unwrap_or_default();
        watched.seen(&namespace, &name, &uid, &annotations);
        let key = request_key(&annotations);
        let changed = seen.insert(uid.clone(), key.clone()).as_ref() != Some(&key);
        if initial || changed {
            debug!(%namespace, %name, initial, "pod networks to check");
            let _ = tx.send(Job {
                namespace,
                name,
                uid,
            });
        }
    }
    drop(tx);
    let _ = worker.await;
    if let Some(t) = thresholds {
        let _ = t.await;
    }
}

async fn worker(client: Client, opts: HotplugOptions, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        let o = opts.clone();
        let j = job.clone();
        let ran = tokio::task::spawn_blocking(move || update_pod(&o, &j)).await;
        let outcome = match ran {
            Ok(r) => r,
            Err(e) => Err(format!("the UPDATE task failed: {e}")),
        };
        match outcome {
            Ok(None) => {}
            Ok(Some(done)) => {
                UPDATES_OK.fetch_add(1, Ordering::Relaxed);
                if done
                    .get("added")
                    .is_some_and(|a| a != &Value::Array(vec![]))
                    || done
                        .get("removed")
                        .is_some_and(|a| a != &Value::Array(vec![]))
                {
                    info!(namespace = %job.namespace, name = %job.name, added = %done["added"], removed = %done["removed"], "pod networks updated");
                }
            }
            Err(msg) => {
                UPDATES_FAILED.fetch_add(1, Ordering::Relaxed);
                warn!(namespace = %job.namespace, name = %job.name, error = %msg, "pod networks not updated");
                post_event(&client, &opts.node_name, &job, &msg).await;
            }
        }
    }
}

/// Runs genie's UPDATE for the pod when genie has a record of it: `Ok(None)` without one, the
/// UPDATE's answer, or genie's error message.
fn update_pod(opts: &HotplugOptions, job: &Job) -> Result<Option<Value>, String> {
    let Some(record) = record_of(&opts.genie_cni_dir, job) else {
        return Ok(None);
    };
    let conf = genie_conf(&opts.cni_conf_dir)?;
    let args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={};K8S_POD_INFRA_CONTAINER_ID={}",
        job.namespace, job.name, job.uid, record.container_id
    );
    let genie = opts.cni_bin_dir.join("genie");
    let mut child = std::process::Command::new(&genie)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "UPDATE")
        .env("CNI_CONTAINERID", &record.container_id)
        .env("CNI_NETNS", &record.netns)
        .env("CNI_IFNAME", &record.if_name)
        .env("CNI_ARGS", args)
        .env(
            "CNI_PATH",
            opts.cni_path
                .clone()
                .unwrap_or_else(|| opts.cni_bin_dir.display().to_string()),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", genie.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        let _ = stdin.write_all(&conf);
    }
    let deadline = std::time::Instant::now() + opts.timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "genie UPDATE did not finish within {} s",
                    opts.timeout.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for genie: {e}")),
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("reading genie's answer: {e}"))?;
    let answer: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!(
            "genie UPDATE answered {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    match out.status.success() {
        true => Ok(Some(answer)),
        false => Err(answer["msg"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.to_string())),
    }
}

/// genie's record of the pod (by namespace, name and UID).
fn record_of(cni_dir: &Path, job: &Job) -> Option<PodRecord> {
    CacheDir::new(cni_dir)
        .list_pods()
        .ok()?
        .into_iter()
        .filter_map(|l| l.record.ok())
        .find(|r| {
            r.pod_namespace.as_deref() == Some(&job.namespace)
                && r.pod_name.as_deref() == Some(&job.name)
                && r.pod_uid.as_deref().is_none_or(|u| u == job.uid)
                && !r.netns.is_empty()
        })
}

/// The genie conf as a runtime passes it: the first conf file (by name) of type `genie`, or the
/// `genie` plugin of the first conflist that has one, with the list's `name` and `cniVersion`.
pub fn genie_conf(dir: &Path) -> Result<Vec<u8>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    files.sort();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let Ok(Value::Object(v)) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if v.get("type").and_then(Value::as_str) == Some("genie") {
            return Ok(bytes);
        }
        if let Some(Value::Array(plugins)) = v.get("plugins") {
            if let Some(Value::Object(p)) = plugins
                .iter()
                .find(|p| p.get("type").and_then(Value::as_str) == Some("genie"))
            {
                let mut p = p.clone();
                for k in ["name", "cniVersion"] {
                    if let Some(x) = v.get(k) {
                        p.insert(k.to_string(), x.clone());
                    }
                }
                return serde_json::to_vec(&p).map_err(|e| e.to_string());
            }
        }
    }
    Err(format!("no genie conf in {}", dir.display()))
}

/// Asks for pod `namespace/name` to be moved to `to`, a member of a selectable group it is
/// attached to: sets its [`vfkube::kpi::SWITCH_TO`] annotation, and [`vfkube::kpi::SWITCH_REASON`]
/// (`why`, or none), by a JSON merge patch; the agent on the pod's node makes the switch.
pub async fn request_switch(
    client: Client,
    namespace: &str,
    name: &str,
    to: &str,
    why: Option<&str>,
) -> Result<(), String> {
    use vfkube::objects::{is_dns_label, is_dns_subdomain};
    if !is_dns_label(namespace) || !is_dns_subdomain(name) {
        return Err(format!("{namespace}/{name} is not a pod name"));
    }
    if !is_dns_label(to) {
        return Err(format!(
            "{to:?} is not the name of a network of the pod's namespace"
        ));
    }
    let api: Api<Pod> = Api::namespaced(client, namespace);
    // A reason of null removes an earlier one.
    let patch = serde_json::json!({"metadata": {"annotations": {
        vfkube::kpi::SWITCH_TO: to,
        vfkube::kpi::SWITCH_REASON: why,
    }}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map(drop)
    .map_err(|e| format!("cannot annotate pod {namespace}/{name}: {e}"))
}

async fn post_event(client: &Client, node: &str, job: &Job, msg: &str) {
    let subject = Subject {
        api_version: "v1".into(),
        kind: "Pod".into(),
        namespace: job.namespace.clone(),
        name: job.name.clone(),
        uid: Some(job.uid.clone()),
    };
    let ev = event(
        &subject,
        REASON,
        msg,
        node,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let api: Api<Event> = Api::namespaced(client.clone(), &job.namespace);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        warn!(namespace = %job.namespace, name = %job.name, error = %e, "cannot post the Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_is_found_as_a_runtime_would_pass_it() {
        let d = tempfile::tempdir().unwrap();
        assert!(genie_conf(d.path()).is_err());
        std::fs::write(
            d.path().join("10-other.conf"),
            r#"{"name":"x","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("00-genie.conflist"),
            r#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"genie","cniDir":"/c"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        let c: Value = serde_json::from_slice(&genie_conf(d.path()).unwrap()).unwrap();
        assert_eq!(
            c,
            serde_json::json!({"type":"genie","cniDir":"/c","name":"k8s","cniVersion":"1.0.0"})
        );
    }

    #[test]
    fn only_the_network_annotations_make_the_key() {
        let mut a = std::collections::BTreeMap::new();
        let k0 = request_key(&a);
        a.insert("other".to_string(), "x".to_string());
        assert_eq!(request_key(&a), k0);
        a.insert("cni".to_string(), String::new());
        assert_ne!(request_key(&a), k0, "an empty cni is not no cni");
        let k1 = request_key(&a);
        a.insert(
            "k8s.v1.cni.cncf.io/networks".to_string(),
            "blue".to_string(),
        );
        assert_ne!(request_key(&a), k1);
    }
}
