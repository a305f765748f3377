//! The network policy engine: CNI-Genie's `genieNetworkpolicy` (which logical networks may talk
//! to which) and NPWG MultiNetworkPolicy (pod level on secondary networks), enforced with
//! nftables on this node.
//!
//! - `model`: what the engine knows, as plain data.
//! - `watch`: the Kubernetes side: reflectors and genie's records that fill the model, and the
//!   reports of policies that cannot be enforced as written.

pub mod model;
pub mod watch;
