//! What the agent publishes about itself after every reconcile or health refresh: the pools, the
//! conditions that keep the node from its configured state, and counters. The device-plugin servers,
//! `/metrics`, `/healthz` and the inventory read it; only the reconciler writes it.

use serde::Serialize;

use crate::pool::Pool;

/// Something that keeps the node from the configured state, retried later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// The object concerned: a PF or VF PCI address, a pool, or the config file.
    pub object: String,
    /// A short CamelCase reason, e.g. `VfsInUse`, `ProvisioningFailed`, `ConfigInvalid`.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// The pools served, in config order.
    pub pools: Vec<Pool>,
    pub conditions: Vec<Condition>,
    /// Completed reconciles since start.
    pub reconciles: u64,
    /// Provisioning or binding operations that failed since start.
    pub provisioning_errors: u64,
    /// VF count changes and driver rebinds refused since start because a VF was or may have been
    /// in use (each retry that is refused again counts again).
    pub refused_changes: u64,
    /// Config reloads refused as invalid since start (the last good config stays in force).
    pub config_errors: u64,
    /// The first reconcile has completed (`/healthz` reports not ready before).
    pub ready: bool,
    /// Records the CNI plugins of this node moved aside because they could not read or act on
    /// them (genie's and the sriov plugin's `quarantine/`), by component.
    pub quarantined: Vec<(String, u64)>,
    /// Times each served pool's device-plugin server was restarted after it failed, by resource
    /// name.
    pub pool_server_restarts: Vec<(String, u64)>,
}

impl Snapshot {
    /// Devices in a pool.
    pub fn capacity(pool: &Pool) -> usize {
        pool.devices.len()
    }

    /// Devices the kubelet may hand out (healthy ones).
    pub fn allocatable(pool: &Pool) -> usize {
        pool.devices.values().filter(|d| d.healthy).count()
    }
}
