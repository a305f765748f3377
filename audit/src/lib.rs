//! The node's audit log: one JSON line per CNI call genie handles, per delegate it runs, and per
//! event of the node agent ([`Record`]); written with one `write(2)` per line on an `O_APPEND`
//! file, rotated by size ([`Writer`]); read back over the rotated set ([`Reader`]) into reports
//! ([`report`]).
//!
//! A write failure never fails the caller: it is logged (a warning naming the file) and counted
//! ([`write_failures`]).

pub mod reader;
pub mod record;
pub mod report;
pub mod time;
pub mod writer;

pub use reader::{ReadStats, Reader};
pub use record::{
    Candidate, ErrorInfo, Event, Kind, PodRef, Record, ResultInfo, Selection, Source,
};
pub use report::{Format, Query, Report};
pub use writer::{write_failures, AuditConfig, Writer};

/// The directory of the node's audit logs (on the host).
pub const LOG_DIR: &str = "/var/log/vfgenie";
/// genie's log, unless its conf's `auditLog` says otherwise.
pub const DEFAULT_CNI_LOG: &str = "/var/log/vfgenie/cni-audit.log";
/// The agent's log, unless `--audit-log` says otherwise.
pub const DEFAULT_AGENT_LOG: &str = "/var/log/vfgenie/agent-audit.log";
