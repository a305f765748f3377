//! Pods for the model: every pod's labels and, from its network-status, its interfaces on
//! secondary networks (peers' addresses); for pods on this node, the netns and interfaces genie
//! recorded (`vfmeta::cache`), which exist before the network-status is written.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;
use vfkube::netstatus::parse_network_status;
use vfmeta::cache::{CacheDir, PodRecord};

use crate::policy::model::{Interface, Labels, NetworkKey};

/// The most addresses read from one delegate result.
pub const MAX_RESULT_IPS: usize = 16;
/// The most interfaces one pod contributes.
pub const MAX_INTERFACES: usize = 64;

/// The network a network-status or record name refers to: `namespace/name` (a NAD or a
/// LogicalNetwork). Plain names (the cluster default network, CNI-Genie plugins) are no network
/// of the model.
pub fn network_key(name: &str) -> Option<NetworkKey> {
    let (ns, n) = name.split_once('/')?;
    (vfkube::objects::is_dns_label(ns) && vfkube::objects::is_dns_label(n))
        .then(|| NetworkKey::new(ns, n))
}

/// A pod's interfaces on secondary networks, from its network-status annotation value. Problems
/// (a value that is not a list, skipped parts) are returned for the caller to log.
pub fn status_interfaces(value: Option<&str>) -> (Vec<Interface>, Option<String>) {
    let Some(value) = value else {
        return (Vec::new(), None);
    };
    let read = match parse_network_status(value) {
        Ok(r) => r,
        Err(p) => return (Vec::new(), Some(p)),
    };
    let problem = (!read.skipped.is_empty()).then(|| read.skipped.join("; "));
    let interfaces = read
        .entries
        .into_iter()
        .filter_map(|e| {
            Some(Interface {
                network: network_key(&e.name)?,
                ifname: e.interface?,
                ips: e.ips,
            })
        })
        .take(MAX_INTERFACES)
        .collect();
    (interfaces, problem)
}

/// The addresses of a delegate's CNI result: `ips[].address` (0.3.0 and later) or
/// `ip4.ip`/`ip6.ip` (0.2.0), prefix lengths dropped.
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    let bare = |v: &Value| {
        let s = v.as_str()?;
        s.split_once('/')
            .map_or(s, |(a, _)| a)
            .parse::<IpAddr>()
            .ok()
    };
    let mut out: Vec<IpAddr> = Vec::new();
    match result.get("ips").and_then(Value::as_array) {
        Some(ips) => {
            out.extend(
                ips.iter()
                    .filter_map(|e| e.get("address").and_then(bare))
                    .take(MAX_RESULT_IPS),
            );
        }
        None => {
            for k in ["ip4", "ip6"] {
                if let Some(a) = result.get(k).and_then(|v| v.get("ip")).and_then(bare) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// What genie recorded for one pod on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalPod {
    pub netns: Option<PathBuf>,
    pub interfaces: Vec<Interface>,
}

fn local_pod(r: &PodRecord) -> LocalPod {
    let interfaces = r
        .attachments
        .iter()
        .filter_map(|a| {
            Some(Interface {
                network: network_key(&a.network)?,
                ifname: a.if_name.clone(),
                ips: a.result.as_ref().map(result_ips).unwrap_or_default(),
            })
        })
        .take(MAX_INTERFACES)
        .collect();
    LocalPod {
        netns: Some(PathBuf::from(&r.netns)).filter(|p| !p.as_os_str().is_empty()),
        interfaces,
    }
}

/// genie's records in `cache`, by pod (namespace, name). When a pod has several (a sandbox
/// recreated before the old one's DEL), the newest file wins. Records that cannot be read are
/// genie's to quarantine: skipped here, returned as problems with the listing's own error.
pub fn read_records(cache: &CacheDir) -> (HashMap<(String, String), LocalPod>, Vec<String>) {
    let mut problems = Vec::new();
    let listed = match cache.list_pods() {
        Ok(l) => l,
        Err(e) => return (HashMap::new(), vec![e.to_string()]),
    };
    let mut newest: HashMap<(String, String), (Option<SystemTime>, LocalPod)> = HashMap::new();
    for entry in listed {
        let record = match entry.record {
            Ok(r) => r,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let (Some(ns), Some(name)) = (record.pod_namespace.clone(), record.pod_name.clone()) else {
            continue;
        };
        let mtime = std::fs::metadata(&entry.path)
            .and_then(|m| m.modified())
            .ok();
        let pod = local_pod(&record);
        match newest.get(&(ns.clone(), name.clone())) {
            Some((t, _)) if *t > mtime => {}
            _ => {
                newest.insert((ns, name), (mtime, pod));
            }
        }
    }
    let pods = newest.into_iter().map(|(k, (_, p))| (k, p)).collect();
    (pods, problems)
}

/// A local pod's interfaces: genie's record first (it names the interfaces before they have
/// addresses), completed from the network-status (addresses the record lacks, interfaces it
/// does not list).
pub fn merge_interfaces(recorded: &[Interface], status: Vec<Interface>) -> Vec<Interface> {
    let mut out: Vec<Interface> = recorded.to_vec();
    for s in status {
        if let Some(i) = out
            .iter_mut()
            .find(|i| i.ifname == s.ifname && i.network == s.network)
        {
            if i.ips.is_empty() {
                i.ips = s.ips;
            }
        } else if !out.iter().any(|i| i.ifname == s.ifname) {
            out.push(s);
        }
    }
    out.truncate(MAX_INTERFACES);
    out
}

/// Labels from a metadata's optional map.
pub fn labels(map: Option<&BTreeMap<String, String>>) -> Labels {
    map.cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vfmeta::cache::{PodAttachment, PodKey};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn status_names_of_nads_and_logical_networks_are_networks() {
        assert_eq!(network_key("a/blue"), Some(NetworkKey::new("a", "blue")));
        for plain in ["k8s-pod-network", "a/b/c", "A/b", "/b", "a/"] {
            assert_eq!(network_key(plain), None, "{plain}");
        }
        let value = json!([
            {"name": "cbr0", "interface": "eth0", "ips": ["10.244.0.5"], "default": true},
            {"name": "a/blue", "interface": "net1", "ips": ["10.1.0.5", "fd00::5"]},
            {"name": "a/red"}
        ])
        .to_string();
        let (ifs, problem) = status_interfaces(Some(&value));
        assert_eq!(problem, None);
        assert_eq!(
            ifs,
            vec![Interface {
                network: NetworkKey::new("a", "blue"),
                ifname: "net1".into(),
                ips: vec![ip("10.1.0.5"), ip("fd00::5")]
            }]
        );
        let (ifs, problem) = status_interfaces(Some("{"));
        assert!(ifs.is_empty() && problem.is_some());
        assert_eq!(status_interfaces(None), (Vec::new(), None));
    }

    #[test]
    fn result_addresses_of_every_cni_version() {
        assert_eq!(
            result_ips(
                &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"},
                {"address": "fd00::5/64"}, {"address": 7}]})
            ),
            vec![ip("10.1.0.5"), ip("fd00::5")]
        );
        assert_eq!(
            result_ips(&json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.2.0.5/16"}})),
            vec![ip("10.2.0.5")]
        );
        assert!(result_ips(&json!("nonsense")).is_empty());
        let many: Vec<Value> = (0..100)
            .map(|i| json!({"address": format!("10.0.0.{i}/24")}))
            .collect();
        assert_eq!(result_ips(&json!({"ips": many})).len(), MAX_RESULT_IPS);
    }

    fn record(cid: &str, ns: &str, name: &str, netns: &str) -> PodRecord {
        let mut r = PodRecord::new(&PodKey::new(cid, "eth0").unwrap(), netns);
        r.pod_namespace = Some(ns.into());
        r.pod_name = Some(name.into());
        r.attachments = vec![
            PodAttachment {
                network: "cbr0".into(),
                if_name: "eth0".into(),
                conf: json!({}),
                result: None,
                extra: Default::default(),
            },
            PodAttachment {
                network: "a/blue".into(),
                if_name: "net1".into(),
                conf: json!({"type": "sriov"}),
                result: Some(json!({"ips": [{"address": "10.1.0.9/24"}]})),
                extra: Default::default(),
            },
        ];
        r
    }

    #[test]
    fn records_give_local_pods_their_netns_and_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::new(dir.path());
        cache
            .write_pod(&record("c1", "a", "web", "/var/run/netns/cni-1"))
            .unwrap();
        let mut anonymous = record("c2", "a", "x", "/var/run/netns/cni-2");
        anonymous.pod_name = None;
        cache.write_pod(&anonymous).unwrap();
        std::fs::write(dir.path().join("vfgenie/c3-eth0.json"), "{").unwrap();
        let (pods, problems) = read_records(&cache);
        assert_eq!(pods.len(), 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let web = &pods[&("a".to_string(), "web".to_string())];
        assert_eq!(web.netns, Some(PathBuf::from("/var/run/netns/cni-1")));
        assert_eq!(web.interfaces.len(), 1);
        assert_eq!(web.interfaces[0].ips, vec![ip("10.1.0.9")]);
        // No cache directory yet: no local pods, no problem.
        let (pods, problems) = read_records(&CacheDir::new(dir.path().join("none")));
        assert!(pods.is_empty() && problems.is_empty());
    }

    #[test]
    fn recorded_interfaces_are_completed_from_the_status() {
        let blue = NetworkKey::new("a", "blue");
        let red = NetworkKey::new("a", "red");
        let recorded = vec![Interface {
            network: blue.clone(),
            ifname: "net1".into(),
            ips: vec![],
        }];
        let status = vec![
            Interface {
                network: blue.clone(),
                ifname: "net1".into(),
                ips: vec![ip("10.1.0.3")],
            },
            Interface {
                network: red.clone(),
                ifname: "net2".into(),
                ips: vec![ip("10.2.0.3")],
            },
            Interface {
                network: red,
                ifname: "net1".into(),
                ips: vec![ip("10.9.0.3")],
            },
        ];
        let merged = merge_interfaces(&recorded, status);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].ips, vec![ip("10.1.0.3")]);
        assert_eq!(merged[1].ifname, "net2");
    }
}
