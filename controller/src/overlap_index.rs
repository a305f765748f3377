//! Which LogicalNetworks can overlap which, found once for all of them: the status loop checks
//! every network with the admission rule, whose overlap check looks through all LogicalNetworks
//! ([`Lookup::find_logical_network`]); for 10,000 networks on one physicalNet that is 10^8
//! comparisons (each parsing a subnet), about 18 s of a core. Subnets are CIDRs, so two of them
//! overlap only when one contains the other: sorted by first address (the larger first), a
//! network's overlapping ones are the chain of those containing it (a stack in one sweep) and the
//! run after it that starts inside it. [`Narrowed`] then answers the rule's overlap check from
//! those candidates alone; the rule's own predicate still decides.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use vfkube::annotations::IpCidr;
use vfkube::objects::{LogicalNetwork, NetworkAttachmentDefinition};

use crate::lookup::Lookup;

/// (family, first address, last address) of a subnet.
fn range(c: IpCidr) -> (u8, u128, u128) {
    match c.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32u32.saturating_sub(u32::from(c.prefix)))
                .unwrap_or(0);
            let lo = u32::from(a) & mask;
            (4, u128::from(lo), u128::from(lo | !mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128u32.saturating_sub(u32::from(c.prefix)))
                .unwrap_or(0);
            let lo = u128::from(a) & mask;
            (6, lo, lo | !mask)
        }
    }
}

/// For each network (by its index in the slice given to [`candidates`]), the indexes of the
/// networks on its physicalNet whose subnet overlaps its own (itself included).
pub fn candidates(lns: &[Arc<LogicalNetwork>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); lns.len()];
    let mut groups: HashMap<&str, Vec<(u8, u128, u128, usize)>> = HashMap::new();
    for (i, ln) in lns.iter().enumerate() {
        if let Ok(c) = ln.spec.subnet.trim().parse::<IpCidr>() {
            let (f, lo, hi) = range(c);
            groups
                .entry(ln.spec.physical_net.as_str())
                .or_default()
                .push((f, lo, hi, i));
        }
    }
    for mut g in groups.into_values() {
        // By family, first address, then the larger (containing) one first.
        g.sort_by(|a, b| (a.0, a.1, b.2).cmp(&(b.0, b.1, a.2)));
        let mut stack: Vec<usize> = Vec::new();
        for (pos, &(f, lo, hi, i)) in g.iter().enumerate() {
            while let Some(&top) = stack.last() {
                let t = g.get(top).copied();
                if t.is_some_and(|(tf, _, thi, _)| tf != f || thi < lo) {
                    stack.pop();
                } else {
                    break;
                }
            }
            let Some(mine) = out.get_mut(i) else { continue };
            // Those containing it.
            mine.extend(stack.iter().filter_map(|&s| g.get(s).map(|e| e.3)));
            mine.push(i);
            // Those inside it.
            mine.extend(
                g.iter()
                    .skip(pos + 1)
                    .take_while(|e| e.0 == f && e.1 <= hi)
                    .map(|e| e.3),
            );
            stack.push(pos);
        }
    }
    out
}

/// A [`Lookup`] whose overlap search looks only through the candidates of one network; the rest
/// is the real lookup's.
pub struct Narrowed {
    pub inner: Arc<dyn Lookup>,
    pub candidates: Vec<Arc<LogicalNetwork>>,
}

impl Lookup for Narrowed {
    fn nad(&self, namespace: &str, name: &str) -> Option<NetworkAttachmentDefinition> {
        self.inner.nad(namespace, name)
    }

    fn logical_network(&self, namespace: &str, name: &str) -> Option<LogicalNetwork> {
        self.inner.logical_network(namespace, name)
    }

    fn logical_networks(&self) -> Vec<Arc<LogicalNetwork>> {
        self.inner.logical_networks()
    }

    fn find_logical_network(
        &self,
        predicate: &dyn Fn(&LogicalNetwork) -> bool,
    ) -> Option<LogicalNetwork> {
        self.candidates
            .iter()
            .find(|l| predicate(l))
            .map(|l| LogicalNetwork::clone(l))
    }

    fn namespace_exists(&self, name: &str) -> bool {
        self.inner.namespace_exists(name)
    }

    fn synced(&self) -> bool {
        self.inner.synced()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vfkube::logical::overlaps;

    fn ln(name: &str, physical_net: &str, subnet: &str) -> LogicalNetwork {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "a"},
            "spec": {"physicalNet": physical_net, "plugin": "bridge", "subnet": subnet}}))
        .unwrap()
    }

    #[test]
    fn the_candidates_are_exactly_the_overlapping_networks_of_the_same_physical_net() {
        let subnets = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.1.2.0/24",
            "10.1.3.0/24",
            "10.2.0.0/16",
            "10.1.2.128/25",
            "11.0.0.0/8",
            "0.0.0.0/0",
            "10.1.2.5/24",
            "fd00::/8",
            "fd00:1::/32",
            "not a cidr",
            "",
        ];
        let mut lns: Vec<Arc<LogicalNetwork>> = subnets
            .iter()
            .enumerate()
            .map(|(i, s)| Arc::new(ln(&format!("n{i}"), "p1", s)))
            .collect();
        lns.push(Arc::new(ln("other-net", "p2", "10.1.2.0/24")));
        let c = candidates(&lns);
        for (i, a) in lns.iter().enumerate() {
            let mut expected: Vec<usize> = lns
                .iter()
                .enumerate()
                .filter(|(_, b)| {
                    b.spec.physical_net == a.spec.physical_net
                        && match (a.spec.subnet.parse(), b.spec.subnet.parse()) {
                            (Ok(x), Ok(y)) => overlaps(x, y),
                            _ => false,
                        }
                })
                .map(|(j, _)| j)
                .collect();
            let mut got = c[i].clone();
            expected.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, expected, "{}", a.spec.subnet);
        }
    }
}
