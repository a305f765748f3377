//! What the policy engine knows about the cluster, as plain data.
//!
//! The watches (`watch.rs`) fill an [`Inputs`] from the API server and from genie's records on
//! this node; the compiler (`compile.rs`) turns it into one nftables table per network namespace.
//! Nothing here does I/O, so every rule decision can be tested on values.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::networking::v1::NetworkPolicySpec;
pub use vfkube::annotations::IpCidr;
pub use vfkube::policy::GeniePolicyRule;

pub type Labels = BTreeMap<String, String>;

/// A network a pod can attach to: a LogicalNetwork or a NetworkAttachmentDefinition, by
/// namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetworkKey {
    pub namespace: String,
    pub name: String,
}

impl NetworkKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a network's traffic between two pods goes, which decides where its network-level rules
/// are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficPath {
    /// Routed through this node (bridge, ptp and overlay plugins): the host's forward path sees
    /// it, so network-level rules go into the host's table.
    Host,
    /// Never crosses the host's stack (SR-IOV VFs, macvlan, ipvlan, host-device): network-level
    /// rules go into each attached pod's own namespace, on that interface.
    InPod,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub key: NetworkKey,
    /// The subnets the network hands out (a LogicalNetwork's `spec.subnet`, a NAD's IPAM
    /// ranges). A network without a known subnet cannot be told apart by address: network-level
    /// rules that name it match nothing by address (peers), and are reported.
    pub subnets: Vec<IpCidr>,
    pub path: TrafficPath,
}

/// One of a pod's interfaces on a secondary network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub network: NetworkKey,
    /// The name inside the pod (`net1`, `eth1`). Known before the interface exists, from the
    /// pod's network request, so a pod's table can be in place before its interfaces come up.
    pub ifname: String,
    /// Its addresses, once known (network-status, genie's record). Empty while the pod is being
    /// set up.
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub interfaces: Vec<Interface>,
    /// The pod's network namespace, for pods on this node (genie's record); `None` for pods on
    /// other nodes, which matter only as peers.
    pub netns: Option<PathBuf>,
}

/// A `networking.k8s.io/v1` NetworkPolicy's `genieNetworkpolicy` annotation, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeniePolicy {
    pub namespace: String,
    pub name: String,
    /// Network names are resolved in the policy's namespace.
    pub rules: Vec<GeniePolicyRule>,
}

/// A `k8s.cni.cncf.io` MultiNetworkPolicy (v1beta1 or v1beta2; the spec has the shape of a
/// NetworkPolicy's).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiPolicy {
    pub namespace: String,
    pub name: String,
    /// `k8s.v1.cni.cncf.io/policy-for`, resolved: a name without a namespace is in the policy's.
    pub policy_for: Vec<NetworkKey>,
    pub spec: NetworkPolicySpec,
}

/// Everything the compiler reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub networks: BTreeMap<NetworkKey, Network>,
    /// Namespace name to its labels (for namespaceSelector).
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: Vec<Pod>,
    pub genie: Vec<GeniePolicy>,
    pub multi: Vec<MultiPolicy>,
}
