//! Builders for compiler tests, and the `nft --check` runner.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::policy::model::{
    GeniePolicy, GeniePolicyRule, Inputs, Interface, MultiPolicy, Network, NetworkKey, Pod,
    TrafficPath,
};
use crate::policy::ruleset::{Hook, Match, Table};

pub fn key(ns: &str, name: &str) -> NetworkKey {
    NetworkKey::new(ns, name)
}

pub fn net(ns: &str, name: &str, subnets: &[&str], path: TrafficPath) -> Network {
    Network {
        key: key(ns, name),
        subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        path,
    }
}

pub fn add_net(inputs: &mut Inputs, n: Network) {
    inputs.networks.insert(n.key.clone(), n);
}

pub fn iface(network: NetworkKey, ifname: &str, ips: &[&str]) -> Interface {
    Interface {
        network,
        ifname: ifname.into(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

pub fn pod(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    interfaces: Vec<Interface>,
    netns: Option<&str>,
) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        interfaces,
        netns: netns.map(PathBuf::from),
    }
}

pub fn genie(ns: &str, name: &str, rules: &[(&str, &[&str])]) -> GeniePolicy {
    GeniePolicy {
        namespace: ns.into(),
        name: name.into(),
        rules: rules
            .iter()
            .map(|(sel, peers)| GeniePolicyRule {
                network_selector: sel.to_string(),
                peer_networks: peers.iter().map(|p| p.to_string()).collect(),
            })
            .collect(),
    }
}

/// A MultiNetworkPolicy with its spec written as the YAML's JSON.
pub fn multi(ns: &str, name: &str, policy_for: &[NetworkKey], spec: Value) -> MultiPolicy {
    MultiPolicy {
        namespace: ns.into(),
        name: name.into(),
        policy_for: policy_for.to_vec(),
        spec: serde_json::from_value(spec).unwrap(),
    }
}

/// A set's elements as nft prints them; empty when the table has no such set.
pub fn elements(table: &Table, set: &str) -> Vec<String> {
    table
        .set(set)
        .map(|s| s.element_strings())
        .unwrap_or_default()
}

/// The sets a chain looks up, in rule order.
pub fn lookups(table: &Table, hook: Hook) -> Vec<&'static str> {
    table
        .chain(hook)
        .unwrap()
        .rules
        .iter()
        .flat_map(|r| r.matches.iter())
        .filter_map(|m| match m {
            Match::InSet { set, .. } => Some(*set),
            _ => None,
        })
        .collect()
}

/// Feeds the table's document to `nft --check -j -f -`, which has the kernel validate the
/// whole transaction and then discards it; nft's message when it is refused.
pub fn nft_verdict(table: &Table) -> Result<(), String> {
    let doc = table.to_nft_json().to_string();
    let mut child = Command::new("nft")
        .args(["--check", "-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft (nftables) must be installed to run these tests");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            &doc[..doc.len().min(4000)]
        ))
    }
}

/// Panics with nft's message when it refuses the table.
pub fn nft_check(table: &Table) {
    if let Err(e) = nft_verdict(table) {
        panic!("nft refused the table: {e}");
    }
}
