//! CNI-Genie LogicalNetworks: the checks of a LogicalNetwork's own fields, its subnet applied to
//! (and required inside) its plugin's range, and overlap between subnets. genie applies the subnet
//! on the node; the controller checks the same rules at admission.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::annotations::{is_plugin_name, IpCidr};
use crate::objects::{is_dns_label, LogicalNetwork};

/// A LogicalNetwork that is invalid, or whose subnet cannot be applied to its plugin's config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LogicalNetwork {namespace}/{name}: {problem}")]
pub struct LogicalNetworkError {
    pub namespace: String,
    pub name: String,
    pub problem: String,
}

impl LogicalNetworkError {
    fn of(ln: &LogicalNetwork, problem: String) -> Self {
        Self {
            namespace: ln.metadata.namespace.clone(),
            name: ln.metadata.name.clone(),
            problem,
        }
    }
}

/// The highest 802.1Q VLAN ID a LogicalNetwork may carry (0 and 4095 are reserved).
pub const MAX_VLAN: u16 = 4094;

/// Checks a LogicalNetwork's own fields: a DNS-1123 label as its name (pods name it in their
/// `networks` annotation), a plain plugin name, `physicalNet` empty or a DNS-1123 label,
/// `subnet` empty or a CIDR, `vlan` absent or 1..=4094. Returns the subnet when set.
pub fn check_spec(ln: &LogicalNetwork) -> Result<Option<IpCidr>, LogicalNetworkError> {
    let err = |p: String| LogicalNetworkError::of(ln, p);
    if !is_dns_label(&ln.metadata.name) {
        return Err(err(format!(
            "metadata.name {:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63)",
            ln.metadata.name
        )));
    }
    let plugin = ln.spec.plugin.trim();
    if plugin.is_empty() {
        return Err(err(
            "spec.plugin is empty; it names the plugin the network runs on".into(),
        ));
    }
    if !is_plugin_name(plugin) {
        return Err(err(format!(
            "spec.plugin {plugin:?} is not a plain plugin name (letters, digits, '-', '_', '.'; not '.' or '..')"
        )));
    }
    if plugin.eq_ignore_ascii_case("genie") {
        return Err(err(
            "spec.plugin names genie itself; genie is the node's meta-plugin and is never a delegate"
                .into(),
        ));
    }
    let physical = ln.spec.physical_net.as_str();
    if !physical.is_empty() && !is_dns_label(physical) {
        return Err(err(format!(
            "spec.physicalNet {physical:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63)"
        )));
    }
    if let Some(vlan) = ln.spec.vlan {
        if !(1..=MAX_VLAN).contains(&vlan) {
            return Err(err(format!("spec.vlan {vlan} is outside 1..{MAX_VLAN}")));
        }
    }
    let subnet = ln.spec.subnet.trim();
    if subnet.is_empty() {
        return Ok(None);
    }
    let cidr: IpCidr = subnet
        .parse()
        .map_err(|p: String| err(format!("spec.subnet: {p}")))?;
    Ok(Some(cidr))
}

/// The plugin types that carry a LogicalNetwork's `spec.vlan` (as their `vlan` key).
pub const VLAN_PLUGIN_TYPES: [&str; 2] = ["sriov", "bridge"];

/// Applies a LogicalNetwork to its plugin's config: its `spec.vlan` (see [`apply_vlan`]), then
/// its `spec.subnet`, which replaces the plugin's `ipam.subnet` (or the matching `ipam.ranges`
/// set) and must lie inside the plugin's range. A gateway, rangeStart or rangeEnd outside the new
/// subnet is dropped. An empty subnet and no vlan change nothing.
pub fn apply_logical_network(
    config: &mut Map<String, Value>,
    ln: &LogicalNetwork,
) -> Result<(), LogicalNetworkError> {
    apply_vlan(config, ln)?;
    apply_subnet(config, ln)
}

/// Sets a LogicalNetwork's `spec.vlan` as `"vlan": N` in its plugin's config: a conf of type
/// `sriov` or `bridge`, or the first plugin of those types in a conflist. Any other plugin
/// cannot carry a VLAN, and the LogicalNetwork is refused naming `spec.vlan` and the type (a
/// pod silently on the untagged network would be on the wrong network). No vlan changes nothing.
pub fn apply_vlan(
    config: &mut Map<String, Value>,
    ln: &LogicalNetwork,
) -> Result<(), LogicalNetworkError> {
    let Some(vlan) = ln.spec.vlan else {
        return Ok(());
    };
    let err = |problem: String| LogicalNetworkError::of(ln, problem);
    if !(1..=MAX_VLAN).contains(&vlan) {
        return Err(err(format!("spec.vlan {vlan} is outside 1..{MAX_VLAN}")));
    }
    let type_of = |c: &Map<String, Value>| {
        c.get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let carries = |t: &str| VLAN_PLUGIN_TYPES.contains(&t);
    let plugin = ln.spec.plugin.clone();
    let target = match config.get_mut("plugins") {
        Some(Value::Array(plugins)) => {
            let types: Vec<String> = plugins
                .iter()
                .map(|p| p.as_object().map(type_of).unwrap_or_default())
                .collect();
            match plugins
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .find(|p| carries(&type_of(p)))
            {
                Some(p) => p,
                None => {
                    return Err(err(format!(
                        "spec.vlan {vlan} needs a plugin of type sriov or bridge, but the conflist of plugin {plugin:?} has types [{}]",
                        types.join(", ")
                    )))
                }
            }
        }
        _ => {
            let t = type_of(config);
            if !carries(&t) {
                return Err(err(format!(
                    "spec.vlan {vlan} needs a plugin of type sriov or bridge, but plugin {plugin:?} is of type {t:?}"
                )));
            }
            config
        }
    };
    target.insert("vlan".into(), Value::from(vlan));
    Ok(())
}

fn apply_subnet(
    config: &mut Map<String, Value>,
    ln: &LogicalNetwork,
) -> Result<(), LogicalNetworkError> {
    let err = |problem: String| LogicalNetworkError::of(ln, problem);
    let subnet_text = ln.spec.subnet.trim();
    if subnet_text.is_empty() {
        return Ok(());
    }
    let subnet: IpCidr = subnet_text
        .parse()
        .map_err(|p: String| err(format!("spec.subnet: {p}")))?;
    let plugin = ln.spec.plugin.clone();
    let ipam = ipam_mut(config).ok_or_else(|| {
        err(format!(
            "the config of plugin {plugin:?} has no ipam section to apply spec.subnet to"
        ))
    })?;
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| s.parse::<IpCidr>().ok())
    };
    if let Some(outer) = parse(ipam.get("subnet")) {
        if !contains(outer, subnet) {
            return Err(err(format!(
                "spec.subnet {subnet} is not inside the range {outer} of plugin {plugin:?}"
            )));
        }
        ipam.insert("subnet".into(), Value::String(subnet.to_string()));
        for key in ["gateway", "rangeStart", "rangeEnd"] {
            let outside = ipam
                .get(key)
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok())
                .is_some_and(|a| {
                    !contains(
                        subnet,
                        IpCidr {
                            addr: a,
                            prefix: subnet.prefix,
                        },
                    )
                });
            if outside {
                ipam.remove(key);
            }
        }
        return Ok(());
    }
    if let Some(Value::Array(sets)) = ipam.get_mut("ranges") {
        let mut ranges_seen = Vec::new();
        for set in sets.iter_mut() {
            let inside = set.as_array().is_some_and(|ranges| {
                ranges.iter().any(|r| match parse(r.get("subnet")) {
                    Some(outer) => {
                        ranges_seen.push(outer.to_string());
                        contains(outer, subnet)
                    }
                    None => false,
                })
            });
            if inside {
                *set = serde_json::json!([{ "subnet": subnet.to_string() }]);
                return Ok(());
            }
        }
        return Err(err(format!(
            "spec.subnet {subnet} is not inside the ranges of plugin {plugin:?} ({})",
            ranges_seen.join(", ")
        )));
    }
    Err(err(format!(
        "the ipam of plugin {plugin:?} has no subnet for spec.subnet to narrow"
    )))
}

/// The `ipam` object of a conf, or of the first plugin of a conflist that has one.
fn ipam_mut(config: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    if config.get("plugins").is_some_and(Value::is_array) {
        let plugins = config.get_mut("plugins")?.as_array_mut()?;
        return plugins
            .iter_mut()
            .find_map(|p| p.get_mut("ipam").and_then(Value::as_object_mut));
    }
    config.get_mut("ipam").and_then(Value::as_object_mut)
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Whether `inner` lies inside `outer` (same family, longer or equal prefix, same network bits).
pub fn contains(outer: IpCidr, inner: IpCidr) -> bool {
    if inner.prefix < outer.prefix {
        return false;
    }
    match (outer.addr, inner.addr) {
        (IpAddr::V4(o), IpAddr::V4(i)) => {
            u32::from(o) & mask4(outer.prefix) == u32::from(i) & mask4(outer.prefix)
        }
        (IpAddr::V6(o), IpAddr::V6(i)) => {
            u128::from(o) & mask6(outer.prefix) == u128::from(i) & mask6(outer.prefix)
        }
        _ => false,
    }
}

/// Whether two subnets share an address (one contains the other).
pub fn overlaps(a: IpCidr, b: IpCidr) -> bool {
    contains(a, b) || contains(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{LogicalNetworkSpec, ObjectMeta};
    use serde_json::json;

    fn ln(name: &str, plugin: &str, subnet: &str) -> LogicalNetwork {
        LogicalNetwork {
            metadata: ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..ObjectMeta::default()
            },
            spec: LogicalNetworkSpec {
                physical_net: "p1".into(),
                plugin: plugin.into(),
                subnet: subnet.into(),
                vlan: None,
            },
            status: None,
        }
    }

    fn cidr(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    #[test]
    fn own_fields_are_checked_and_name_the_field() {
        assert_eq!(
            check_spec(&ln("blue", "bridge", "10.1.0.0/24")).unwrap(),
            Some(cidr("10.1.0.0/24"))
        );
        assert_eq!(check_spec(&ln("blue", "bridge", "")).unwrap(), None);
        for (l, field) in [
            (ln("Blue", "bridge", ""), "metadata.name"),
            (ln("../x", "bridge", ""), "metadata.name"),
            (ln("blue", "", ""), "spec.plugin"),
            (ln("blue", "../bin/x", ""), "spec.plugin"),
            (ln("blue", "genie", ""), "spec.plugin"),
            (ln("blue", "bridge", "10.1.0.0"), "spec.subnet"),
            (ln("blue", "bridge", "10.1.0.0/33"), "spec.subnet"),
        ] {
            let e = check_spec(&l).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
            assert!(e.starts_with("LogicalNetwork default/"), "{e}");
        }
        let mut l = ln("blue", "bridge", "");
        l.spec.physical_net = "a/b".into();
        assert!(check_spec(&l)
            .unwrap_err()
            .problem
            .contains("spec.physicalNet"));
        for (vlan, ok) in [(0, false), (1, true), (4094, true), (4095, false)] {
            l.spec.physical_net = String::new();
            l.spec.vlan = Some(vlan);
            assert_eq!(check_spec(&l).is_ok(), ok, "{vlan}");
        }
    }

    #[test]
    fn the_subnet_narrows_the_plugins_range() {
        let mut c = json!({"type": "bridge", "ipam": {"type": "host-local",
            "subnet": "10.1.0.0/16", "gateway": "10.1.0.1"}})
        .as_object()
        .cloned()
        .unwrap();
        apply_logical_network(&mut c, &ln("blue", "bridge", "10.1.5.0/24")).unwrap();
        assert_eq!(c["ipam"]["subnet"], "10.1.5.0/24");
        assert!(c["ipam"].get("gateway").is_none());
        let e = apply_logical_network(&mut c, &ln("blue", "bridge", "10.2.0.0/24")).unwrap_err();
        assert!(e.problem.contains("not inside the range"), "{e}");
        let mut r = json!({"plugins": [{"type": "bridge", "ipam": {"ranges": [[{"subnet": "fd00::/64"}]]}}]})
            .as_object()
            .cloned()
            .unwrap();
        apply_logical_network(&mut r, &ln("blue", "bridge", "fd00::/80")).unwrap();
        let e = apply_logical_network(&mut r, &ln("blue", "bridge", "fd01::/80")).unwrap_err();
        assert!(e.problem.contains("ranges"), "{e}");
    }

    #[test]
    fn the_vlan_goes_to_a_bridge_or_sriov_plugin_and_is_refused_elsewhere() {
        let obj = |v: Value| v.as_object().cloned().unwrap();
        let mut l = ln("blue", "br", "");
        l.spec.vlan = Some(100);
        let mut c = obj(json!({"type": "bridge", "bridge": "br0"}));
        apply_logical_network(&mut c, &l).unwrap();
        assert_eq!(c["vlan"], 100);
        let mut c = obj(json!({"type": "sriov", "vlan": 5}));
        apply_logical_network(&mut c, &l).unwrap();
        assert_eq!(c["vlan"], 100);
        let mut c = obj(json!({"plugins": [{"type": "tuning"}, {"type": "bridge"},
            {"type": "sriov"}, {"type": "portmap"}]}));
        apply_logical_network(&mut c, &l).unwrap();
        assert!(c["plugins"][0].get("vlan").is_none());
        assert_eq!(c["plugins"][1]["vlan"], 100);
        assert!(c["plugins"][2].get("vlan").is_none());
        for mut c in [
            obj(json!({"type": "macvlan", "master": "eth1"})),
            obj(json!({"plugins": [{"type": "macvlan"}, {"type": "tuning"}]})),
        ] {
            let before = c.clone();
            let e = apply_logical_network(&mut c, &l).unwrap_err().to_string();
            assert!(e.starts_with("LogicalNetwork default/blue"), "{e}");
            assert!(e.contains("spec.vlan 100"), "{e}");
            assert!(
                e.contains("\"macvlan\"") || e.contains("[macvlan, tuning]"),
                "{e}"
            );
            assert_eq!(c, before);
        }
        let mut c = obj(json!({"type": "bridge"}));
        l.spec.vlan = Some(4095);
        assert!(apply_logical_network(&mut c, &l).is_err());
        l.spec.vlan = None;
        apply_logical_network(&mut c, &l).unwrap();
        assert!(c.get("vlan").is_none());
        // Both: the vlan and the subnet land in the same plugin of a conflist.
        let mut l = ln("blue", "br", "10.1.5.0/24");
        l.spec.vlan = Some(7);
        let mut c = obj(json!({"plugins": [{"type": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}}]}));
        apply_logical_network(&mut c, &l).unwrap();
        assert_eq!(c["plugins"][0]["vlan"], 7);
        assert_eq!(c["plugins"][0]["ipam"]["subnet"], "10.1.5.0/24");
    }

    #[test]
    fn overlap_is_containment_either_way_within_a_family() {
        assert!(overlaps(cidr("10.0.0.0/8"), cidr("10.1.0.0/16")));
        assert!(overlaps(cidr("10.1.0.0/16"), cidr("10.0.0.0/8")));
        assert!(!overlaps(cidr("10.1.0.0/16"), cidr("10.2.0.0/16")));
        assert!(!overlaps(cidr("10.0.0.0/8"), cidr("fd00::/8")));
        assert!(overlaps(cidr("0.0.0.0/0"), cidr("1.2.3.4/32")));
    }
}
