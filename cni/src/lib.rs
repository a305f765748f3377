//! The CNI meta-plugin (`"type": "genie"`) and the SR-IOV plugin (`"type": "sriov"`).
//!
//! - [`spec`]: the CNI protocol as types: versions, errors, the environment, network configs and
//!   results of every version with conversions between them.
//! - [`exec`]: finding and running delegate plugins.
//! - [`cache`]: crash-safe per-attachment and per-pod records for DEL and GC.
//! - [`devices`]: the pod's device-plugin devices (kubelet PodResources or checkpoint) and NPWG
//!   device-info files.
//! - [`invocation`]: one run of either plugin: the reply or the error JSON, and its timing.
//! - [`nesting`]: who exec'd this process; delegates never run genie again.
//! - [`install`]: `genie install`, the atomic copy of the binary into a CNI bin dir.
//! - [`k8s`], [`annotations`], [`genieconf`], [`netstatus`]: the Kubernetes side: the API client,
//!   the pod's network annotations, the node's genie conf, and what is written back on the pod.
//! - [`sriov`]: the SR-IOV plugin (`"type": "sriov"`, sriov-cni's netconf), the same binary.

pub use vfkube::annotations;
pub mod bounded;
pub mod cache;
pub mod devices;
pub mod exec;
pub mod genie;
pub mod genieconf;
pub mod install;
pub mod invocation;
pub mod k8s;
pub mod nesting;
pub use vfkube::netstatus;
pub mod spec;
pub mod sriov;
pub mod timing;
