//! The network policy engine: CNI-Genie's `genieNetworkpolicy` (which logical networks may talk
//! to which) and NPWG MultiNetworkPolicy (pod level on secondary networks), enforced with
//! nftables on this node.
//!
//! - `model`: what the engine knows, as plain data.
//! - `watch`: the Kubernetes watches (and genie's records on this node) that fill the model.
//! - `compile`: the model to one nftables table per network namespace.
//! - `ruleset`: the nftables table as data, and its JSON rendering.
//! - `nft`: applying, listing and removing one nftables table in a network namespace.

pub mod compile;
pub mod model;
pub mod nft;
pub mod ruleset;
pub mod watch;
