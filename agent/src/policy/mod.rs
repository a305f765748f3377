//! The network policy engine: CNI-Genie's `genieNetworkpolicy` (which logical networks may talk
//! to which) and NPWG MultiNetworkPolicy (pod level on secondary networks), enforced with
//! nftables on this node.
//!
//! - `model`: what the engine knows, as plain data.
//! - `compile`: the model to one nftables table per network namespace.
//! - `ruleset`: the nftables table as data, and its JSON rendering.
//! - `nft`: applying, listing and removing one nftables table in a network namespace.
//! - `engine`: keeps every namespace's table as compiled, applying only what changed.
//! - `protocol`, `socket`: genie asks the agent for a new pod's table before creating its
//!   interfaces (see `socket`'s documentation).

pub mod compile;
pub mod engine;
pub mod model;
pub mod nft;
pub mod protocol;
pub mod ruleset;
pub mod socket;
