//! The genie conf's `smartSelection` key: CNI-Genie's smart plugin selection, from the node
//! agent's KPI file instead of cAdvisor. A pod that asks for no network (`cni: ""` or no
//! annotation) on a node whose conf has no `default_plugin` gets the best of `candidates`
//! ([`vfkube::kpi::select`]); without usable KPIs, the first candidate (and a warning).
//!
//! ```json
//! "smartSelection": {"strategy": "weighted", "candidates": ["net-a", "net-b"],
//!                    "maxKpiAgeSeconds": 30, "kpiFile": "/run/vfgenie/kpi.json",
//!                    "weights": {"traffic": 1, "ipOccupancy": 1, "freeVfs": 1}}
//! ```
//!
//! The KPI file's path comes from this node conf only, never from a pod or a NAD.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use vfkube::kpi::{Policy, Strategy, Weights, DEFAULT_KPI_FILE};

use super::ConfError;
use crate::annotations::is_plugin_name;

/// The default of `maxKpiAgeSeconds`.
pub const DEFAULT_MAX_KPI_AGE_SECONDS: u64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct SmartSelection {
    pub policy: Policy,
    pub kpi_file: PathBuf,
}

impl SmartSelection {
    pub(super) fn from_map(m: &Map<String, Value>) -> Result<Self, ConfError> {
        let err = |sub: &str, problem: String| ConfError::Key {
            key: format!("smartSelection.{sub}"),
            problem,
        };
        for k in m.keys() {
            if !matches!(
                k.as_str(),
                "strategy" | "candidates" | "maxKpiAgeSeconds" | "kpiFile" | "weights"
            ) {
                return Err(err(k, "is not a smartSelection key".into()));
            }
        }
        let strategy = match m.get("strategy") {
            Some(Value::String(s)) => Strategy::parse(s).ok_or_else(|| {
                err(
                    "strategy",
                    format!("{s:?} is not one of {}", Strategy::NAMES),
                )
            })?,
            None => return Err(err("strategy", "is required".into())),
            Some(_) => return Err(err("strategy", "must be a string".into())),
        };
        let list = match m.get("candidates") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            _ => {
                return Err(err(
                    "candidates",
                    "must be a non-empty list of network names".into(),
                ))
            }
        };
        let mut candidates = Vec::with_capacity(list.len());
        for c in list {
            let Some(name) = c.as_str().filter(|n| is_plugin_name(n)) else {
                return Err(err(
                    "candidates",
                    format!("{c} is not a plain network name"),
                ));
            };
            if candidates.iter().any(|n| n == name) {
                return Err(err("candidates", format!("{name:?} is listed twice")));
            }
            candidates.push(name.to_string());
        }
        let max_age = match m.get("maxKpiAgeSeconds") {
            None => DEFAULT_MAX_KPI_AGE_SECONDS,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=86_400).contains(n))
                .ok_or_else(|| {
                    err(
                        "maxKpiAgeSeconds",
                        "must be a whole number from 1 to 86400".into(),
                    )
                })?,
        };
        let kpi_file = match m.get("kpiFile") {
            None => PathBuf::from(DEFAULT_KPI_FILE),
            Some(Value::String(s)) if Path::new(s).is_absolute() => PathBuf::from(s),
            Some(v) => return Err(err("kpiFile", format!("{v} is not an absolute path"))),
        };
        let weights = match m.get("weights") {
            None => Weights::default(),
            Some(Value::Object(w)) => weights(w).map_err(|p| err("weights", p))?,
            Some(_) => return Err(err("weights", "must be an object".into())),
        };
        Ok(Self {
            policy: Policy {
                strategy,
                candidates,
                max_age_seconds: max_age as f64,
                weights,
            },
            kpi_file,
        })
    }
}

fn weights(w: &Map<String, Value>) -> Result<Weights, String> {
    let mut out = Weights::default();
    for (k, v) in w {
        let n = v
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("{k:?} must be a number, 0 or more"))?;
        match k.as_str() {
            "traffic" => out.traffic = n,
            "ipOccupancy" => out.ip_occupancy = n,
            "freeVfs" => out.free_vfs = n,
            _ => return Err(format!("{k:?} is not traffic, ipOccupancy or freeVfs")),
        }
    }
    if out.traffic + out.ip_occupancy + out.free_vfs <= 0.0 {
        return Err("at least one weight must be above 0".into());
    }
    Ok(out)
}
