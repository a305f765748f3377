//! The node agent: discovers SR-IOV NICs, provisions VFs and serves VF pools to the kubelet. The
//! binary in `main.rs` only parses arguments and calls in here.

pub mod allocate;
pub mod config;
pub mod events;
pub mod guard;
pub mod health;
pub mod http;
pub mod inventory;
pub mod metrics;
pub mod plugin;
pub mod podres;
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
