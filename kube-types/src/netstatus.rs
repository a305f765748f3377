//! What genie writes back on the pod: the NPWG `k8s.v1.cni.cncf.io/network-status` list and
//! CNI-Genie's `multi-ip-preferences`, built from [`AttachmentStatus`] (the caller maps CNI results
//! into it); and [`parse_network_status`], which reads a network-status back (any writer's: it is
//! on the pod, so tenant-written as far as a reader knows).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::annotations::{GENIE_MULTI_IP_PREFERENCES, NETWORK_STATUS};

/// One attachment as it ended up.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttachmentStatus {
    /// `namespace/name` for an attachment from a NetworkAttachmentDefinition, else the network's
    /// (or plugin's) name.
    pub network: String,
    pub interface: Option<String>,
    /// Bare addresses, no prefix length.
    pub ips: Vec<IpAddr>,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// True for the attachment that carries the pod's default route (the cluster default network).
    pub default: bool,
    /// The CNI result's `dns` object; `None` writes `{}`.
    pub dns: Option<Value>,
    /// The device-info JSON (device-info spec 1.1.0) of an SR-IOV attachment.
    pub device_info: Option<Value>,
    pub gateways: Vec<IpAddr>,
}

impl AttachmentStatus {
    /// The network-status name of an attachment from a NAD.
    pub fn nad_name(namespace: &str, name: &str) -> String {
        format!("{namespace}/{name}")
    }
}

/// One element of `k8s.v1.cni.cncf.io/network-status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkStatus {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    pub default: bool,
    pub dns: Value,
    #[serde(rename = "device-info", skip_serializing_if = "Option::is_none")]
    pub device_info: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
}

impl From<&AttachmentStatus> for NetworkStatus {
    fn from(a: &AttachmentStatus) -> Self {
        Self {
            name: a.network.clone(),
            interface: a.interface.clone().filter(|i| !i.is_empty()),
            ips: a.ips.iter().map(ToString::to_string).collect(),
            mac: a.mac.clone().filter(|m| !m.is_empty()),
            mtu: a.mtu.filter(|m| *m > 0),
            default: a.default,
            dns: a
                .dns
                .clone()
                .filter(|d| !d.is_null())
                .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
            device_info: a.device_info.clone().filter(|d| !d.is_null()),
            gateway: a.gateways.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The `network-status` list, in attachment order.
pub fn network_status(attachments: &[AttachmentStatus]) -> Vec<NetworkStatus> {
    attachments.iter().map(NetworkStatus::from).collect()
}

/// The `network-status` annotation value (a JSON list).
pub fn network_status_json(attachments: &[AttachmentStatus]) -> Result<String, serde_json::Error> {
    serde_json::to_string(&network_status(attachments))
}

/// One address in `multi-ip-preferences`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpPreference {
    pub ip: String,
    pub interface: String,
}

/// CNI-Genie's `multi-ip-preferences`: every address of every attachment, numbered `ip1`, `ip2`,
/// ... in attachment order; `multi_entry` is how many there are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MultiIpPreferences {
    pub multi_entry: usize,
    pub ips: BTreeMap<String, IpPreference>,
}

pub fn multi_ip_preferences(attachments: &[AttachmentStatus]) -> MultiIpPreferences {
    let mut ips = BTreeMap::new();
    for a in attachments {
        for ip in &a.ips {
            let key = format!("ip{}", ips.len() + 1);
            ips.insert(
                key,
                IpPreference {
                    ip: ip.to_string(),
                    interface: a.interface.clone().unwrap_or_default(),
                },
            );
        }
    }
    MultiIpPreferences {
        multi_entry: ips.len(),
        ips,
    }
}

pub fn multi_ip_preferences_json(
    attachments: &[AttachmentStatus],
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&multi_ip_preferences(attachments))
}

/// Both annotations, ready for [`crate::k8s::Client::set_pod_annotations`].
pub fn status_annotations(
    attachments: &[AttachmentStatus],
) -> Result<BTreeMap<String, Option<String>>, serde_json::Error> {
    Ok(BTreeMap::from([
        (
            NETWORK_STATUS.to_string(),
            Some(network_status_json(attachments)?),
        ),
        (
            GENIE_MULTI_IP_PREFERENCES.to_string(),
            Some(multi_ip_preferences_json(attachments)?),
        ),
    ]))
}

/// The most entries [`parse_network_status`] reads, and the most addresses of one entry; the rest
/// is ignored (and said so).
pub const STATUS_MAX_ENTRIES: usize = 64;
pub const STATUS_MAX_IPS: usize = 16;
/// The longest network-status value [`parse_network_status`] reads.
pub const STATUS_MAX_BYTES: usize = 256 * 1024;

/// One element of a network-status as read back: what a reader needs to find a pod's interfaces
/// and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// `namespace/name` for a NAD or LogicalNetwork attachment, else a plain network name.
    pub name: String,
    pub interface: Option<String>,
    /// The addresses that parse as IP addresses (a prefix length, which some writers add, is
    /// dropped).
    pub ips: Vec<IpAddr>,
    pub default: bool,
}

/// A network-status read back: the entries that make sense, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStatus {
    pub entries: Vec<StatusEntry>,
    /// Why parts of the value were skipped (an element without a name, an address that is not
    /// one, too many entries); empty when all of it was read.
    pub skipped: Vec<String>,
}

/// Reads a `k8s.v1.cni.cncf.io/network-status` value. It fails only when the value is not a JSON
/// list (or is over [`STATUS_MAX_BYTES`]); elements and addresses that do not make sense are
/// skipped and listed in [`ReadStatus::skipped`]. Never panics.
pub fn parse_network_status(value: &str) -> Result<ReadStatus, String> {
    if value.len() > STATUS_MAX_BYTES {
        return Err(format!(
            "it is {} bytes, over the {STATUS_MAX_BYTES} read",
            value.len()
        ));
    }
    let v: Value = serde_json::from_str(value).map_err(|e| format!("it is not JSON: {e}"))?;
    let Value::Array(list) = v else {
        return Err("it is not a JSON list".into());
    };
    let mut out = ReadStatus::default();
    if list.len() > STATUS_MAX_ENTRIES {
        out.skipped.push(format!(
            "{} entries past the first {STATUS_MAX_ENTRIES}",
            list.len() - STATUS_MAX_ENTRIES
        ));
    }
    for (i, e) in list.iter().take(STATUS_MAX_ENTRIES).enumerate() {
        let Some(name) = e
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        else {
            out.skipped.push(format!("entry {i} has no name"));
            continue;
        };
        let interface = e
            .get("interface")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut ips = Vec::new();
        let listed = e.get("ips").and_then(Value::as_array);
        for ip in listed.into_iter().flatten() {
            if ips.len() == STATUS_MAX_IPS {
                out.skipped.push(format!(
                    "entry {i}: addresses past the first {STATUS_MAX_IPS}"
                ));
                break;
            }
            let text = ip.as_str().unwrap_or_default();
            let bare = text.split_once('/').map_or(text, |(a, _)| a);
            match bare.parse::<IpAddr>() {
                Ok(a) => ips.push(a),
                Err(_) => out
                    .skipped
                    .push(format!("entry {i}: {ip} is not an IP address")),
            }
        }
        out.entries.push(StatusEntry {
            name: name.to_string(),
            interface,
            ips,
            default: e.get("default").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Vec<AttachmentStatus> {
        vec![
            AttachmentStatus {
                network: "k8s-pod-network".into(),
                interface: Some("eth0".into()),
                ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
                mac: Some("02:00:00:00:00:01".into()),
                mtu: Some(1500),
                default: true,
                dns: Some(json!({"nameservers":["10.96.0.10"]})),
                device_info: None,
                gateways: vec!["10.0.0.1".parse().unwrap()],
            },
            AttachmentStatus {
                network: AttachmentStatus::nad_name("default", "sriov-a"),
                interface: Some("net1".into()),
                ips: vec!["192.168.1.7".parse().unwrap()],
                mac: Some("02:00:00:00:00:02".into()),
                mtu: None,
                default: false,
                dns: None,
                device_info: Some(
                    json!({"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:02:10.0"}}),
                ),
                gateways: vec![],
            },
        ]
    }

    #[test]
    fn network_status_has_the_npwg_shape() {
        let v: Value = serde_json::from_str(&network_status_json(&sample()).unwrap()).unwrap();
        assert_eq!(
            v,
            json!([
                {"name":"k8s-pod-network","interface":"eth0","ips":["10.0.0.5","fd00::5"],
                 "mac":"02:00:00:00:00:01","mtu":1500,"default":true,
                 "dns":{"nameservers":["10.96.0.10"]},"gateway":["10.0.0.1"]},
                {"name":"default/sriov-a","interface":"net1","ips":["192.168.1.7"],
                 "mac":"02:00:00:00:00:02","default":false,"dns":{},
                 "device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:02:10.0"}}}
            ])
        );
        assert_eq!(network_status_json(&[]).unwrap(), "[]");
    }

    #[test]
    fn multi_ip_preferences_numbers_every_address() {
        let v: Value =
            serde_json::from_str(&multi_ip_preferences_json(&sample()).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"multi_entry":3,"ips":{
                "ip1":{"ip":"10.0.0.5","interface":"eth0"},
                "ip2":{"ip":"fd00::5","interface":"eth0"},
                "ip3":{"ip":"192.168.1.7","interface":"net1"}}})
        );
        assert_eq!(
            multi_ip_preferences_json(&[]).unwrap(),
            r#"{"multi_entry":0,"ips":{}}"#
        );
        let a = status_annotations(&sample()).unwrap();
        assert!(a.contains_key("k8s.v1.cni.cncf.io/network-status"));
        assert!(a.contains_key("multi-ip-preferences"));
    }
    #[test]
    fn network_status_reads_back_what_genie_writes_and_skips_the_rest() {
        let written = network_status_json(&sample()).unwrap();
        let read = parse_network_status(&written).unwrap();
        assert!(read.skipped.is_empty(), "{:?}", read.skipped);
        assert_eq!(read.entries.len(), 2);
        assert_eq!(read.entries[1].name, "default/sriov-a");
        assert_eq!(read.entries[1].interface.as_deref(), Some("net1"));
        assert_eq!(
            read.entries[1].ips,
            vec!["192.168.1.7".parse::<IpAddr>().unwrap()]
        );
        assert!(read.entries[0].default);

        let odd = json!([{"interface": "x"}, {"name": "a/b", "ips": ["10.0.0.1/24", "nope", 5]},
            "text", {"name": "c", "ips": "10.0.0.1"}])
        .to_string();
        let read = parse_network_status(&odd).unwrap();
        assert_eq!(read.entries.len(), 2);
        assert_eq!(
            read.entries[0].ips,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(read.entries[1].ips.is_empty());
        assert_eq!(read.skipped.len(), 4, "{:?}", read.skipped);

        let many: Vec<Value> = (0..100).map(|i| json!({"name": format!("n{i}")})).collect();
        let read = parse_network_status(&Value::from(many).to_string()).unwrap();
        assert_eq!(read.entries.len(), STATUS_MAX_ENTRIES);
        for bad in ["", "{}", "not json", &"[".repeat(STATUS_MAX_BYTES + 1)] {
            assert!(parse_network_status(bad).is_err(), "{bad:.20}");
        }
    }
}
