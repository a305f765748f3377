//! Harnesses for the integration tests: stand-ins for what cannot run here (the kubelet), speaking
//! the real wire protocol over the real paths.

pub mod apiserver;
pub mod chaos;
pub mod fixtures;
pub mod kubelet;
pub mod podresources;
pub mod policynet;
pub mod poll;
pub mod runtime;
pub mod synth;
pub mod timings;
