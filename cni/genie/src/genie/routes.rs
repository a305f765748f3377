//! One default route per address family across all of a pod's attachments (NPWG): the attachment
//! whose selection asks for `default-route` gets it, via the gateway it names; otherwise the pod's
//! default network keeps its own. Default routes other delegates installed (a secondary bridge with
//! `isDefaultGateway`, say) are removed from the pod and from the result.

use std::net::IpAddr;

use tracing::info;
use vfcore::netlink::{LinkOps, Netlink, RouteSpec};
use vfcore::netns::NetNs;

use super::plan::Planned;
use crate::spec::error::CniError;
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

fn route_error(e: impl std::fmt::Display) -> CniError {
    CniError::io(format!("settling the pod's default routes: {e}"))
}

/// Applies the policy inside the pod's network namespace `netns` and to `results` (one per
/// planned attachment, same order).
pub fn settle(netns: &str, planned: &[Planned], results: &mut [CniResult]) -> Result<(), CniError> {
    if planned.len() < 2 {
        return Ok(());
    }
    let owners = [owner(planned, false), owner(planned, true)];
    let ifnames: Vec<String> = planned.iter().map(|p| p.ifname.clone()).collect();
    let ns = NetNs::open(netns).map_err(route_error)?;
    let owners_c = owners;
    ns.run(move || -> Result<(), CniError> {
        let mut nl = Netlink::open().map_err(route_error)?;
        for (fam, own) in owners_c.iter().enumerate() {
            let v6 = fam == 1;
            let Some((idx, gw)) = own else { continue };
            let owner_link = nl
                .link_by_name(&ifnames[*idx])
                .map_err(route_error)?
                .map(|l| l.index);
            let defaults: Vec<RouteSpec> = nl
                .routes()
                .map_err(route_error)?
                .into_iter()
                .filter(|r| r.destination.is_none() && r.gateway.is_some_and(|g| is_v6(&g) == v6))
                .collect();
            for r in &defaults {
                let keep = gw.is_none() && r.link == owner_link;
                if !keep {
                    nl.del_route(r).map_err(route_error)?;
                    info!(gateway = ?r.gateway, "removed a default route another attachment installed");
                }
            }
            if let (Some(g), Some(link)) = (gw, owner_link) {
                nl.add_route(&RouteSpec {
                    destination: None,
                    gateway: Some(*g),
                    link: Some(link),
                })
                .map_err(route_error)?;
                info!(gateway = %g, ifname = %ifnames[*idx], "default route moved as the pod asked");
            }
        }
        Ok(())
    })
    .map_err(route_error)??;

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
