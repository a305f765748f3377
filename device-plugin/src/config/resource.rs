//! `resourceList`: VF pools in the SR-IOV network device plugin's format, validated into typed
//! selectors.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vfcore::PciAddress;

use super::keys::Keys;
use super::{FieldErrors, Loose, Obj, VfRange};

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

pub const RESOURCE_KEYS: &[&str] = &[
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

/// The keys of a `resourceList` entry and of its selectors.
pub const RESOURCE: Keys = Keys {
    known: RESOURCE_KEYS,
    nested: &[("selectors", &SELECTOR)],
};
const SELECTOR: Keys = Keys {
    known: SELECTOR_KEYS,
    nested: &[],
};

/// A `resourceList` entry as decoded, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawResource {
    resource_name: Loose<String>,
    resource_prefix: Loose<String>,
    device_type: Loose<String>,
    exclude_topology: Loose<bool>,
    selectors: Loose<RawSelectors>,
    additional_info: Loose<BTreeMap<String, BTreeMap<String, String>>>,
}

/// `selectors`: one object, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSelectors {
    One(Box<Obj<RawSelector>>),
    Many(Vec<Loose<Obj<RawSelector>>>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawSelector {
    vendors: Strings,
    devices: Strings,
    drivers: Strings,
    pci_addresses: Strings,
    acpi_indexes: Strings,
    pf_names: Strings,
    root_devices: Strings,
    link_types: Strings,
    is_rdma: Loose<bool>,
    need_vhost_net: Loose<bool>,
    // Matched by the device plugin with tools this agent does not carry: refused when set.
    ddp_profiles: Value,
    vdpa_type: Value,
    p_keys: Value,
    aux_types: Value,
}

type Strings = Loose<Vec<Loose<String>>>;

/// The JSON text of a string, as the messages quote values.
fn quoted(s: &str) -> Value {
    Value::String(s.to_string())
}

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

pub(super) fn validate(
    at: &str,
    raw: &RawResource,
    errs: &mut FieldErrors,
) -> Option<ResourceConfig> {
    let before = errs.len();
    let resource_name = match &raw.resource_name {
        Loose::Ok(s) if valid_resource_name(s) => s.clone(),
        Loose::Ok(s) => {
            errs.push(
                format!("{at}.resourceName"),
                format!("{s:?} does not match ^[a-zA-Z0-9_-]+$"),
            );
            String::new()
        }
        Loose::Wrong(_) => {
            errs.push(format!("{at}.resourceName"), "must be a string");
            String::new()
        }
        Loose::Absent => {
            errs.push(format!("{at}.resourceName"), "is required");
            String::new()
        }
    };
    let resource_prefix = match &raw.resource_prefix {
        Loose::Absent => DEFAULT_PREFIX.to_string(),
        Loose::Ok(s) if s.is_empty() => DEFAULT_PREFIX.to_string(),
        Loose::Ok(s) if valid_prefix(s) => s.clone(),
        Loose::Ok(s) => bad_prefix(at, &quoted(s), errs),
        Loose::Wrong(v) => bad_prefix(at, v, errs),
    };
    match &raw.device_type {
        Loose::Absent => {}
        Loose::Ok(s) if s.is_empty() || s.eq_ignore_ascii_case("netDevice") => {}
        Loose::Ok(s) => bad_device_type(at, &quoted(s), errs),
        Loose::Wrong(v) => bad_device_type(at, v, errs),
    }
    let exclude_topology = boolean(
        &raw.exclude_topology,
        &format!("{at}.excludeTopology"),
        errs,
    );
    let selectors = match &raw.selectors {
        Loose::Absent => vec![Selector::default()],
        Loose::Ok(RawSelectors::One(one)) => selector(&format!("{at}.selectors"), &one.0, errs)
            .into_iter()
            .collect(),
        Loose::Ok(RawSelectors::Many(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let path = format!("{at}.selectors[{i}]");
                match v {
                    Loose::Ok(Obj(o)) => selector(&path, o, errs),
                    _ => {
                        errs.push(path, "must be an object");
                        None
                    }
                }
            })
            .collect(),
        Loose::Wrong(_) => {
            errs.push(
                format!("{at}.selectors"),
                "must be an object or a list of objects",
            );
            Vec::new()
        }
    };
    let additional_info = match &raw.additional_info {
        Loose::Absent => BTreeMap::new(),
        Loose::Ok(m) => m.clone(),
        Loose::Wrong(v) => {
            let why =
                serde_json::from_value::<BTreeMap<String, BTreeMap<String, String>>>(v.clone())
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
            errs.push(
                format!("{at}.additionalInfo"),
                format!("must map names to string maps ({why})"),
            );
            BTreeMap::new()
        }
    };
    (errs.len() == before).then_some(ResourceConfig {
        resource_name,
        resource_prefix,
        exclude_topology,
        selectors,
        additional_info,
    })
}

fn bad_prefix(at: &str, v: &Value, errs: &mut FieldErrors) -> String {
    errs.push(
        format!("{at}.resourcePrefix"),
        format!("{v} is not a DNS subdomain"),
    );
    String::new()
}

fn bad_device_type(at: &str, v: &Value, errs: &mut FieldErrors) {
    errs.push(
        format!("{at}.deviceType"),
        format!("{v} is not supported; this agent serves netDevice pools (kernel netdev and vfio-pci VFs)"),
    );
}

/// A boolean field (`false` when absent).
pub fn boolean(field: &Loose<bool>, at: &str, errs: &mut FieldErrors) -> bool {
    match field {
        Loose::Absent => false,
        Loose::Ok(b) => *b,
        Loose::Wrong(v) => {
            errs.push(at, format!("{v} is not a boolean"));
            false
        }
    }
}

/// A list of strings, each with its position; the items that are not strings reported.
fn strings<'a>(field: &'a Strings, at: &str, errs: &mut FieldErrors) -> Vec<(usize, &'a str)> {
    match field {
        Loose::Absent => Vec::new(),
        Loose::Ok(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Loose::Ok(s) => Some((i, s.as_str())),
                Loose::Absent => {
                    errs.push(format!("{at}[{i}]"), "null is not a string");
                    None
                }
                Loose::Wrong(v) => {
                    errs.push(format!("{at}[{i}]"), format!("{v} is not a string"));
                    None
                }
            })
            .collect(),
        Loose::Wrong(v) => {
            errs.push(at, format!("{v} is not a list of strings"));
            Vec::new()
        }
    }
}

/// Each item of a string list through `parse`; its error, with the item's field, when it fails.
fn each<T, E: std::fmt::Display>(
    field: &Strings,
    at: &str,
    errs: &mut FieldErrors,
    parse: impl Fn(&str, &str, &mut FieldErrors) -> Result<T, Option<E>>,
) -> Vec<T> {
    let items = strings(field, at, errs);
    items
        .into_iter()
        .filter_map(|(i, s)| {
            let path = format!("{at}[{i}]");
            match parse(&path, s, errs) {
                Ok(t) => Some(t),
                Err(Some(e)) => {
                    errs.push(path, e.to_string());
                    None
                }
                Err(None) => None,
            }
        })
        .collect()
}

/// Parses a 4-digit hex PCI ID as the device plugin writes them (`"8086"`, also `"0x8086"`).
pub fn parse_pci_id(s: &str) -> Option<u16> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if hex.is_empty() || hex.len() > 4 {
        return None;
    }
    u16::from_str_radix(hex, 16).ok()
}

fn selector(at: &str, raw: &RawSelector, errs: &mut FieldErrors) -> Option<Selector> {
    let before = errs.len();
    let field = |key: &str| format!("{at}.{key}");
    let ids = |key: &str, list: &Strings, errs: &mut FieldErrors| -> Vec<u16> {
        each(list, &field(key), errs, |_, s, _| {
            parse_pci_id(s).ok_or_else(|| Some(format!("{s:?} is not a hexadecimal PCI ID")))
        })
    };
    let vendors = ids("vendors", &raw.vendors, errs);
    let devices = ids("devices", &raw.devices, errs);
    let drivers = each(&raw.drivers, &field("drivers"), errs, |_, d, _| {
        if vfcore::paths::is_plain_name(d) {
            Ok(d.to_string())
        } else {
            Err(Some(format!("{d:?} is not a driver name")))
        }
    });
    let pci_addresses = each(
        &raw.pci_addresses,
        &field("pciAddresses"),
        errs,
        |_, s, _| s.parse::<PciAddress>().map_err(Some),
    );
    let pf_names = each(
        &raw.pf_names,
        &field("pfNames"),
        errs,
        |path, s, errs| -> Result<_, Option<String>> {
            let (name, vfs) = split_vf_range(path, s, errs).ok_or(None)?;
            let pf = vfcore::IfName::new(name).map_err(|e| Some(e.to_string()))?;
            Ok(PfRef {
                pf: pf.to_string(),
                vfs,
            })
        },
    );
    let root_devices = each(
        &raw.root_devices,
        &field("rootDevices"),
        errs,
        |path, s, errs| -> Result<_, Option<String>> {
            let (addr, vfs) = split_vf_range(path, s, errs).ok_or(None)?;
            let pf = addr
                .parse::<PciAddress>()
                .map_err(|e| Some(e.to_string()))?;
            Ok(PfRef { pf, vfs })
        },
    );
    let link_types = strings(&raw.link_types, &field("linkTypes"), errs)
        .into_iter()
        .map(|(_, s)| s.to_ascii_lowercase())
        .collect();
    let acpi_indexes = strings(&raw.acpi_indexes, &field("acpiIndexes"), errs)
        .into_iter()
        .map(|(_, s)| s.to_string())
        .collect();
    let is_rdma = boolean(&raw.is_rdma, &field("isRdma"), errs);
    let need_vhost_net = boolean(&raw.need_vhost_net, &field("needVhostNet"), errs);
    for (key, v) in [
        ("ddpProfiles", &raw.ddp_profiles),
        ("vdpaType", &raw.vdpa_type),
        ("pKeys", &raw.p_keys),
        ("auxTypes", &raw.aux_types),
    ] {
        let set = match v {
            Value::Null => false,
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if set {
            errs.push(
                field(key),
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
