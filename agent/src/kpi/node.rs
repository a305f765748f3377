//! The compact KPI summary on this node's Node object ([`vfkube::kpi::NODE_KPIS`]), for a
//! scheduler extender or a person (`kubectl get node N -o jsonpath=...`):
//!
//! ```json
//! {"generatedAt": 1796432400.1, "networks": {"blue": {"ip": "12/253", "vfs": 3, "bps": 1520,
//!   "p50Ms": 41.5, "errors": 0.02}}}
//! ```
//!
//! `ip` is used/total (host-local only), `vfs` the free VFs, `bps` rx + tx bytes per second,
//! `p50Ms` and `errors` the attach latency and error rate; a figure that is unknown is left out.
//! Written with a JSON merge patch of that one annotation, only when the summary changed and at
//! most once per [`MIN_INTERVAL`] (the API server is not written every sample); at most
//! [`MAX_NETWORKS`] networks (the busiest by traffic, then by name).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Map, Value};
use tracing::{debug, warn};
use vfkube::kpi::NODE_KPIS;

use super::Sample;

/// The shortest time between two writes of the annotation.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);
/// The most networks in the summary.
pub const MAX_NETWORKS: usize = 64;

/// The summary of a sample, as the annotation's value.
pub fn summary(s: &Sample) -> String {
    let mut nets: Vec<(&String, &vfkube::kpi::NetworkKpis)> = s.networks.iter().collect();
    nets.sort_by(|a, b| {
        let t = |k: &vfkube::kpi::NetworkKpis| k.traffic().unwrap_or(0.0);
        t(b.1).total_cmp(&t(a.1)).then_with(|| a.0.cmp(b.0))
    });
    let mut networks = Map::new();
    for (name, k) in nets.into_iter().take(MAX_NETWORKS) {
        let mut m = Map::new();
        if let (Some(u), Some(t)) = (k.ip_used, k.ip_total) {
            m.insert("ip".into(), json!(format!("{u}/{t}")));
        }
        if let Some(v) = k.free_vfs {
            m.insert("vfs".into(), json!(v));
        }
        if let Some(b) = k.traffic() {
            m.insert("bps".into(), json!(b.round() as u64));
        }
        if let Some(p) = k.attach_latency_p50_ms {
            m.insert("p50Ms".into(), json!((p * 10.0).round() / 10.0));
        }
        if let Some(e) = k.error_rate {
            m.insert("errors".into(), json!((e * 1000.0).round() / 1000.0));
        }
        networks.insert(name.clone(), Value::Object(m));
    }
    json!({"generatedAt": s.generated_at.round(), "networks": networks}).to_string()
}

/// Writes the summary on the Node when it changed, at most once per [`MIN_INTERVAL`].
pub struct NodeAnnotation {
    api: Api<Node>,
    node: String,
    /// The networks part of the last summary written, and when.
    last: Option<(Value, Instant)>,
    min_interval: Duration,
}

impl NodeAnnotation {
    pub fn new(client: kube::Client, node: String) -> Self {
        Self {
            api: Api::all(client),
            node,
            last: None,
            min_interval: MIN_INTERVAL,
        }
    }

    /// A shorter interval (tests).
    pub fn with_min_interval(mut self, d: Duration) -> Self {
        self.min_interval = d;
        self
    }

    /// Writes `s`'s summary unless the same networks' figures are there or the last write is too
    /// recent. A failure is logged with the node's name and retried at the next sample.
    pub async fn publish(&mut self, s: &Sample) {
        let text = summary(s);
        let networks = serde_json::from_str::<Value>(&text)
            .map(|v| v["networks"].clone())
            .unwrap_or_default();
        if let Some((prev, at)) = &self.last {
            if *prev == networks || at.elapsed() < self.min_interval {
                return;
            }
        }
        let patch = json!({"metadata": {"annotations": {NODE_KPIS: text}}});
        match self
            .api
            .patch(&self.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                debug!(node = %self.node, "KPI summary written on the Node");
                self.last = Some((networks, Instant::now()));
            }
            Err(e) => {
                warn!(node = %self.node, error = %e, "cannot write the KPI summary on the Node")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfkube::kpi::NetworkKpis;

    #[test]
    fn the_summary_leaves_out_what_is_unknown_and_keeps_the_busiest() {
        let mut s = Sample {
            generated_at: 1_796_432_400.4,
            node: "n1".into(),
            ..Sample::default()
        };
        s.networks.insert(
            "blue".into(),
            NetworkKpis {
                ip_used: Some(12),
                ip_total: Some(253),
                free_vfs: Some(3),
                rx_bytes_per_second: Some(1000.2),
                tx_bytes_per_second: Some(520.0),
                attach_latency_p50_ms: Some(41.54),
                error_rate: Some(0.0204),
                ..NetworkKpis::default()
            },
        );
        s.networks.insert(
            "red".into(),
            NetworkKpis {
                rx_bytes_per_second: Some(0.0),
                tx_bytes_per_second: None,
                ..NetworkKpis::default()
            },
        );
        let v: Value = serde_json::from_str(&summary(&s)).unwrap();
        assert_eq!(
            v,
            json!({"generatedAt": 1796432400.0, "networks": {
                "blue": {"ip": "12/253", "vfs": 3, "bps": 1520, "p50Ms": 41.5, "errors": 0.02},
                "red": {}}})
        );
        for i in 0..100 {
            s.networks.insert(
                format!("n{i:03}"),
                NetworkKpis {
                    rx_bytes_per_second: Some(f64::from(i)),
                    tx_bytes_per_second: Some(0.0),
                    ..NetworkKpis::default()
                },
            );
        }
        let v: Value = serde_json::from_str(&summary(&s)).unwrap();
        let nets = v["networks"].as_object().unwrap();
        assert_eq!(nets.len(), MAX_NETWORKS);
        assert!(nets.contains_key("blue") && nets.contains_key("n099"));
        assert!(!nets.contains_key("red") && !nets.contains_key("n000"));
    }
}
