//! CHECK: the VF is in the pod as CNI_IFNAME with the MAC and MTU ADD set, and the PF still
//! holds the VF settings ADD applied.

use serde_json::Value;
use vfcore::netlink::LinkOps;
use vfcore::{MacAddr, PciAddress, VfIndex};

use super::attach::LOCK_TIMEOUT;
use super::device::{self, kernel};
use super::host::Host;
use super::state::{Mode, Stage, StateDir};
use super::SriovError;
use crate::spec::env::CniEnv;

/// The code of a failed CHECK.
pub const CODE_CHECK_FAILED: u32 = 102;

/// How the attachment differs from what ADD left (CNI code [`CODE_CHECK_FAILED`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("sriov CHECK: no attachment of this container as {ifname}")]
    NoRecord { ifname: String },
    #[error("sriov CHECK: the ADD of this attachment did not finish")]
    Unfinished,
    #[error("sriov CHECK: {ifname} is not in {netns}")]
    NotInPod { ifname: String, netns: String },
    #[error("sriov CHECK: {ifname} in {netns} is not the VF")]
    NotTheVf { ifname: String, netns: String },
    #[error("sriov CHECK: {ifname} has MAC {have}, not {want}")]
    Mac {
        ifname: String,
        have: String,
        want: String,
    },
    #[error("sriov CHECK: {ifname} has MTU {have}, not {want}")]
    Mtu {
        ifname: String,
        have: u32,
        want: u32,
    },
    #[error("sriov CHECK: PF {pf_name} reports no VF {vf}")]
    NoVf { pf_name: String, vf: VfIndex },
    #[error("sriov CHECK: VF {pci} has VLAN {vlan} QoS {qos}, not {want_vlan} QoS {want_qos}")]
    Vlan {
        pci: PciAddress,
        vlan: u16,
        qos: u8,
        want_vlan: u16,
        want_qos: u8,
    },
    #[error("sriov CHECK: VF {pci} has PF-side MAC {have}, not {want}")]
    PfMac {
        pci: PciAddress,
        have: MacAddr,
        want: MacAddr,
    },
}

pub fn check<H: Host>(host: &H, env: &CniEnv, state: &StateDir) -> Result<(), SriovError> {
    let ifname = super::ifname_of(env)?;
    let record = state
        .read(&env.container_id, &ifname)?
        .ok_or_else(|| CheckError::NoRecord {
            ifname: ifname.clone(),
        })?;
    if record.stage != Stage::Done {
        return Err(CheckError::Unfinished.into());
    }
    let _lock = state.lock(&record.pci, LOCK_TIMEOUT)?;
    if record.mode == Mode::Netdev {
        let netns = if env.netns.is_empty() {
            record.netns.clone()
        } else {
            env.netns.clone()
        };
        let ns = host.open_netns(&netns)?;
        let name = ifname.clone();
        let link = host
            .run_in(&ns, |nl| nl.link_by_name(&name).map_err(kernel))?
            .ok_or_else(|| CheckError::NotInPod {
                ifname: ifname.clone(),
                netns: netns.clone(),
            })?;
        if link.kind.is_some() {
            return Err(CheckError::NotTheVf { ifname, netns }.into());
        }
        let want_mac = record.applied.mac.map(|m| m.to_string()).or_else(|| {
            record
                .result
                .as_ref()
                .and_then(|r| r.pointer("/interfaces/0/mac"))
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        });
        let have_mac = link.mac.map(|m| m.to_string());
        if let Some(want) = want_mac {
            if have_mac.as_deref() != Some(want.as_str()) {
                return Err(CheckError::Mac {
                    ifname,
                    have: have_mac.unwrap_or_default(),
                    want,
                }
                .into());
            }
        }
        if let Some(mtu) = record.applied.mtu {
            if link.mtu != mtu {
                return Err(CheckError::Mtu {
                    ifname,
                    have: link.mtu,
                    want: mtu,
                }
                .into());
            }
        }
    }
    let mut nl = host.links()?;
    let pf = device::pf_link(host, &mut nl, &record.pf)?;
    let vf = nl
        .vf_configs(pf.index)
        .map_err(kernel)?
        .into_iter()
        .find(|c| c.vf == record.vf)
        .ok_or_else(|| CheckError::NoVf {
            pf_name: pf.name.clone(),
            vf: record.vf,
        })?;
    let want = record.applied.vf_settings();
    if let Some(vlan) = want.vlan {
        if vf.vlan != vlan || Some(vf.qos) != want.qos {
            return Err(CheckError::Vlan {
                pci: record.pci,
                vlan: vf.vlan,
                qos: vf.qos,
                want_vlan: vlan,
                want_qos: want.qos.unwrap_or(0),
            }
            .into());
        }
    }
    if let Some(mac) = want.mac {
        if vf.mac != mac {
            return Err(CheckError::PfMac {
                pci: record.pci,
                have: vf.mac,
                want: mac,
            }
            .into());
        }
    }
    Ok(())
}
