//! Reports over the audit logs: per network and plugin, the calls, failures by CNI code, p50/p99
//! durations (nearest rank), addresses handed out (ADD results) and released (DEL records), VFs
//! allocated (a device on a successful ADD); per VF pool, the agent's Allocates; the pods that
//! failed most; the smart selections with their reasons.
//!
//! Grouping: a delegate record counts under its network and plugin; a call record under network
//! `-` and plugin `genie` (a call spans the pod's networks); agent events under their pool
//! (`-` for events of no pool, such as VFs provisioned on a PF).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::reader::{Reader, View};
use crate::record::{Event, Kind};

/// The most failing pods listed.
pub const TOP_FAILING_PODS: usize = 10;
/// The most recent selections listed.
pub const MAX_SELECTIONS: usize = 100;

/// Which lines a report covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only lines at most this old (relative to `now`).
    pub since: Option<Duration>,
    pub network: Option<String>,
    /// `(namespace, name)`.
    pub pod: Option<(String, String)>,
}

impl Query {
    /// `NS/NAME` of `--pod`.
    pub fn parse_pod(s: &str) -> Result<(String, String), String> {
        match s.split_once('/') {
            Some((ns, name))
                if !ns.is_empty() && !name.is_empty() && !name.contains('/') && s.len() <= 317 =>
            {
                Ok((ns.to_string(), name.to_string()))
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("{s:?} is not one of table, json, csv")),
        }
    }
}

/// The figures of one network and plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub network: String,
    pub plugin: String,
    pub calls: u64,
    pub failures: u64,
    /// CNI code → failures with it.
    pub failures_by_code: BTreeMap<u32, u64>,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub addresses_handed_out: u64,
    pub addresses_released: u64,
    pub vfs_allocated: u64,
}

/// The agent's events of one VF pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolFigures {
    pub pool: String,
    pub allocates: u64,
    pub vfs_allocated: u64,
    pub vfs_provisioned: u64,
    pub health_changes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailingPod {
    /// `namespace/name`.
    pub pod: String,
    /// Failed calls.
    pub failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectionSeen {
    pub time: String,
    pub pod: Option<String>,
    /// The selectable group it was made for; none for a pod's default network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub strategy: String,
    pub chosen: String,
    pub reason: String,
}

/// One report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The oldest time covered (with `since`).
    pub from: Option<String>,
    pub files: usize,
    pub lines_read: u64,
    pub lines_skipped: u64,
    pub groups: Vec<Group>,
    pub pools: Vec<PoolFigures>,
    pub failing_pods: Vec<FailingPod>,
    pub selections_total: u64,
    /// The most recent [`MAX_SELECTIONS`], oldest first.
    pub selections: Vec<SelectionSeen>,
}

#[derive(Default)]
struct Acc {
    group: Group,
    durations: Vec<u64>,
}

/// Nearest-rank percentile `q`/100 of sorted `v`.
fn percentile(v: &[u64], q: u64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let n = v.len() as u64;
    let rank = (q * n).div_ceil(100).max(1);
    v.get((rank - 1) as usize).copied()
}

/// The report of `logs` for `query`, at `now`.
pub fn report(logs: &[PathBuf], query: &Query, now: SystemTime) -> Report {
    let from = query
        .since
        .map(|d| crate::time::format(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH)));
    let mut groups: HashMap<(String, String), Acc> = HashMap::new();
    let mut pools: BTreeMap<String, PoolFigures> = BTreeMap::new();
    let mut failing: HashMap<String, u64> = HashMap::new();
    let mut selections: std::collections::VecDeque<SelectionSeen> = Default::default();
    let mut selections_total = 0;
    let reader = Reader::new(logs);
    let stats = reader.for_each(|v: View<'_>| {
        if let Some(f) = &from {
            if *v.time < **f {
                return;
            }
        }
        if let Some(n) = &query.network {
            if v.network.as_deref() != Some(n.as_str()) {
                return;
            }
        }
        if let Some((ns, name)) = &query.pod {
            match &v.pod {
                Some(p) if *p.namespace == **ns && *p.name == **name => {}
                _ => return,
            }
        }
        if let Some(s) = &v.selection {
            selections_total += 1;
            if selections.len() == MAX_SELECTIONS {
                selections.pop_front();
            }
            selections.push_back(SelectionSeen {
                time: v.time.to_string(),
                pod: v
                    .pod
                    .as_ref()
                    .map(|p| format!("{}/{}", p.namespace, p.name)),
                group: s.group.clone(),
                strategy: s.strategy.clone(),
                chosen: s.chosen.clone(),
                reason: s.reason.clone(),
            });
        }
        if v.kind == Kind::Event {
            let pool = v.pool.as_deref().unwrap_or("-");
            let p = pools
                .entry(pool.to_string())
                .or_insert_with(|| PoolFigures {
                    pool: pool.to_string(),
                    ..Default::default()
                });
            match v.event {
                Some(Event::Allocate) => {
                    p.allocates += 1;
                    p.vfs_allocated += v.devices.len() as u64;
                }
                Some(Event::VfsProvisioned) => p.vfs_provisioned += v.devices.len() as u64,
                Some(Event::HealthChanged) => p.health_changes += 1,
                _ => {}
            }
            return;
        }
        let (network, plugin) = match v.kind {
            Kind::Call => ("-", "genie"),
            _ => (
                v.network.as_deref().unwrap_or("-"),
                v.plugin.as_deref().unwrap_or("-"),
            ),
        };
        let acc = match groups.get_mut(&(network.to_string(), plugin.to_string())) {
            Some(a) => a,
            None => groups
                .entry((network.to_string(), plugin.to_string()))
                .or_insert_with(|| Acc {
                    group: Group {
                        network: network.to_string(),
                        plugin: plugin.to_string(),
                        ..Default::default()
                    },
                    durations: Vec::new(),
                }),
        };
        let g = &mut acc.group;
        g.calls += 1;
        if let Some(d) = v.duration_us {
            acc.durations.push(d);
        }
        let addresses = v.result.as_ref().map_or(0, |r| r.addresses.len() as u64);
        match (&v.error, v.verb.as_deref()) {
            (Some(e), _) => {
                g.failures += 1;
                *g.failures_by_code.entry(e.code).or_default() += 1;
                if v.kind == Kind::Call {
                    if let Some(p) = &v.pod {
                        *failing
                            .entry(format!("{}/{}", p.namespace, p.name))
                            .or_default() += 1;
                    }
                }
            }
            (None, Some("ADD")) => {
                g.addresses_handed_out += addresses;
                if v.kind == Kind::Delegate && v.device.is_some() {
                    g.vfs_allocated += 1;
                }
            }
            (None, Some("DEL")) => g.addresses_released += addresses,
            _ => {}
        }
    });
    let mut groups: Vec<Group> = groups
        .into_values()
        .map(|mut a| {
            a.durations.sort_unstable();
            a.group.p50_us = percentile(&a.durations, 50);
            a.group.p99_us = percentile(&a.durations, 99);
            a.group
        })
        .collect();
    groups.sort_by(|a, b| (&a.network, &a.plugin).cmp(&(&b.network, &b.plugin)));
    let mut failing_pods: Vec<FailingPod> = failing
        .into_iter()
        .map(|(pod, failures)| FailingPod { pod, failures })
        .collect();
    failing_pods.sort_by(|a, b| b.failures.cmp(&a.failures).then(a.pod.cmp(&b.pod)));
    failing_pods.truncate(TOP_FAILING_PODS);
    let mut selections: Vec<SelectionSeen> = selections.into();
    selections.sort_by(|a, b| a.time.cmp(&b.time));
    Report {
        from,
        files: stats.files,
        lines_read: stats.lines,
        lines_skipped: stats.skipped,
        groups,
        pools: pools.into_values().collect(),
        failing_pods,
        selections_total,
        selections,
    }
}

fn codes(m: &BTreeMap<u32, u64>) -> String {
    m.iter()
        .map(|(c, n)| format!("{c}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn csv_field(s: &str) -> String {
    match s.contains([',', '"', '\n']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s.to_string(),
    }
}

impl Report {
    /// The report printed as `format` (CSV: the per-network table).
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => serde_json::to_string_pretty(self).unwrap_or_default() + "\n",
            Format::Csv => self.csv(),
            Format::Table => self.table(),
        }
    }

    fn csv(&self) -> String {
        let mut s = String::from("network,plugin,calls,failures,failuresByCode,p50Us,p99Us,addressesHandedOut,addressesReleased,vfsAllocated\n");
        for g in &self.groups {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{}",
                csv_field(&g.network),
                csv_field(&g.plugin),
                g.calls,
                g.failures,
                codes(&g.failures_by_code),
                opt(g.p50_us),
                opt(g.p99_us),
                g.addresses_handed_out,
                g.addresses_released,
                g.vfs_allocated
            );
        }
        s
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "audit report: {} lines in {} files ({} skipped){}",
            self.lines_read,
            self.files,
            self.lines_skipped,
            self.from
                .as_ref()
                .map_or(String::new(), |f| format!(", since {f}"))
        );
        let mut rows = vec![[
            "NETWORK", "PLUGIN", "CALLS", "FAILED", "BY CODE", "P50 US", "P99 US", "ADDR OUT",
            "ADDR IN", "VFS",
        ]
        .map(String::from)];
        for g in &self.groups {
            rows.push([
                g.network.clone(),
                g.plugin.clone(),
                g.calls.to_string(),
                g.failures.to_string(),
                codes(&g.failures_by_code),
                opt(g.p50_us),
                opt(g.p99_us),
                g.addresses_handed_out.to_string(),
                g.addresses_released.to_string(),
                g.vfs_allocated.to_string(),
            ]);
        }
        columns(&mut s, &rows);
        if !self.pools.is_empty() {
            s.push('\n');
            let mut rows = vec![[
                "POOL",
                "ALLOCATES",
                "VFS ALLOCATED",
                "VFS PROVISIONED",
                "HEALTH CHANGES",
            ]
            .map(String::from)];
            for p in &self.pools {
                rows.push([
                    p.pool.clone(),
                    p.allocates.to_string(),
                    p.vfs_allocated.to_string(),
                    p.vfs_provisioned.to_string(),
                    p.health_changes.to_string(),
                ]);
            }
            columns(&mut s, &rows);
        }
        if !self.failing_pods.is_empty() {
            s.push_str("\npods that failed most:\n");
            for p in &self.failing_pods {
                let _ = writeln!(s, "  {} {}", p.pod, p.failures);
            }
        }
        if self.selections_total > 0 {
            let _ = writeln!(s, "\nsmart selections: {}", self.selections_total);
            for x in &self.selections {
                let _ = writeln!(
                    s,
                    "  {} {} {}{} -> {}: {}",
                    x.time,
                    x.pod.as_deref().unwrap_or("-"),
                    x.group
                        .as_ref()
                        .map(|g| format!("{g} "))
                        .unwrap_or_default(),
                    x.strategy,
                    x.chosen,
                    x.reason
                );
            }
        }
        s
    }
}

fn columns<const N: usize>(s: &mut String, rows: &[[String; N]]) {
    let mut width = [0; N];
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn formats_and_pods_parse() {
        assert_eq!("csv".parse(), Ok(Format::Csv));
        assert!("xml".parse::<Format>().is_err());
        assert_eq!(Query::parse_pod("ns/p"), Ok(("ns".into(), "p".into())));
        for bad in ["ns", "/p", "ns/", "a/b/c"] {
            assert!(Query::parse_pod(bad).is_err(), "{bad}");
        }
    }
}

/// The longest query string [`parse_query`] takes.
pub const MAX_QUERY_LEN: usize = 1024;

/// `%XX` and `+` decoded; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A URL query (`since=1h&network=N&pod=NS%2FNAME&format=json`) as a report's [`Query`] and
/// [`Format`]: only those keys, each at most once, bounded in length, each value checked as the
/// CLI checks it.
pub fn parse_query(qs: &str) -> Result<(Query, Format), String> {
    if qs.len() > MAX_QUERY_LEN {
        return Err(format!("the query is longer than {MAX_QUERY_LEN} bytes"));
    }
    let mut query = Query::default();
    let mut format = None;
    let mut seen = Vec::new();
    for pair in qs.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| format!("{k}: not a valid URL-encoded value"))?;
        if seen.contains(&k) {
            return Err(format!("{k} is given twice"));
        }
        seen.push(k);
        match k {
            "since" => query.since = Some(crate::time::parse_since(&v)?),
            "network" if !v.is_empty() && v.len() <= 253 => query.network = Some(v),
            "network" => return Err("network must be 1 to 253 characters".into()),
            "pod" => query.pod = Some(Query::parse_pod(&v)?),
            "format" => format = Some(v.parse()?),
            _ => {
                return Err(format!(
                    "unknown parameter {k:?} (since, network, pod, format)"
                ))
            }
        }
    }
    Ok((query, format.unwrap_or(Format::Json)))
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn query_strings_parse_and_bad_ones_are_refused() {
        let (q, f) =
            parse_query("since=30m&network=net-a&pod=ns%2Fweb&format=csv").unwrap_or_default();
        assert_eq!(q.since, Some(Duration::from_secs(1800)));
        assert_eq!(q.network.as_deref(), Some("net-a"));
        assert_eq!(q.pod, Some(("ns".into(), "web".into())));
        assert_eq!(f, Format::Csv);
        assert_eq!(parse_query("").map(|(_, f)| f), Ok(Format::Json));
        for bad in [
            "since=1y",
            "since=1h&since=2h",
            "pod=web",
            "format=xml",
            "path=/etc/shadow",
            "network=%zz",
            "network=",
            &"network=".repeat(200),
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }
}
