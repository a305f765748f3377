//! One default route per address family across all of a pod's attachments (NPWG): the attachment
//! whose selection asks for `default-route` gets it, via the gateway it names; otherwise the pod's
//! default network keeps its own. Default routes other delegates installed (a secondary bridge with
//! `isDefaultGateway`, say) are removed from the pod and from the result.

use std::net::IpAddr;

use tracing::info;
use vfcore::netlink::{LinkOps, Netlink, NetlinkError, RouteSpec};
use vfcore::netns::{NetNs, NetNsError};

use super::plan::Planned;
use crate::spec::result::{CniResult, IpNet, Route};

fn is_v6(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(_))
}

/// Which attachment owns the default route of a family, and through which gateway (`None`: keep
/// the gateway its own delegate chose).
fn owner(planned: &[Planned], v6: bool) -> Option<(usize, Option<IpAddr>)> {
    planned
        .iter()
        .enumerate()
        .find_map(|(i, p)| {
            p.default_route
                .iter()
                .find(|g| is_v6(g) == v6)
                .map(|g| (i, Some(*g)))
        })
        .or_else(|| planned.iter().position(|p| p.default).map(|i| (i, None)))
}

/// Why the pod's default routes could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("settling the pod's default routes")]
    Netns(#[from] NetNsError),
    #[error("settling the pod's default routes")]
    Netlink(#[from] NetlinkError),
}

/// Applies the policy inside the pod's network namespace `netns` and to `results` (one per
/// planned attachment, same order).
pub fn settle(
    netns: &str,
    planned: &[Planned],
    results: &mut [CniResult],
) -> Result<(), RouteError> {
    if planned.len() < 2 {
        return Ok(());
    }
    let owners = [owner(planned, false), owner(planned, true)];
    let ifnames: Vec<String> = planned.iter().map(|p| p.ifname.clone()).collect();
    let ns = NetNs::open(netns)?;
    let owners_c = owners;
    ns.run(move || -> Result<(), RouteError> {
        let mut nl = Netlink::open()?;
        for (fam, own) in owners_c.iter().enumerate() {
            let v6 = fam == 1;
            let Some((idx, gw)) = own else { continue };
            let owner_link = nl
                .link_by_name(&ifnames[*idx])
                ?
                .map(|l| l.index);
            let defaults: Vec<RouteSpec> = nl
                .routes()
                ?
                .into_iter()
                .filter(|r| r.destination.is_none() && r.gateway.is_some_and(|g| is_v6(&g) == v6))
                .collect();
            for r in &defaults {
                let keep = gw.is_none() && r.link == owner_link;
                if !keep {
                    nl.del_route(r)?;
                    info!(gateway = ?r.gateway, "removed a default route another attachment installed");
                }
            }
            if let (Some(g), Some(link)) = (gw, owner_link) {
                nl.add_route(&RouteSpec {
                    destination: None,
                    gateway: Some(*g),
                    link: Some(link),
                })
                ?;
                info!(gateway = %g, ifname = %ifnames[*idx], "default route moved as the pod asked");
            }
        }
        Ok(())
    })
    ??;

    // The result says the same.
    for (fam, own) in owners.iter().enumerate() {
        let v6 = fam == 1;
        let Some((idx, gw)) = own else { continue };
        for (i, r) in results.iter_mut().enumerate() {
            let mine = i == *idx && gw.is_none();
            if !mine {
                r.routes
                    .retain(|rt| !(rt.dst.prefix == 0 && is_v6(&rt.dst.addr) == v6));
            }
        }
        if let (Some(g), Some(r)) = (gw, results.get_mut(*idx)) {
            let any: IpAddr = if v6 {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            };
            if let Some(dst) = IpNet::new(any, 0) {
                r.routes.push(Route::new(dst, Some(*g)));
            }
        }
    }
    Ok(())
}
