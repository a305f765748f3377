//! rx/tx bytes per second of the pods' interfaces, per network: genie's records on the node give
//! each attachment's netns, interface and network; the interface's `IFLA_STATS64` counters are read
//! inside its netns (on a dedicated OS thread: [`vfcore::netns::NetNs::run`]); the rate is the
//! counters' growth since the previous sample over the time between them.
//!
//! An interface seen for the first time has no rate yet; one whose counters went down (reset,
//! or a new interface of the same name) counts from 0. A network with pods none of which has a
//! rate yet is unknown; a network without pods has 0.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use tracing::debug;
use vfcore::netlink::{LinkStats, Netlink};
use vfcore::netns::NetNs;
use vfmeta::cache::CacheDir;

/// One attachment of a pod on this node, from genie's records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub network: String,
    pub netns: String,
    pub ifname: String,
}

/// The attachments genie recorded under `cni_dir` (unreadable records are skipped).
pub fn attachments(cni_dir: &Path) -> Vec<Attachment> {
    let Ok(listed) = CacheDir::new(cni_dir).list_pods() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for l in listed {
        let Ok(r) = l.record else { continue };
        if r.netns.is_empty() {
            continue;
        }
        for a in r.attachments {
            out.push(Attachment {
                network: a.network,
                netns: r.netns.clone(),
                ifname: a.if_name,
            });
        }
    }
    out
}

/// The networks genie has attached pods to on this node (NADs and LogicalNetworks among them),
/// from its records: name, config as delegated, and the resource a VF came from. The first record
/// of a network wins.
pub fn recorded_networks(cni_dir: &Path) -> Vec<super::ExtraNetwork> {
    let Ok(listed) = CacheDir::new(cni_dir).list_pods() else {
        return Vec::new();
    };
    let mut out: Vec<super::ExtraNetwork> = Vec::new();
    for l in listed {
        let Ok(r) = l.record else { continue };
        for a in r.attachments {
            if out.iter().any(|e| e.name == a.network) {
                continue;
            }
            let resource = a
                .extra
                .get(vfmeta::genie::record::EXTRA_RESOURCE)
                .and_then(|v| v.as_str())
                .map(str::to_string);
            out.push(super::ExtraNetwork {
                name: a.network,
                config: a.conf,
                resource,
            });
        }
    }
    out
}

/// Per-network traffic of one sample (networks with recorded attachments only; one without
/// any has no traffic).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetworkTraffic {
    /// Bytes counted since the previous sample, over the interfaces that have one.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_bytes_per_second: Option<f64>,
    pub tx_bytes_per_second: Option<f64>,
}

/// The counters of the previous sample, by attachment.
#[derive(Debug, Default)]
pub struct TrafficSampler {
    previous: HashMap<Attachment, (LinkStats, Instant)>,
}

/// The counters of `ifname` inside `netns`; `None` when either is gone.
pub fn read_stats(netns: &str, ifname: &str) -> Option<LinkStats> {
    let ns = NetNs::open(netns).ok()?;
    match ns.run(|| Netlink::open().and_then(|mut nl| nl.link_stats(ifname))) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%netns, %ifname, error = %e, "no link counters");
            None
        }
        Err(e) => {
            debug!(%netns, %ifname, error = %e, "cannot enter the netns");
            None
        }
    }
}

impl TrafficSampler {
    /// Reads the counters of `attachments` now; blocking (netns threads and netlink).
    pub fn sample(&mut self, attachments: &[Attachment]) -> BTreeMap<String, NetworkTraffic> {
        let mut out: BTreeMap<String, (NetworkTraffic, f64, bool)> = BTreeMap::new();
        let mut seen = HashMap::new();
        for a in attachments {
            let entry = out.entry(a.network.clone()).or_default();
            let Some(now_stats) = read_stats(&a.netns, &a.ifname) else {
                continue;
            };
            let now = Instant::now();
            if let Some((prev, at)) = self.previous.get(a) {
                let delta = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
                entry.0.rx_bytes += delta(now_stats.rx_bytes, prev.rx_bytes);
                entry.0.tx_bytes += delta(now_stats.tx_bytes, prev.tx_bytes);
                let secs = now.duration_since(*at).as_secs_f64();
                // Interfaces are read one after another: the longest gap stands for all.
                entry.1 = entry.1.max(secs);
                entry.2 = true;
            }
            seen.insert(a.clone(), (now_stats, now));
        }
        self.previous = seen;
        out.into_iter()
            .map(|(network, (mut t, secs, any))| {
                let rate = |bytes: u64| (any && secs > 0.0).then(|| bytes as f64 / secs);
                t.rx_bytes_per_second = rate(t.rx_bytes);
                t.tx_bytes_per_second = rate(t.tx_bytes);
                (network, t)
            })
            .collect()
    }
}
