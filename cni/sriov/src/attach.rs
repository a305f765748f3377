//! ADD: the VF into the pod.
//!
//! Order: lock the VF; reclaim it from a dead holder; read its original state from the PF and
//! the host; write the intent record; then change things: PF-side settings, the netdev's MAC
//! (in the host, where a driver rebind is possible), a temporary netns, rename to CNI_IFNAME
//! there (old alternative names dropped), the pod's netns, MTU, up, IPAM and its addresses and
//! routes. The record is rewritten with the result at the end. Any failure after the intent
//! record restores everything from it ([`super::restore`]) before the error is returned.

use std::cell::Cell;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use vfcore::netlink::{IfAddress, LinkOps, RouteSpec};

use super::device::{self, kernel, DeviceError, Vf, KERNEL_TIMEOUT};
use super::host::Host;
use super::ipam::IpamError;
use super::netconf::SriovConf;
use super::node::NodeDirs;
use super::restore::{restore, RestoreCtx};
use super::state::{Applied, Mode, Record, SavedNetdev, SavedVf, Stage, StateDir, RECORD_KIND};
use super::{CrashAt, SriovError};
use crate::exec::{exec_add, ExecError, Invocation};
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::result::{CniResult, Interface, IpConfig};
use crate::spec::version::CniVersion;
use crate::timing::timed;

/// How long ADD waits for another ADD or DEL of the same VF.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an IPAM plugin may run.
pub const IPAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The code for "the VF belongs to another live attachment".
pub const CODE_VF_BUSY: u32 = 101;

/// Everything one ADD needs.
pub struct AddCtx<'a, H: Host> {
    /// The node (netlink, namespaces, sysfs).
    pub host: &'a H,
    pub env: &'a CniEnv,
    pub conf: &'a SriovConf,
    /// The config as received (IPAM gets it whole, the record keeps it).
    pub config: Value,
    pub version: CniVersion,
    pub state: &'a StateDir,
    /// The node's directories (the device-info file must be in its device-info dir).
    pub node: &'a NodeDirs,
    pub crash: &'a CrashAt,
}

pub fn add<H: Host>(ctx: &AddCtx<'_, H>) -> Result<CniResult, SriovError> {
    let env = ctx.env;
    let ifname = super::ifname_of(env)?;
    let pci = ctx.conf.require_device()?;
    let device_info_file = ctx.conf.device_info_path(ctx.node)?;
    let vf = timed("resolve", || ctx.host.resolve_vf(pci))?;
    let _lock = timed("lock", || ctx.state.lock(&pci, LOCK_TIMEOUT))?;
    let rctx = RestoreCtx {
        host: ctx.host,
        node: ctx.node,
        cni_path: &env.path,
        ipam: true,
    };

    // An earlier ADD of this attachment that was never deleted: undo it first.
    if let Some(prev) = timed("cache", || ctx.state.read(&env.container_id, &ifname))? {
        tracing::info!(pci = %prev.pci, "restoring the leftovers of an earlier ADD of this attachment");
        if prev.pci != pci {
            let _other = ctx.state.lock(&prev.pci, LOCK_TIMEOUT)?;
            restore(&rctx, &prev)?;
        } else {
            restore(&rctx, &prev)?;
        }
        ctx.state.remove(&env.container_id, &ifname)?;
    }
    // Another attachment's record for this VF: refuse while its pod lives, reclaim otherwise.
    for other in timed("cache", || ctx.state.list())?
        .into_iter()
        .filter(|r| r.pci == pci)
    {
        if ctx.host.netns_alive(&other.netns) {
            return Err(SriovError::Busy {
                pci,
                container_id: other.container_id,
                ifname: other.ifname,
                netns: other.netns,
            });
        }
        tracing::info!(pci = %pci, container = %other.container_id, "reclaiming the VF from an attachment whose netns is gone");
        restore(&rctx, &other)?;
        ctx.state.remove(&other.container_id, &other.ifname)?;
    }

    let pod_ns = ctx.host.open_netns(&env.netns)?;
    let mut nl = ctx.host.links()?;
    let original_vf = timed("read_netlink", || {
        let pf_link = device::pf_link(ctx.host, &mut nl, &vf.pf)?;
        nl.vf_configs(pf_link.index)
            .map_err(kernel)?
            .into_iter()
            .find(|c| c.vf == vf.index)
            .ok_or_else(|| DeviceError::NoSuchVfOnPf {
                pf: vf.pf,
                pf_name: pf_link.name.clone(),
                vf: vf.index,
                pci,
            })
    })?;
    let mode = if vf.is_userspace() {
        Mode::Userspace
    } else {
        Mode::Netdev
    };
    let original_netdev = match mode {
        Mode::Userspace => None,
        Mode::Netdev => {
            let Some(name) = device::host_netdev(ctx.host, &pci)? else {
                return Err(DeviceError::NoHostNetdev {
                    pci,
                    driver: vf.driver.clone().unwrap_or_else(|| "none".into()),
                }
                .into());
            };
            let link = timed("read_netlink", || nl.link_by_name(&name))
                .map_err(kernel)?
                .ok_or_else(|| DeviceError::NetdevVanished {
                    pci,
                    name: name.clone(),
                })?;
            Some(SavedNetdev {
                name: link.name,
                mac: link.mac,
                mtu: link.mtu,
                up: link.up,
                alt_names: link.alt_names,
            })
        }
    };
    let settings = ctx.conf.vf_settings();
    let config = ctx.config.clone();
    let ipam_config = match &ctx.conf.ipam_type {
        Some(t) => Some(
            timed("ipam_exec", || {
                super::ipam::config_for(t, &env.path, &config, ctx.version, IPAM_TIMEOUT)
            })?
            .0,
        ),
        None => None,
    };
    let mut record = Record {
        kind: RECORD_KIND.into(),
        container_id: env.container_id.clone(),
        ifname: ifname.clone(),
        netns: env.netns.clone(),
        cni_args: env.args.to_env_string(),
        network: ctx.conf.name.clone(),
        pci,
        pf: vf.pf,
        vf: vf.index,
        mode,
        stage: Stage::Intent,
        original_vf: SavedVf::from_config(&original_vf),
        original_netdev,
        applied: Applied::new(&settings, ctx.conf.mtu),
        temp_netns: (mode == Mode::Netdev).then(|| device::temp_netns_name(&pci)),
        device_info_file,
        config,
        ipam_config,
        result: None,
    };
    timed("cache", || ctx.state.write(&record))?;
    ctx.crash.at("after-intent");

    let ipam_ran = Cell::new(false);
    let applied = apply(ctx, &vf, &record, &pod_ns, &ifname, &ipam_ran).and_then(|result| {
        record.stage = Stage::Done;
        record.result = Some(result.to_value());
        timed("cache", || ctx.state.write(&record))?;
        Ok(result)
    });
    match applied {
        Ok(result) => Ok(result),
        Err(e) => {
            tracing::warn!(error = %e, "ADD failed; restoring the VF");
            let rctx = RestoreCtx {
                ipam: ipam_ran.get(),
                ..rctx
            };
            match restore(&rctx, &record) {
                Ok(()) => {
                    ctx.state.remove(&record.container_id, &record.ifname)?;
                    Err(e)
                }
                Err(undo) => Err(SriovError::AddUndone {
                    error: Box::new(e),
                    undo: Box::new(undo),
                }),
            }
        }
    }
}

/// The changes, in order; `record` (already on disk) says how to undo them.
fn apply<H: Host>(
    ctx: &AddCtx<'_, H>,
    vf: &Vf,
    record: &Record,
    pod_ns: &H::Ns,
    ifname: &str,
    ipam_ran: &Cell<bool>,
) -> Result<CniResult, SriovError> {
    let settings = record.applied.vf_settings();
    let mut nl = ctx.host.links()?;
    if !settings.is_empty() {
        timed("pf_netlink", || {
            let pf_link = device::pf_link(ctx.host, &mut nl, &vf.pf)?;
            nl.set_vf(pf_link.index, vf.index, &settings)
                .map_err(kernel)
        })?;
    }
    ctx.crash.at("after-pf-config");

    let mut result = CniResult::empty(ctx.version);
    let mut iface = Interface {
        name: ifname.to_string(),
        sandbox: ctx.env.netns.clone(),
        pci_id: vf.pci.to_string(),
        ..Interface::default()
    };
    let mut pod_link = None;
    if let (Mode::Netdev, Some(orig)) = (record.mode, &record.original_netdev) {
        let link = timed("netns_move", || {
            into_pod(ctx, vf, record, pod_ns, &mut nl, &orig.name, ifname)
        })?;
        iface.mac = link.mac.map(|m| m.to_string()).unwrap_or_default();
        iface.mtu = Some(link.mtu);
        pod_link = Some(link.index);
    }
    result.interfaces.push(iface);

    if let Some(ipam) = &ctx.conf.ipam_type {
        let inv = Invocation::from_env(ctx.env, CniCommand::Add, ifname, IPAM_TIMEOUT);
        // From here on a rollback must release whatever IPAM may have allocated; a plugin that
        // could not even be found allocated nothing.
        ipam_ran.set(true);
        let ipam_config = record.ipam_config.as_ref().unwrap_or(&record.config);
        let ipam_version = crate::invocation::declared_version(ipam_config).unwrap_or(ctx.version);
        let bytes = serde_json::to_vec(ipam_config).map_err(IpamError::Encode)?;
        let ipam_result = match timed("ipam_exec", || exec_add(ipam, &inv, &bytes, ipam_version)) {
            Ok(r) => r,
            Err(e) => {
                // Not found, or refused the version: nothing was allocated.
                let refused_early = match &e {
                    ExecError::NotFound { .. } | ExecError::InvalidType(_) => true,
                    ExecError::Plugin { error, .. } => {
                        error.code == crate::spec::error::code::INCOMPATIBLE_VERSION
                    }
                    _ => false,
                };
                if refused_early {
                    ipam_ran.set(false);
                }
                return Err(IpamError::Exec(e).into());
            }
        };
        ctx.crash.at("after-ipam");
        result.ips = ipam_result
            .ips
            .iter()
            .map(|ip| IpConfig {
                interface: Some(0),
                ..ip.clone()
            })
            .collect();
        result.routes = ipam_result.routes.clone();
        result.dns = ipam_result.dns.clone();
        if let Some(index) = pod_link {
            timed("addr_route", || {
                configure_ips(ctx.host, pod_ns, index, &result)
            })?;
        }
    }

    if let Some(path) = &record.device_info_file {
        super::devinfo::write(path, &vf.pci, &vf.pf)?;
    }
    Ok(result)
}

/// Moves the netdev from the host into the pod as `ifname` via the temp netns, with the MAC and
/// MTU of the config, up. Returns the link as the pod sees it.
fn into_pod<H: Host>(
    ctx: &AddCtx<'_, H>,
    vf: &Vf,
    record: &Record,
    pod_ns: &H::Ns,
    nl: &mut H::Links,
    host_name: &str,
    ifname: &str,
) -> Result<vfcore::netlink::LinkInfo, DeviceError> {
    let vanished = |name: &str| DeviceError::NetdevVanished {
        pci: vf.pci,
        name: name.to_string(),
    };
    let link = nl
        .link_by_name(host_name)
        .map_err(kernel)?
        .ok_or_else(|| vanished(host_name))?;
    nl.set_up(link.index, false).map_err(kernel)?;
    let mut name = host_name.to_string();
    if let Some(mac) = record.applied.mac {
        name = timed("mac_netlink", || {
            device::adopt_mac(ctx.host, nl, &vf.pci, &name, mac)
        })?;
    }
    let link = nl
        .link_by_name(&name)
        .map_err(kernel)?
        .ok_or_else(|| vanished(&name))?;

    let temp_name = record
        .temp_netns
        .clone()
        .unwrap_or_else(|| device::temp_netns_name(&vf.pci));
    let host = ctx.host;
    let temp = host.open_or_create_named(&temp_name)?;
    host.move_link(nl, link.index, &temp)?;
    ctx.crash.at("after-temp-netns");

    let ifname_owned = ifname.to_string();
    host.run_in(&temp, |nl| -> Result<(), DeviceError> {
        let link = nl.wait_for_link(&name, KERNEL_TIMEOUT).map_err(kernel)?;
        if link.name != ifname_owned {
            nl.set_name(link.index, &ifname_owned).map_err(kernel)?;
        }
        // Names the host gave it (udev's predictable names) mean nothing in the pod.
        for alt in &link.alt_names {
            if let Err(e) = nl.del_alt_name(link.index, alt) {
                tracing::warn!(altname = %alt, error = %e, "could not drop an alternative name");
            }
        }
        host.move_link(nl, link.index, pod_ns)?;
        Ok(())
    })?;
    ctx.crash.at("after-move");

    let mac = record.applied.mac;
    let mtu = record.applied.mtu;
    let link = host.run_in(
        pod_ns,
        |nl| -> Result<vfcore::netlink::LinkInfo, DeviceError> {
            let link = nl
                .wait_for_link(&ifname_owned, KERNEL_TIMEOUT)
                .map_err(kernel)?;
            if let Some(mtu) = mtu {
                nl.set_mtu(link.index, mtu).map_err(kernel)?;
            }
            if let Some(mac) = mac {
                if link.mac != Some(mac) {
                    nl.set_mac(link.index, mac).map_err(kernel)?;
                }
            }
            nl.set_up(link.index, true).map_err(kernel)?;
            nl.link_by_index(link.index)
                .map_err(kernel)?
                .ok_or_else(|| DeviceError::VanishedInPod {
                    ifname: ifname_owned.clone(),
                })
        },
    )?;
    if let Err(e) = host.delete_named(&temp_name) {
        tracing::warn!(netns = %temp_name, error = %e, "could not delete the temporary netns");
    }
    Ok(link)
}

/// Adds the IPAM addresses and routes to the link inside the pod.
fn configure_ips<H: Host>(
    host: &H,
    pod_ns: &H::Ns,
    index: vfcore::IfIndex,
    result: &CniResult,
) -> Result<(), DeviceError> {
    host.run_in(pod_ns, |nl| -> Result<(), DeviceError> {
        for ip in &result.ips {
            nl.add_address(index, ip.address.addr, ip.address.prefix)
                .map_err(kernel)?;
        }
        for route in &result.routes {
            let gw = route.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .filter(|ip| ip.address.is_ipv4() == route.dst.is_ipv4())
                    .find_map(|ip| ip.gateway)
            });
            let destination = (route.dst.prefix != 0).then_some(IfAddress {
                addr: route.dst.addr,
                prefix_len: route.dst.prefix,
            });
            let spec = RouteSpec {
                destination,
                gateway: gw.filter(|g: &IpAddr| g.is_ipv4() == route.dst.is_ipv4()),
                link: Some(index),
            };
            nl.add_route(&spec).map_err(kernel)?;
        }
        Ok(())
    })
}
