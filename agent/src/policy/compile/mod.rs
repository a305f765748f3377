//! The policy compiler: [`Inputs`] in, one nftables table per network namespace out.
//!
//! - `network`: CNI-Genie's network level (which logical networks may talk to which).
//! - `pod`: NPWG MultiNetworkPolicy (pod level, on the networks a policy is for).
//! - `ranges`: interval arithmetic for the interval sets.
//!
//! Per-packet cost does not grow with the number of networks, policies or rules: every
//! decision is a lookup in a set keyed by interface name, addresses, protocol and port. A pod's
//! table depends on its labels, its interface names and other pods' addresses, never on its own
//! address, so it can be installed before the pod's interfaces exist.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use vfcore::IfName;

use crate::policy::model::{Inputs, Interface, NetworkKey, Pod};
use crate::policy::ruleset::{Element, Field, Hook, KeyType, Proto, Selector, Set, Table, Verdict};

pub mod incremental;
pub mod network;
pub mod pod;
pub mod ranges;

use ranges::{disjoint_rects, merge, Family, PerFamily, Span};

/// What to install: the host's table and each local pod's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub host: Table,
    /// By the pod's network namespace path.
    pub pods: BTreeMap<PathBuf, Table>,
    /// What could not be enforced as written (the offending part allows nothing), sorted.
    pub problems: Vec<Problem>,
}

/// Something a policy or network asks for that cannot be enforced as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// `MultiNetworkPolicy ns/name`, `network ns/name` or `pod ns/name`.
    pub object: String,
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.problem)
    }
}

/// Collects problems; the compiler sorts and deduplicates them at the end.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn report(&mut self, object: impl Into<String>, problem: impl Into<String>) {
        self.0.push(Problem {
            object: object.into(),
            problem: problem.into(),
        });
    }

    /// Sorted, duplicates removed.
    fn sorted(self) -> Vec<Problem> {
        let mut v = self.0;
        v.sort();
        v.dedup();
        v
    }
}

/// Set names (fixed identifiers; nothing from a tenant).
pub mod sets {
    /// Host: `ip saddr . ip daddr` of network pairs that may not talk.
    pub const DENY4: &str = "deny4";
    pub const DENY6: &str = "deny6";
    /// Pod: `ifname . addr` of networks the interface's network may not talk to.
    pub const NETDENY4: &str = "netdeny4";
    pub const NETDENY6: &str = "netdeny6";
    /// Pod: `ifname . addr . l4proto . port` allowed by ingress rules with ports.
    pub const IN_PORTS4: &str = "in_ports4";
    pub const IN_PORTS6: &str = "in_ports6";
    /// Pod: `ifname . addr` allowed by ingress rules without ports.
    pub const IN_ALL4: &str = "in_all4";
    pub const IN_ALL6: &str = "in_all6";
    /// Pod: interfaces whose ingress is isolated (default deny).
    pub const IN_ISOLATED: &str = "in_isolated";
    pub const OUT_PORTS4: &str = "out_ports4";
    pub const OUT_PORTS6: &str = "out_ports6";
    pub const OUT_ALL4: &str = "out_all4";
    pub const OUT_ALL6: &str = "out_all6";
    pub const OUT_ISOLATED: &str = "out_isolated";
}

/// Pod-level rules of one direction of one network namespace.
#[derive(Debug, Default)]
pub(crate) struct DirectionRules {
    /// Interfaces with default deny in this direction.
    pub isolated: BTreeSet<String>,
    /// Peers allowed on every port: (ifname, addresses).
    pub all: PerFamily<Vec<(String, Span)>>,
    /// Peers allowed on some ports: (ifname, protocol, addresses, ports).
    pub ports: PerFamily<Vec<(String, Proto, Span, Span)>>,
}

/// Everything that goes into one pod network namespace's table.
#[derive(Debug, Default)]
pub(crate) struct NetnsRules {
    /// Network level: (ifname, addresses of networks its network may not talk to).
    pub netdeny: PerFamily<Vec<(String, Span)>>,
    pub ingress: DirectionRules,
    pub egress: DirectionRules,
}

/// Compiles the whole node's policy. Pure: same inputs, same plan.
pub fn compile(inputs: &Inputs) -> Plan {
    let mut problems = Problems::default();
    let networks = network::NetworkLevel::new(inputs, &mut problems);
    let policies = pod::Policies::new(inputs, &mut problems);

    let shared = shared_netns(&inputs.pods, &mut problems);
    check_addresses(inputs, inputs.pods.iter(), &mut problems);

    let mut netns: BTreeMap<PathBuf, NetnsRules> = BTreeMap::new();
    for p in &inputs.pods {
        let Some(path) = &p.netns else { continue };
        let rules = netns.entry(path.clone()).or_default();
        if shared.contains(path) {
            isolate_pod(p, rules);
        } else {
            add_pod(&networks, &policies, p, rules, &mut problems);
        }
    }

    Plan {
        host: networks.host_table(),
        pods: netns
            .into_iter()
            .map(|(path, rules)| (path, pod_table(rules)))
            .collect(),
        problems: problems.sorted(),
    }
}

/// The table of one network namespace, as [`compile`] makes it, without building the other
/// namespaces' tables or the host's (for a pod being set up: the agent's socket). Pure; the
/// problems are those of the whole inputs, as [`compile`]'s.
pub fn compile_pod(inputs: &Inputs, netns: &Path) -> (Table, Vec<Problem>) {
    let mut problems = Problems::default();
    let networks = network::NetworkLevel::new(inputs, &mut problems);
    let policies = pod::Policies::new(inputs, &mut problems);
    let shared = shared_netns(&inputs.pods, &mut problems);
    check_addresses(inputs, inputs.pods.iter(), &mut problems);
    let mut rules = NetnsRules::default();
    for p in &inputs.pods {
        if p.netns.as_deref() == Some(netns) {
            if shared.contains(netns) {
                isolate_pod(p, &mut rules);
            } else {
                add_pod(&networks, &policies, p, &mut rules, &mut problems);
            }
        }
    }
    (pod_table(rules), problems.sorted())
}

/// The network namespaces that more than one pod claims (genie's records name the same path for
/// two pods, which Kubernetes never does: one record is stale or wrong), each reported once
/// with the pods' names. Whose policies hold there cannot be known, so such a namespace fails
/// closed ([`isolate_pod`]) until only one pod claims it.
fn shared_netns(pods: &[Pod], problems: &mut Problems) -> BTreeSet<PathBuf> {
    let mut claims: BTreeMap<&Path, BTreeSet<String>> = BTreeMap::new();
    for p in pods {
        if let Some(path) = &p.netns {
            claims
                .entry(path)
                .or_default()
                .insert(format!("{}/{}", p.namespace, p.name));
        }
    }
    let mut out = BTreeSet::new();
    for (path, names) in claims {
        if names.len() > 1 {
            let names: Vec<String> = names.into_iter().collect();
            problems.report(
                format!("pods {}", names.join(", ")),
                format!(
                    "they claim the same network namespace {} (genie's records); its \
                     interfaces drop all traffic but established connections, ARP and NDP until \
                     one pod claims it",
                    path.display()
                ),
            );
            out.insert(path.to_path_buf());
        }
    }
    out
}

/// A pod's interfaces in a namespace that fails closed: isolated both ways, nothing allowed.
fn isolate_pod(p: &Pod, rules: &mut NetnsRules) {
    for iface in &p.interfaces {
        if usable_ifname(iface).is_ok() {
            rules.ingress.isolated.insert(iface.ifname.clone());
            rules.egress.isolated.insert(iface.ifname.clone());
        }
    }
}

/// Reports each address of `pods` outside every subnet of its interface's network (see
/// [`in_network`] for networks whose subnets are not known). Such an address is no peer of any policy
/// ([`pod::Policies`] leaves it out): a record or a network-status could otherwise have a pod
/// pass for any address.
fn check_addresses<'a>(
    inputs: &Inputs,
    pods: impl Iterator<Item = &'a Pod>,
    problems: &mut Problems,
) {
    for p in pods {
        for iface in &p.interfaces {
            for ip in &iface.ips {
                if !in_network(inputs, &iface.network, ip) {
                    problems.report(
                        format!("pod {}/{}", p.namespace, p.name),
                        format!(
                            "address {ip} on network {} is outside the network's subnets; it \
                             is ignored as a peer",
                            iface.network
                        ),
                    );
                }
            }
        }
    }
}

/// `ip` is in one of the subnets of `network`, or the network has no known subnet of the
/// address's family (a network known by its IPv4 range only says nothing of IPv6 addresses).
pub(crate) fn in_network(inputs: &Inputs, network: &NetworkKey, ip: &IpAddr) -> bool {
    let Some(net) = inputs.networks.get(network) else {
        return true;
    };
    let (family, value) = ranges::addr_value(ip);
    let mut known = net
        .subnets
        .iter()
        .map(ranges::cidr_span)
        .filter(|(f, _)| *f == family)
        .peekable();
    // No subnet of the address's family known: nothing to check against.
    known.peek().is_none() || known.any(|(_, span)| span.lo <= value && value <= span.hi)
}

/// One local pod's interfaces into its namespace's rules.
fn add_pod(
    networks: &network::NetworkLevel,
    policies: &pod::Policies,
    p: &Pod,
    rules: &mut NetnsRules,
    problems: &mut Problems,
) {
    for iface in &p.interfaces {
        if let Err(why) = usable_ifname(iface) {
            problems.report(
                format!("pod {}/{}", p.namespace, p.name),
                format!(
                    "interface name {:?} on network {}: {why}; no rule can name it, so its \
                     traffic is not filtered",
                    iface.ifname, iface.network
                ),
            );
            continue;
        }
        networks.add_interface(iface, rules);
        policies.add_interface(p, iface, rules);
    }
}

/// An interface name nft takes literally: a name the kernel accepts, without nft's wildcard
/// `*` or escape `\`.
fn usable_ifname(iface: &Interface) -> Result<(), String> {
    IfName::new(iface.ifname.as_str()).map_err(|e| e.to_string())?;
    if iface.ifname.contains(['*', '\\']) {
        return Err("it contains '*' or '\\', which nftables reads as a wildcard".into());
    }
    Ok(())
}

/// `ifname . addr` elements, merged per interface.
fn ifname_addr_set(name: &'static str, family: Family, entries: Vec<(String, Span)>) -> Set {
    let mut by_ifname: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for (ifname, span) in entries {
        by_ifname.entry(ifname).or_default().push(span);
    }
    let elements = by_ifname
        .into_iter()
        .flat_map(|(ifname, spans)| {
            merge(spans)
                .into_iter()
                .map(move |s| Element(vec![Field::Ifname(ifname.clone()), Field::Addr(family, s)]))
        })
        .collect();
    Set {
        name,
        key: vec![KeyType::Ifname, KeyType::Addr(family)],
        interval: true,
        elements,
    }
}

/// `ifname . addr . l4proto . port` elements, disjoint per interface and protocol.
fn ports_set(name: &'static str, family: Family, entries: Vec<(String, Proto, Span, Span)>) -> Set {
    let mut groups: BTreeMap<(String, Proto), Vec<(Span, Span)>> = BTreeMap::new();
    for (ifname, proto, addrs, ports) in entries {
        // Banded by port: a few port ranges, many addresses.
        groups
            .entry((ifname, proto))
            .or_default()
            .push((ports, addrs));
    }
    let mut elements: Vec<Element> = groups
        .into_iter()
        .flat_map(|((ifname, proto), rects)| {
            disjoint_rects(rects)
                .into_iter()
                .map(move |(ports, addrs)| {
                    Element(vec![
                        Field::Ifname(ifname.clone()),
                        Field::Addr(family, addrs),
                        Field::Proto(proto),
                        Field::Port(ports),
                    ])
                })
        })
        .collect();
    elements.sort();
    Set {
        name,
        key: vec![
            KeyType::Ifname,
            KeyType::Addr(family),
            KeyType::InetProto,
            KeyType::InetService,
        ],
        interval: true,
        elements,
    }
}

/// The chain, packet fields and sets of one direction.
struct DirectionNames {
    hook: Hook,
    ifname: Selector,
    addr: fn(Family) -> Selector,
    ports: PerFamily<&'static str>,
    all: PerFamily<&'static str>,
    isolated: &'static str,
}

const INGRESS: DirectionNames = DirectionNames {
    hook: Hook::Input,
    ifname: Selector::Iifname,
    addr: Selector::Saddr,
    ports: PerFamily {
        v4: sets::IN_PORTS4,
        v6: sets::IN_PORTS6,
    },
    all: PerFamily {
        v4: sets::IN_ALL4,
        v6: sets::IN_ALL6,
    },
    isolated: sets::IN_ISOLATED,
};

const EGRESS: DirectionNames = DirectionNames {
    hook: Hook::Output,
    ifname: Selector::Oifname,
    addr: Selector::Daddr,
    ports: PerFamily {
        v4: sets::OUT_PORTS4,
        v6: sets::OUT_PORTS6,
    },
    all: PerFamily {
        v4: sets::OUT_ALL4,
        v6: sets::OUT_ALL6,
    },
    isolated: sets::OUT_ISOLATED,
};

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// A pod's table: input and output chains; in each, network-level drops first, then the
/// pod-level allows, then the default deny of isolated interfaces.
fn pod_table(mut rules: NetnsRules) -> Table {
    let mut table = Table::with_chains(&[Hook::Input, Hook::Output]);
    let netdeny = PerFamily {
        v4: sets::NETDENY4,
        v6: sets::NETDENY6,
    };
    for family in FAMILIES {
        let entries = std::mem::take(rules.netdeny.get_mut(family));
        let set = ifname_addr_set(netdeny.get(family), family, entries);
        // One set, looked up from both chains.
        let name = set.name;
        if table.add_lookup(
            Hook::Input,
            vec![Selector::Iifname, Selector::Saddr(family)],
            set,
            Verdict::Drop,
        ) {
            table.add_rule(
                Hook::Output,
                vec![Selector::Oifname, Selector::Daddr(family)],
                name,
                Verdict::Drop,
            );
        }
    }
    for (dir, names) in [(rules.ingress, &INGRESS), (rules.egress, &EGRESS)] {
        add_direction(&mut table, dir, names);
    }
    table
}

fn add_direction(table: &mut Table, mut dir: DirectionRules, names: &DirectionNames) {
    for family in FAMILIES {
        let ports = ports_set(
            names.ports.get(family),
            family,
            std::mem::take(dir.ports.get_mut(family)),
        );
        table.add_lookup(
            names.hook,
            vec![
                names.ifname,
                (names.addr)(family),
                Selector::L4proto,
                Selector::Dport,
            ],
            ports,
            Verdict::Accept,
        );
        let all = ifname_addr_set(
            names.all.get(family),
            family,
            std::mem::take(dir.all.get_mut(family)),
        );
        table.add_lookup(
            names.hook,
            vec![names.ifname, (names.addr)(family)],
            all,
            Verdict::Accept,
        );
    }
    let isolated = Set {
        name: names.isolated,
        key: vec![KeyType::Ifname],
        interval: false,
        elements: dir
            .isolated
            .into_iter()
            .map(|i| Element(vec![Field::Ifname(i)]))
            .collect(),
    };
    table.add_lookup(names.hook, vec![names.ifname], isolated, Verdict::Drop);
}

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod pod_tests;
#[cfg(test)]
mod render_tests;
#[cfg(test)]
pub(crate) mod testdata;
