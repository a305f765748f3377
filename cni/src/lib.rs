//! The `genie` binary's library: the crates it is made of, under the paths its tests and tools use.
//!
//! - [`spec`], [`exec`], [`invocation`], [`nesting`], [`bounded`], [`timing`]: the CNI protocol and
//!   running plugins (crate `vfgenie-cni-spec`).
//! - [`sriov`]: the SR-IOV plugin (`"type": "sriov"`, sriov-cni's netconf; crate `vfgenie-sriov`).
//! - [`genie`], [`genieconf`], [`cache`], [`devices`], [`k8s`], [`install`]: the meta-plugin
//!   (crate `vfgenie-genie`).
//! - [`annotations`], [`netstatus`]: the Kubernetes side shared with the agent and the controller
//!   (crate `vfgenie-kube-types`).

pub use cnispec::{bounded, exec, invocation, nesting, spec, timing};
pub use vfkube::{annotations, netstatus};
pub use vfmeta::{cache, devices, genie, genieconf, install, k8s};
pub use vfsriov as sriov;
