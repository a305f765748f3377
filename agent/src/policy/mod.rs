//! The network policy engine: CNI-Genie's `genieNetworkpolicy` (which logical networks may talk
//! to which) and NPWG MultiNetworkPolicy (pod level on secondary networks), enforced with
//! nftables on this node.
//!
//! - `model`: what the engine knows, as plain data.
//! - `nft`: applying, listing and removing one nftables table in a network namespace.

pub mod model;
pub mod nft;
