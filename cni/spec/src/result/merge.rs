//! Merging the results of several attachments into the one result the runtime receives.

use super::{CniResult, CniVersion, Dns};

fn push_unique(into: &mut Vec<String>, from: &[String]) {
    for s in from {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

pub(super) fn merge(version: CniVersion, results: &[CniResult]) -> CniResult {
    let mut out = CniResult::empty(CniVersion::LATEST);
    let mut dns = Dns::default();
    for r in results {
        let offset = out.interfaces.len();
        out.interfaces.extend(r.interfaces.iter().cloned());
        for ip in &r.ips {
            let mut ip = ip.clone();
            ip.interface = ip.interface.map(|i| i.saturating_add(offset));
            out.ips.push(ip);
        }
        for route in &r.routes {
            if !out.routes.contains(route) {
                out.routes.push(route.clone());
            }
        }
        push_unique(&mut dns.nameservers, &r.dns.nameservers);
        if dns.domain.is_empty() {
            dns.domain.clone_from(&r.dns.domain);
        }
        push_unique(&mut dns.search, &r.dns.search);
        push_unique(&mut dns.options, &r.dns.options);
    }
    out.dns = dns;
    out.to_version(version)
}
