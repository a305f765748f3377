//! Renaming a pod's interface in place, for a switch (make-before-break): the new network's
//! interface comes up under a temporary name beside the old one, the old one is removed, and the
//! new one takes the old one's name, so that the application keeps using the name it knows.
//!
//! The kernel renames only a link that is down, and taking a link down drops the routes through
//! it (not its addresses): the routes are read before and put back after, the link-scope ones
//! first, so that routes through a gateway on the link find it. A route the kernel made again
//! itself (the addresses' prefixes) is left as it is.

use tracing::debug;
use vfcore::netlink::{LinkOps, Netlink, NetlinkError};
use vfcore::netns::{NetNs, NetNsError};

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("entering the pod's network namespace")]
    Netns(#[from] NetNsError),
    #[error("renaming {from} to {to} in the pod")]
    Netlink {
        from: String,
        to: String,
        #[source]
        source: NetlinkError,
    },
    #[error("the pod has no interface {0}")]
    NoLink(String),
}

/// Temporary interface names a switch uses, tried in order.
pub fn temp_name(taken: &[&str]) -> String {
    (0..100)
        .map(|i| format!("vfsw{i}"))
        .find(|n| !taken.contains(&n.as_str()))
        .unwrap_or_else(|| "vfsw".to_string())
}

/// Renames `from` to `to` inside `netns`, its routes kept.
pub fn rename(netns: &str, from: &str, to: &str) -> Result<(), SwitchError> {
    let (from, to) = (from.to_string(), to.to_string());
    NetNs::open(netns)?.run(move || -> Result<(), SwitchError> {
        let err = |source| SwitchError::Netlink {
            from: from.clone(),
            to: to.clone(),
            source,
        };
        let mut nl = Netlink::open().map_err(err)?;
        let link = nl
            .link_by_name(&from)
            .map_err(err)?
            .ok_or_else(|| SwitchError::NoLink(from.clone()))?;
        let mut routes: Vec<_> = nl
            .routes()
            .map_err(err)?
            .into_iter()
            .filter(|r| r.link == Some(link.index))
            .collect();
        // Link-scope routes (no gateway) first: a gateway route needs its gateway reachable.
        routes.sort_by_key(|r| r.gateway.is_some());
        nl.set_up(link.index, false).map_err(err)?;
        let renamed = nl.set_name(link.index, &to).map_err(err);
        nl.set_up(link.index, true).map_err(err)?;
        renamed?;
        for r in &routes {
            if let Err(e) = nl.add_route(r) {
                // The kernel's own prefix routes are back already.
                debug!(route = ?r, error = %e, "route not added again");
            }
        }
        Ok(())
    })?
}
