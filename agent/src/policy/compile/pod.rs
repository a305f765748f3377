//! NPWG MultiNetworkPolicy: Kubernetes NetworkPolicy semantics, scoped to the networks a policy
//! is for (`k8s.v1.cni.cncf.io/policy-for`).
//!
//! A policy in namespace N applies to the pods of N its podSelector matches, on their
//! interfaces whose network it is for. When any applying policy has Ingress (Egress) among its
//! policyTypes, that direction of the interface is default deny plus the union of the applying
//! policies' rules. A peer's addresses are its interfaces' addresses on the policy's networks.
//!
//! What cannot be enforced as written (a named port, an unknown selector operator, a network
//! that does not exist) is reported; the offending part allows nothing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};

use super::ranges::{addr_value, cidr_minus, merge, Family, PerFamily, Span};
use super::{in_network, DirectionRules, NetnsRules, Problems, FAMILIES};
use crate::policy::model::{Inputs, Interface, IpCidr, Labels, MultiPolicy, NetworkKey, Pod};
use crate::policy::ruleset::Proto;

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Every MultiNetworkPolicy, with its peers resolved to addresses.
pub(crate) struct Policies {
    list: Vec<Compiled>,
}

struct Compiled {
    namespace: String,
    networks: BTreeSet<NetworkKey>,
    /// `None` when the selector cannot be read: the policy then applies to every pod of its
    /// namespace (fail closed).
    pod_selector: Option<Selector>,
    /// `None` when the policy does not have that policy type.
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
}

struct Rule {
    addrs: PerFamily<Vec<Span>>,
    ports: Ports,
}

enum Ports {
    All,
    /// The listed ones only (an empty list allows nothing).
    Listed(Vec<(Proto, Span)>),
}

/// Reads one policy, reporting what cannot be enforced.
struct Reader<'a> {
    inputs: &'a Inputs,
    policy: &'a MultiPolicy,
    networks: BTreeSet<NetworkKey>,
    /// Namespace → labels, with the namespace's name label.
    ns_labels: &'a BTreeMap<String, Labels>,
    object: String,
    problems: &'a mut Problems,
}

impl Policies {
    pub(crate) fn new(inputs: &Inputs, problems: &mut Problems) -> Self {
        Self::new_for(inputs, inputs.multi.iter(), problems)
    }

    /// [`Policies::new`] for some of the inputs' policies only (peers are still resolved over
    /// all of the inputs' pods): enough for the pods of the namespaces of `policies`.
    pub(crate) fn new_for<'a>(
        inputs: &'a Inputs,
        policies: impl Iterator<Item = &'a MultiPolicy>,
        problems: &mut Problems,
    ) -> Self {
        let ns_labels = namespace_labels(inputs);
        let list = policies
            .map(|policy| {
                Reader {
                    inputs,
                    policy,
                    networks: policy.policy_for.iter().cloned().collect(),
                    ns_labels: &ns_labels,
                    object: format!("MultiNetworkPolicy {}/{}", policy.namespace, policy.name),
                    problems,
                }
                .compile()
            })
            .collect();
        Self { list }
    }

    /// The pod-level rules for a local pod's interface.
    pub(crate) fn add_interface(&self, pod: &Pod, iface: &Interface, rules: &mut NetnsRules) {
        let applying = self.list.iter().filter(|c| {
            c.namespace == pod.namespace
                && c.networks.contains(&iface.network)
                && c.pod_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&pod.labels))
        });
        for c in applying {
            if let Some(ingress) = &c.ingress {
                add_direction(&mut rules.ingress, &iface.ifname, ingress);
            }
            if let Some(egress) = &c.egress {
                add_direction(&mut rules.egress, &iface.ifname, egress);
            }
        }
    }
}

fn add_direction(dir: &mut DirectionRules, ifname: &str, rules: &[Rule]) {
    dir.isolated.insert(ifname.to_string());
    for rule in rules {
        for family in FAMILIES {
            for addrs in rule.addrs.get(family) {
                match &rule.ports {
                    Ports::All => dir.all.get_mut(family).push((ifname.to_string(), *addrs)),
                    Ports::Listed(ports) => {
                        dir.ports.get_mut(family).extend(
                            ports
                                .iter()
                                .map(|(proto, p)| (ifname.to_string(), *proto, *addrs, *p)),
                        );
                    }
                }
            }
        }
    }
}

fn namespace_labels(inputs: &Inputs) -> BTreeMap<String, Labels> {
    let mut out: BTreeMap<String, Labels> = inputs.namespaces.clone();
    for pod in &inputs.pods {
        out.entry(pod.namespace.clone()).or_default();
    }
    for (name, labels) in &mut out {
        labels
            .entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| name.clone());
    }
    out
}

/// A label selector, refusing what Kubernetes' validation refuses (kube's conversion accepts
/// `In` without values, which would match nothing silently).
fn selector(ls: &LabelSelector) -> Result<Selector, String> {
    for req in ls.match_expressions.iter().flatten() {
        let values = req.values.as_ref().map_or(0, Vec::len);
        match req.operator.as_str() {
            "In" | "NotIn" if values == 0 => {
                return Err(format!(
                    "operator {} on key {:?} needs at least one value",
                    req.operator, req.key
                ))
            }
            "Exists" | "DoesNotExist" if values > 0 => {
                return Err(format!(
                    "operator {} on key {:?} takes no values",
                    req.operator, req.key
                ))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "operator {other:?} on key {:?} is not In, NotIn, Exists or DoesNotExist",
                    req.key
                ))
            }
        }
    }
    Selector::try_from(ls.clone()).map_err(|e| e.to_string())
}

impl Reader<'_> {
    fn report(&mut self, problem: String) {
        self.problems.report(self.object.clone(), problem);
    }

    fn compile(mut self) -> Compiled {
        let policy = self.policy;
        let spec = &policy.spec;
        if policy.policy_for.is_empty() {
            self.report("it is for no network, so it applies to nothing".into());
        }
        for key in &policy.policy_for {
            if !self.inputs.networks.contains_key(key) {
                self.report(format!(
                    "policy-for names network {key}, which does not exist; it applies there \
                     once it exists"
                ));
            }
        }
        let pod_selector = match &spec.pod_selector {
            None => Some(Selector::default()),
            Some(ls) => match selector(ls) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.report(format!(
                        "spec.podSelector: {e}; the policy applies to every pod of its \
                         namespace and allows nothing"
                    ));
                    None
                }
            },
        };
        let (mut ingress_on, mut egress_on) = (false, false);
        match spec.policy_types.as_deref() {
            // Kubernetes' defaulting: Ingress, and Egress when there are egress rules.
            None | Some([]) => {
                (ingress_on, egress_on) =
                    (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty()))
            }
            Some(types) => {
                for t in types {
                    match t.as_str() {
                        "Ingress" => ingress_on = true,
                        "Egress" => egress_on = true,
                        other => self.report(format!(
                            "spec.policyTypes: {other:?} is neither Ingress nor Egress; ignored"
                        )),
                    }
                }
            }
        }
        // A policy whose selector cannot be read allows nothing: its rules are not read.
        let (ingress_rules, egress_rules): (
            &[NetworkPolicyIngressRule],
            &[NetworkPolicyEgressRule],
        ) = match pod_selector {
            Some(_) => (
                spec.ingress.as_deref().unwrap_or_default(),
                spec.egress.as_deref().unwrap_or_default(),
            ),
            None => (&[], &[]),
        };
        let ingress = ingress_on.then(|| {
            ingress_rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let at = format!("spec.ingress[{i}]");
                    self.rule(&at, "from", r.from.as_deref(), r.ports.as_deref())
                })
                .collect()
        });
        let egress = egress_on.then(|| {
            egress_rules
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let at = format!("spec.egress[{i}]");
                    self.rule(&at, "to", r.to.as_deref(), r.ports.as_deref())
                })
                .collect()
        });
        Compiled {
            namespace: policy.namespace.clone(),
            networks: self.networks,
            pod_selector,
            ingress,
            egress,
        }
    }

    fn rule(
        &mut self,
        at: &str,
        peers_field: &str,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
    ) -> Rule {
        let addrs = match peers {
            // No peers: from (to) anywhere.
            None | Some([]) => PerFamily {
                v4: vec![Family::V4.all()],
                v6: vec![Family::V6.all()],
            },
            Some(peers) => {
                let mut all = PerFamily::<Vec<Span>>::default();
                for (i, peer) in peers.iter().enumerate() {
                    let found = self.peer(&format!("{at}.{peers_field}[{i}]"), peer);
                    all.v4.extend(found.v4);
                    all.v6.extend(found.v6);
                }
                PerFamily {
                    v4: merge(all.v4),
                    v6: merge(all.v6),
                }
            }
        };
        let ports = match ports {
            None | Some([]) => Ports::All,
            Some(ports) => Ports::Listed(
                ports
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| self.port(&format!("{at}.ports[{i}]"), p))
                    .collect(),
            ),
        };
        Rule { addrs, ports }
    }

    fn peer(&mut self, at: &str, peer: &NetworkPolicyPeer) -> PerFamily<Vec<Span>> {
        let none = PerFamily::default();
        match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
            (Some(block), None, None) => self.ip_block(at, block),
            (None, None, None) => {
                self.report(format!(
                    "{at}: a peer needs a podSelector, a namespaceSelector or an ipBlock; this \
                     one allows nothing"
                ));
                none
            }
            (Some(_), _, _) => {
                self.report(format!(
                    "{at}: an ipBlock cannot be combined with selectors; the peer allows nothing"
                ));
                none
            }
            (None, pods, namespaces) => {
                let read = |ls: &Option<LabelSelector>, field: &str| match ls {
                    None => Ok(None),
                    Some(ls) => selector(ls)
                        .map(Some)
                        .map_err(|e| format!("{at}.{field}: {e}; the peer allows nothing")),
                };
                let (pods, namespaces) = match (
                    read(pods, "podSelector"),
                    read(namespaces, "namespaceSelector"),
                ) {
                    (Ok(p), Ok(n)) => (p, n),
                    (Err(e), _) | (_, Err(e)) => {
                        self.report(e);
                        return none;
                    }
                };
                self.pod_addrs(pods.as_ref(), namespaces.as_ref())
            }
        }
    }

    /// The addresses on the policy's networks of the pods the selectors pick: `namespaces`
    /// `None` means the policy's own namespace, `pods` `None` every pod.
    fn pod_addrs(
        &self,
        pods: Option<&Selector>,
        namespaces: Option<&Selector>,
    ) -> PerFamily<Vec<Span>> {
        let mut out = PerFamily::<Vec<Span>>::default();
        let picked = self.inputs.pods.iter().filter(|p| {
            let in_namespace = match namespaces {
                None => p.namespace == self.policy.namespace,
                Some(sel) => self
                    .ns_labels
                    .get(&p.namespace)
                    .is_some_and(|l| sel.matches(l)),
            };
            in_namespace && pods.is_none_or(|sel| sel.matches(&p.labels))
        });
        for pod in picked {
            for iface in &pod.interfaces {
                if !self.networks.contains(&iface.network) {
                    continue;
                }
                // One outside its network's subnets is reported (`check_addresses`).
                for ip in iface
                    .ips
                    .iter()
                    .filter(|ip| in_network(self.inputs, &iface.network, ip))
                {
                    let (family, value) = addr_value(ip);
                    out.get_mut(family).push(Span::one(value));
                }
            }
        }
        out
    }

    fn ip_block(&mut self, at: &str, block: &IPBlock) -> PerFamily<Vec<Span>> {
        let mut out = PerFamily::<Vec<Span>>::default();
        let cidr: IpCidr = match block.cidr.trim().parse() {
            Ok(c) => c,
            Err(e) => {
                self.report(format!("{at}.ipBlock.cidr: {e}; the peer allows nothing"));
                return out;
            }
        };
        let mut excepts = Vec::new();
        for (i, e) in block.except.iter().flatten().enumerate() {
            match e.trim().parse::<IpCidr>() {
                Ok(c) => excepts.push(c),
                Err(e) => {
                    // Dropping the except would allow what it excludes.
                    self.report(format!(
                        "{at}.ipBlock.except[{i}]: {e}; the peer allows nothing"
                    ));
                    return out;
                }
            }
        }
        let (family, spans) = cidr_minus(&cidr, &excepts);
        *out.get_mut(family) = spans;
        out
    }

    fn port(&mut self, at: &str, p: &NetworkPolicyPort) -> Option<(Proto, Span)> {
        let proto = match p.protocol.as_deref() {
            None | Some("TCP") => Proto::Tcp,
            Some("UDP") => Proto::Udp,
            Some("SCTP") => Proto::Sctp,
            Some(other) => {
                self.report(format!(
                    "{at}.protocol: {other:?} is not TCP, UDP or SCTP; the entry allows nothing"
                ));
                return None;
            }
        };
        let valid = |n: i32| u16::try_from(n).ok().filter(|n| *n > 0).map(u128::from);
        let ports = match (&p.port, p.end_port) {
            (None, None) => Span::new(0, u128::from(u16::MAX)),
            (None, Some(_)) => {
                self.report(format!(
                    "{at}: endPort without port; the entry allows nothing"
                ));
                None
            }
            (Some(IntOrString::String(name)), _) => {
                self.report(format!(
                    "{at}.port: {name:?} is a named port, and container port names are not \
                     known here; the entry allows nothing"
                ));
                None
            }
            (Some(IntOrString::Int(port)), end) => {
                let span = match (valid(*port), end.map(valid)) {
                    (Some(lo), None) => Some(Span::one(lo)),
                    (Some(lo), Some(Some(hi))) => Span::new(lo, hi),
                    _ => None,
                };
                if span.is_none() {
                    self.report(format!(
                        "{at}: port {port}{} is not a port number or range (1-65535, endPort \
                         not below port); the entry allows nothing",
                        end.map(|e| format!(", endPort {e}")).unwrap_or_default()
                    ));
                }
                span
            }
        };
        ports.map(|span| (proto, span))
    }
}
