//! CNI-Genie's network level (`genieNetworkpolicy`).
//!
//! A rule `{networkSelector: a, peerNetworks: b,c}` selects `a`; peers(a) is the union of the
//! peer networks of every rule selecting `a` across the genie policies of `a`'s namespace
//! (names resolve in the policy's namespace). Two different networks may talk iff each of them
//! is either not selected or lists the other as a peer; traffic within one network is always
//! allowed, and without any policy every network may talk to every other.
//!
//! Only traffic between two known networks' subnets is affected (never the host, the primary
//! network or the internet). A disallowed pair is enforced in the host's forward path when
//! either network is routed through the host, and in every local pod's namespace on each
//! interface of a network that bypasses the host (VFs, macvlan, ipvlan). A peer that does not
//! exist yet allows nothing; once it exists, recompiling allows it.

use std::collections::{BTreeMap, BTreeSet};

use super::ranges::{cidr_span, disjoint_rects, merge, Family, PerFamily, Span};
use super::{sets, NetnsRules, Problems, FAMILIES};
use crate::policy::model::{Inputs, Interface, Network, NetworkKey, TrafficPath};
use crate::policy::ruleset::{Element, Field, Hook, KeyType, Selector, Set, Table, Verdict};

/// The ordered pairs `(a, b)` of known networks, `a != b`, that may not talk (symmetric: `(b,
/// a)` is in the set too), sorted.
pub fn disallowed_pairs(inputs: &Inputs) -> BTreeSet<(NetworkKey, NetworkKey)> {
    // Selected network → its peers, resolved in the selecting policy's namespace.
    let mut peers: BTreeMap<NetworkKey, BTreeSet<NetworkKey>> = BTreeMap::new();
    for policy in &inputs.genie {
        for rule in &policy.rules {
            let entry = peers
                .entry(NetworkKey::new(&policy.namespace, &rule.network_selector))
                .or_default();
            entry.extend(
                rule.peer_networks
                    .iter()
                    .map(|p| NetworkKey::new(&policy.namespace, p)),
            );
        }
    }
    let accepts = |a: &NetworkKey, b: &NetworkKey| peers.get(a).is_none_or(|p| p.contains(b));
    let mut out = BTreeSet::new();
    // Only selected networks can be in a disallowed pair.
    for a in peers.keys().filter(|a| inputs.networks.contains_key(*a)) {
        for b in inputs.networks.keys() {
            if a != b && !(accepts(a, b) && accepts(b, a)) {
                out.insert((a.clone(), b.clone()));
                out.insert((b.clone(), a.clone()));
            }
        }
    }
    out
}

/// The network level, resolved to addresses.
pub(crate) struct NetworkLevel {
    /// For each network that bypasses the host: the subnets of the networks it may not talk
    /// to.
    denied: BTreeMap<NetworkKey, PerFamily<Vec<Span>>>,
    /// Host forward path: (source subnet, destination subnet).
    host: PerFamily<Vec<(Span, Span)>>,
}

fn subnets(net: &Network) -> PerFamily<Vec<Span>> {
    let mut out = PerFamily::<Vec<Span>>::default();
    for cidr in &net.subnets {
        let (family, span) = cidr_span(cidr);
        out.get_mut(family).push(span);
    }
    out.v4 = merge(out.v4);
    out.v6 = merge(out.v6);
    out
}

impl NetworkLevel {
    pub(crate) fn new(inputs: &Inputs, problems: &mut Problems) -> Self {
        let pairs = disallowed_pairs(inputs);
        let subnets: BTreeMap<&NetworkKey, PerFamily<Vec<Span>>> = inputs
            .networks
            .iter()
            .map(|(k, n)| (k, subnets(n)))
            .collect();
        let mut denied: BTreeMap<NetworkKey, PerFamily<Vec<Span>>> = BTreeMap::new();
        let mut host = PerFamily::<Vec<(Span, Span)>>::default();
        let mut unaddressed: BTreeSet<&NetworkKey> = BTreeSet::new();
        for (a, b) in &pairs {
            let (Some(net_a), Some(net_b)) = (inputs.networks.get(a), inputs.networks.get(b))
            else {
                continue;
            };
            if net_a.subnets.is_empty() {
                unaddressed.insert(a);
            }
            let (Some(sa), Some(sb)) = (subnets.get(a), subnets.get(b)) else {
                continue;
            };
            for family in FAMILIES {
                if net_a.path == TrafficPath::InPod {
                    denied
                        .entry(a.clone())
                        .or_default()
                        .get_mut(family)
                        .extend(sb.get(family));
                }
                if net_a.path == TrafficPath::Host || net_b.path == TrafficPath::Host {
                    for src in sa.get(family) {
                        for dst in sb.get(family) {
                            host.get_mut(family).push((*src, *dst));
                        }
                    }
                }
            }
        }
        for key in unaddressed {
            problems.report(
                format!("network {key}"),
                "it has no known subnet, so its traffic cannot be told apart by address: where \
                 that is needed (the host's forward path, other networks' pods), the \
                 network-level policy that involves it is not enforced",
            );
        }
        for deny in denied.values_mut() {
            deny.v4 = merge(std::mem::take(&mut deny.v4));
            deny.v6 = merge(std::mem::take(&mut deny.v6));
        }
        Self { denied, host }
    }

    /// Network-level rules for a local pod's interface on a network that bypasses the host.
    pub(crate) fn add_interface(&self, iface: &Interface, rules: &mut NetnsRules) {
        let Some(deny) = self.denied.get(&iface.network) else {
            return;
        };
        for family in FAMILIES {
            rules
                .netdeny
                .get_mut(family)
                .extend(deny.get(family).iter().map(|s| (iface.ifname.clone(), *s)));
        }
    }

    /// The host's table: a forward chain dropping disallowed pairs with one lookup per family.
    pub(crate) fn host_table(&self) -> Table {
        let mut table = Table::with_chains(&[Hook::Forward]);
        for (family, name) in [(Family::V4, sets::DENY4), (Family::V6, sets::DENY6)] {
            let elements = disjoint_rects(self.host.get(family).clone())
                .into_iter()
                .map(|(src, dst)| Element(vec![Field::Addr(family, src), Field::Addr(family, dst)]))
                .collect();
            let set = Set {
                name,
                key: vec![KeyType::Addr(family), KeyType::Addr(family)],
                interval: true,
                elements,
            };
            table.add_lookup(
                Hook::Forward,
                vec![Selector::Saddr(family), Selector::Daddr(family)],
                set,
                Verdict::Drop,
            );
        }
        table
    }
}
