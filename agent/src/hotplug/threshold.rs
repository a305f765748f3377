//! Switching on a KPI threshold: a pod annotated `vfgenie.io/switch-when` (e.g.
//! `errorRate > 0.2`) whose attachment came from a selectable group is moved to the best other
//! member when the member it is on crosses the threshold.
//!
//! Every `threshold_interval` the agent reads its own KPI file (what genie reads), and for each
//! such pod on the node, each of its group attachments in genie's record (the group's members
//! and strategy are recorded there by genie, so no API read is needed): when the current
//! member's figure is fresh and crossed, the group's strategy picks among the other members
//! that have fresh figures and have not crossed the threshold themselves; the pod is then
//! annotated `vfgenie.io/switch-to` with that member and `vfgenie.io/switch-reason` with the
//! figures, and the hot-plug watch runs the switch (make-before-break). A pod is switched at most
//! once per `switch_cooldown`. Nothing moves when the figures are unknown or stale.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kube::Client;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{info, warn};
use vfkube::kpi::{parse_kpi_file, select, Policy, Strategy, Threshold, SWITCH_WHEN};
use vfmeta::cache::CacheDir;
use vfmeta::genie::record::{EXTRA_GROUP, EXTRA_GROUP_MEMBERS, EXTRA_GROUP_STRATEGY};

use super::HotplugOptions;

/// A pod on the node with a threshold.
#[derive(Debug, Clone)]
struct Pod {
    namespace: String,
    name: String,
    threshold: Result<Threshold, String>,
}

/// The node's pods with a threshold, as the pod watch last saw them.
#[derive(Debug, Clone, Default)]
pub struct Watched(Arc<Mutex<HashMap<String, Pod>>>);

impl Watched {
    pub(super) fn seen(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        annotations: &BTreeMap<String, String>,
    ) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match annotations.get(SWITCH_WHEN) {
            Some(t) => {
                let threshold = Threshold::parse(t);
                if let Err(e) = &threshold {
                    warn!(%namespace, %name, error = %e, "the pod's switch threshold is ignored");
                }
                m.insert(
                    uid.to_string(),
                    Pod {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        threshold,
                    },
                );
            }
            None => {
                m.remove(uid);
            }
        }
    }

    pub(super) fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }

    fn snapshot(&self) -> Vec<(String, Pod)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(u, p)| (u.clone(), p.clone()))
            .collect()
    }
}

/// A switch to ask for: the member, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub to: String,
    pub reason: String,
}

/// The decision for one group attachment on `current`, from the KPI file's figures.
pub fn decide(
    threshold: &Threshold,
    current: &str,
    members: &[String],
    strategy: Strategy,
    file: &vfkube::kpi::KpiFile<'_>,
    now: f64,
    max_age: f64,
) -> Option<Decision> {
    let fresh = |n: &str| {
        file.networks
            .get(n)
            .filter(|k| now - k.sampled_at <= max_age)
            .copied()
    };
    let k = fresh(current)?;
    if threshold.crossed(&k) != Some(true) {
        return None;
    }
    let others: Vec<String> = members
        .iter()
        .filter(|m| *m != current)
        .filter(|m| fresh(m).is_some_and(|k| threshold.crossed(&k) == Some(false)))
        .cloned()
        .collect();
    if others.is_empty() {
        return None;
    }
    let policy = Policy {
        strategy,
        candidates: others,
        max_age_seconds: max_age,
        weights: Default::default(),
    };
    let sel = select(&policy, Ok(file), now);
    if sel.fallback {
        return None;
    }
    let value = threshold.value(&k).unwrap_or_default();
    Some(Decision {
        reason: format!(
            "{current}: {:?} {value} crossed {} ({})",
            threshold.kpi, threshold.limit, sel.reason
        ),
        to: sel.chosen,
    })
}

pub(super) async fn run(
    client: Client,
    opts: HotplugOptions,
    kpi_file: PathBuf,
    watched: Watched,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_switch: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(opts.threshold_interval) => {}
            _ = stop.changed() => return,
        }
        let pods = watched.snapshot();
        if pods.is_empty() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&kpi_file) else {
            continue;
        };
        let Ok(file) = parse_kpi_file(&bytes) else {
            continue;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let records = CacheDir::new(&opts.genie_cni_dir)
            .list_pods()
            .map(|l| {
                l.into_iter()
                    .filter_map(|l| l.record.ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (uid, pod) in pods {
            let Ok(threshold) = &pod.threshold else {
                continue;
            };
            if last_switch
                .get(&uid)
                .is_some_and(|t| t.elapsed() < opts.switch_cooldown)
            {
                continue;
            }
            let Some(record) = records.iter().find(|r| {
                r.pod_namespace.as_deref() == Some(&pod.namespace)
                    && r.pod_name.as_deref() == Some(&pod.name)
            }) else {
                continue;
            };
            for a in &record.attachments {
                if a.extra.get(EXTRA_GROUP).is_none() {
                    continue;
                }
                let members: Vec<String> = match a.extra.get(EXTRA_GROUP_MEMBERS) {
                    Some(Value::Array(m)) => m
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    _ => continue,
                };
                let strategy = a
                    .extra
                    .get(EXTRA_GROUP_STRATEGY)
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .unwrap_or(Strategy::LeastTraffic);
                let Some(d) = decide(threshold, &a.network, &members, strategy, &file, now, 30.0)
                else {
                    continue;
                };
                let member = d.to.rsplit('/').next().unwrap_or_default().to_string();
                info!(namespace = %pod.namespace, name = %pod.name, to = %d.to, reason = %d.reason, "switching the pod: a threshold was crossed");
                match super::request_switch(
                    client.clone(),
                    &pod.namespace,
                    &pod.name,
                    &member,
                    Some(&d.reason),
                )
                .await
                {
                    Ok(()) => {
                        last_switch.insert(uid.clone(), Instant::now());
                    }
                    Err(e) => {
                        warn!(namespace = %pod.namespace, name = %pod.name, error = %e, "cannot ask for the switch")
                    }
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfkube::kpi::{KpiFile, NetworkKpis};

    fn k(now: f64, errors: Option<f64>, traffic: f64) -> NetworkKpis {
        NetworkKpis {
            sampled_at: now - 1.0,
            error_rate: errors,
            rx_bytes_per_second: Some(traffic),
            tx_bytes_per_second: Some(0.0),
            ..NetworkKpis::default()
        }
    }

    #[test]
    fn a_crossed_member_moves_to_the_best_member_below_the_threshold() {
        let now = 1_800_000_000.0;
        let t = Threshold::parse("errorRate > 0.2").unwrap();
        let members: Vec<String> = ["team/a", "team/b", "team/c"].map(String::from).to_vec();
        let mut file = KpiFile {
            generated_at: now,
            node: None,
            networks: [
                ("team/a", k(now, Some(0.5), 10.0)),
                ("team/b", k(now, Some(0.1), 500.0)),
                ("team/c", k(now, Some(0.3), 1.0)),
            ]
            .into_iter()
            .collect(),
            pools: Default::default(),
        };
        let from = |file: &KpiFile, current: &str| {
            decide(
                &t,
                current,
                &members,
                Strategy::LeastTraffic,
                file,
                now,
                30.0,
            )
        };
        // c has less traffic but is over the threshold too: b.
        let d = from(&file, "team/a").unwrap();
        assert_eq!(d.to, "team/b");
        assert!(
            d.reason.contains("team/a") && d.reason.contains("0.5"),
            "{}",
            d.reason
        );
        // Below the threshold: nothing.
        assert_eq!(from(&file, "team/b"), None);
        // Unknown or stale figures: nothing.
        file.networks.get_mut("team/a").unwrap().error_rate = None;
        assert_eq!(from(&file, "team/a"), None);
        file.networks.get_mut("team/a").unwrap().error_rate = Some(0.5);
        file.networks.get_mut("team/b").unwrap().sampled_at = now - 60.0;
        assert_eq!(
            from(&file, "team/a"),
            None,
            "no other member has fresh figures below the threshold"
        );
    }
}
