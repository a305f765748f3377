//! The CNI meta-plugin (`"type": "genie"`): one invocation from the container runtime, many
//! delegates.
//!
//! - [`genie`]: ADD, DEL, CHECK, GC and STATUS: the plan of a pod's attachments, delegation,
//!   the record, network-status, quarantine; every module's typed error, and the one place they
//!   get CNI codes, in [`genie::error`].
//! - [`genieconf`]: the node's genie conf, and resolving a network to its CNI config.
//! - [`cache`]: crash-safe pod records for DEL and GC, per-attachment locks, quarantine.
//! - [`devices`]: the pod's device-plugin devices (kubelet PodResources or checkpoint) and NPWG
//!   device-info files.
//! - [`k8s`]: the hand-written Kubernetes client (see docs/architecture.md for why not kube's).
//! - [`install`]: `genie install`, the atomic copy of the binary into a CNI bin dir.

pub mod cache;
pub mod devices;
pub mod genie;
pub mod genieconf;
pub mod install;
pub mod k8s;

// The CNI protocol and exec, and the Kubernetes types, under the paths genie has always used.
pub(crate) use cnispec::{bounded, exec, invocation, spec, timing};
pub(crate) use vfkube::{annotations, netstatus};
