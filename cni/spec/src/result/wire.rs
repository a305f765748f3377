//! The JSON layouts of each result family. Field order follows libcni's output so printed results
//! compare byte for byte with the reference implementation's.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{CniResult, Dns, Interface, IpConfig, IpNet, Route};
use crate::spec::version::{CniVersion, ResultFamily};

#[derive(Deserialize)]
struct InRoute {
    dst: IpNet,
    #[serde(default)]
    gw: Option<IpAddr>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default, rename = "advmss")]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
}

impl From<InRoute> for Route {
    fn from(r: InRoute) -> Self {
        Route {
            dst: r.dst,
            gw: r.gw,
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
        }
    }
}

#[derive(Deserialize)]
struct InLegacyIp {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<InRoute>,
}

#[derive(Deserialize)]
struct InLegacy {
    #[serde(default)]
    ip4: Option<InLegacyIp>,
    #[serde(default)]
    ip6: Option<InLegacyIp>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Deserialize)]
struct InInterface {
    name: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    sandbox: String,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default, rename = "socketPath")]
    socket_path: String,
    #[serde(default, rename = "pciID")]
    pci_id: String,
}

#[derive(Deserialize)]
struct InIp {
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
struct InCurrent {
    #[serde(default)]
    interfaces: Option<Vec<InInterface>>,
    #[serde(default)]
    ips: Option<Vec<InIp>>,
    #[serde(default)]
    routes: Option<Vec<InRoute>>,
    #[serde(default)]
    dns: Option<Dns>,
}

/// Decodes `value` in the layout of `version`.
pub(super) fn decode(value: serde_json::Value, version: CniVersion) -> Result<CniResult, String> {
    let mut out = CniResult::empty(version);
    match version.result_family() {
        ResultFamily::Legacy => {
            let r: InLegacy = serde_json::from_value(value).map_err(|e| e.to_string())?;
            for ip in [r.ip4, r.ip6].into_iter().flatten() {
                out.ips.push(IpConfig {
                    interface: None,
                    address: ip.ip,
                    gateway: ip.gateway,
                });
                out.routes.extend(ip.routes.into_iter().map(Route::from));
            }
            out.dns = r.dns.unwrap_or_default();
        }
        ResultFamily::V04 | ResultFamily::V1 => {
            let r: InCurrent = serde_json::from_value(value).map_err(|e| e.to_string())?;
            out.interfaces = r
                .interfaces
                .unwrap_or_default()
                .into_iter()
                .map(|i| Interface {
                    name: i.name,
                    mac: i.mac,
                    sandbox: i.sandbox,
                    mtu: i.mtu,
                    socket_path: i.socket_path,
                    pci_id: i.pci_id,
                })
                .collect();
            for ip in r.ips.unwrap_or_default() {
                if let Some(v) = ip.version.as_deref() {
                    let expected = if ip.address.is_ipv4() { "4" } else { "6" };
                    if v != expected {
                        return Err(format!("address {} says version {v:?}", ip.address));
                    }
                }
                out.ips.push(IpConfig {
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                });
            }
            out.routes = r
                .routes
                .unwrap_or_default()
                .into_iter()
                .map(Route::from)
                .collect();
            out.dns = r.dns.unwrap_or_default();
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct OutRoute {
    dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u8>,
}

impl From<&Route> for OutRoute {
    fn from(r: &Route) -> Self {
        OutRoute {
            dst: r.dst,
            gw: r.gw,
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
        }
    }
}

#[derive(Serialize)]
struct OutLegacyIp {
    ip: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<OutRoute>,
}

#[derive(Serialize)]
struct OutLegacy<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: CniVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip4: Option<OutLegacyIp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip6: Option<OutLegacyIp>,
    dns: &'a Dns,
}

#[derive(Serialize)]
struct OutInterface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    mac: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "str::is_empty")]
    sandbox: &'a str,
    #[serde(rename = "socketPath", skip_serializing_if = "str::is_empty")]
    socket_path: &'a str,
    #[serde(rename = "pciID", skip_serializing_if = "str::is_empty")]
    pci_id: &'a str,
}

#[derive(Serialize)]
struct OutIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize)]
struct OutCurrent<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: CniVersion,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<OutInterface<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<OutIp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<OutRoute>,
    dns: &'a Dns,
}

/// Encodes `r` (already reduced to its version by `to_version`) in its version's layout.
pub(super) fn encode(r: &CniResult) -> String {
    let value = match r.cni_version.result_family() {
        ResultFamily::Legacy => {
            let legacy_ip = |v4: bool| {
                r.ips
                    .iter()
                    .find(|ip| ip.address.is_ipv4() == v4)
                    .map(|ip| OutLegacyIp {
                        ip: ip.address,
                        gateway: ip.gateway,
                        routes: r
                            .routes
                            .iter()
                            .filter(|rt| rt.dst.is_ipv4() == v4)
                            .map(OutRoute::from)
                            .collect(),
                    })
            };
            serde_json::to_string(&OutLegacy {
                cni_version: r.cni_version,
                ip4: legacy_ip(true),
                ip6: legacy_ip(false),
                dns: &r.dns,
            })
        }
        family => serde_json::to_string(&OutCurrent {
            cni_version: r.cni_version,
            interfaces: r
                .interfaces
                .iter()
                .map(|i| OutInterface {
                    name: &i.name,
                    mac: &i.mac,
                    mtu: i.mtu,
                    sandbox: &i.sandbox,
                    socket_path: &i.socket_path,
                    pci_id: &i.pci_id,
                })
                .collect(),
            ips: r
                .ips
                .iter()
                .map(|ip| OutIp {
                    version: (family == ResultFamily::V04).then_some(if ip.address.is_ipv4() {
                        "4"
                    } else {
                        "6"
                    }),
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: r.routes.iter().map(OutRoute::from).collect(),
            dns: &r.dns,
        }),
    };
    // Strings, integers and vectors of them always serialise.
    value.unwrap_or_default()
}
