//! The Kubernetes side of vfgenie, one definition for every component (genie on the node, the
//! agent, the cluster controller), so that all of them accept and refuse exactly the same names
//! and objects. No I/O: types, parsing and validation only.
//!
//! - [`objects`]: the objects we read (Pod, NetworkAttachmentDefinition, LogicalNetwork), DNS
//!   label and subdomain rules.
//! - [`annotations`]: the pod's network annotations, NPWG and CNI-Genie styles.
//! - [`netstatus`]: what is written back on the pod (`k8s.v1.cni.cncf.io/network-status`).
//! - [`resource`]: device-plugin resource names (`<domain>/<name>`).
//! - [`untrusted`]: what a tenant's network config may not say.
//! - [`netconf`]: a NetworkAttachmentDefinition's `spec.config`, parsed and checked.
//! - [`logical`]: LogicalNetworks: own fields, subnet inside the plugin's range, overlap.
//! - [`isolation`]: namespace isolation of NetworkAttachmentDefinitions.
//! - [`interfaces`]: interface names requested twice.
//! - [`kpi`]: node network KPIs (the agent's file) and the smart selection made from them.
//! - [`policy`]: `genieNetworkpolicy` and MultiNetworkPolicy's `policy-for`.

pub mod annotations;
pub mod interfaces;
pub mod isolation;
pub mod kpi;
pub mod logical;
pub mod netconf;
pub mod netstatus;
pub mod objects;
pub mod policy;
pub mod resource;
pub mod untrusted;
