//! Networks for the model: a NAD's traffic path from its CNI config's plugin type and its subnets
//! from its IPAM; a LogicalNetwork's subnet from `spec.subnet` and its path from the plugin it
//! names. Everything here is tenant-written: nothing panics, sizes are bounded, and what does not
//! make sense is an error naming the object (the caller skips the network and logs it).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde_json::{Map, Value};
use vfkube::annotations::IpCidr;
use vfkube::logical::check_spec;
use vfkube::netconf::check_shape;
use vfkube::objects::{LogicalNetwork, NetworkAttachmentDefinition};

use crate::policy::model::{Network, NetworkKey, TrafficPath};

/// The most subnets one network contributes (the rest are ignored).
pub const MAX_SUBNETS: usize = 32;
/// The longest `spec.config` read.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Plugin types whose interfaces never cross the host's stack.
pub const IN_POD_TYPES: [&str; 4] = ["sriov", "macvlan", "ipvlan", "host-device"];

/// The traffic path of a plugin type: [`IN_POD_TYPES`] are [`TrafficPath::InPod`]; every other
/// type (bridge, ptp, overlays) is routed through the host.
pub fn traffic_path(plugin_type: &str) -> TrafficPath {
    if IN_POD_TYPES
        .iter()
        .any(|t| t.eq_ignore_ascii_case(plugin_type))
    {
        TrafficPath::InPod
    } else {
        TrafficPath::Host
    }
}

/// The plugin type of a conf, or of a conflist's first plugin.
pub fn plugin_type(config: &Map<String, Value>) -> Option<&str> {
    let conf = match config.get("plugins") {
        Some(Value::Array(plugins)) => plugins.first()?.as_object()?,
        _ => config,
    };
    conf.get("type").and_then(Value::as_str)
}

/// The network address of `addr/prefix` (host bits cleared).
fn network_of(addr: IpAddr, prefix: u8) -> IpCidr {
    let addr = match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    IpCidr { addr, prefix }
}

/// A CIDR, or whereabouts' `first-last/prefix` range form (the prefix applies to both ends).
fn parse_range(text: &str) -> Option<IpCidr> {
    let text = text.trim();
    let text = match text.split_once('-') {
        Some((_, rest)) => rest,
        None => text,
    };
    let c: IpCidr = text.parse().ok()?;
    Some(network_of(c.addr, c.prefix))
}

/// The subnets an IPAM section hands out: host-local's `subnet` and `ranges`, whereabouts'
/// `range` and `ipRanges[].range`. Static and DHCP have none. Deduplicated, at most
/// [`MAX_SUBNETS`].
pub fn ipam_subnets(ipam: &Map<String, Value>) -> Vec<IpCidr> {
    let mut out: Vec<IpCidr> = Vec::new();
    let mut add = |v: Option<&Value>| {
        if let Some(c) = v.and_then(Value::as_str).and_then(parse_range) {
            if out.len() < MAX_SUBNETS && !out.contains(&c) {
                out.push(c);
            }
        }
    };
    add(ipam.get("subnet"));
    add(ipam.get("range"));
    if let Some(Value::Array(sets)) = ipam.get("ranges") {
        for set in sets.iter().take(MAX_SUBNETS) {
            for r in set.as_array().into_iter().flatten().take(MAX_SUBNETS) {
                add(r.get("subnet"));
            }
        }
    }
    if let Some(Value::Array(ranges)) = ipam.get("ipRanges") {
        for r in ranges.iter().take(MAX_SUBNETS) {
            add(r.get("range"));
        }
    }
    out
}

/// The subnets of a conf's `ipam`, or of the first plugin of a conflist that has one.
pub fn config_subnets(config: &Map<String, Value>) -> Vec<IpCidr> {
    let ipam = match config.get("plugins") {
        Some(Value::Array(plugins)) => plugins
            .iter()
            .find_map(|p| p.get("ipam").and_then(Value::as_object)),
        _ => config.get("ipam").and_then(Value::as_object),
    };
    ipam.map(ipam_subnets).unwrap_or_default()
}

/// Where the node's CNI configs can be read, for NADs with an empty `spec.config` and for
/// LogicalNetworks' plugins. Looked up once per snapshot.
pub struct Confs<'a> {
    conf_dir: Option<&'a Path>,
    by_name: BTreeMap<String, Option<Map<String, Value>>>,
    by_plugin: BTreeMap<String, Option<Map<String, Value>>>,
}

impl<'a> Confs<'a> {
    pub fn new(conf_dir: Option<&'a Path>) -> Self {
        Self {
            conf_dir,
            by_name: BTreeMap::new(),
            by_plugin: BTreeMap::new(),
        }
    }

    /// The conf file whose `name` is `name` (a NAD without `spec.config`).
    fn named(&mut self, name: &str) -> Option<&Map<String, Value>> {
        let dir = self.conf_dir?;
        self.by_name
            .entry(name.to_string())
            .or_insert_with(|| {
                vfmeta::genieconf::find_conf_file(dir, name)
                    .ok()
                    .flatten()
                    .map(|r| r.config)
            })
            .as_ref()
    }

    /// The conf of a plugin, by name or type, as genie picks it for a LogicalNetwork.
    fn plugin(&mut self, plugin: &str) -> Option<&Map<String, Value>> {
        let dir = self.conf_dir?;
        self.by_plugin
            .entry(plugin.to_string())
            .or_insert_with(|| {
                vfmeta::genieconf::find_plugin_conf(dir, plugin)
                    .ok()
                    .flatten()
                    .map(|r| r.config)
            })
            .as_ref()
    }
}

fn from_config(key: NetworkKey, config: &Map<String, Value>) -> Result<Network, String> {
    check_shape(config)?;
    let t = plugin_type(config).unwrap_or_default();
    Ok(Network {
        key,
        subnets: config_subnets(config),
        path: traffic_path(t),
    })
}

/// A NAD's config: its `spec.config`, or the node's conf file of its name when that is empty.
fn nad_config(
    nad: &NetworkAttachmentDefinition,
    confs: &mut Confs<'_>,
) -> Result<Map<String, Value>, String> {
    let spec = nad.spec.config.trim();
    if spec.is_empty() {
        return confs.named(&nad.metadata.name).cloned().ok_or_else(|| {
            "spec.config is empty and no conf file of the node has its name".to_string()
        });
    }
    if spec.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "spec.config is {} bytes, over the {MAX_CONFIG_BYTES} read",
            spec.len()
        ));
    }
    match serde_json::from_str::<Value>(spec) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("spec.config is not a JSON object".into()),
        Err(e) => Err(format!("spec.config is not JSON: {e}")),
    }
}

/// A NAD as a network: the path from its plugin type, the subnets from its IPAM.
pub fn nad_network(
    nad: &NetworkAttachmentDefinition,
    confs: &mut Confs<'_>,
) -> Result<Network, String> {
    let key = NetworkKey::new(&nad.metadata.namespace, &nad.metadata.name);
    let config = nad_config(nad, confs)?;
    from_config(key, &config).map_err(|p| format!("spec.config: {p}"))
}

/// A LogicalNetwork as a network: its `spec.subnet` (else its plugin's subnets), and the path of
/// the plugin it names — the node's conf of that plugin (as genie picks it), else a NAD of that
/// name in its namespace, else the plugin name read as a plugin type.
pub fn logical_network(
    ln: &LogicalNetwork,
    nads: &BTreeMap<NetworkKey, &NetworkAttachmentDefinition>,
    confs: &mut Confs<'_>,
) -> Result<Network, String> {
    let subnet = check_spec(ln).map_err(|e| e.problem)?;
    let key = NetworkKey::new(&ln.metadata.namespace, &ln.metadata.name);
    let plugin = ln.spec.plugin.trim();
    let nad_key = NetworkKey::new(&ln.metadata.namespace, plugin);
    let plugin_config = match confs.plugin(plugin) {
        Some(c) => Some(c.clone()),
        None => nads
            .get(&nad_key)
            .and_then(|nad| nad_config(nad, confs).ok()),
    };
    let (path, plugin_subnets) = match &plugin_config {
        Some(c) => (
            traffic_path(plugin_type(c).unwrap_or(plugin)),
            config_subnets(c),
        ),
        None => (traffic_path(plugin), Vec::new()),
    };
    Ok(Network {
        key,
        subnets: subnet.map_or(plugin_subnets, |s| vec![network_of(s.addr, s.prefix)]),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vfkube::objects::{LogicalNetworkSpec, NadSpec, ObjectMeta};

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn cidr(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    fn nad(name: &str, config: &str) -> NetworkAttachmentDefinition {
        NetworkAttachmentDefinition {
            metadata: ObjectMeta {
                name: name.into(),
                namespace: "a".into(),
                ..ObjectMeta::default()
            },
            spec: NadSpec {
                config: config.into(),
            },
        }
    }

    fn ln(plugin: &str, subnet: &str) -> LogicalNetwork {
        LogicalNetwork {
            metadata: ObjectMeta {
                name: "blue".into(),
                namespace: "a".into(),
                ..ObjectMeta::default()
            },
            spec: LogicalNetworkSpec {
                plugin: plugin.into(),
                subnet: subnet.into(),
                ..LogicalNetworkSpec::default()
            },
            status: None,
        }
    }

    #[test]
    fn paths_follow_the_plugin_type_and_a_conflists_first_plugin() {
        for (config, path) in [
            (json!({"type": "sriov"}), TrafficPath::InPod),
            (json!({"type": "macvlan"}), TrafficPath::InPod),
            (json!({"type": "ipvlan"}), TrafficPath::InPod),
            (json!({"type": "host-device"}), TrafficPath::InPod),
            (json!({"type": "bridge"}), TrafficPath::Host),
            (json!({"type": "ptp"}), TrafficPath::Host),
            (json!({"type": "flannel"}), TrafficPath::Host),
            (
                json!({"plugins": [{"type": "macvlan"}, {"type": "tuning"}]}),
                TrafficPath::InPod,
            ),
            (
                json!({"plugins": [{"type": "bridge"}, {"type": "sriov"}]}),
                TrafficPath::Host,
            ),
        ] {
            let c = obj(config.clone());
            assert_eq!(traffic_path(plugin_type(&c).unwrap()), path, "{config}");
        }
    }

    #[test]
    fn subnets_come_from_host_local_and_whereabouts_and_static_has_none() {
        let s = |v: Value| config_subnets(&obj(v));
        assert_eq!(
            s(json!({"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.1.2.3/16"}})),
            vec![cidr("10.1.0.0/16")]
        );
        assert_eq!(
            s(
                json!({"plugins": [{"type": "bridge", "ipam": {"type": "host-local",
                "ranges": [[{"subnet": "10.2.0.0/24"}, {"subnet": "10.2.1.0/24"}],
                           [{"subnet": "fd00::/64"}]]}}]})
            ),
            vec![cidr("10.2.0.0/24"), cidr("10.2.1.0/24"), cidr("fd00::/64")]
        );
        assert_eq!(
            s(json!({"type": "macvlan", "ipam": {"type": "whereabouts",
                "range": "192.168.2.225-192.168.2.230/28"}})),
            vec![cidr("192.168.2.224/28")]
        );
        assert_eq!(
            s(json!({"type": "macvlan", "ipam": {"type": "whereabouts",
                "ipRanges": [{"range": "10.9.0.0/24"}, {"range": "junk"}]}})),
            vec![cidr("10.9.0.0/24")]
        );
        assert!(s(json!({"type": "macvlan", "ipam": {"type": "static",
            "addresses": [{"address": "10.3.0.1/24"}]}}))
        .is_empty());
        assert!(s(json!({"type": "macvlan", "ipam": "nonsense"})).is_empty());
        let many: Vec<Value> = (0..200)
            .map(|i| json!([{"subnet": format!("10.{}.{}.0/24", i / 250, i % 250)}]))
            .collect();
        assert_eq!(
            s(json!({"type": "bridge", "ipam": {"ranges": many}})).len(),
            MAX_SUBNETS
        );
    }

    #[test]
    fn nads_are_networks_and_bad_configs_say_why() {
        let mut confs = Confs::new(None);
        let n = nad_network(
            &nad(
                "sriov-a",
                r#"{"type":"sriov","ipam":{"type":"host-local","subnet":"10.5.0.0/24"}}"#,
            ),
            &mut confs,
        )
        .unwrap();
        assert_eq!(n.key, NetworkKey::new("a", "sriov-a"));
        assert_eq!(
            (n.path, n.subnets),
            (TrafficPath::InPod, vec![cidr("10.5.0.0/24")])
        );
        for (config, needle) in [
            ("", "spec.config is empty"),
            ("not json", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"name":"x"}"#, "no \"type\""),
            (r#"{"plugins":[]}"#, "empty"),
        ] {
            let e = nad_network(&nad("x", config), &mut confs).unwrap_err();
            assert!(e.contains(needle), "{config}: {e}");
        }
        let huge = format!(
            r#"{{"type":"bridge","x":"{}"}}"#,
            "a".repeat(MAX_CONFIG_BYTES)
        );
        assert!(nad_network(&nad("x", &huge), &mut confs).is_err());
    }

    #[test]
    fn a_nad_without_config_reads_the_nodes_conf_of_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("10-red.conf"),
            r#"{"cniVersion":"1.0.0","name":"red","type":"ipvlan","ipam":{"type":"host-local","subnet":"10.7.0.0/24"}}"#,
        )
        .unwrap();
        let mut confs = Confs::new(Some(dir.path()));
        let n = nad_network(&nad("red", ""), &mut confs).unwrap();
        assert_eq!(
            (n.path, n.subnets),
            (TrafficPath::InPod, vec![cidr("10.7.0.0/24")])
        );
        // A LogicalNetwork on plugin "ipvlan" finds that conf by type.
        let n = logical_network(&ln("ipvlan", ""), &BTreeMap::new(), &mut confs).unwrap();
        assert_eq!(
            (n.path, n.subnets),
            (TrafficPath::InPod, vec![cidr("10.7.0.0/24")])
        );
    }

    #[test]
    fn logical_networks_take_their_subnet_and_their_plugins_path() {
        let mut confs = Confs::new(None);
        let none = BTreeMap::new();
        let n = logical_network(&ln("sriov", "10.20.0.0/16"), &none, &mut confs).unwrap();
        assert_eq!(n.key, NetworkKey::new("a", "blue"));
        assert_eq!(
            (n.path, n.subnets),
            (TrafficPath::InPod, vec![cidr("10.20.0.0/16")])
        );
        let n = logical_network(&ln("flannel", ""), &none, &mut confs).unwrap();
        assert_eq!((n.path, n.subnets), (TrafficPath::Host, vec![]));
        // A NAD of the plugin's name in the LogicalNetwork's namespace gives its type and range.
        let mv = nad(
            "mv",
            r#"{"type":"macvlan","ipam":{"type":"whereabouts","range":"10.30.0.0/16"}}"#,
        );
        let nads = BTreeMap::from([(NetworkKey::new("a", "mv"), &mv)]);
        let n = logical_network(&ln("mv", ""), &nads, &mut confs).unwrap();
        assert_eq!(
            (n.path, n.subnets),
            (TrafficPath::InPod, vec![cidr("10.30.0.0/16")])
        );
        let n = logical_network(&ln("mv", "10.30.1.0/24"), &nads, &mut confs).unwrap();
        assert_eq!(n.subnets, vec![cidr("10.30.1.0/24")]);
        for bad in [ln("", ""), ln("bridge", "10.0.0.0"), ln("../x", "")] {
            assert!(logical_network(&bad, &none, &mut confs).is_err());
        }
    }
}
