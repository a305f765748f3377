//! LogicalNetworks: their own fields ([`vfkube::logical::check_spec`]), the subnet inside the
//! plugin's range when the controller can know the range, and no overlap with another
//! LogicalNetwork on the same physical network.
//!
//! `spec.plugin` names a plugin of the nodes' conf dir, which the controller cannot see: a plain
//! plugin name is accepted (with a warning) and genie checks the range on the node. When a
//! NetworkAttachmentDefinition of that name exists in the LogicalNetwork's namespace with a
//! `spec.config`, its IPAM range is the one the subnet must lie inside.

use serde_json::Value;
use vfkube::annotations::IpCidr;
use vfkube::logical::{apply_logical_network, check_spec, overlaps};
use vfkube::objects::LogicalNetwork;

use super::{decode, nad::check_usable, namespace_of, Denial, Outcome, Reason};
use crate::lookup::Lookup;

/// Validates a LogicalNetwork being created or updated.
pub fn validate_logical_network(ln: &LogicalNetwork, lookup: &dyn Lookup) -> Outcome {
    let (ns, name) = (&ln.metadata.namespace, &ln.metadata.name);
    let subnet = check_spec(ln).map_err(|e| Denial::new(Reason::Invalid, e.to_string()))?;
    let mut warnings = Vec::new();
    let plugin = ln.spec.plugin.trim();
    // A VLAN on a physical network belongs to one namespace: a tenant cannot join another
    // tenant's VLAN by naming it.
    if let Some(vlan) = ln.spec.vlan {
        let taken = |other: &LogicalNetwork| {
            other.spec.vlan == Some(vlan)
                && other.spec.physical_net == ln.spec.physical_net
                && other.metadata.namespace != *ns
        };
        if let Some(other) = lookup.find_logical_network(&taken) {
            return Err(Denial::new(
                Reason::Overlap,
                format!(
                    "LogicalNetwork {ns}/{name}: spec.vlan {vlan} on spec.physicalNet {:?} belongs to namespace {} (LogicalNetwork {}/{})",
                    ln.spec.physical_net,
                    other.metadata.namespace,
                    other.metadata.namespace,
                    other.metadata.name
                ),
            ));
        }
    }
    // spec.vlan only on a plugin that can carry it: known when a NAD of that name has a config.
    if ln.spec.vlan.is_some() && subnet.is_none() {
        if let Some(Ok(Some(mut config))) = lookup.nad(ns, plugin).map(|n| check_usable(&n)) {
            apply_logical_network(&mut config, ln)
                .map_err(|e| Denial::new(Reason::Invalid, e.to_string()))?;
        }
    }
    if let Some(subnet) = subnet {
        match lookup.nad(ns, plugin) {
            Some(nad) => match check_usable(&nad) {
                Ok(Some(mut config)) => apply_logical_network(&mut config, ln)
                    .map_err(|e| Denial::new(Reason::Invalid, e.to_string()))?,
                Ok(None) => warnings.push(plugin_unseen(ln)),
                Err(d) => {
                    return Err(Denial::new(
                        d.reason,
                        format!(
                            "LogicalNetwork {ns}/{name}: spec.plugin {plugin:?} names a NetworkAttachmentDefinition genie would refuse: {}",
                            d.message
                        ),
                    ))
                }
            },
            None => warnings.push(plugin_unseen(ln)),
        }
        let overlapping = |other: &LogicalNetwork| {
            other.spec.physical_net == ln.spec.physical_net
                && !(other.metadata.namespace == *ns && other.metadata.name == *name)
                && other
                    .spec
                    .subnet
                    .trim()
                    .parse()
                    .is_ok_and(|theirs| overlaps(subnet, theirs))
        };
        if let Some(other) = lookup.find_logical_network(&overlapping) {
            // As parsed (the predicate parsed it), as the subnet is shown everywhere.
            let theirs = other.spec.subnet.trim();
            let theirs = theirs
                .parse::<IpCidr>()
                .map_or_else(|_| theirs.to_string(), |c| c.to_string());
            return Err(Denial::new(
                Reason::Overlap,
                format!(
                    "LogicalNetwork {ns}/{name}: spec.subnet {subnet} overlaps {theirs} of LogicalNetwork {}/{} on the same spec.physicalNet {:?}",
                    other.metadata.namespace, other.metadata.name, ln.spec.physical_net
                ),
            ));
        }
    }
    Ok(warnings)
}

fn plugin_unseen(ln: &LogicalNetwork) -> String {
    format!(
        "LogicalNetwork {}/{}: spec.plugin {:?} is taken as a plugin of the nodes' conf dir; genie checks that spec.subnet lies inside its range when a pod uses the network",
        ln.metadata.namespace, ln.metadata.name, ln.spec.plugin
    )
}

/// Decodes the request's object and validates it.
pub fn validate_logical_network_object(
    object: &Value,
    request_namespace: &str,
    lookup: &dyn Lookup,
) -> Outcome {
    let mut ln: LogicalNetwork = decode("LogicalNetwork", object, request_namespace)?;
    ln.metadata.namespace = namespace_of(&ln.metadata.namespace, request_namespace);
    validate_logical_network(&ln, lookup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::MemoryLookup;
    use serde_json::json;

    fn ln(ns: &str, name: &str, plugin: &str, subnet: &str, phys: &str) -> LogicalNetwork {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
            "spec": {"plugin": plugin, "subnet": subnet, "physicalNet": phys}}))
        .unwrap()
    }

    fn lookup() -> MemoryLookup {
        let l = MemoryLookup::new();
        l.add_nad(
            serde_json::from_value(json!({"metadata": {"name": "br", "namespace": "default"},
                "spec": {"config": r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"host-local","subnet":"10.10.0.0/16"}}"#}}))
            .unwrap(),
        );
        l.add_logical_network(ln("other", "red", "bridge", "10.20.0.0/16", "p1"));
        l
    }

    #[test]
    fn subnets_inside_the_nads_range_and_apart_from_others_pass() {
        let l = lookup();
        assert!(
            validate_logical_network(&ln("default", "blue", "br", "10.10.1.0/24", "p1"), &l)
                .unwrap()
                .is_empty()
        );
        // The same subnet on another physical network does not overlap.
        validate_logical_network(&ln("default", "blue", "bridge", "10.20.1.0/24", "p2"), &l)
            .unwrap();
        // A plain plugin name is a node plugin: allowed with a warning.
        let w =
            validate_logical_network(&ln("default", "blue", "flannel", "10.30.0.0/16", "p1"), &l)
                .unwrap();
        assert!(w[0].contains("spec.plugin \"flannel\""), "{w:?}");
        // Updating red itself does not overlap with red.
        validate_logical_network(&ln("other", "red", "bridge", "10.20.0.0/16", "p1"), &l).unwrap();
    }

    #[test]
    fn a_vlan_is_refused_on_a_nad_whose_plugin_cannot_carry_it() {
        let l = lookup();
        l.add_nad(
            serde_json::from_value(json!({"metadata": {"name": "mv", "namespace": "default"},
                "spec": {"config": r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","ipam":{"type":"host-local","subnet":"10.30.0.0/16"}}"#}}))
            .unwrap(),
        );
        for (plugin, subnet, ok) in [
            ("br", "", true),
            ("br", "10.10.1.0/24", true),
            ("mv", "", false),
            ("mv", "10.30.1.0/24", false),
            // A plugin of the nodes' conf dir: genie decides on the node.
            ("macvlan", "", true),
        ] {
            let mut x = ln("default", "blue", plugin, subnet, "p2");
            x.spec.vlan = Some(100);
            match validate_logical_network(&x, &l) {
                Ok(_) => assert!(ok, "{plugin} {subnet:?} allowed"),
                Err(d) => {
                    assert!(!ok, "{plugin} {subnet:?}: {}", d.message);
                    assert!(d.message.contains("spec.vlan"), "{}", d.message);
                    assert!(d.message.contains("macvlan"), "{}", d.message);
                }
            }
        }
    }

    #[test]
    fn a_vlan_on_a_physical_net_belongs_to_one_namespace() {
        let l = lookup();
        let mut theirs = ln("tenant-b", "b100", "sriov", "", "phys");
        theirs.spec.vlan = Some(100);
        l.add_logical_network(theirs);
        for (ns, vlan, phys, ok) in [
            ("tenant-a", 100, "phys", false),
            ("tenant-b", 100, "phys", true),
            ("tenant-a", 101, "phys", true),
            ("tenant-a", 100, "other", true),
        ] {
            let mut x = ln(ns, "mine", "sriov", "", phys);
            x.spec.vlan = Some(vlan);
            match validate_logical_network(&x, &l) {
                Ok(_) => assert!(ok, "{ns} vlan {vlan} on {phys} allowed"),
                Err(d) => {
                    assert!(!ok, "{ns} vlan {vlan} on {phys}: {}", d.message);
                    assert_eq!(d.reason, Reason::Overlap);
                    assert!(d.message.contains("spec.vlan 100"), "{}", d.message);
                    assert!(d.message.contains("tenant-b/b100"), "{}", d.message);
                }
            }
        }
    }

    #[test]
    fn outside_ranges_overlaps_and_bad_fields_are_denied() {
        let l = lookup();
        for (x, reason, needle) in [
            (
                ln("default", "blue", "br", "10.11.0.0/24", "p1"),
                Reason::Invalid,
                "not inside the range 10.10.0.0/16",
            ),
            (
                ln("default", "blue", "bridge", "10.20.5.0/24", "p1"),
                Reason::Overlap,
                "LogicalNetwork other/red",
            ),
            (
                ln("default", "blue", "bridge", "10.0.0.0/8", "p1"),
                Reason::Overlap,
                "spec.subnet 10.0.0.0/8",
            ),
            (
                ln("default", "blue", "../x", "", ""),
                Reason::Invalid,
                "spec.plugin",
            ),
            (
                ln("default", "blue", "bridge", "x", ""),
                Reason::Invalid,
                "spec.subnet",
            ),
            (
                ln("default", "blue", "bridge", "", "P 1"),
                Reason::Invalid,
                "spec.physicalNet",
            ),
            (
                ln("default", "a/b", "bridge", "", ""),
                Reason::Invalid,
                "metadata.name",
            ),
        ] {
            let d = validate_logical_network(&x, &l).unwrap_err();
            assert_eq!(d.reason, reason, "{}", d.message);
            assert!(
                d.message.starts_with("LogicalNetwork default/"),
                "{}",
                d.message
            );
            assert!(d.message.contains(needle), "{}", d.message);
        }
        let d = validate_logical_network_object(
            &json!({"metadata": {"name": "v"}, "spec": {"plugin": "bridge", "vlan": 5000}}),
            "default",
            &l,
        )
        .unwrap_err();
        assert!(d.message.contains("spec.vlan 5000"), "{}", d.message);
        let d = validate_logical_network_object(
            &json!({"metadata": {"name": "v"}, "spec": {"plugin": "bridge", "vlan": -1}}),
            "default",
            &l,
        )
        .unwrap_err();
        assert!(
            d.message.contains("LogicalNetwork default/v"),
            "{}",
            d.message
        );
    }
}
