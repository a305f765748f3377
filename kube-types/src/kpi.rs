//! Node network KPIs and the smart selection made from them.
//!
//! The node agent samples, per network the node can attach, IP occupancy, free VFs and the traffic
//! of the pods' interfaces, and writes them to a node-local JSON file ([`KpiFile`]); genie reads
//! that file (once per ADD, borrowed decode) when a pod asks for no network (`cni: ""` or no
//! annotation) and the genie conf has `smartSelection` but no `default_plugin`, and picks one of
//! the conf's candidates ([`select`]). The choice and the figures behind it are written on the pod
//! as [`SMART_SELECTION`] ([`Selection`]).
//!
//! A figure the agent cannot know (an IPAM other than host-local, a network without VFs, the
//! audit-log figures until they are wired) is `null`, never 0.
//!
//! Selection rules:
//! - the file is missing, unreadable, not a KPI file, or its `generatedAt` is older than
//!   `maxKpiAgeSeconds`: **fallback**, the first candidate in conf order (the caller logs a warning);
//! - a candidate absent from a fresh file has no pod on this node (the agent lists every conf
//!   network and every network genie has attached on the node): its traffic is 0, its other
//!   figures unknown;
//! - a candidate sampled longer ago than `maxKpiAgeSeconds`, or without the figure the strategy
//!   needs, is not eligible; no eligible candidate: fallback as above;
//! - `leastTraffic`: least rx + tx bytes per second; `leastIpOccupancy`: least used/total;
//!   `mostFreeVfs`: most free VFs; `weighted`: least `traffic·t/max + occupancy·o + (1 − free/max)·v`
//!   over the figures with a weight above 0 (a figure null for every candidate is left out; a
//!   figure null for some counts as the worst, 1, for them);
//! - equal scores: the lowest network name wins.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The pod annotation carrying the smart selection ([`Selection`] as JSON).
pub const SMART_SELECTION: &str = "vfgenie.io/smart-selection";
/// On a NetworkAttachmentDefinition or LogicalNetwork: it is a selectable group, and this lists
/// its members (names of objects of the same kind in the same namespace, comma-separated). A pod
/// that asks for the group gets the member [`select`] picks.
pub const SELECT_FROM: &str = "vfgenie.io/select-from";
/// On a group: the strategy (default: the genie conf's `smartSelection.strategy`, else
/// `leastTraffic`).
pub const SELECT_STRATEGY: &str = "vfgenie.io/select-strategy";
/// On a pod: the member of a selectable group it is to be moved to (a plain name of the pod's
/// namespace). The agent's hot-plug sees the change and genie switches the pod's attachment of
/// that group, make-before-break; without it, a running pod keeps the member it has.
pub const SWITCH_TO: &str = "vfgenie.io/switch-to";
/// On a pod attached to a selectable group: when the member it is on crosses this threshold, the
/// node agent moves it to the best other member (`<kpi> > <number>`, or `freeVfs < <number>`;
/// kpi one of `traffic` (rx + tx bytes/s), `ipOccupancy` (0 to 1), `errorRate` (0 to 1),
/// `attachLatencyP50Ms`).
pub const SWITCH_WHEN: &str = "vfgenie.io/switch-when";
/// Why a switch was asked for, written with [`SWITCH_TO`] by the agent (a threshold crossed);
/// genie puts it in the selection's reason.
pub const SWITCH_REASON: &str = "vfgenie.io/switch-reason";

/// A [`SWITCH_WHEN`] threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub kpi: ThresholdKpi,
    pub limit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdKpi {
    Traffic,
    IpOccupancy,
    ErrorRate,
    AttachLatencyP50Ms,
    /// Crossed when free VFs go below the limit.
    FreeVfs,
}

impl Threshold {
    /// Reads `traffic > 1e8`, `errorRate>0.2`, `freeVfs < 2`, ...
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{SWITCH_WHEN} {s:?}: write traffic|ipOccupancy|errorRate|attachLatencyP50Ms > NUMBER, or freeVfs < NUMBER"
            )
        };
        let (name, op, value) = match (s.split_once('>'), s.split_once('<')) {
            (Some((n, v)), None) => (n.trim(), '>', v.trim()),
            (None, Some((n, v))) => (n.trim(), '<', v.trim()),
            _ => return Err(bad()),
        };
        let kpi = match (name, op) {
            ("traffic", '>') => ThresholdKpi::Traffic,
            ("ipOccupancy", '>') => ThresholdKpi::IpOccupancy,
            ("errorRate", '>') => ThresholdKpi::ErrorRate,
            ("attachLatencyP50Ms", '>') => ThresholdKpi::AttachLatencyP50Ms,
            ("freeVfs", '<') => ThresholdKpi::FreeVfs,
            _ => return Err(bad()),
        };
        let limit: f64 = value.parse().map_err(|_| bad())?;
        if !limit.is_finite() || limit < 0.0 {
            return Err(bad());
        }
        Ok(Self { kpi, limit })
    }

    /// The figure it watches, when known.
    pub fn value(&self, k: &NetworkKpis) -> Option<f64> {
        match self.kpi {
            ThresholdKpi::Traffic => k.traffic(),
            ThresholdKpi::IpOccupancy => k.ip_occupancy(),
            ThresholdKpi::ErrorRate => k.error_rate,
            ThresholdKpi::AttachLatencyP50Ms => k.attach_latency_p50_ms,
            ThresholdKpi::FreeVfs => k.free_vfs.map(|v| v as f64),
        }
    }

    /// Crossed (`None`: the figure is unknown).
    pub fn crossed(&self, k: &NetworkKpis) -> Option<bool> {
        let v = self.value(k)?;
        Some(match self.kpi {
            ThresholdKpi::FreeVfs => v < self.limit,
            _ => v > self.limit,
        })
    }
}

/// The most members a group may list.
pub const GROUP_MAX: usize = 16;

/// A group's members from its [`SELECT_FROM`] annotation: DNS labels, at least one, at most
/// [`GROUP_MAX`], none twice, not the group itself.
pub fn parse_group(group: &str, members: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = members
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        return Err(format!("{SELECT_FROM} lists no member"));
    }
    if list.len() > GROUP_MAX {
        return Err(format!(
            "{SELECT_FROM} lists {} members, at most {GROUP_MAX}",
            list.len()
        ));
    }
    for (i, m) in list.iter().enumerate() {
        if !crate::objects::is_dns_label(m) {
            return Err(format!(
                "{SELECT_FROM}: {m:?} is not an object name of this namespace"
            ));
        }
        if m == group {
            return Err(format!("{SELECT_FROM}: the group lists itself"));
        }
        if list[..i].contains(m) {
            return Err(format!("{SELECT_FROM}: {m:?} is listed twice"));
        }
    }
    Ok(list)
}

/// The Node annotation with the compact KPI summary.
pub const NODE_KPIS: &str = "vfgenie.io/network-kpis";
/// Where the agent writes the KPI file and genie reads it, unless configured.
pub const DEFAULT_KPI_FILE: &str = "/run/vfgenie/kpi.json";
/// The longest KPI file genie reads.
pub const KPI_FILE_MAX: u64 = 1024 * 1024;

/// One network's figures. Timestamps are Unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkKpis {
    pub sampled_at: f64,
    /// Leases held in the network's host-local ranges; null for other IPAMs.
    pub ip_used: Option<u64>,
    /// Addresses host-local can hand out in those ranges; null for other IPAMs.
    pub ip_total: Option<u64>,
    /// Free VFs of the pool(s) the network takes devices from; null without a pool.
    pub free_vfs: Option<u64>,
    pub rx_bytes_per_second: Option<f64>,
    pub tx_bytes_per_second: Option<f64>,
    /// From genie's audit log: median of the successful ADDs of the last 15 minutes; null when
    /// there were none.
    pub attach_latency_p50_ms: Option<f64>,
    /// From genie's audit log: failed / all ADDs of the last 15 minutes; null when there were
    /// none.
    pub error_rate: Option<f64>,
}

impl NetworkKpis {
    /// rx + tx bytes per second, when both are known.
    pub fn traffic(&self) -> Option<f64> {
        Some(self.rx_bytes_per_second? + self.tx_bytes_per_second?)
    }

    /// used / total, when known (and total is not 0).
    pub fn ip_occupancy(&self) -> Option<f64> {
        match (self.ip_used, self.ip_total) {
            (Some(u), Some(t)) if t > 0 => Some(u as f64 / t as f64),
            _ => None,
        }
    }
}

/// The KPI file: `{"generatedAt": 1764900000.5, "node": "n1", "networks": {"net-a": {...}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KpiFile<'a> {
    pub generated_at: f64,
    #[serde(default)]
    pub node: Option<&'a str>,
    /// Network names are borrowed from the file (they carry no JSON escapes).
    #[serde(borrow)]
    pub networks: BTreeMap<&'a str, NetworkKpis>,
    /// VF pools by resource name.
    #[serde(borrow, default)]
    pub pools: BTreeMap<&'a str, PoolKpis>,
}

/// One VF pool's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolKpis {
    pub sampled_at: f64,
    /// Healthy VFs no pod holds; null when the kubelet cannot say which are held.
    pub free_vfs: Option<u64>,
    pub capacity: u64,
}

/// `smartSelection.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    LeastTraffic,
    LeastIpOccupancy,
    MostFreeVfs,
    Weighted,
}

impl Strategy {
    pub const NAMES: &'static str = "leastTraffic, leastIpOccupancy, mostFreeVfs, weighted";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "leastTraffic" => Self::LeastTraffic,
            "leastIpOccupancy" => Self::LeastIpOccupancy,
            "mostFreeVfs" => Self::MostFreeVfs,
            "weighted" => Self::Weighted,
            _ => return None,
        })
    }
}

/// `smartSelection.weights` (the `weighted` strategy).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Weights {
    pub traffic: f64,
    pub ip_occupancy: f64,
    pub free_vfs: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            traffic: 1.0,
            ip_occupancy: 1.0,
            free_vfs: 1.0,
        }
    }
}

/// What the selection is asked to do (the genie conf's `smartSelection`, validated).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub strategy: Strategy,
    /// Network names, in conf order; the first is the fallback.
    pub candidates: Vec<String>,
    pub max_age_seconds: f64,
    pub weights: Weights,
}

/// One candidate as seen when choosing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub network: String,
    /// Its figures; null when the file has none for it.
    pub kpis: Option<NetworkKpis>,
    /// Seconds since they were sampled.
    pub age_seconds: Option<f64>,
    /// Its score under the strategy (lower is better); null when not eligible.
    pub score: Option<f64>,
}

/// The choice and what it was made from: the [`SMART_SELECTION`] annotation (and, later, an audit
/// record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// The group (`namespace/name`) the choice was made for; none for the pod's default network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub strategy: Strategy,
    pub chosen: String,
    /// Why: the strategy's verdict, or why it fell back.
    pub reason: String,
    /// True when the first candidate was taken for want of usable KPIs.
    pub fallback: bool,
    /// True when the member was named by the pod's [`SWITCH_TO`] rather than chosen by KPIs: an
    /// UPDATE moves a running attachment only for such a choice.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requested: bool,
    pub candidates: Vec<Candidate>,
}

/// Picks one of `policy.candidates` from `kpis` (or the reason there are none) at `now` (Unix
/// seconds). Never fails: without usable figures the first candidate is the answer.
pub fn select(policy: &Policy, kpis: Result<&KpiFile<'_>, String>, now: f64) -> Selection {
    let max_age = policy.max_age_seconds;
    let file = kpis.and_then(|f| {
        let age = now - f.generated_at;
        if age > max_age {
            Err(format!(
                "the KPI file is {age:.0} s old (maxKpiAgeSeconds is {max_age:.0})"
            ))
        } else {
            Ok(f)
        }
    });
    let mut candidates: Vec<Candidate> = policy
        .candidates
        .iter()
        .map(|name| {
            let k = file.as_ref().ok().map(|f| {
                f.networks
                    .get(name.as_str())
                    .copied()
                    .unwrap_or(NetworkKpis {
                        sampled_at: f.generated_at,
                        rx_bytes_per_second: Some(0.0),
                        tx_bytes_per_second: Some(0.0),
                        ..NetworkKpis::default()
                    })
            });
            Candidate {
                network: name.clone(),
                kpis: k,
                age_seconds: k.map(|k| (now - k.sampled_at).max(0.0)),
                score: None,
            }
        })
        .collect();
    let fallback = |reason: String, candidates: Vec<Candidate>| Selection {
        group: None,
        strategy: policy.strategy,
        chosen: policy.candidates.first().cloned().unwrap_or_default(),
        reason,
        fallback: true,
        requested: false,
        candidates,
    };
    if let Err(reason) = file {
        return fallback(reason, candidates);
    }
    // Figures of fresh candidates only.
    let fresh: Vec<Option<NetworkKpis>> = candidates
        .iter()
        .map(|c| {
            c.kpis
                .filter(|_| c.age_seconds.is_some_and(|a| a <= max_age))
        })
        .collect();
    let max_of = |f: fn(&NetworkKpis) -> Option<f64>| -> Option<f64> {
        fresh
            .iter()
            .flatten()
            .filter_map(f)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let free = |k: &NetworkKpis| k.free_vfs.map(|v| v as f64);
    let max_traffic = max_of(NetworkKpis::traffic);
    let max_free = max_of(free);
    let any_occupancy = max_of(NetworkKpis::ip_occupancy).is_some();
    let w = policy.weights;
    for (c, k) in candidates.iter_mut().zip(&fresh) {
        let Some(k) = k else { continue };
        c.score = match policy.strategy {
            Strategy::LeastTraffic => k.traffic(),
            Strategy::LeastIpOccupancy => k.ip_occupancy(),
            Strategy::MostFreeVfs => free(k).map(|f| -f),
            Strategy::Weighted => {
                let ratio = |v: Option<f64>, max: Option<f64>| match (v, max) {
                    (Some(v), Some(m)) if m > 0.0 => v / m,
                    (Some(_), Some(_)) => 0.0,
                    _ => 1.0,
                };
                let mut s = 0.0;
                if w.traffic > 0.0 && max_traffic.is_some() {
                    s += w.traffic * ratio(k.traffic(), max_traffic);
                }
                if w.ip_occupancy > 0.0 && any_occupancy {
                    s += w.ip_occupancy * k.ip_occupancy().unwrap_or(1.0);
                }
                if w.free_vfs > 0.0 && max_free.is_some() {
                    let vf = match (free(k), max_free) {
                        (Some(f), Some(m)) if m > 0.0 => 1.0 - f / m,
                        _ => 1.0,
                    };
                    s += w.free_vfs * vf;
                }
                let any = (w.traffic > 0.0 && max_traffic.is_some())
                    || (w.ip_occupancy > 0.0 && any_occupancy)
                    || (w.free_vfs > 0.0 && max_free.is_some());
                any.then_some(s)
            }
        };
    }
    let best = candidates
        .iter()
        .filter_map(|c| c.score.map(|s| (s, c.network.as_str())))
        .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(s, n)| (s, n.to_string()));
    match best {
        Some((score, chosen)) => {
            let skipped = candidates.iter().filter(|c| c.score.is_none()).count();
            let mut reason = format!("{}: best score {score}", strategy_name(policy.strategy));
            if skipped > 0 {
                reason.push_str(&format!(
                    "; {skipped} candidate(s) without fresh figures skipped"
                ));
            }
            Selection {
                group: None,
                strategy: policy.strategy,
                chosen,
                reason,
                fallback: false,
                requested: false,
                candidates,
            }
        }
        None => fallback(
            format!(
                "no candidate has fresh figures for {}",
                strategy_name(policy.strategy)
            ),
            candidates,
        ),
    }
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::LeastTraffic => "leastTraffic",
        Strategy::LeastIpOccupancy => "leastIpOccupancy",
        Strategy::MostFreeVfs => "mostFreeVfs",
        Strategy::Weighted => "weighted",
    }
}

/// Decodes a KPI file (borrowing its names from `bytes`).
pub fn parse_kpi_file(bytes: &[u8]) -> Result<KpiFile<'_>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the KPI file is not valid: {e}"))
}

#[cfg(test)]
#[path = "kpi_tests.rs"]
mod tests;
