//! Interface names a pod's annotations request: two attachments may not share one. genie refuses
//! it when planning (where it also sees the names it generates); the controller refuses the
//! requested clashes at admission with the same message.

use std::collections::BTreeMap;

use crate::annotations::{PodNetworkRequest, PodRef};

/// Two attachments of one pod on the same interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{subject}: interface {ifname} is requested twice (network {network})")]
pub struct InterfaceClash {
    /// `pod namespace/name`, or `the container` when genie runs without a pod.
    pub subject: String,
    pub ifname: String,
    /// The second network asking for it.
    pub network: String,
}

/// The interface names a pod's annotations ask for, with the network asking, in genie's order:
/// the NPWG selections, then the CNI-Genie plugins (or, without `cni`, the LogicalNetworks).
/// The default network's own requested name is not used by genie (it gets `CNI_IFNAME`).
pub fn requested_interfaces(pod: &PodRef, req: &PodNetworkRequest) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in &req.networks {
        if let Some(i) = &s.interface {
            out.push((
                i.to_string(),
                format!("{}/{}", s.namespace_or(&pod.namespace), s.name),
            ));
        }
    }
    match &req.genie_plugins {
        Some(plugins) => out.extend(plugins.iter().filter_map(|g| {
            g.interface
                .as_ref()
                .map(|i| (i.to_string(), g.plugin.clone()))
        })),
        None => out.extend(req.logical_networks.iter().filter_map(|l| {
            l.interface
                .as_ref()
                .map(|i| (i.to_string(), format!("{}/{}", pod.namespace, l.name)))
        })),
    }
    out
}

/// Refuses a pod whose annotations request one interface name twice.
pub fn check_requested_interfaces(
    pod: &PodRef,
    req: &PodNetworkRequest,
) -> Result<(), InterfaceClash> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (ifname, network) in requested_interfaces(pod, req) {
        if seen.contains_key(&ifname) {
            return Err(InterfaceClash {
                subject: format!("pod {pod}"),
                ifname,
                network,
            });
        }
        seen.insert(ifname, network);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::parse_pod_annotations;

    fn req(pairs: &[(&str, &str)]) -> (PodRef, PodNetworkRequest) {
        let pod = PodRef::new("default", "web");
        let a = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = parse_pod_annotations(&pod, &a).unwrap();
        (pod, r)
    }

    #[test]
    fn a_name_requested_twice_is_refused_naming_the_second_network() {
        let (pod, r) = req(&[("k8s.v1.cni.cncf.io/networks", "a@net1,b@net2")]);
        check_requested_interfaces(&pod, &r).unwrap();
        let (pod, r) = req(&[("k8s.v1.cni.cncf.io/networks", "a@x1,other/b@x1")]);
        let e = check_requested_interfaces(&pod, &r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pod default/web: interface x1 is requested twice (network other/b)"
        );
        let (pod, r) = req(&[
            ("k8s.v1.cni.cncf.io/networks", "a@eth1"),
            ("cni", "weave@eth1"),
        ]);
        assert_eq!(
            check_requested_interfaces(&pod, &r).unwrap_err().network,
            "weave"
        );
        // With `cni` set, genie ignores `networks`, so their names cannot clash.
        let (pod, r) = req(&[("cni", "weave@eth1"), ("networks", "blue@eth1")]);
        check_requested_interfaces(&pod, &r).unwrap();
        let (pod, r) = req(&[("cni", ""), ("networks", "blue@eth1,red@eth1")]);
        assert_eq!(
            check_requested_interfaces(&pod, &r).unwrap_err().network,
            "default/red"
        );
    }
}
