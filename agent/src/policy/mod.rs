//! The network policy engine: CNI-Genie's `genieNetworkpolicy` (which logical networks may talk
//! to which) and NPWG MultiNetworkPolicy (pod level on secondary networks), enforced with
//! nftables on this node.
//!
//! - `model`: what the engine knows, as plain data.

pub mod model;
