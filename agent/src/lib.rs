//! The node agent: discovers SR-IOV NICs, provisions VFs and serves VF pools to the kubelet. The
//! binary in `main.rs` only parses arguments and calls in here.

/// The environment the agent is deployed with (the DaemonSet sets it; the benchmark runs the
/// agent with it). `MALLOC_ARENA_MAX=2`: glibc gives every thread that allocates an arena of its
/// own, and memory freed in one stays resident; the agent's threads (tokio workers, discovery,
/// event listeners) allocate little and rarely, so two arenas cost no contention and keep about
/// 2 MB off its resident size.
pub const DEPLOYED_ENV: &[(&str, &str)] = &[("MALLOC_ARENA_MAX", "2")];

pub mod allocate;
pub mod audit;
pub mod config;
pub mod events;
pub mod guard;
pub mod health;
pub mod hotplug;
pub mod http;
pub mod inventory;
pub mod kpi;
pub mod metrics;
pub mod plugin;
pub mod podres;
pub mod policy;
pub mod pool;
pub mod prefer;
pub mod reconcile;
pub mod run;
pub mod select;
pub mod serve;
pub mod state;
pub mod supervise;
#[cfg(test)]
mod testutil;
