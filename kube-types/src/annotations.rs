//! Pod annotations that select networks.
//!
//! - NPWG `k8s.v1.cni.cncf.io/networks`: JSON (a list of selection elements) when the value contains
//!   `[`, `{` or `"`; otherwise a comma list of `[namespace/]name[@ifname]`.
//! - Multus `v1.multus-cni.io/default-network`: one network that replaces the cluster default.
//! - CNI-Genie `cni`: `plugin[@ifname]` comma list; empty or absent means the default plugins.
//! - CNI-Genie `networks`: LogicalNetwork names, `name[@ifname]` comma list.
//!
//! Every value is validated here, so that nothing later builds a path or a link name from an
//! unchecked string; every error names the pod, the annotation and the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vfcore::{IfName, MacAddr};

use crate::objects::is_dns_label;

pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
pub const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
pub const GENIE_CNI: &str = "cni";
pub const GENIE_NETWORKS: &str = "networks";
pub const GENIE_MULTI_IP_PREFERENCES: &str = "multi-ip-preferences";

/// A pod, as errors name it: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl PodRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An invalid annotation value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {pod}: annotation {annotation} is invalid: {problem}")]
pub struct AnnotationError {
    pub pod: PodRef,
    pub annotation: String,
    pub problem: String,
}

/// An address with its prefix length, as `10.1.1.5/24` or `fd00::5/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for IpCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an address with a prefix length (CIDR)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} does not start with an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?;
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A port mapping requested for an attachment (capability `portMappings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// Bandwidth limits for an attachment (capability `bandwidth`), in bits per second and bits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// One NPWG network selection element, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkSelection {
    pub name: String,
    /// `None` means the pod's namespace.
    pub namespace: Option<String>,
    pub interface: Option<IfName>,
    pub ips: Vec<IpCidr>,
    pub mac: Option<MacAddr>,
    pub infiniband_guid: Option<String>,
    /// Gateways for which this attachment carries the default route.
    pub default_route: Vec<IpAddr>,
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
    pub device_id: Option<String>,
    /// Merged into the delegate's `args.cni`.
    pub cni_args: Option<serde_json::Map<String, serde_json::Value>>,
    pub ipam_claim_reference: Option<String>,
}

impl NetworkSelection {
    /// The namespace of the NetworkAttachmentDefinition: the explicit one or the pod's.
    pub fn namespace_or<'a>(&'a self, pod_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(pod_namespace)
    }
}

/// The JSON form of a selection element, before validation.
#[derive(Deserialize)]
struct RawSelection {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default, rename = "interfaceRequest")]
    interface_request: Option<String>,
    #[serde(default)]
    ips: Option<Vec<String>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default, rename = "infiniband-guid")]
    infiniband_guid: Option<String>,
    #[serde(default, rename = "default-route")]
    default_route: Option<Vec<String>>,
    #[serde(default, rename = "portMappings")]
    port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    bandwidth: Option<Bandwidth>,
    #[serde(default, rename = "deviceID")]
    device_id: Option<String>,
    #[serde(default, rename = "cni-args")]
    cni_args: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, rename = "ipam-claim-reference")]
    ipam_claim_reference: Option<String>,
}

/// One CNI-Genie plugin request (`cni: "flannel@eth1"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeniePlugin {
    pub plugin: String,
    pub interface: Option<IfName>,
}

/// One CNI-Genie LogicalNetwork request (`networks: "net1@eth1"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalNetworkRef {
    pub name: String,
    pub interface: Option<IfName>,
}

/// Everything a pod's annotations ask for, validated. Which source wins is the caller's decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNetworkRequest {
    /// `v1.multus-cni.io/default-network`, replacing the cluster default network.
    pub default_network: Option<NetworkSelection>,
    /// `k8s.v1.cni.cncf.io/networks`, in order.
    pub networks: Vec<NetworkSelection>,
    /// `cni`: `None` when absent or empty (the genie default plugins apply).
    pub genie_plugins: Option<Vec<GeniePlugin>>,
    /// `networks`: CNI-Genie LogicalNetworks, in order.
    pub logical_networks: Vec<LogicalNetworkRef>,
}

impl PodNetworkRequest {
    /// True when the pod asks for nothing beyond the cluster default (CNI-Genie: use defaults).
    pub fn is_empty(&self) -> bool {
        self.default_network.is_none()
            && self.networks.is_empty()
            && self.genie_plugins.is_none()
            && self.logical_networks.is_empty()
    }
}

/// Parses every network annotation of a pod.
pub fn parse_pod_annotations(
    pod: &PodRef,
    annotations: &BTreeMap<String, String>,
) -> Result<PodNetworkRequest, AnnotationError> {
    let mut req = PodNetworkRequest::default();
    if let Some(v) = annotations.get(NETWORKS) {
        req.networks = parse_networks(pod, NETWORKS, v)?;
    }
    if let Some(v) = annotations.get(DEFAULT_NETWORK) {
        req.default_network = parse_default_network(pod, v)?;
    }
    if let Some(v) = annotations.get(GENIE_CNI) {
        req.genie_plugins = parse_genie_cni(pod, v)?;
    }
    if let Some(v) = annotations.get(GENIE_NETWORKS) {
        req.logical_networks = parse_genie_networks(pod, v)?;
    }
    Ok(req)
}

struct Ctx<'a> {
    pod: &'a PodRef,
    annotation: &'a str,
}

impl Ctx<'_> {
    fn err(&self, problem: impl Into<String>) -> AnnotationError {
        AnnotationError {
            pod: self.pod.clone(),
            annotation: self.annotation.to_string(),
            problem: problem.into(),
        }
    }

    fn name(&self, what: &str, s: &str) -> Result<String, AnnotationError> {
        if is_dns_label(s) {
            Ok(s.to_string())
        } else {
            Err(self.err(format!(
                "{what} {s:?} is not a valid name (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63)"
            )))
        }
    }

    fn ifname(&self, s: &str) -> Result<IfName, AnnotationError> {
        IfName::new(s).map_err(|e| self.err(format!("interface name: {e}")))
    }
}

/// Parses an NPWG networks value (either form). `annotation` names it in errors.
pub fn parse_networks(
    pod: &PodRef,
    annotation: &str,
    value: &str,
) -> Result<Vec<NetworkSelection>, AnnotationError> {
    let ctx = Ctx { pod, annotation };
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    if value.contains(['[', '{', '"']) {
        let raws: Vec<RawSelection> = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(serde_json::Value::Array(_)) => serde_json::from_str(value),
            Ok(serde_json::Value::Object(_)) => {
                serde_json::from_str::<RawSelection>(value).map(|r| vec![r])
            }
            Ok(_) => {
                return Err(ctx.err("JSON must be a list of network selection elements"));
            }
            Err(e) => Err(e),
        }
        .map_err(|e| ctx.err(format!("not valid JSON network selection elements: {e}")))?;
        raws.into_iter().map(|r| validate_raw(&ctx, r)).collect()
    } else {
        value
            .split(',')
            .map(|item| parse_short(&ctx, item.trim()))
            .collect()
    }
}

/// `[namespace/]name[@ifname]`.
fn parse_short(ctx: &Ctx<'_>, item: &str) -> Result<NetworkSelection, AnnotationError> {
    if item.is_empty() {
        return Err(ctx.err("an element of the list is empty"));
    }
    let (path, interface) = match item.split_once('@') {
        Some((p, i)) => (p, Some(ctx.ifname(i)?)),
        None => (item, None),
    };
    let (namespace, name) = match path.split_once('/') {
        Some((ns, name)) => {
            if name.contains('/') {
                return Err(ctx.err(format!("{item:?} has more than one '/'")));
            }
            (Some(ctx.name("namespace", ns)?), name)
        }
        None => (None, path),
    };
    Ok(NetworkSelection {
        name: ctx.name("network name", name)?,
        namespace,
        interface,
        ..NetworkSelection::default()
    })
}

fn validate_raw(ctx: &Ctx<'_>, r: RawSelection) -> Result<NetworkSelection, AnnotationError> {
    let name = ctx.name("network name", &r.name)?;
    let namespace = match r.namespace.filter(|n| !n.is_empty()) {
        Some(ns) => Some(ctx.name("namespace", &ns)?),
        None => None,
    };
    let interface = match (
        r.interface.filter(|i| !i.is_empty()),
        r.interface_request.filter(|i| !i.is_empty()),
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(ctx.err(format!(
                "network {name:?} sets interface {a:?} and interfaceRequest {b:?}"
            )))
        }
        (Some(i), _) | (None, Some(i)) => Some(ctx.ifname(&i)?),
        (None, None) => None,
    };
    let ips = r
        .ips
        .unwrap_or_default()
        .iter()
        .map(|ip| {
            ip.parse::<IpCidr>()
                .map_err(|p| ctx.err(format!("network {name:?}: ips: {p}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mac = match r.mac.filter(|m| !m.is_empty()) {
        Some(m) => {
            let mac: MacAddr = m.parse().map_err(|_| {
                ctx.err(format!("network {name:?}: mac {m:?} is not a MAC address"))
            })?;
            if !mac.is_valid_unicast() {
                return Err(ctx.err(format!(
                    "network {name:?}: mac {m:?} is not a unicast address"
                )));
            }
            Some(mac)
        }
        None => None,
    };
    let infiniband_guid = match r.infiniband_guid.filter(|g| !g.is_empty()) {
        Some(g) => {
            if !is_guid(&g) {
                return Err(ctx.err(format!(
                    "network {name:?}: infiniband-guid {g:?} is not eight ':'-separated hex bytes"
                )));
            }
            Some(g)
        }
        None => None,
    };
    let default_route = r
        .default_route
        .unwrap_or_default()
        .iter()
        .map(|gw| {
            gw.parse::<IpAddr>().map_err(|_| {
                ctx.err(format!(
                    "network {name:?}: default-route gateway {gw:?} is not an IP address"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let device_id = match r.device_id.filter(|d| !d.is_empty()) {
        Some(d) => {
            if !d
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'-' | b'_'))
            {
                return Err(ctx.err(format!(
                    "network {name:?}: deviceID {d:?} has characters other than letters, digits, ':', '.', '-', '_'"
                )));
            }
            Some(d)
        }
        None => None,
    };
    if let Some(args) = &r.cni_args {
        crate::untrusted::check_cni_args(args)
            .map_err(|e| ctx.err(format!("network {name:?}: {e}")))?;
    }
    let cni_args = r.cni_args;
    let ipam_claim_reference = match r.ipam_claim_reference.filter(|c| !c.is_empty()) {
        Some(c) => Some(ctx.name("ipam-claim-reference", &c)?),
        None => None,
    };
    Ok(NetworkSelection {
        name,
        namespace,
        interface,
        ips,
        mac,
        infiniband_guid,
        default_route,
        port_mappings: r.port_mappings.unwrap_or_default(),
        bandwidth: r.bandwidth,
        device_id,
        cni_args,
        ipam_claim_reference,
    })
}

fn is_guid(g: &str) -> bool {
    let parts: Vec<&str> = g.split(':').collect();
    parts.len() == 8
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// `v1.multus-cni.io/default-network`: exactly one network, either form; empty means none.
pub fn parse_default_network(
    pod: &PodRef,
    value: &str,
) -> Result<Option<NetworkSelection>, AnnotationError> {
    let mut list = parse_networks(pod, DEFAULT_NETWORK, value)?;
    match list.len() {
        0 => Ok(None),
        1 => Ok(list.pop()),
        n => Err(Ctx {
            pod,
            annotation: DEFAULT_NETWORK,
        }
        .err(format!("it names {n} networks; exactly one is allowed"))),
    }
}

/// A CNI plugin name as CNI-Genie's `cni` annotation carries it: a plain file name.
pub fn is_plugin_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// CNI-Genie `cni`: `None` when empty (defaults), else the plugins in order (repeats allowed).
pub fn parse_genie_cni(
    pod: &PodRef,
    value: &str,
) -> Result<Option<Vec<GeniePlugin>>, AnnotationError> {
    let ctx = Ctx {
        pod,
        annotation: GENIE_CNI,
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                return Err(ctx.err("an element of the list is empty"));
            }
            let (plugin, interface) = match item.split_once('@') {
                Some((p, i)) => (p, Some(ctx.ifname(i)?)),
                None => (item, None),
            };
            if !is_plugin_name(plugin) {
                return Err(ctx.err(format!(
                    "plugin {plugin:?} is not a plain plugin name (letters, digits, '-', '_', '.'; not '.' or '..')"
                )));
            }
            Ok(GeniePlugin {
                plugin: plugin.to_string(),
                interface,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// CNI-Genie `networks`: LogicalNetwork names with optional interface names.
pub fn parse_genie_networks(
    pod: &PodRef,
    value: &str,
) -> Result<Vec<LogicalNetworkRef>, AnnotationError> {
    let ctx = Ctx {
        pod,
        annotation: GENIE_NETWORKS,
    };
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                return Err(ctx.err("an element of the list is empty"));
            }
            let (name, interface) = match item.split_once('@') {
                Some((n, i)) => (n, Some(ctx.ifname(i)?)),
                None => (item, None),
            };
            Ok(LogicalNetworkRef {
                name: ctx.name("logical network", name)?,
                interface,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "annotations_tests.rs"]
mod tests;
