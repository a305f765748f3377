//! [`Netlink`]: the [`LinkOps`] implementation over a synchronous rtnetlink socket.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::error::NetlinkError;
use super::message::{self, Request};
use super::parse::{self, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE};
use super::socket::{Reply, RtSocket};
use super::{IfAddress, LinkInfo, LinkOps, LinkStats, RouteSpec, VfConfig, VfSettings};
use crate::netns::NetNs;
use crate::types::{IfIndex, IfName, MacAddr, VfIndex, IFNAME_MAX};

/// How long one request waits for the kernel's answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often [`LinkOps::wait_for_link`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// An rtnetlink handle for the network namespace of the thread that opened it.
pub struct Netlink {
    socket: RtSocket,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Netlink {
    /// A handle in the calling thread's network namespace, each request bounded by
    /// [`DEFAULT_TIMEOUT`].
    pub fn open() -> Result<Self, NetlinkError> {
        Self::with_timeout(DEFAULT_TIMEOUT)
    }

    /// A handle whose requests each wait at most `timeout` for the kernel.
    pub fn with_timeout(timeout: Duration) -> Result<Self, NetlinkError> {
        Ok(Self {
            socket: RtSocket::open(timeout)?,
        })
    }

    fn request(
        &mut self,
        req: &Request,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<Reply>, NetlinkError> {
        self.socket.request(req).map_err(|e| e.with_op(op()))
    }

    /// A request against an existing link whose errors name the link: `op` gets its name.
    fn link_request(
        &mut self,
        link: IfIndex,
        req: &Request,
        op: impl FnOnce(&str) -> String,
    ) -> Result<Vec<Reply>, NetlinkError> {
        match self.socket.request(req) {
            Ok(replies) => Ok(replies),
            Err(e) => {
                let name = self.describe(link);
                if e.errno() == Some(Errno::ENODEV) {
                    return Err(NetlinkError::NoSuchLink {
                        op: op(&name),
                        link: name,
                    });
                }
                Err(e.with_op(op(&name)))
            }
        }
    }

    /// The link's name for messages, or `link <index>` when it cannot be read.
    fn describe(&mut self, link: IfIndex) -> String {
        match self.socket.request(&message::get_link_by_index(link)) {
            Ok(replies) => replies
                .iter()
                .find(|r| r.header.kind == RTM_NEWLINK)
                .and_then(|r| parse::parse_link_message(&r.payload).ok())
                .map(|m| parse::link_info(&m).name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("link {link}")),
            Err(_) => format!("link {link}"),
        }
    }

    fn one_link(
        replies: &[Reply],
        op: impl FnOnce() -> String,
    ) -> Result<Option<LinkInfo>, NetlinkError> {
        match replies.iter().find(|r| r.header.kind == RTM_NEWLINK) {
            Some(r) => parse::parse_link_message(&r.payload)
                .map(|m| Some(parse::link_info(&m)))
                .map_err(|reason| NetlinkError::Decode { op: op(), reason }),
            None => Ok(None),
        }
    }

    /// The `IFLA_STATS64` counters of the link named `name` in this handle's namespace; `None`
    /// when there is no such link.
    pub fn link_stats(&mut self, name: &str) -> Result<Option<LinkStats>, NetlinkError> {
        let op = || format!("reading the counters of link {name}");
        if let Err(e) = IfName::new(name) {
            return Err(Self::invalid(op(), e.to_string()));
        }
        let replies = match not_found_is_none(self.request(&message::get_link_by_name(name), op))? {
            Some(r) => r,
            None => return Ok(None),
        };
        match replies.iter().find(|r| r.header.kind == RTM_NEWLINK) {
            Some(r) => parse::parse_link_message(&r.payload)
                .map(|m| parse::link_stats(&m))
                .map_err(|reason| NetlinkError::Decode { op: op(), reason }),
            None => Ok(None),
        }
    }

    fn invalid(op: String, reason: String) -> NetlinkError {
        NetlinkError::Invalid { op, reason }
    }
}

fn not_found_is_none<T>(r: Result<T, NetlinkError>) -> Result<Option<T>, NetlinkError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "up"
    } else {
        "down"
    }
}

impl LinkOps for Netlink {
    fn link_by_name(&mut self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let op = || format!("looking up link {name}");
        // Primary names follow IfName's rules; alternative names may be longer.
        let long_alt = name.len() > IFNAME_MAX && name.len() <= message::ALT_IFNAME_MAX;
        if long_alt {
            // The kernel's dev_valid_name rules, without the 15-byte limit.
            if name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
            {
                return Err(Self::invalid(
                    op(),
                    "it contains '/', ':', whitespace or control characters".to_string(),
                ));
            }
        } else if let Err(e) = IfName::new(name) {
            return Err(Self::invalid(op(), e.to_string()));
        }
        let replies = match not_found_is_none(self.request(&message::get_link_by_name(name), op))? {
            Some(r) => r,
            None => return Ok(None),
        };
        Self::one_link(&replies, op)
    }

    fn link_by_index(&mut self, index: IfIndex) -> Result<Option<LinkInfo>, NetlinkError> {
        let op = || format!("looking up link {index}");
        let replies = match not_found_is_none(self.request(&message::get_link_by_index(index), op))?
        {
            Some(r) => r,
            None => return Ok(None),
        };
        Self::one_link(&replies, op)
    }

    fn links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let op = || "listing links".to_string();
        let replies = self.request(&message::dump_links(), op)?;
        replies
            .iter()
            .filter(|r| r.header.kind == RTM_NEWLINK)
            .map(|r| {
                parse::parse_link_message(&r.payload)
                    .map(|m| parse::link_info(&m))
                    .map_err(|reason| NetlinkError::Decode { op: op(), reason })
            })
            .collect()
    }

    fn vf_configs(&mut self, pf: IfIndex) -> Result<Vec<VfConfig>, NetlinkError> {
        let replies = self.link_request(pf, &message::get_vf_configs(pf), |n| {
            format!("reading the VF configuration of {n}")
        })?;
        let Some(reply) = replies.iter().find(|r| r.header.kind == RTM_NEWLINK) else {
            return Ok(Vec::new());
        };
        parse::vf_configs(&reply.payload).map_err(|reason| NetlinkError::Decode {
            op: format!("reading the VF configuration of {}", self.describe(pf)),
            reason,
        })
    }

    fn set_vf(
        &mut self,
        pf: IfIndex,
        vf: VfIndex,
        settings: &VfSettings,
    ) -> Result<(), NetlinkError> {
        for (what, mut one) in settings.split() {
            let op = |n: &str| format!("setting {what} of VF {vf} on {n}");
            // The kernel sets both rates at once: keep the one not given as it is.
            if one.min_tx_rate.is_some() != one.max_tx_rate.is_some() {
                let current = self.vf_configs(pf)?.into_iter().find(|c| c.vf == vf);
                let Some(current) = current else {
                    let name = self.describe(pf);
                    return Err(Self::invalid(
                        op(&name),
                        format!("{name} reports no VF {vf}"),
                    ));
                };
                one.min_tx_rate = one.min_tx_rate.or(Some(current.min_tx_rate));
                one.max_tx_rate = one.max_tx_rate.or(Some(current.max_tx_rate));
            }
            let req = match message::set_vf(pf, vf, &one) {
                Ok(req) => req,
                Err(reason) => {
                    let name = self.describe(pf);
                    return Err(Self::invalid(op(&name), reason));
                }
            };
            self.link_request(pf, &req, op)?;
        }
        Ok(())
    }

    fn set_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError> {
        let op = |n: &str| format!("renaming {n} to {name}");
        if let Err(e) = IfName::new(name) {
            let current = self.describe(link);
            return Err(Self::invalid(op(&current), e.to_string()));
        }
        // Kernels before 6.x refuse to rename an up link (EBUSY), newer ones allow it. We require
        // the link down everywhere so that callers behave the same on every kernel.
        match self.link_by_index(link)? {
            None => {
                let current = format!("link {link}");
                return Err(NetlinkError::NoSuchLink {
                    op: op(&current),
                    link: current,
                });
            }
            Some(current) if current.up => {
                return Err(NetlinkError::LinkUp {
                    op: op(&current.name),
                    link: current.name,
                })
            }
            Some(_) => {}
        }
        match self.link_request(link, &message::set_name(link, name), op) {
            Err(NetlinkError::Kernel {
                op,
                errno: Errno::EBUSY,
                ..
            }) => {
                let current = self.describe(link);
                Err(NetlinkError::LinkUp { op, link: current })
            }
            other => other.map(drop),
        }
    }

    fn set_mac(&mut self, link: IfIndex, mac: MacAddr) -> Result<(), NetlinkError> {
        self.link_request(link, &message::set_mac(link, mac), |n| {
            format!("setting the MAC address of {n} to {mac}")
        })
        .map(drop)
    }

    fn set_mtu(&mut self, link: IfIndex, mtu: u32) -> Result<(), NetlinkError> {
        self.link_request(link, &message::set_mtu(link, mtu), |n| {
            format!("setting the MTU of {n} to {mtu}")
        })
        .map(drop)
    }

    fn set_up(&mut self, link: IfIndex, up: bool) -> Result<(), NetlinkError> {
        self.link_request(link, &message::set_up(link, up), |n| {
            format!("setting {n} {}", on_off(up))
        })
        .map(drop)
    }

    fn move_to_netns(&mut self, link: IfIndex, netns: &NetNs) -> Result<(), NetlinkError> {
        let fd = netns.as_fd().as_raw_fd();
        self.link_request(link, &message::move_to_netns(link, fd), |n| {
            format!(
                "moving {n} into network namespace {}",
                netns.path().display()
            )
        })
        .map(drop)
    }

    fn add_address(
        &mut self,
        link: IfIndex,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let op = |n: &str| format!("adding address {addr}/{prefix_len} to {n}");
        let req = match message::add_address(link, addr, prefix_len) {
            Ok(req) => req,
            Err(reason) => {
                let name = self.describe(link);
                return Err(Self::invalid(op(&name), reason));
            }
        };
        self.link_request(link, &req, op).map(drop)
    }

    fn addresses(&mut self, link: IfIndex) -> Result<Vec<IfAddress>, NetlinkError> {
        let op = || format!("listing the addresses of link {link}");
        let replies = self.request(&message::dump_addresses(), op)?;
        let mut out = Vec::new();
        for r in replies.iter().filter(|r| r.header.kind == RTM_NEWADDR) {
            match parse::address(&r.payload) {
                Ok(Some((index, addr))) if index == link => out.push(addr),
                Ok(_) => {}
                Err(reason) => return Err(NetlinkError::Decode { op: op(), reason }),
            }
        }
        Ok(out)
    }

    fn add_route(&mut self, route: &RouteSpec) -> Result<(), NetlinkError> {
        let op = || {
            let dst = route.destination.map_or("default".to_string(), |d| {
                format!("{}/{}", d.addr, d.prefix_len)
            });
            let via = route.gateway.map_or(String::new(), |g| format!(" via {g}"));
            let dev = route
                .link
                .map_or(String::new(), |l| format!(" on link {l}"));
            format!("adding route {dst}{via}{dev}")
        };
        let req = message::add_route(route).map_err(|reason| Self::invalid(op(), reason))?;
        self.request(&req, op).map(drop)
    }

    fn routes(&mut self) -> Result<Vec<RouteSpec>, NetlinkError> {
        let op = || "listing routes".to_string();
        let mut out = Vec::new();
        for ipv6 in [false, true] {
            let replies = self.request(&message::dump_routes(ipv6), op)?;
            for r in replies.iter().filter(|r| r.header.kind == RTM_NEWROUTE) {
                match parse::route(&r.payload) {
                    Ok(Some(route)) => out.push(route),
                    Ok(None) => {}
                    Err(reason) => return Err(NetlinkError::Decode { op: op(), reason }),
                }
            }
        }
        Ok(out)
    }

    fn del_route(&mut self, route: &RouteSpec) -> Result<(), NetlinkError> {
        let op = || {
            let dst = route.destination.map_or("default".to_string(), |d| {
                format!("{}/{}", d.addr, d.prefix_len)
            });
            let via = route.gateway.map_or(String::new(), |g| format!(" via {g}"));
            format!("deleting route {dst}{via}")
        };
        let req = message::del_route(route).map_err(|reason| Self::invalid(op(), reason))?;
        self.request(&req, op).map(drop)
    }

    fn add_alt_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError> {
        self.link_request(link, &message::add_alt_name(link, name), |n| {
            format!("adding alternative name {name} to {n}")
        })
        .map(drop)
    }

    fn del_alt_name(&mut self, link: IfIndex, name: &str) -> Result<(), NetlinkError> {
        self.link_request(link, &message::del_alt_name(link, name), |n| {
            format!("removing alternative name {name} from {n}")
        })
        .map(drop)
    }

    fn wait_for_link(&mut self, name: &str, timeout: Duration) -> Result<LinkInfo, NetlinkError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(link) = self.link_by_name(name)? {
                return Ok(link);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NetlinkError::WaitTimeout {
                    name: name.to_string(),
                    timeout,
                });
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }
}
