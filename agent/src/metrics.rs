//! `/metrics`: the published [`Snapshot`] in the Prometheus text exposition format 0.0.4.
//!
//! Every family is always present with its `HELP` and `TYPE` lines, so a scrape of an agent that
//! has no pools yet still tells what it would report.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::state::Snapshot;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `s` as Prometheus text.
pub fn render(s: &Snapshot) -> String {
    let mut out = render_node(s);
    out += &render_policy(&crate::policy::counters::COUNTERS);
    out += &Family::new(
        "vfgenie_audit_write_failures_total",
        "Audit log records the agent could not write (each logged with the file), since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), vfaudit::write_failures())]);
    out += &crate::kpi::render_metrics();
    if crate::hotplug::ENABLED.load(std::sync::atomic::Ordering::Relaxed) {
        use std::sync::atomic::Ordering::Relaxed;
        out += &Family::new(
            "vfgenie_hotplug_updates_total",
            "genie UPDATEs run for pods whose network annotations changed (or to converge when the pod watch started), by result, since the agent started.",
            Kind::Counter,
        )
        .samples([
            (
                vec![("result", "ok".to_string())],
                crate::hotplug::UPDATES_OK.load(Relaxed),
            ),
            (
                vec![("result", "failed".to_string())],
                crate::hotplug::UPDATES_FAILED.load(Relaxed),
            ),
        ]);
    }
    out
}

/// The policy engine's families, when it runs (`--policy`).
pub fn render_policy(c: &crate::policy::counters::PolicyCounters) -> String {
    use crate::policy::counters::PolicyCounters as P;
    if !c.enabled() {
        return String::new();
    }
    let mut out = Family::new(
        "vfgenie_policy_problems_total",
        "Policies or parts of them not enforced as written (an unparsable version is ignored, the last good one kept; a named port allows nothing), since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), P::get(&c.problems))]);
    out += &Family::new(
        "vfgenie_policy_tables_applied_total",
        "nftables tables replaced (the host's and pods'), since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), P::get(&c.applied))]);
    out += &Family::new(
        "vfgenie_policy_apply_failures_total",
        "Table replacements that failed (retried by the next reconcile), since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), P::get(&c.failures))]);
    out += &Family::new(
        "vfgenie_policy_reconciles_total",
        "Policy reconciles completed since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), P::get(&c.reconciles))]);
    out
}

fn render_node(s: &Snapshot) -> String {
    let mut out = Family::new("vfgenie_pool_capacity", "Devices in the pool.", Kind::Gauge)
        .samples(s.pools.iter().map(|p| {
            (
                vec![("resource", p.full_name())],
                Snapshot::capacity(p) as u64,
            )
        }));
    out += &Family::new(
        "vfgenie_pool_allocatable",
        "Devices of the pool the kubelet may allocate.",
        Kind::Gauge,
    )
    .samples(s.pools.iter().map(|p| {
        (
            vec![("resource", p.full_name())],
            Snapshot::allocatable(p) as u64,
        )
    }));
    out += &Family::new(
        "vfgenie_pool_healthy",
        "Devices of the pool that pass their health checks.",
        Kind::Gauge,
    )
    .samples(s.pools.iter().map(|p| {
        let healthy = p.devices.values().filter(|d| d.healthy).count();
        (vec![("resource", p.full_name())], healthy as u64)
    }));
    out += &Family::new(
        "vfgenie_provisioning_errors_total",
        "Provisioning or driver binding operations that failed since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), s.provisioning_errors)]);
    out += &Family::new(
        "vfgenie_refused_changes_total",
        "VF count changes or driver rebinds refused since the agent started because a VF was or may have been in use.",
        Kind::Counter,
    )
    .samples([(Vec::new(), s.refused_changes)]);
    out += &Family::new(
        "vfgenie_quarantined_records",
        "Records the node's CNI plugins moved aside (quarantine/) because they could not read or act on them; each needs a look.",
        Kind::Gauge,
    )
    .samples(
        s.quarantined
            .iter()
            .map(|(c, n)| (vec![("component", c.clone())], *n)),
    );
    out += &Family::new(
        "vfgenie_config_errors_total",
        "Config reloads refused as invalid since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), s.config_errors)]);
    out += &Family::new(
        "vfgenie_reconciles_total",
        "Reconciles completed since the agent started.",
        Kind::Counter,
    )
    .samples([(Vec::new(), s.reconciles)]);
    // Several conditions may share an object and a reason; one series counts them.
    let mut conditions: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for c in &s.conditions {
        *conditions
            .entry((c.object.as_str(), c.reason.as_str()))
            .or_default() += 1;
    }
    out += &Family::new(
        "vfgenie_conditions",
        "Conditions keeping the node from its configured state, by object and reason.",
        Kind::Gauge,
    )
    .samples(conditions.into_iter().map(|((object, reason), n)| {
        (
            vec![("object", object.to_owned()), ("reason", reason.to_owned())],
            n,
        )
    }));
    out += &Family::new(
        "vfgenie_ready",
        "1 once the first reconcile has completed, 0 before.",
        Kind::Gauge,
    )
    .samples([(Vec::new(), u64::from(s.ready))]);
    out += &Family::new(
        "vfgenie_pool_server_restarts_total",
        "Times the pool's device-plugin server was restarted after it failed, since the agent started.",
        Kind::Counter,
    )
    .samples(
        s.pool_server_restarts
            .iter()
            .map(|(r, n)| (vec![("resource", r.clone())], *n)),
    );
    out
}

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

struct Family {
    name: &'static str,
    text: String,
}

impl Family {
    fn new(name: &'static str, help: &str, kind: Kind) -> Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(text, "# TYPE {name} {kind}");
        Self { name, text }
    }

    fn samples<I>(mut self, samples: I) -> String
    where
        I: IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
    {
        for (labels, value) in samples {
            self.text.push_str(self.name);
            if !labels.is_empty() {
                self.text.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.text.push(',');
                    }
                    let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
                }
                self.text.push('}');
            }
            let _ = writeln!(self.text, " {value}");
        }
        self.text
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::{device, pool_of};
    use crate::state::Condition;

    fn condition(object: &str, reason: &str) -> Condition {
        Condition {
            object: object.into(),
            reason: reason.into(),
            message: "a sentence.".into(),
        }
    }

    #[test]
    fn a_small_snapshot_renders_exactly() {
        let mut sick = device("0000:01:10.2", None);
        sick.healthy = false;
        let s = Snapshot {
            pools: vec![
                pool_of(
                    "intel.com/netdev",
                    vec![
                        device("0000:01:10.0", None),
                        device("0000:01:10.1", None),
                        sick,
                    ],
                ),
                pool_of("example.org/dpdk", vec![device("0000:01:10.4", Some(40))]),
            ],
            conditions: vec![
                condition("0000:01:00.0", "VfsInUse"),
                condition("0000:01:00.0", "VfsInUse"),
                condition("config", "ConfigInvalid"),
            ],
            reconciles: 7,
            provisioning_errors: 2,
            refused_changes: 4,
            config_errors: 1,
            ready: true,
            quarantined: vec![("genie".into(), 2), ("sriov".into(), 0)],
            pool_server_restarts: vec![
                ("intel.com/netdev".into(), 3),
                ("example.org/dpdk".into(), 0),
            ],
        };
        let want = "\
# HELP vfgenie_pool_capacity Devices in the pool.
# TYPE vfgenie_pool_capacity gauge
vfgenie_pool_capacity{resource=\"intel.com/netdev\"} 3
vfgenie_pool_capacity{resource=\"example.org/dpdk\"} 1
# HELP vfgenie_pool_allocatable Devices of the pool the kubelet may allocate.
# TYPE vfgenie_pool_allocatable gauge
vfgenie_pool_allocatable{resource=\"intel.com/netdev\"} 2
vfgenie_pool_allocatable{resource=\"example.org/dpdk\"} 1
# HELP vfgenie_pool_healthy Devices of the pool that pass their health checks.
# TYPE vfgenie_pool_healthy gauge
vfgenie_pool_healthy{resource=\"intel.com/netdev\"} 2
vfgenie_pool_healthy{resource=\"example.org/dpdk\"} 1
# HELP vfgenie_provisioning_errors_total Provisioning or driver binding operations that failed since the agent started.
# TYPE vfgenie_provisioning_errors_total counter
vfgenie_provisioning_errors_total 2
# HELP vfgenie_refused_changes_total VF count changes or driver rebinds refused since the agent started because a VF was or may have been in use.
# TYPE vfgenie_refused_changes_total counter
vfgenie_refused_changes_total 4
# HELP vfgenie_quarantined_records Records the node's CNI plugins moved aside (quarantine/) because they could not read or act on them; each needs a look.
# TYPE vfgenie_quarantined_records gauge
vfgenie_quarantined_records{component=\"genie\"} 2
vfgenie_quarantined_records{component=\"sriov\"} 0
# HELP vfgenie_config_errors_total Config reloads refused as invalid since the agent started.
# TYPE vfgenie_config_errors_total counter
vfgenie_config_errors_total 1
# HELP vfgenie_reconciles_total Reconciles completed since the agent started.
# TYPE vfgenie_reconciles_total counter
vfgenie_reconciles_total 7
# HELP vfgenie_conditions Conditions keeping the node from its configured state, by object and reason.
# TYPE vfgenie_conditions gauge
vfgenie_conditions{object=\"0000:01:00.0\",reason=\"VfsInUse\"} 2
vfgenie_conditions{object=\"config\",reason=\"ConfigInvalid\"} 1
# HELP vfgenie_ready 1 once the first reconcile has completed, 0 before.
# TYPE vfgenie_ready gauge
vfgenie_ready 1
# HELP vfgenie_pool_server_restarts_total Times the pool's device-plugin server was restarted after it failed, since the agent started.
# TYPE vfgenie_pool_server_restarts_total counter
vfgenie_pool_server_restarts_total{resource=\"intel.com/netdev\"} 3
vfgenie_pool_server_restarts_total{resource=\"example.org/dpdk\"} 0
# HELP vfgenie_audit_write_failures_total Audit log records the agent could not write (each logged with the file), since the agent started.
# TYPE vfgenie_audit_write_failures_total counter
vfgenie_audit_write_failures_total 0
";
        assert_eq!(render(&s), want);
    }

    #[test]
    fn label_values_are_escaped() {
        let s = Snapshot {
            conditions: vec![condition("a\\b\"c\nd", "R")],
            ..Snapshot::default()
        };
        let text = render(&s);
        assert!(
            text.contains("vfgenie_conditions{object=\"a\\\\b\\\"c\\nd\",reason=\"R\"} 1\n"),
            "{text}"
        );
        // Every sample stays on one line.
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("vfgenie_conditions"))
                .count(),
            1
        );
    }

    #[test]
    fn an_empty_snapshot_has_every_family_and_zero_counters() {
        let text = render(&Snapshot::default());
        for family in [
            "vfgenie_pool_capacity",
            "vfgenie_pool_allocatable",
            "vfgenie_pool_healthy",
            "vfgenie_provisioning_errors_total",
            "vfgenie_refused_changes_total",
            "vfgenie_quarantined_records",
            "vfgenie_config_errors_total",
            "vfgenie_reconciles_total",
            "vfgenie_conditions",
            "vfgenie_ready",
            "vfgenie_pool_server_restarts_total",
            "vfgenie_audit_write_failures_total",
        ] {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            vec![
                "vfgenie_provisioning_errors_total 0",
                "vfgenie_refused_changes_total 0",
                "vfgenie_config_errors_total 0",
                "vfgenie_reconciles_total 0",
                "vfgenie_ready 0",
                "vfgenie_audit_write_failures_total 0",
            ]
        );
    }

    #[test]
    fn policy_families_appear_once_the_engine_runs() {
        let c = crate::policy::counters::PolicyCounters::new();
        assert_eq!(render_policy(&c), "");
        c.enable();
        c.problems
            .fetch_add(2, std::sync::atomic::Ordering::Relaxed);
        c.applied
            .fetch_add(201, std::sync::atomic::Ordering::Relaxed);
        let text = render_policy(&c);
        for line in [
            "# TYPE vfgenie_policy_problems_total counter",
            "vfgenie_policy_problems_total 2",
            "vfgenie_policy_tables_applied_total 201",
            "vfgenie_policy_apply_failures_total 0",
            "vfgenie_policy_reconciles_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn help_text_escapes() {
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
