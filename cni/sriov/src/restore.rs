//! Undoing an attachment from its record alone: DEL, the rollback of a failed ADD, the reclaim
//! of a VF whose pod is gone, and GC all come here.
//!
//! The record may be an intent (ADD crashed or failed somewhere after writing it) or a finished
//! attachment, so every step works from whatever state it finds: the netdev is looked for in
//! the host (by PCI address, so a `devN` the kernel returned from a destroyed netns is found),
//! in the temporary netns, and in the pod under CNI_IFNAME. Steps run in reverse order of ADD:
//! IPAM DEL; the netdev down and back into the host; the PF-side settings ADD changed back to
//! their original values; the netdev's original name, MAC (see [`device::adopt_mac`]), MTU,
//! alternative names and up state; the temporary netns and device-info file removed. Every step
//! runs even after one fails; the errors are combined and the record is then kept for a retry.

use std::path::PathBuf;

use vfcore::netlink::{LinkInfo, LinkOps, VfSettings};
use vfcore::MacAddr;

use super::attach::IPAM_TIMEOUT;
use super::device::{self, kernel, DeviceError};
use super::host::Host;
use super::ipam::IpamError;
use super::node::NodeDirs;
use super::state::{Mode, Record, SavedNetdev};
use super::SriovError;
use crate::exec::{exec_no_result, Invocation};
use crate::spec::env::CniCommand;
use crate::timing::timed;

/// What restoring needs beyond the record.
pub struct RestoreCtx<'a, H: Host> {
    /// The node (netlink, namespaces, sysfs).
    pub host: &'a H,
    /// The node's directories: only a device-info file in its device-info dir is removed.
    pub node: &'a NodeDirs,
    /// CNI_PATH, to find the IPAM plugin.
    pub cni_path: &'a [PathBuf],
    /// Whether IPAM DEL runs: a rollback skips it when the IPAM plugin never ran.
    pub ipam: bool,
}

pub use super::host::netns_alive;

fn ipam_type(record: &Record) -> Option<String> {
    record
        .config
        .get("ipam")
        .and_then(|i| i.get("type"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Restores everything `record` says ADD may have changed.
pub fn restore<H: Host>(ctx: &RestoreCtx<'_, H>, record: &Record) -> Result<(), SriovError> {
    let mut errors: Vec<SriovError> = Vec::new();

    if let Some(ipam) = ipam_type(record).filter(|_| ctx.ipam) {
        let inv = Invocation {
            command: CniCommand::Del,
            container_id: record.container_id.clone(),
            netns: record.netns.clone(),
            ifname: record.ifname.clone(),
            args: record.cni_args.clone(),
            path: ctx.cni_path.to_vec(),
            timeout: IPAM_TIMEOUT,
        };
        let conf = serde_json::to_vec(record.ipam_config.as_ref().unwrap_or(&record.config))
            .unwrap_or_default();
        if let Err(e) = timed("ipam_exec", || exec_no_result(&ipam, &inv, &conf)) {
            errors.push(IpamError::Exec(e).into());
        }
    }

    let home = match (record.mode, &record.original_netdev) {
        (Mode::Netdev, Some(_)) => match timed("netns_move", || bring_home(ctx, record)) {
            Ok(name) => Some(name),
            Err(e) => {
                errors.push(e.into());
                None
            }
        },
        _ => None,
    };

    // The VF's MAC as the PF showed it was the VF's own (the driver's choice, mirrored by the
    // PF), not an administrative one: clear the administrative MAC ADD set and let the netdev
    // take its MAC back itself, so the VF is left as free to change it as it was (igb, for one,
    // locks a VF's MAC once its PF has set one). Otherwise the PF sets the original MAC back.
    let vf_owned_mac = home.is_some()
        && record.applied.mac.is_some()
        && !record.original_vf.mac.is_zero()
        && record.original_netdev.as_ref().and_then(|n| n.mac) == Some(record.original_vf.mac);
    if let Err(e) = timed("pf_netlink", || restore_pf_side(ctx, record, vf_owned_mac)) {
        errors.push(e.into());
    }

    if let (Some(name), Some(orig)) = (home, &record.original_netdev) {
        let mut restored = timed("netdev_restore", || {
            restore_netdev(ctx, record, &name, orig)
        });
        if restored.is_err() && vf_owned_mac {
            // The netdev would not take its MAC back by itself: have the PF hold it, then the
            // netdev adopts it as after any administrative MAC.
            tracing::info!("the VF did not take its own MAC back; its PF sets it");
            restored = settle_pf_side_mac(ctx, record).and_then(|()| {
                let name = device::host_netdev(ctx.host, &record.pci)?
                    .ok_or(DeviceError::NoNetdev { pci: record.pci })?;
                restore_netdev(ctx, record, &name, orig)
            });
        }
        if let Err(e) = restored {
            errors.push(e.into());
        }
        if vf_owned_mac {
            if let Err(e) = timed("pf_netlink", || settle_pf_side_mac(ctx, record)) {
                errors.push(e.into());
            }
        }
    }

    if let Some(temp) = &record.temp_netns {
        if let Err(e) = timed("netns_move", || ctx.host.delete_named(temp)) {
            errors.push(e.into());
        }
    }
    if let Some(path) = &record.device_info_file {
        if !ctx.node.owns_device_info_file(path) {
            // A record of an older version may name any path: it is not ours to remove.
            tracing::warn!(
                path = %path.display(),
                dir = %ctx.node.device_info_cni_dir().display(),
                "the record's device-info file is not a plain file in the node's device-info directory; left as it is"
            );
        } else if let Err(e) = super::devinfo::remove(path) {
            errors.push(e.into());
        }
    }

    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(SriovError::Restore(errors)),
    }
}

/// Finds the VF's netdev wherever ADD left it, brings it down and back into the host; returns
/// its name there.
fn bring_home<H: Host>(ctx: &RestoreCtx<'_, H>, record: &Record) -> Result<String, DeviceError> {
    if let Some(name) = device::host_netdev(ctx.host, &record.pci)? {
        return Ok(name);
    }
    let h = ctx.host;
    let host = h.current_netns()?;
    let homeward = homeward_name(record);
    let homeward = homeward.as_str();
    let mut moved = false;
    if let Some(temp) = &record.temp_netns {
        if let Ok(ns) = h.named_netns(temp) {
            moved |= h.run_in(&ns, |nl| -> Result<bool, DeviceError> {
                let mut any = false;
                for link in device::physical_links(nl)? {
                    send_home(h, nl, &link, homeward, &host)?;
                    any = true;
                }
                Ok(any)
            })?;
        }
    }
    let pod_alive = h.netns_alive(&record.netns);
    if !moved && pod_alive {
        let ns = h.open_netns(&record.netns)?;
        let ifname = record.ifname.clone();
        moved |= h.run_in(&ns, |nl| -> Result<bool, DeviceError> {
            match nl.link_by_name(&ifname).map_err(kernel)? {
                Some(link) if link.kind.is_none() => {
                    send_home(h, nl, &link, homeward, &host)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })?;
    }
    if !moved && pod_alive {
        return Err(DeviceError::NetdevLost {
            pci: record.pci,
            ifname: record.ifname.clone(),
            netns: record.netns.clone(),
        });
    }
    // Moved, or the pod's netns is gone and the kernel returns the netdev to the host on its
    // own (asynchronously, possibly as devN).
    h.wait_vf_netdev(&record.pci)
}

/// The name a VF's netdev carries on its way back into the host, unique to the VF: its pod-side
/// name (CNI_IFNAME, `eth1` under CNI-Genie) may be taken there. [`restore_netdev`] then gives
/// it its original name.
fn homeward_name(record: &Record) -> String {
    format!("vfh{}", record.pci.to_string().replace([':', '.'], ""))
}

/// Down, renamed to `name`, and moved into `host`.
fn send_home<H: Host>(
    h: &H,
    nl: &mut H::Links,
    link: &LinkInfo,
    name: &str,
    host: &H::Ns,
) -> Result<(), DeviceError> {
    nl.set_up(link.index, false).map_err(kernel)?;
    if link.name != name {
        nl.set_name(link.index, name).map_err(kernel)?;
    }
    h.move_link(nl, link.index, host)
}

/// Puts back the PF-side settings ADD changed. With `clear_mac`, the MAC is cleared (all zero)
/// instead of set to its original value; a driver that refuses that gets the original value.
fn restore_pf_side<H: Host>(
    ctx: &RestoreCtx<'_, H>,
    record: &Record,
    clear_mac: bool,
) -> Result<(), DeviceError> {
    let mut back = record
        .original_vf
        .restore_settings(&record.applied.vf_settings());
    if back.is_empty() {
        return Ok(());
    }
    let mut nl = ctx.host.links()?;
    let pf = device::pf_link(ctx.host, &mut nl, &record.pf)?;
    if clear_mac && back.mac.is_some() {
        let clear = VfSettings {
            mac: Some(MacAddr::ZERO),
            ..VfSettings::default()
        };
        match nl.set_vf(pf.index, record.vf, &clear) {
            Ok(()) => back.mac = None,
            Err(e) => {
                tracing::info!(error = %e, "clearing the VF's administrative MAC was refused; setting the original")
            }
        }
    }
    nl.set_vf(pf.index, record.vf, &back).map_err(kernel)
}

/// After the netdev took its MAC back: the PF must show the original MAC again; when it does
/// not (a driver that does not mirror the VF's own MAC), the PF sets it.
fn settle_pf_side_mac<H: Host>(
    ctx: &RestoreCtx<'_, H>,
    record: &Record,
) -> Result<(), DeviceError> {
    let mut nl = ctx.host.links()?;
    let pf = device::pf_link(ctx.host, &mut nl, &record.pf)?;
    let now = nl
        .vf_configs(pf.index)
        .map_err(kernel)?
        .into_iter()
        .find(|c| c.vf == record.vf)
        .map(|c| c.mac);
    if now == Some(record.original_vf.mac) {
        return Ok(());
    }
    let set = VfSettings {
        mac: Some(record.original_vf.mac),
        ..VfSettings::default()
    };
    nl.set_vf(pf.index, record.vf, &set).map_err(kernel)
}

fn restore_netdev<H: Host>(
    ctx: &RestoreCtx<'_, H>,
    record: &Record,
    name: &str,
    orig: &SavedNetdev,
) -> Result<(), DeviceError> {
    let mut nl = ctx.host.links()?;
    let vanished = |n: &str| DeviceError::NetdevVanished {
        pci: record.pci,
        name: n.to_string(),
    };
    let link = nl
        .link_by_name(name)
        .map_err(kernel)?
        .ok_or_else(|| vanished(name))?;
    nl.set_up(link.index, false).map_err(kernel)?;
    let mut name = name.to_string();
    if let Some(mac) = orig.mac {
        name = device::adopt_mac(ctx.host, &mut nl, &record.pci, &name, mac)?;
    }
    let link = nl
        .link_by_name(&name)
        .map_err(kernel)?
        .ok_or_else(|| vanished(&name))?;
    if link.name != orig.name {
        nl.set_name(link.index, &orig.name).map_err(kernel)?;
    }
    if link.mtu != orig.mtu {
        nl.set_mtu(link.index, orig.mtu).map_err(kernel)?;
    }
    for alt in &orig.alt_names {
        if !link.alt_names.contains(alt) {
            if let Err(e) = nl.add_alt_name(link.index, alt) {
                tracing::warn!(altname = %alt, error = %e, "could not restore an alternative name");
            }
        }
    }
    if orig.up {
        nl.set_up(link.index, true).map_err(kernel)?;
    }
    Ok(())
}
