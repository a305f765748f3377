//! The policy engine's counters, served in the agent's `/metrics` ([`crate::metrics`]) once the
//! engine runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug)]
pub struct PolicyCounters {
    enabled: AtomicBool,
    /// Policies (or parts) that could not be enforced as written: unparsable objects kept at
    /// their last good version, and compile problems.
    pub problems: AtomicU64,
    /// Tables replaced.
    pub applied: AtomicU64,
    /// Table replacements that failed (retried by the next reconcile).
    pub failures: AtomicU64,
    pub reconciles: AtomicU64,
}

impl PolicyCounters {
    pub const fn new() -> Self {
        Self {
            enabled: AtomicBool::new(false),
            problems: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            reconciles: AtomicU64::new(0),
        }
    }

    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

impl Default for PolicyCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// The agent's (one per process).
pub static COUNTERS: PolicyCounters = PolicyCounters::new();
