//! IP occupancy of a network whose IPAM is host-local: the leases in its data dir against the
//! addresses its ranges can hand out, counted as host-local allocates (from `rangeStart`, by
//! default the network address + 1, to `rangeEnd`, by default the last address before the IPv4
//! broadcast or the last IPv6 address, skipping the gateway, by default the network address + 1).
//! Any other IPAM: unknown (`None`), never 0.

use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

/// host-local's data dir unless the conf's `ipam.dataDir` says otherwise.
pub const HOST_LOCAL_DATA_DIR: &str = "/var/lib/cni/networks";

/// One allocatable range, as host-local canonicalises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: u128,
    pub end: u128,
    pub gateway: Option<u128>,
    pub v6: bool,
}

impl Range {
    fn contains(&self, ip: &IpAddr) -> bool {
        let (n, v6) = to_u128(ip);
        v6 == self.v6 && n >= self.start && n <= self.end && Some(n) != self.gateway
    }

    fn size(&self) -> u128 {
        let all = self.end.saturating_sub(self.start) + 1;
        match self.gateway {
            Some(g) if g >= self.start && g <= self.end => all - 1,
            _ => all,
        }
    }
}

fn to_u128(ip: &IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(*a)), false),
        IpAddr::V6(a) => (u128::from(*a), true),
    }
}

fn parse_cidr(s: &str) -> Option<(u128, u8, bool)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let (n, v6) = to_u128(&ip);
    let bits = if v6 { 128 } else { 32 };
    if len > bits {
        return None;
    }
    let host_bits = u32::from(bits - len);
    let mask = if host_bits >= 128 {
        0
    } else {
        !((1u128 << host_bits) - 1)
    };
    let width_mask = if v6 { u128::MAX } else { u128::from(u32::MAX) };
    Some((n & mask & width_mask, len, v6))
}

fn ip_field(r: &serde_json::Map<String, Value>, key: &str) -> Option<(u128, bool)> {
    r.get(key)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<IpAddr>().ok())
        .map(|ip| to_u128(&ip))
}

/// One host-local range object (`subnet`, `rangeStart`, `rangeEnd`, `gateway`).
fn range(r: &serde_json::Map<String, Value>) -> Option<Range> {
    let (net, len, v6) = parse_cidr(r.get("subnet")?.as_str()?)?;
    let bits: u32 = if v6 { 128 } else { 32 };
    let host_bits = bits - u32::from(len);
    let last = if host_bits >= 128 {
        u128::MAX
    } else {
        net | ((1u128 << host_bits) - 1)
    };
    // The IPv4 broadcast is never handed out; nor is the network address.
    let last = if v6 { last } else { last.saturating_sub(1) };
    let start = match ip_field(r, "rangeStart") {
        Some((s, sv6)) if sv6 == v6 => s,
        _ => net + 1,
    };
    let end = match ip_field(r, "rangeEnd") {
        Some((e, ev6)) if ev6 == v6 => e,
        _ => last,
    };
    let gateway = match ip_field(r, "gateway") {
        Some((g, gv6)) if gv6 == v6 => Some(g),
        _ => Some(net + 1),
    };
    (start <= end).then_some(Range {
        start,
        end,
        gateway,
        v6,
    })
}

/// The ranges of a host-local `ipam` object: `ranges` (a list of range sets), else the
/// top-level `subnet`. `None` when the IPAM is not host-local or has no usable range.
pub fn host_local_ranges(ipam: &Value) -> Option<Vec<Range>> {
    let ipam = ipam.as_object()?;
    if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
        return None;
    }
    let mut out = Vec::new();
    match ipam.get("ranges").and_then(Value::as_array) {
        Some(sets) => {
            for set in sets {
                for r in set.as_array()?.iter() {
                    out.push(range(r.as_object()?)?);
                }
            }
        }
        None => out.push(range(ipam)?),
    }
    (!out.is_empty()).then_some(out)
}

/// The `ipam` object of a conf or a conflist (its first plugin that has one).
pub fn ipam_of(conf: &Value) -> Option<&Value> {
    if let Some(ipam) = conf.get("ipam") {
        return Some(ipam);
    }
    conf.get("plugins")?
        .as_array()?
        .iter()
        .find_map(|p| p.get("ipam"))
}

/// `(used, total)` for network `name` with CNI config `conf`; `None` unless its IPAM is
/// host-local. Leases are the files of `<dataDir>/<conf name>/` named by an address in a range
/// (host-local's directory is the config's `name`; genie names a nameless NAD config
/// `namespace-name`).
pub fn occupancy(name: &str, conf: &Value, default_data_dir: &Path) -> Option<(u64, u64)> {
    let fallback = name.replace('/', "-");
    let name = conf
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&fallback);
    let ipam = ipam_of(conf)?;
    let ranges = host_local_ranges(ipam)?;
    let total: u128 = ranges.iter().map(Range::size).sum();
    let data_dir = ipam
        .get("dataDir")
        .and_then(Value::as_str)
        .filter(|d| d.starts_with('/'))
        .map(Path::new)
        .unwrap_or(default_data_dir);
    // A network name is one path component for host-local too.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return None;
    }
    let used = match std::fs::read_dir(data_dir.join(name)) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<IpAddr>().ok())
            .filter(|ip| ranges.iter().any(|r| r.contains(ip)))
            .count() as u64,
        // Nothing leased yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(_) => return None,
    };
    Some((used, u64::try_from(total).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn total(ipam: Value) -> Option<u128> {
        host_local_ranges(&ipam).map(|r| r.iter().map(Range::size).sum())
    }

    #[test]
    fn totals_follow_host_local_rules() {
        // /24: .1 to .254, less the default gateway .1.
        assert_eq!(
            total(json!({"type": "host-local", "subnet": "10.1.0.0/24"})),
            Some(253)
        );
        // Explicit gateway outside the range: the whole range.
        assert_eq!(
            total(json!({"type": "host-local", "subnet": "10.1.0.0/24",
                "rangeStart": "10.1.0.100", "rangeEnd": "10.1.0.109", "gateway": "10.1.0.254"})),
            Some(10)
        );
        // Two range sets, one with two ranges.
        assert_eq!(
            total(json!({"type": "host-local", "ranges": [
                [{"subnet": "10.2.0.0/29"}, {"subnet": "10.3.0.0/30"}],
                [{"subnet": "fd00::/120"}]]})),
            Some(5 + 1 + 254)
        );
        assert_eq!(
            total(json!({"type": "whereabouts", "range": "10.0.0.0/24"})),
            None
        );
        assert_eq!(total(json!({"type": "dhcp"})), None);
        assert_eq!(total(json!({"type": "host-local", "subnet": "bad"})), None);
    }

    #[test]
    fn leases_are_counted_in_the_ranges_only() {
        let d = tempfile::tempdir().unwrap();
        let net = d.path().join("blue");
        std::fs::create_dir_all(&net).unwrap();
        for f in [
            "10.1.0.2",
            "10.1.0.3",
            "10.9.0.2",
            "last_reserved_ip.0",
            "lock",
        ] {
            std::fs::write(net.join(f), "c1").unwrap();
        }
        let conf = json!({"name": "blue", "plugins": [{"type": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}]});
        assert_eq!(occupancy("blue", &conf, d.path()), Some((2, 253)));
        // Nothing leased yet: 0 of the total, known.
        let green = json!({"name": "green", "type": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}});
        assert_eq!(occupancy("green", &green, d.path()), Some((0, 253)));
        let dhcp = json!({"name": "blue", "type": "macvlan", "ipam": {"type": "dhcp"}});
        assert_eq!(occupancy("blue", &dhcp, d.path()), None);
    }
}
