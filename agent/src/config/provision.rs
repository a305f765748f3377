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

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use vfcore::PciAddress;
use vfdp::config::keys::Keys;
use vfdp::config::{objects, parse_pci_id, FieldErrors, Loose, Obj, VfRange};

pub(super) const PROVISION: Keys = Keys {
    known: &["pfName", "pciAddress", "vendor", "device", "numVfs", "vfs"],
    nested: &[("vfs", &GROUP)],
};
const GROUP: Keys = Keys {
    known: &["range", "driver", "mtu"],
    nested: &[],
};

/// A `provisioning` entry as decoded, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawProvision {
    pf_name: Loose<String>,
    pci_address: Loose<String>,
    vendor: Loose<String>,
    device: Loose<String>,
    num_vfs: Loose<Number>,
    vfs: Loose<Vec<Loose<Obj<RawGroup>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawGroup {
    range: Loose<String>,
    driver: Loose<String>,
    mtu: Loose<Number>,
}

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

/// The validated `provisioning` list, and the check that no two entries name the same PF.
pub(super) fn provisioning(
    list: &Loose<Vec<Loose<Obj<RawProvision>>>>,
    errs: &mut FieldErrors,
) -> Vec<PfProvision> {
    let mut out: Vec<(usize, PfProvision)> = Vec::new();
    for (i, raw) in objects("provisioning", list, errs) {
        if let Some(p) = provision(&format!("provisioning[{i}]"), raw, errs) {
            out.push((i, p));
        }
    }
    for (k, (i, p)) in out.iter().enumerate() {
        if let Some((j, _)) = out[..k].iter().find(|(_, q)| q.pf == p.pf) {
            errs.push(
                format!("provisioning[{i}]"),
                format!("names the same PF as provisioning[{j}]"),
            );
        }
    }
    out.into_iter().map(|(_, p)| p).collect()
}

/// A string field, `None` when absent.
fn text(field: &Loose<String>, at: &str, errs: &mut FieldErrors) -> Option<String> {
    match field {
        Loose::Absent => None,
        Loose::Ok(s) => Some(s.clone()),
        Loose::Wrong(v) => {
            errs.push(at, format!("{v} is not a string"));
            None
        }
    }
}

fn provision(at: &str, raw: &RawProvision, errs: &mut FieldErrors) -> Option<PfProvision> {
    let before = errs.len();
    let name = text(&raw.pf_name, &format!("{at}.pfName"), errs);
    let addr = text(&raw.pci_address, &format!("{at}.pciAddress"), errs);
    let vendor = text(&raw.vendor, &format!("{at}.vendor"), errs);
    let device = text(&raw.device, &format!("{at}.device"), errs);
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
    let num_vfs = match &raw.num_vfs {
        Loose::Ok(n) => match n.as_u64() {
            Some(v) if v <= MAX_VFS => Some(v as u32),
            _ => {
                errs.push(
                    format!("{at}.numVfs"),
                    format!("{n} is not a VF count (0 to {MAX_VFS})"),
                );
                None
            }
        },
        Loose::Absent => {
            errs.push(format!("{at}.numVfs"), "is required");
            None
        }
        Loose::Wrong(v) => {
            errs.push(format!("{at}.numVfs"), format!("{v} is not a number"));
            None
        }
    };
    let vfs: Vec<VfGroup> = objects(&format!("{at}.vfs"), &raw.vfs, errs)
        .into_iter()
        .filter_map(|(i, g)| group(&format!("{at}.vfs[{i}]"), g, num_vfs, errs))
        .collect();
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

fn group(
    at: &str,
    raw: &RawGroup,
    num_vfs: Option<u32>,
    errs: &mut FieldErrors,
) -> Option<VfGroup> {
    let before = errs.len();
    let range = match &raw.range {
        Loose::Ok(s) => match s.parse::<VfRange>() {
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
        Loose::Wrong(v) => {
            errs.push(format!("{at}.range"), format!("{v} is not a string"));
            None
        }
        Loose::Absent => {
            errs.push(format!("{at}.range"), "is required");
            None
        }
    };
    let driver = match &raw.driver {
        Loose::Absent => Some(VfDriver::Netdevice),
        Loose::Ok(s) => match s.to_ascii_lowercase().as_str() {
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
        Loose::Wrong(v) => {
            errs.push(format!("{at}.driver"), format!("{v} is not a string"));
            None
        }
    };
    let mtu = match &raw.mtu {
        Loose::Absent => None,
        Loose::Ok(n) if n.as_u64().is_some_and(|m| MTU_RANGE.contains(&m)) => {
            n.as_u64().map(|m| m as u32)
        }
        Loose::Ok(n) => bad_mtu(at, &Value::Number(n.clone()), errs),
        Loose::Wrong(v) => bad_mtu(at, v, errs),
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

fn bad_mtu(at: &str, v: &Value, errs: &mut FieldErrors) -> Option<u32> {
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
