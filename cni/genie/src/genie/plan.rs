//! Which networks a pod gets, on which interfaces, with which configs.
//!
//! The first attachment is the pod's default network, on `CNI_IFNAME`:
//! - the pod's `v1.multus-cni.io/default-network` when set, else the conf's `clusterNetwork` (a conf
//!   file path, a conf name in `confDir`, or a NetworkAttachmentDefinition `[namespace/]name`,
//!   `kube-system` by default), else the first of the conf's `delegates`;
//! - without any of those (CNI-Genie style), the first plugin of the pod's `cni:` annotation, else
//!   of its `networks:` LogicalNetworks, else of the conf's `default_plugin`, else the conf's
//!   `smartSelection` picks one of its candidates from the node's KPIs.
//!
//! Then, in order: the conf's `defaultNetworks` (outside `systemNamespaces`), the NPWG
//! `k8s.v1.cni.cncf.io/networks` (interfaces `net1`, `net2`, ... unless requested), and the rest of
//! the CNI-Genie plugins or LogicalNetworks (`eth1`, `eth2`, ... unless requested). Two attachments
//! on one interface name are refused.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{Map, Value};
use vfkube::kpi::{Selection, SELECT_FROM};

use self::groups::smart_select;

use super::delegate::Injected;
use crate::annotations::{GeniePlugin, LogicalNetworkRef, NetworkSelection, PodNetworkRequest};
use crate::devices::Assigned;
use crate::genieconf::{
    apply_logical_network, find_conf_file, find_plugin_conf, resolve_nad_config, AgentConfigError,
    GenieConf, IsolationError, LogicalNetworkError, ResolveError, ResolvedConfig, SriovConf, SRIOV,
};
use crate::k8s::objects::RESOURCE_NAME_ANNOTATION;

pub use super::reads::KubeReads;

/// Why a pod's attachments could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The message is the one the admission controller gives for the same pod.
    #[error(transparent)]
    InterfaceTwice(vfkube::interfaces::InterfaceClash),
    #[error("{what} needs the Kubernetes API, but {pod} has no pod identity in CNI_ARGS")]
    NoApi { what: String, pod: String },
    #[error(transparent)]
    Isolation(#[from] IsolationError),
    /// Reading `what` (a NetworkAttachmentDefinition, a LogicalNetwork) from the API failed.
    #[error("{pod} asks for {what}")]
    Api {
        pod: String,
        what: String,
        #[source]
        source: Box<crate::k8s::Error>,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{pod} asks for {what}, whose {RESOURCE_NAME_ANNOTATION} is refused: {problem}")]
    ResourceName {
        pod: String,
        what: String,
        problem: String,
    },
    #[error("{pod} asks for {what}, a selectable group that is refused: {problem}")]
    Group {
        pod: String,
        what: String,
        problem: String,
    },
    #[error("{pod} asks for plugin \"sriov\"")]
    Sriov {
        pod: String,
        #[source]
        source: AgentConfigError,
    },
    #[error("{pod} asks for plugin \"sriov\", but the agent config {} has no pools", .agent_config.display())]
    NoPools { pod: String, agent_config: PathBuf },
    #[error("{pod} asks for plugin {plugin:?}, but no config in {} has that name or type", .conf_dir.display())]
    NoPluginConf {
        pod: String,
        plugin: String,
        conf_dir: PathBuf,
    },
    #[error("{what} uses plugin {plugin:?}, which has no config in {}", .conf_dir.display())]
    NoLogicalNetworkConf {
        what: String,
        plugin: String,
        conf_dir: PathBuf,
    },
    #[error(transparent)]
    LogicalNetwork(#[from] LogicalNetworkError),
    #[error("clusterNetwork {spec}")]
    ClusterNetworkRead {
        spec: String,
        #[source]
        source: std::io::Error,
    },
    #[error("clusterNetwork {spec}")]
    ClusterNetworkJson {
        spec: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{pod} has no default network: set clusterNetwork, delegates or default_plugin in the genie conf, or annotate the pod with cni")]
    NoDefault { pod: String },
}

/// The namespace a `clusterNetwork` or `defaultNetworks` NAD name without one lives in.
pub const DEFAULT_NAD_NAMESPACE: &str = "kube-system";

/// One planned attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Its name in network-status: `namespace/name` for a NAD, else the network's name.
    pub network: String,
    pub ifname: String,
    /// The network's config (a conf or a conflist object).
    pub config: Value,
    pub injected: Injected,
    /// This attachment is the pod's default network.
    pub default: bool,
    /// Gateways through which this attachment should carry the default route (NPWG).
    pub default_route: Vec<IpAddr>,
    /// The device-plugin resources one of whose devices the attachment needs (the NAD's
    /// `k8s.v1.cni.cncf.io/resourceName`, or the agent's pools for CNI-Genie's `sriov`); empty
    /// for an attachment without a device.
    pub resources: Vec<String>,
    /// The device it got (after [`crate::devices::assign`]).
    pub device: Option<Assigned>,
    /// Its NPWG device-info file (`<deviceInfoDir>/cni/...`), when it has a device or one of its
    /// plugins declares `CNIDeviceInfoFile`.
    pub device_info_file: Option<PathBuf>,
}

/// A network's status name, config, and the resources it takes a device from.
struct Network {
    name: String,
    config: Value,
    resources: Vec<String>,
}

impl Network {
    fn new(name: String, config: Value) -> Self {
        Self {
            name,
            config,
            resources: Vec::new(),
        }
    }
}

/// A CNI-Genie entry: the interface it asks for, and its network (or why there is none).
type GenieEntry = (Option<String>, Result<Network, PlanError>);

/// A secondary attachment before its interface name is settled.
struct Secondary {
    network: Network,
    injected: Injected,
    want: Option<String>,
    default_route: Vec<IpAddr>,
}

/// The pod the plan is for, with what its annotations ask.
pub struct PodContext<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub request: &'a PodNetworkRequest,
    /// The pod's [`vfkube::kpi::SWITCH_TO`]: the group member it asks to be moved to, and
    /// [`vfkube::kpi::SWITCH_REASON`], why.
    pub switch_to: Option<&'a str>,
    pub switch_reason: Option<&'a str>,
}

fn resolved_name(r: &ResolvedConfig, fallback: &str) -> String {
    r.name().unwrap_or(fallback).to_string()
}

struct Planner<'a> {
    conf: &'a GenieConf,
    client: Option<&'a dyn KubeReads>,
    pod: Option<&'a PodContext<'a>>,
    out: Vec<Planned>,
    used: BTreeSet<String>,
    smart: Option<Selection>,
    /// The selections made for selectable groups the pod asked for, in plan order.
    groups: std::cell::RefCell<Vec<Selection>>,
}

impl Planner<'_> {
    fn pod_label(&self) -> String {
        self.pod
            .map(|p| format!("pod {}/{}", p.namespace, p.name))
            .unwrap_or_else(|| "the container".into())
    }

    fn api_error(&self, what: &str, source: crate::k8s::Error) -> PlanError {
        PlanError::Api {
            pod: self.pod_label(),
            what: what.to_string(),
            source: Box::new(source),
        }
    }

    fn push(&mut self, mut p: Planned) -> Result<(), PlanError> {
        if !self.used.insert(p.ifname.clone()) {
            return Err(PlanError::InterfaceTwice(
                vfkube::interfaces::InterfaceClash {
                    subject: self.pod_label(),
                    ifname: p.ifname,
                    network: p.network,
                },
            ));
        }
        if let Value::Object(m) = &mut p.config {
            if !m.contains_key("name") {
                m.insert("name".into(), Value::String(p.network.replace('/', "-")));
            }
        }
        self.out.push(p);
        Ok(())
    }

    fn client(&self, what: &str) -> Result<&dyn KubeReads, PlanError> {
        self.client.ok_or_else(|| PlanError::NoApi {
            what: what.to_string(),
            pod: self.pod_label(),
        })
    }

    /// A NAD the pod asked for: namespace isolation applies.
    fn pod_nad(&self, namespace: &str, name: &str) -> Result<Network, PlanError> {
        if let Some(p) = self.pod {
            self.conf
                .check_isolation(p.namespace, p.name, namespace, name)?;
        }
        let what = format!("NetworkAttachmentDefinition {namespace}/{name}");
        let nad = self.fetch_nad(namespace, name)?;
        match self.group_member(namespace, name, &what, &nad.metadata.annotations)? {
            Some(member) => {
                let m = self.fetch_nad(namespace, &member)?;
                if m.metadata.annotations.contains_key(SELECT_FROM) {
                    return Err(self.group_error(
                        &what,
                        format!("its member {namespace}/{member} is a group too"),
                    ));
                }
                self.nad_network(namespace, &member, &m)
            }
            None => self.nad_network(namespace, name, &nad),
        }
    }

    /// A NAD, whoever named it: the node's conf (`clusterNetwork`, `defaultNetworks`, which
    /// isolation does not restrict) or the pod ([`Self::pod_nad`]).
    fn nad(&self, namespace: &str, name: &str) -> Result<Network, PlanError> {
        let nad = self.fetch_nad(namespace, name)?;
        self.nad_network(namespace, name, &nad)
    }

    fn fetch_nad(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<vfkube::objects::NetworkAttachmentDefinition, PlanError> {
        let what = format!("NetworkAttachmentDefinition {namespace}/{name}");
        let client = self.client(&what)?;
        crate::timing::timed("api", || client.nad(namespace, name))
            .map_err(|source| self.api_error(&what, source))
    }

    /// The network of a fetched NAD.
    fn nad_network(
        &self,
        namespace: &str,
        name: &str,
        nad: &vfkube::objects::NetworkAttachmentDefinition,
    ) -> Result<Network, PlanError> {
        let what = format!("NetworkAttachmentDefinition {namespace}/{name}");
        let resolved = resolve_nad_config(nad, &self.conf.conf_dir, &self.conf.tenant_paths)?;
        let resources = match nad.resource_name() {
            Some(r) => {
                crate::devices::validate_resource_name(r).map_err(|problem| {
                    PlanError::ResourceName {
                        pod: self.pod_label(),
                        what: what.clone(),
                        problem,
                    }
                })?;
                vec![r.to_string()]
            }
            None => Vec::new(),
        };
        Ok(Network {
            name: format!("{namespace}/{name}"),
            config: Value::Object(resolved.config),
            resources,
        })
    }

    /// CNI-Genie's `sriov` with the genie conf's `sriov` key: an sriov netconf on the agent's pools.
    fn genie_sriov(&self, sriov: &SriovConf) -> Result<Network, PlanError> {
        let pools = sriov.pools().map_err(|source| PlanError::Sriov {
            pod: self.pod_label(),
            source,
        })?;
        if pools.is_empty() {
            return Err(PlanError::NoPools {
                pod: self.pod_label(),
                agent_config: sriov.agent_config.clone(),
            });
        }
        let version = self.conf.cni_version.as_deref().unwrap_or("1.0.0");
        Ok(Network {
            name: SRIOV.to_string(),
            config: sriov.netconf(version),
            resources: pools,
        })
    }

    fn plugin(&self, plugin: &str) -> Result<Network, PlanError> {
        if let (SRIOV, Some(sriov)) = (plugin, &self.conf.sriov) {
            return self.genie_sriov(sriov);
        }
        let r = find_plugin_conf(&self.conf.conf_dir, plugin)?.ok_or_else(|| {
            PlanError::NoPluginConf {
                pod: self.pod_label(),
                plugin: plugin.to_string(),
                conf_dir: self.conf.conf_dir.clone(),
            }
        })?;
        Ok(Network::new(
            resolved_name(&r, plugin),
            Value::Object(r.config),
        ))
    }

    fn logical_network(&self, ln: &LogicalNetworkRef) -> Result<Network, PlanError> {
        let ns = self.pod.map_or(DEFAULT_NAD_NAMESPACE, |p| p.namespace);
        let what = format!("LogicalNetwork {ns}/{}", ln.name);
        let mut obj = self
            .client(&what)?
            .logical_network(ns, &ln.name)
            .map_err(|source| self.api_error(&what, source))?;
        let mut name = ln.name.clone();
        if let Some(member) = self.group_member(ns, &ln.name, &what, &obj.metadata.annotations)? {
            let member_what = format!("LogicalNetwork {ns}/{member}");
            obj = self
                .client(&member_what)?
                .logical_network(ns, &member)
                .map_err(|source| self.api_error(&member_what, source))?;
            if obj.metadata.annotations.contains_key(SELECT_FROM) {
                return Err(
                    self.group_error(&what, format!("its member {ns}/{member} is a group too"))
                );
            }
            name = member;
        }
        let what = format!("LogicalNetwork {ns}/{name}");
        // `spec.plugin: "sriov"` with the genie conf's `sriov` key: the agent's pools, as for
        // CNI-Genie's `cni: "sriov"`, with the LogicalNetwork's subnet and vlan applied (a conf
        // file of type sriov names no pool, so its pod would get no VF).
        if let (SRIOV, Some(sriov)) = (obj.spec.plugin.as_str(), &self.conf.sriov) {
            let mut network = self.genie_sriov(sriov)?;
            if let Value::Object(config) = &mut network.config {
                vfkube::logical::apply_logical_network(config, &obj)?;
            }
            network.name = format!("{ns}/{name}");
            return Ok(network);
        }
        let mut r = find_plugin_conf(&self.conf.conf_dir, &obj.spec.plugin)?.ok_or_else(|| {
            PlanError::NoLogicalNetworkConf {
                what: what.clone(),
                plugin: obj.spec.plugin.clone(),
                conf_dir: self.conf.conf_dir.clone(),
            }
        })?;
        apply_logical_network(&mut r, &obj)?;
        Ok(Network::new(
            format!("{ns}/{name}"),
            Value::Object(r.config),
        ))
    }

    /// `clusterNetwork`: a conf file path, a conf name in confDir, or a NAD.
    fn cluster_network(&self, spec: &str) -> Result<Network, PlanError> {
        if spec.starts_with('/') {
            let bytes =
                crate::bounded::read(std::path::Path::new(spec), crate::bounded::CONFIG_MAX)
                    .map_err(|source| PlanError::ClusterNetworkRead {
                        spec: spec.to_string(),
                        source,
                    })?;
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|source| PlanError::ClusterNetworkJson {
                    spec: spec.to_string(),
                    source,
                })?;
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("cluster")
                .to_string();
            return Ok(Network::new(name, v));
        }
        if let Some(r) = find_conf_file(&self.conf.conf_dir, spec)? {
            return Ok(Network::new(
                resolved_name(&r, spec),
                Value::Object(r.config),
            ));
        }
        let (ns, name) = spec
            .split_once('/')
            .unwrap_or((DEFAULT_NAD_NAMESPACE, spec));
        self.nad(ns, name)
    }
}

/// NPWG capability args of a selection element.
fn injected(sel: &NetworkSelection) -> Injected {
    let mut rc = Map::new();
    if !sel.ips.is_empty() {
        rc.insert(
            "ips".into(),
            Value::Array(
                sel.ips
                    .iter()
                    .map(|i| Value::String(i.to_string()))
                    .collect(),
            ),
        );
    }
    if let Some(mac) = &sel.mac {
        rc.insert("mac".into(), Value::String(mac.to_string()));
    }
    if !sel.port_mappings.is_empty() {
        if let Ok(v) = serde_json::to_value(&sel.port_mappings) {
            rc.insert("portMappings".into(), v);
        }
    }
    if let Some(bw) = &sel.bandwidth {
        if let Ok(v) = serde_json::to_value(bw) {
            rc.insert("bandwidth".into(), v);
        }
    }
    if let Some(id) = &sel.device_id {
        rc.insert("deviceID".into(), Value::String(id.clone()));
    }
    if let Some(guid) = &sel.infiniband_guid {
        rc.insert("infinibandGUID".into(), Value::String(guid.clone()));
    }
    Injected {
        runtime_config: rc,
        cni_args: sel.cni_args.clone(),
    }
}

/// Works out the pod's attachments. `ifname` is the runtime's CNI_IFNAME.
pub fn plan(
    conf: &GenieConf,
    ifname: &str,
    pod: Option<&PodContext<'_>>,
    client: Option<&dyn KubeReads>,
) -> Result<Vec<Planned>, PlanError> {
    plan_selecting(conf, ifname, pod, client).map(|(planned, _)| planned)
}

/// [`plan`], with the smart selections made: the default network's first when one was made,
/// then those of the selectable groups the pod asked for.
pub fn plan_selecting(
    conf: &GenieConf,
    ifname: &str,
    pod: Option<&PodContext<'_>>,
    client: Option<&dyn KubeReads>,
) -> Result<(Vec<Planned>, Vec<Selection>), PlanError> {
    let mut p = Planner {
        conf,
        client,
        pod,
        out: Vec::new(),
        used: BTreeSet::new(),
        smart: None,
        groups: Default::default(),
    };
    let empty = PodNetworkRequest::default();
    let req = pod.map_or(&empty, |c| c.request);

    // CNI-Genie entries (plugins or LogicalNetworks), in order.
    let genie: Vec<GenieEntry> = match (&req.genie_plugins, req.logical_networks.is_empty()) {
        (Some(plugins), _) => plugins
            .iter()
            .map(|g: &GeniePlugin| {
                (
                    g.interface.as_ref().map(|i| i.to_string()),
                    p.plugin(&g.plugin),
                )
            })
            .collect(),
        (None, false) => req
            .logical_networks
            .iter()
            .map(|l| {
                (
                    l.interface.as_ref().map(|i| i.to_string()),
                    p.logical_network(l),
                )
            })
            .collect(),
        (None, true) => Vec::new(),
    };

    // The default network.
    let default: Option<(Network, Injected)> = if let Some(sel) = &req.default_network {
        let ns = sel.namespace_or(pod.map_or(DEFAULT_NAD_NAMESPACE, |c| c.namespace));
        Some((p.pod_nad(ns, &sel.name)?, injected(sel)))
    } else if let Some(cn) = &conf.cluster_network {
        Some((p.cluster_network(cn)?, Injected::default()))
    } else if let Some(d) = conf.delegates.first() {
        let n = d
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        Some((Network::new(n, d.clone()), Injected::default()))
    } else {
        None
    };
    let mut genie = genie.into_iter();
    let genie_mode = default.is_none();
    match default {
        Some((network, injected)) => p.push(Planned {
            network: network.name,
            ifname: ifname.to_string(),
            config: network.config,
            injected,
            default: true,
            default_route: Vec::new(),
            resources: network.resources,
            device: None,
            device_info_file: None,
        })?,
        None => {
            let (want, first) = match genie.next() {
                Some((want, r)) => (want, r?),
                None => (None, {
                    match (conf.default_plugins.first(), &conf.smart_selection) {
                        (Some(plugin), _) => p.plugin(plugin)?,
                        (None, Some(smart)) => {
                            let sel = smart_select(smart, &p.pod_label());
                            let network = p.plugin(&sel.chosen)?;
                            p.smart = Some(sel);
                            network
                        }
                        (None, None) => return Err(PlanError::NoDefault { pod: p.pod_label() }),
                    }
                }),
            };
            p.push(Planned {
                network: first.name,
                // CNI-Genie lets even the first plugin name its interface (`flannel@eth1`).
                ifname: want.unwrap_or_else(|| ifname.to_string()),
                config: first.config,
                injected: Injected::default(),
                default: true,
                default_route: Vec::new(),
                resources: first.resources,
                device: None,
                device_info_file: None,
            })?;
        }
    }

    // defaultNetworks, then the NPWG selections: net1, net2, ...
    let mut secondary: Vec<Secondary> = Vec::new();
    if let Some(c) = pod {
        if conf.default_networks_apply(c.namespace) {
            for dn in &conf.default_networks {
                let (ns, name) = dn.split_once('/').unwrap_or((DEFAULT_NAD_NAMESPACE, dn));
                secondary.push(Secondary {
                    network: p.nad(ns, name)?,
                    injected: Injected::default(),
                    want: None,
                    default_route: Vec::new(),
                });
            }
        }
    }
    for sel in &req.networks {
        let ns = sel.namespace_or(pod.map_or(DEFAULT_NAD_NAMESPACE, |c| c.namespace));
        secondary.push(Secondary {
            network: p.pod_nad(ns, &sel.name)?,
            injected: injected(sel),
            want: sel.interface.as_ref().map(|i| i.to_string()),
            default_route: sel.default_route.clone(),
        });
    }
    // Requested names are taken first so that generated ones step around them.
    let requested: BTreeSet<String> = secondary.iter().filter_map(|s| s.want.clone()).collect();
    let mut n = 0;
    for s in secondary {
        let ifname = match s.want {
            Some(i) => i,
            None => loop {
                n += 1;
                let cand = format!("net{n}");
                if !requested.contains(&cand) && !p.used.contains(&cand) {
                    break cand;
                }
            },
        };
        p.push(Planned {
            network: s.network.name,
            ifname,
            config: s.network.config,
            injected: s.injected,
            default: false,
            default_route: s.default_route,
            resources: s.network.resources,
            device: None,
            device_info_file: None,
        })?;
    }

    // The remaining CNI-Genie entries (or the repeated default plugins): eth1, eth2, ...
    let mut rest: Vec<(Option<String>, Network)> = Vec::new();
    for (want, r) in genie {
        rest.push((want, r?));
    }
    if genie_mode && req.genie_plugins.is_none() && req.logical_networks.is_empty() {
        for plugin in conf.default_plugins.iter().skip(1) {
            rest.push((None, p.plugin(plugin)?));
        }
    }
    let mut e = 0;
    for (want, network) in rest {
        let ifname = match want {
            Some(i) => i,
            None => loop {
                e += 1;
                let cand = format!("eth{e}");
                if !p.used.contains(&cand) {
                    break cand;
                }
            },
        };
        p.push(Planned {
            network: network.name,
            ifname,
            config: network.config,
            injected: Injected::default(),
            default: false,
            default_route: Vec::new(),
            resources: network.resources,
            device: None,
            device_info_file: None,
        })?;
    }
    let mut selections: Vec<Selection> = p.smart.into_iter().collect();
    selections.extend(p.groups.into_inner());
    Ok((p.out, selections))
}

#[path = "plan_groups.rs"]
mod groups;

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
