//! The agent's audit log ([`vfaudit`]): its events (VFs provisioned, Allocates, health changes,
//! policy reconciles) as one JSON line each, and the reports over its log and genie's, for
//! `vfgenie-agent report` and `GET /report`.
//!
//! The writer is set once at start ([`init`]; `vfgenie-agent run --audit-log`); events recorded
//! before or without it go nowhere. A line is one small `write(2)` on a local file, done in place
//! (no task) from the code that sees the event. A write that fails is logged and counted
//! (`vfgenie_audit_write_failures_total`), never returned.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use vfaudit::{Event, Record, Writer};

static WRITER: OnceLock<Writer> = OnceLock::new();

/// Where the agent's events go, from now on (the first call wins).
pub fn init(config: vfaudit::AuditConfig) {
    let _ = WRITER.set(Writer::new(config));
}

/// Records `event` with `fill`'s fields, when there is a log.
pub fn record(event: Event, fill: impl FnOnce(&mut Record)) {
    if let Some(w) = WRITER.get() {
        let mut r = Record::event(event);
        fill(&mut r);
        w.write(&r);
    }
}

/// The logs a report reads unless told otherwise: genie's and the agent's.
pub fn default_logs() -> Vec<PathBuf> {
    vec![
        PathBuf::from(vfaudit::DEFAULT_CNI_LOG),
        PathBuf::from(vfaudit::DEFAULT_AGENT_LOG),
    ]
}

/// One report at a time over HTTP (a report of a full log set reads up to ~100 MB).
static REPORT_RUNNING: AtomicBool = AtomicBool::new(false);

/// Why `/report` gave no report.
#[derive(Debug, PartialEq, Eq)]
pub enum ReportRefusal {
    /// The query is invalid (400).
    BadQuery(String),
    /// Another report is being made (429).
    Busy,
}

/// The report of `logs` for the URL query `qs`, rendered; made on the calling thread (the HTTP
/// server calls it from a blocking task).
pub fn report_for_query(
    qs: &str,
    logs: &[PathBuf],
) -> Result<(String, vfaudit::Format), ReportRefusal> {
    let (query, format) = vfaudit::report::parse_query(qs).map_err(ReportRefusal::BadQuery)?;
    if REPORT_RUNNING.swap(true, Ordering::AcqRel) {
        return Err(ReportRefusal::Busy);
    }
    let report = vfaudit::report::report(logs, &query, std::time::SystemTime::now());
    REPORT_RUNNING.store(false, Ordering::Release);
    Ok((report.render(format), format))
}
