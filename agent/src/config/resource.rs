//! `resourceList`: VF pools in the SR-IOV network device plugin's format, validated into typed
//! selectors.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use vfcore::PciAddress;

use super::{FieldErrors, VfRange};

/// The device-plugin resource prefix when a resource names none.
pub const DEFAULT_PREFIX: &str = "intel.com";

/// One pool of VFs advertised to the kubelet as `<prefix>/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceConfig {
    pub resource_name: String,
    pub resource_prefix: String,
    pub exclude_topology: bool,
    /// A device joins the pool when it matches any selector (each selector ANDs its keys).
    pub selectors: Vec<Selector>,
    pub additional_info: BTreeMap<String, BTreeMap<String, String>>,
}

impl ResourceConfig {
    /// `<prefix>/<name>`, the extended resource name pods request.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.resource_prefix, self.resource_name)
    }
}

/// A PF named by netdev name or PCI address, optionally restricted to some of its VFs (`#0-3,8`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PfRef<T> {
    pub pf: T,
    pub vfs: Option<VfRange>,
}

/// The selector keys of the SR-IOV network device plugin that apply to netdev and vfio VFs.
/// Empty lists match everything.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Selector {
    pub vendors: Vec<u16>,
    pub devices: Vec<u16>,
    pub drivers: Vec<String>,
    pub pci_addresses: Vec<PciAddress>,
    pub acpi_indexes: Vec<String>,
    pub pf_names: Vec<PfRef<String>>,
    pub root_devices: Vec<PfRef<PciAddress>>,
    pub link_types: Vec<String>,
    pub is_rdma: bool,
    pub need_vhost_net: bool,
}

pub(super) const RESOURCE_KEYS: &[&str] = &[
    "resourceName",
    "resourcePrefix",
    "deviceType",
    "excludeTopology",
    "selectors",
    "additionalInfo",
];

const SELECTOR_KEYS: &[&str] = &[
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "acpiIndexes",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "ddpProfiles",
    "isRdma",
    "needVhostNet",
    "vdpaType",
    "pKeys",
    "auxTypes",
];

/// `^[a-zA-Z0-9_-]+$`
fn valid_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A DNS subdomain, as a Kubernetes extended-resource prefix must be.
fn valid_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(super) fn parse_resource(
    at: &str,
    obj: &serde_json::Map<String, Value>,
    errs: &mut FieldErrors,
) -> Option<ResourceConfig> {
    let before = errs.len();
    let resource_name = match obj.get("resourceName") {
        Some(Value::String(s)) if valid_resource_name(s) => s.clone(),
        Some(Value::String(s)) => {
            errs.push(
                format!("{at}.resourceName"),
                format!("{s:?} does not match ^[a-zA-Z0-9_-]+$"),
            );
            String::new()
        }
        Some(_) => {
            errs.push(format!("{at}.resourceName"), "must be a string");
            String::new()
        }
        None => {
            errs.push(format!("{at}.resourceName"), "is required");
            String::new()
        }
    };
    let resource_prefix = match obj.get("resourcePrefix") {
        None | Some(Value::Null) => DEFAULT_PREFIX.to_string(),
        Some(Value::String(s)) if s.is_empty() => DEFAULT_PREFIX.to_string(),
        Some(Value::String(s)) if valid_prefix(s) => s.clone(),
        Some(v) => {
            errs.push(
                format!("{at}.resourcePrefix"),
                format!("{v} is not a DNS subdomain"),
            );
            String::new()
        }
    };
    match obj.get("deviceType") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s.eq_ignore_ascii_case("netDevice") => {}
        Some(v) => errs.push(
            format!("{at}.deviceType"),
            format!("{v} is not supported; this agent serves netDevice pools (kernel netdev and vfio-pci VFs)"),
        ),
    }
    let exclude_topology = bool_field(obj, "excludeTopology", at, errs);
    let selectors = match obj.get("selectors") {
        None | Some(Value::Null) => vec![Selector::default()],
        Some(Value::Object(o)) => parse_selector(&format!("{at}.selectors"), o, errs)
            .into_iter()
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let path = format!("{at}.selectors[{i}]");
                match v {
                    Value::Object(o) => parse_selector(&path, o, errs),
                    _ => {
                        errs.push(path, "must be an object");
                        None
                    }
                }
            })
            .collect(),
        Some(_) => {
            errs.push(
                format!("{at}.selectors"),
                "must be an object or a list of objects",
            );
            Vec::new()
        }
    };
    let additional_info = match obj.get("additionalInfo") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(m) => m,
            Err(e) => {
                errs.push(
                    format!("{at}.additionalInfo"),
                    format!("must map names to string maps ({e})"),
                );
                BTreeMap::new()
            }
        },
    };
    (errs.len() == before).then_some(ResourceConfig {
        resource_name,
        resource_prefix,
        exclude_topology,
        selectors,
        additional_info,
    })
}

fn bool_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    at: &str,
    errs: &mut FieldErrors,
) -> bool {
    match obj.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            errs.push(format!("{at}.{key}"), format!("{v} is not a boolean"));
            false
        }
    }
}

fn string_list(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    at: &str,
    errs: &mut FieldErrors,
) -> Vec<String> {
    match obj.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Value::String(s) => Some(s.clone()),
                _ => {
                    errs.push(format!("{at}.{key}[{i}]"), format!("{v} is not a string"));
                    None
                }
            })
            .collect(),
        Some(v) => {
            errs.push(
                format!("{at}.{key}"),
                format!("{v} is not a list of strings"),
            );
            Vec::new()
        }
    }
}

/// Parses a 4-digit hex PCI ID as the device plugin writes them (`"8086"`, also `"0x8086"`).
pub(super) fn parse_pci_id(s: &str) -> Option<u16> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if hex.is_empty() || hex.len() > 4 {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

fn parse_selector(
    at: &str,
    raw: &serde_json::Map<String, Value>,
    errs: &mut FieldErrors,
) -> Option<Selector> {
    let before = errs.len();
    let mut obj = raw.clone();
    for key in super::keys::canonicalize(&mut obj, SELECTOR_KEYS) {
        tracing::warn!(field = %format!("{at}.{key}"), "unknown selector key ignored");
    }
    let ids = |key: &str, errs: &mut FieldErrors| -> Vec<u16> {
        string_list(&obj, key, at, errs)
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let id = parse_pci_id(s);
                if id.is_none() {
                    errs.push(
                        format!("{at}.{key}[{i}]"),
                        format!("{s:?} is not a hexadecimal PCI ID"),
                    );
                }
                id
            })
            .collect()
    };
    let vendors = ids("vendors", errs);
    let devices = ids("devices", errs);
    let drivers = string_list(&obj, "drivers", at, errs);
    for (i, d) in drivers.iter().enumerate() {
        if !vfcore::paths::is_plain_name(d) {
            errs.push(
                format!("{at}.drivers[{i}]"),
                format!("{d:?} is not a driver name"),
            );
        }
    }
    let pci_addresses = string_list(&obj, "pciAddresses", at, errs)
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s.parse::<PciAddress>() {
            Ok(a) => Some(a),
            Err(e) => {
                errs.push(format!("{at}.pciAddresses[{i}]"), e.to_string());
                None
            }
        })
        .collect();
    let pf_names = string_list(&obj, "pfNames", at, errs)
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let path = format!("{at}.pfNames[{i}]");
            let (name, vfs) = split_vf_range(&path, s, errs)?;
            match vfcore::IfName::new(name) {
                Ok(n) => Some(PfRef {
                    pf: n.to_string(),
                    vfs,
                }),
                Err(e) => {
                    errs.push(path, e.to_string());
                    None
                }
            }
        })
        .collect();
    let root_devices = string_list(&obj, "rootDevices", at, errs)
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let path = format!("{at}.rootDevices[{i}]");
            let (addr, vfs) = split_vf_range(&path, s, errs)?;
            match addr.parse::<PciAddress>() {
                Ok(pf) => Some(PfRef { pf, vfs }),
                Err(e) => {
                    errs.push(path, e.to_string());
                    None
                }
            }
        })
        .collect();
    let link_types: Vec<String> = string_list(&obj, "linkTypes", at, errs)
        .into_iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let acpi_indexes = string_list(&obj, "acpiIndexes", at, errs);
    let is_rdma = bool_field(&obj, "isRdma", at, errs);
    let need_vhost_net = bool_field(&obj, "needVhostNet", at, errs);
    // Keys of the device plugin whose matching needs tools this agent does not carry: refuse them
    // rather than match more devices than the operator meant.
    for key in ["ddpProfiles", "vdpaType", "pKeys", "auxTypes"] {
        let set = match obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if set {
            errs.push(
                format!("{at}.{key}"),
                "is not supported by this agent (netdev and vfio-pci VF pools only)",
            );
        }
    }
    (errs.len() == before).then_some(Selector {
        vendors,
        devices,
        drivers,
        pci_addresses,
        acpi_indexes,
        pf_names,
        root_devices,
        link_types,
        is_rdma,
        need_vhost_net,
    })
}

/// Splits `ens1f0#0-3,8` into the PF part and its VF indexes.
fn split_vf_range<'a>(
    at: &str,
    s: &'a str,
    errs: &mut FieldErrors,
) -> Option<(&'a str, Option<VfRange>)> {
    match s.split_once('#') {
        None => Some((s, None)),
        Some((pf, range)) => match range.parse::<VfRange>() {
            Ok(r) => Some((pf, Some(r))),
            Err(reason) => {
                errs.push(at.to_string(), format!("{s:?}: {reason}"));
                None
            }
        },
    }
}

/// Checks that no VF index appears twice for the same PF within one selector list.
pub(super) fn check_overlaps(at: &str, sel: &Selector, errs: &mut FieldErrors) {
    let mut seen: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for (i, p) in sel.pf_names.iter().enumerate() {
        if let Some(r) = &p.vfs {
            let set = seen.entry(p.pf.as_str()).or_default();
            for v in r.indexes() {
                if !set.insert(v) {
                    errs.push(
                        format!("{at}.pfNames[{i}]"),
                        format!("VF {v} of {} is listed twice", p.pf),
                    );
                }
            }
        }
    }
}
