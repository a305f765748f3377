//! `provisioning`: how many VFs each PF gets and which driver each VF range is bound to.
//!
//! ```json
//! "provisioning": [
//!   {"pfName": "ens1f0", "numVfs": 6,
//!    "vfs": [{"range": "0-3", "driver": "netdevice", "mtu": 9000},
//!            {"range": "4-5", "driver": "vfio-pci"}]},
//!   {"vendor": "8086", "device": "10c9", "numVfs": 3}
//! ]
//! ```

use serde::Serialize;
use serde_json::Value;
use vfcore::PciAddress;

use super::resource::parse_pci_id;
use super::{FieldErrors, VfRange};

pub(super) const PROVISION_KEYS: &[&str] =
    &["pfName", "pciAddress", "vendor", "device", "numVfs", "vfs"];
const GROUP_KEYS: &[&str] = &["range", "driver", "mtu"];

/// Which PF(s) an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PfMatch {
    /// The PF's netdev name.
    Name(String),
    /// The PF's PCI address.
    Address(PciAddress),
    /// Every PF with these IDs.
    Ids { vendor: u16, device: u16 },
}

/// The driver a VF range is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VfDriver {
    /// The PF's VF driver in the kernel (igbvf, ixgbevf, iavf, mlx5_core...): a netdev.
    Netdevice,
    /// vfio-pci, for DPDK and other userspace drivers: no netdev.
    VfioPci,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfGroup {
    pub range: VfRange,
    pub driver: VfDriver,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PfProvision {
    pub pf: PfMatch,
    pub num_vfs: u32,
    /// VFs not covered by any group keep the kernel's default driver.
    pub vfs: Vec<VfGroup>,
}

impl PfProvision {
    /// The driver VF `index` should be bound to.
    pub fn driver_of(&self, index: u32) -> VfDriver {
        self.group_of(index)
            .map_or(VfDriver::Netdevice, |g| g.driver)
    }

    pub fn group_of(&self, index: u32) -> Option<&VfGroup> {
        self.vfs.iter().find(|g| g.range.contains(index))
    }
}

/// Linux's minimum Ethernet MTU and the largest jumbo frame NICs of this class take.
const MTU_RANGE: std::ops::RangeInclusive<u64> = 68..=9216;
/// Bigger than any PF's `sriov_totalvfs` (the PCIe field is 16 bits).
const MAX_VFS: u64 = 65535;

pub(super) fn parse_provision(
    at: &str,
    raw: &serde_json::Map<String, Value>,
    errs: &mut FieldErrors,
) -> Option<PfProvision> {
    let before = errs.len();
    let mut obj = raw.clone();
    for key in super::keys::canonicalize(&mut obj, PROVISION_KEYS) {
        tracing::warn!(field = %format!("{at}.{key}"), "unknown provisioning key ignored");
    }
    let text = |key: &str, errs: &mut FieldErrors| -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                errs.push(format!("{at}.{key}"), format!("{v} is not a string"));
                None
            }
        }
    };
    let name = text("pfName", errs);
    let addr = text("pciAddress", errs);
    let vendor = text("vendor", errs);
    let device = text("device", errs);
    let pf = match (name, addr, vendor, device) {
        (Some(n), None, None, None) => match vfcore::IfName::new(n) {
            Ok(n) => Some(PfMatch::Name(n.to_string())),
            Err(e) => {
                errs.push(format!("{at}.pfName"), e.to_string());
                None
            }
        },
        (None, Some(a), None, None) => match a.parse() {
            Ok(a) => Some(PfMatch::Address(a)),
            Err(e) => {
                errs.push(format!("{at}.pciAddress"), e.to_string());
                None
            }
        },
        (None, None, Some(v), Some(d)) => match (parse_pci_id(&v), parse_pci_id(&d)) {
            (Some(vendor), Some(device)) => Some(PfMatch::Ids { vendor, device }),
            _ => {
                errs.push(
                    format!("{at}.vendor"),
                    format!("{v:?}/{d:?} are not hexadecimal PCI IDs"),
                );
                None
            }
        },
        _ => {
            errs.push(
                at.to_string(),
                "name the PF with exactly one of pfName, pciAddress, or vendor and device",
            );
            None
        }
    };
    let num_vfs = match obj.get("numVfs") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= MAX_VFS => Some(v as u32),
            _ => {
                errs.push(
                    format!("{at}.numVfs"),
                    format!("{n} is not a VF count (0 to {MAX_VFS})"),
                );
                None
            }
        },
        None => {
            errs.push(format!("{at}.numVfs"), "is required");
            None
        }
        Some(v) => {
            errs.push(format!("{at}.numVfs"), format!("{v} is not a number"));
            None
        }
    };
    let mut vfs = Vec::new();
    match obj.get("vfs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{at}.vfs[{i}]");
                match item {
                    Value::Object(o) => {
                        if let Some(g) = parse_group(&path, o, num_vfs, errs) {
                            vfs.push(g);
                        }
                    }
                    _ => errs.push(path, "must be an object"),
                }
            }
        }
        Some(_) => errs.push(format!("{at}.vfs"), "must be a list"),
    }
    for (i, a) in vfs.iter().enumerate() {
        for b in &vfs[..i] {
            if let Some(v) = a.range.indexes().find(|v| b.range.contains(*v)) {
                errs.push(
                    format!("{at}.vfs[{i}].range"),
                    format!("VF {v} is already in range {}", b.range),
                );
            }
        }
    }
    match (pf, num_vfs) {
        (Some(pf), Some(num_vfs)) if errs.len() == before => Some(PfProvision { pf, num_vfs, vfs }),
        _ => None,
    }
}

fn parse_group(
    at: &str,
    raw: &serde_json::Map<String, Value>,
    num_vfs: Option<u32>,
    errs: &mut FieldErrors,
) -> Option<VfGroup> {
    let before = errs.len();
    let mut obj = raw.clone();
    for key in super::keys::canonicalize(&mut obj, GROUP_KEYS) {
        tracing::warn!(field = %format!("{at}.{key}"), "unknown key ignored");
    }
    let range = match obj.get("range") {
        Some(Value::String(s)) => match s.parse::<VfRange>() {
            Ok(r) => {
                if let (Some(n), Some(max)) = (num_vfs, r.max()) {
                    if max >= n {
                        errs.push(
                            format!("{at}.range"),
                            format!("VF {max} does not exist with numVfs {n}"),
                        );
                    }
                }
                Some(r)
            }
            Err(reason) => {
                errs.push(format!("{at}.range"), format!("{s:?}: {reason}"));
                None
            }
        },
        Some(v) => {
            errs.push(format!("{at}.range"), format!("{v} is not a string"));
            None
        }
        None => {
            errs.push(format!("{at}.range"), "is required");
            None
        }
    };
    let driver = match obj.get("driver") {
        None | Some(Value::Null) => Some(VfDriver::Netdevice),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "netdevice" | "netdev" | "kernel" => Some(VfDriver::Netdevice),
            "vfio-pci" | "vfio" => Some(VfDriver::VfioPci),
            _ => {
                errs.push(
                    format!("{at}.driver"),
                    format!("{s:?} is not one of netdevice, vfio-pci"),
                );
                None
            }
        },
        Some(v) => {
            errs.push(format!("{at}.driver"), format!("{v} is not a string"));
            None
        }
    };
    let mtu = match obj.get("mtu") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|m| MTU_RANGE.contains(&m)) => {
            n.as_u64().map(|m| m as u32)
        }
        Some(v) => {
            errs.push(
                format!("{at}.mtu"),
                format!(
                    "{v} is not an MTU between {} and {}",
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            );
            None
        }
    };
    if driver == Some(VfDriver::VfioPci) && mtu.is_some() {
        errs.push(
            format!("{at}.mtu"),
            "a vfio-pci VF has no netdev to set an MTU on",
        );
    }
    match (range, driver) {
        (Some(range), Some(driver)) if errs.len() == before => Some(VfGroup { range, driver, mtu }),
        _ => None,
    }
}
