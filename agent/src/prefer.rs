//! GetPreferredAllocation: which of the offered devices a container should get. The kubelet offers
//! the free devices and any it must include; we prefer devices on one NUMA node (the node of the
//! must-include devices, else the node with the most free devices) and spread the rest across PFs,
//! so one PF's link failure takes out as few of a pod's interfaces as possible.

use std::collections::{BTreeMap, BTreeSet};

use vfcore::PciAddress;

use crate::pool::{Pool, PoolDevice};

/// Chooses `size` devices among `available`, starting with `must_include`. Device IDs that are not
/// healthy members of the pool are never chosen; the answer may be shorter than `size` when there
/// are not enough (the kubelet then falls back to its own choice).
pub fn preferred(
    pool: &Pool,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Vec<String> {
    let member = |id: &String| -> Option<&PoolDevice> {
        let a = id.parse::<PciAddress>().ok()?;
        pool.devices.get(&a).filter(|d| d.healthy)
    };
    let mut chosen: Vec<&PoolDevice> = Vec::new();
    let mut taken = BTreeSet::new();
    for d in must_include.iter().filter_map(member) {
        if taken.insert(d.address) {
            chosen.push(d);
        }
    }
    let mut candidates: Vec<&PoolDevice> = available
        .iter()
        .filter_map(member)
        .filter(|d| !taken.contains(&d.address))
        .collect();
    candidates.sort_by_key(|d| d.address);
    candidates.dedup_by_key(|d| d.address);

    let target_numa = most_common(chosen.iter().filter_map(|d| d.numa_node))
        .or_else(|| most_common(candidates.iter().filter_map(|d| d.numa_node)));

    let mut per_pf: BTreeMap<Option<PciAddress>, usize> = BTreeMap::new();
    for d in &chosen {
        *per_pf.entry(d.pf).or_default() += 1;
    }
    while chosen.len() < size && !candidates.is_empty() {
        let best = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, d)| {
                (
                    target_numa.is_some() && d.numa_node != target_numa,
                    per_pf.get(&d.pf).copied().unwrap_or(0),
                    d.address,
                )
            })
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let d = candidates.remove(i);
        *per_pf.entry(d.pf).or_default() += 1;
        chosen.push(d);
    }
    chosen.iter().map(|d| d.address.to_string()).collect()
}

/// The most frequent value, the lowest one on a tie.
fn most_common(values: impl Iterator<Item = u32>) -> Option<u32> {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::{device, pool_of};

    fn dev(addr: &str, pf: &str, numa: Option<u32>) -> PoolDevice {
        let mut d = device(addr, None);
        d.pf = Some(pf.parse().unwrap());
        d.numa_node = numa;
        d
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spreads_across_pfs_on_one_numa_node() {
        let pool = pool_of(
            "example.com/net",
            vec![
                dev("0000:01:10.0", "0000:01:00.0", Some(0)),
                dev("0000:01:10.2", "0000:01:00.0", Some(0)),
                dev("0000:02:10.0", "0000:02:00.0", Some(0)),
                dev("0000:02:10.2", "0000:02:00.0", Some(0)),
                dev("0000:81:10.0", "0000:81:00.0", Some(1)),
            ],
        );
        let all = ids(&[
            "0000:81:10.0",
            "0000:01:10.0",
            "0000:01:10.2",
            "0000:02:10.0",
            "0000:02:10.2",
        ]);
        assert_eq!(
            preferred(&pool, &all, &[], 2),
            ids(&["0000:01:10.0", "0000:02:10.0"])
        );
        assert_eq!(
            preferred(&pool, &all, &[], 4),
            ids(&[
                "0000:01:10.0",
                "0000:02:10.0",
                "0000:01:10.2",
                "0000:02:10.2"
            ])
        );
    }

    #[test]
    fn follows_the_numa_node_of_must_include_devices() {
        let pool = pool_of(
            "example.com/net",
            vec![
                dev("0000:01:10.0", "0000:01:00.0", Some(0)),
                dev("0000:01:10.2", "0000:01:00.0", Some(0)),
                dev("0000:81:10.0", "0000:81:00.0", Some(1)),
                dev("0000:82:10.0", "0000:82:00.0", Some(1)),
            ],
        );
        let all = ids(&[
            "0000:01:10.0",
            "0000:01:10.2",
            "0000:81:10.0",
            "0000:82:10.0",
        ]);
        assert_eq!(
            preferred(&pool, &all, &ids(&["0000:81:10.0"]), 2),
            ids(&["0000:81:10.0", "0000:82:10.0"])
        );
    }

    #[test]
    fn never_offers_strangers_or_unhealthy_devices() {
        let mut sick = dev("0000:01:10.2", "0000:01:00.0", None);
        sick.healthy = false;
        let pool = pool_of(
            "example.com/net",
            vec![dev("0000:01:10.0", "0000:01:00.0", None), sick],
        );
        let got = preferred(
            &pool,
            &ids(&["0000:01:10.2", "0000:09:00.0", "junk", "0000:01:10.0"]),
            &[],
            3,
        );
        assert_eq!(got, ids(&["0000:01:10.0"]));
    }
}
