//! Selectable groups ([`SELECT_FROM`] on a NAD or LogicalNetwork) and the smart selection of a
//! network from the node's KPI file.

use std::path::PathBuf;

use tracing::{info, warn};
use vfkube::kpi::{
    parse_group, parse_kpi_file, select, Policy, Selection, Strategy, KPI_FILE_MAX, SELECT_FROM,
    SELECT_STRATEGY,
};

use super::{PlanError, Planner};
use crate::genieconf::SmartSelection;

impl Planner<'_> {
    /// When `annotations` make `group` a selectable group ([`SELECT_FROM`]), the member the
    /// node's KPIs pick (same namespace), the selection kept for the pod's annotation and audit.
    pub(super) fn group_member(
        &self,
        namespace: &str,
        group: &str,
        what: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<String>, PlanError> {
        let Some(members) = annotations.get(SELECT_FROM) else {
            return Ok(None);
        };
        let members = parse_group(group, members).map_err(|p| self.group_error(what, p))?;
        let conf = self.conf.smart_selection.as_ref();
        let strategy = match annotations.get(SELECT_STRATEGY) {
            Some(s) => Strategy::parse(s.trim()).ok_or_else(|| {
                self.group_error(
                    what,
                    format!("{SELECT_STRATEGY} {s:?} is not one of {}", Strategy::NAMES),
                )
            })?,
            None => conf.map_or(Strategy::LeastTraffic, |c| c.policy.strategy),
        };
        let smart = SmartSelection {
            policy: Policy {
                strategy,
                candidates: members.iter().map(|m| format!("{namespace}/{m}")).collect(),
                max_age_seconds: conf.map_or(
                    crate::genieconf::smart::DEFAULT_MAX_KPI_AGE_SECONDS as f64,
                    |c| c.policy.max_age_seconds,
                ),
                weights: conf.map(|c| c.policy.weights).unwrap_or_default(),
            },
            kpi_file: conf.map_or_else(
                || PathBuf::from(vfkube::kpi::DEFAULT_KPI_FILE),
                |c| c.kpi_file.clone(),
            ),
        };
        let asked = self.pod.and_then(|p| p.switch_to).map(str::trim);
        if let Some(t) = asked.filter(|t| !vfkube::objects::is_dns_label(t)) {
            // Only a member's name (a DNS label of the group's namespace) is ever looked for.
            warn!(pod = %self.pod_label(), group = %format!("{namespace}/{group}"), value = %t.escape_debug(),
                  "{} is not a network name: ignored", vfkube::kpi::SWITCH_TO);
        }
        let requested = asked.filter(|t| members.iter().any(|m| m == t));
        let mut sel = match requested {
            // A switch the pod asks for: that member, KPIs aside.
            Some(t) => Selection {
                group: None,
                strategy,
                chosen: format!("{namespace}/{t}"),
                reason: match self.pod.and_then(|p| p.switch_reason) {
                    Some(why) => format!("requested by {}: {why}", vfkube::kpi::SWITCH_TO),
                    None => format!("requested by {}", vfkube::kpi::SWITCH_TO),
                },
                fallback: false,
                requested: true,
                candidates: smart
                    .policy
                    .candidates
                    .iter()
                    .map(|c| vfkube::kpi::Candidate {
                        network: c.clone(),
                        kpis: None,
                        age_seconds: None,
                        score: None,
                    })
                    .collect(),
            },
            None => smart_select(&smart, &self.pod_label()),
        };
        sel.group = Some(format!("{namespace}/{group}"));
        let member = sel
            .chosen
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        self.groups.borrow_mut().push(sel);
        Ok(Some(member))
    }

    pub(super) fn group_error(&self, what: &str, problem: String) -> PlanError {
        PlanError::Group {
            pod: self.pod_label(),
            what: what.to_string(),
            problem,
        }
    }
}

/// The smart selection of the pod's default network ([`vfkube::kpi`]): the KPI file read once,
/// decoded borrowed. Never fails; a fallback is logged as a warning naming the pod and why.
pub(super) fn smart_select(smart: &SmartSelection, pod: &str) -> Selection {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let bytes = crate::bounded::read(&smart.kpi_file, KPI_FILE_MAX)
        .map_err(|e| format!("cannot read the KPI file {}: {e}", smart.kpi_file.display()));
    let file = bytes
        .as_deref()
        .map_err(Clone::clone)
        .and_then(parse_kpi_file);
    let sel = select(&smart.policy, file.as_ref().map_err(Clone::clone), now);
    if sel.fallback {
        warn!(%pod, chosen = %sel.chosen, reason = %sel.reason, "smart selection fell back to the first candidate");
    } else {
        info!(%pod, chosen = %sel.chosen, reason = %sel.reason, "smart selection");
    }
    sel
}
