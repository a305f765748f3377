//! The policy compiler: [`Inputs`](crate::policy::model::Inputs) in, one nftables table per
//! network namespace out.
//!
//! - `ranges`: interval arithmetic for the interval sets.

pub mod ranges;
