//! Tables in the compiler's shapes (`ifname . addr` and `ifname . addr . proto . port` interval
//! sets, an `ifname` hash set), built with `vfagent::policy::ruleset`, for the update tests.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{json, Value};
use vfagent::policy::compile::ranges::{Family, Span};
use vfagent::policy::ruleset::{
    Element, Field, Hook, KeyType, Proto, Selector, Set, Table, Verdict,
};

/// `addr/len` as an address field.
pub fn prefix4(addr: IpAddr, len: u8) -> Field {
    let IpAddr::V4(a) = addr else {
        panic!("{addr} is not IPv4")
    };
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let lo = u32::from(a) & mask;
    Field::Addr(
        Family::V4,
        Span::new(u128::from(lo), u128::from(lo | !mask)).unwrap(),
    )
}

pub fn net(a: u8, b: u8, c: u8, len: u8) -> Field {
    prefix4(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), len)
}

pub fn ifname_addr(ifname: &str, addr: Field) -> Element {
    Element(vec![Field::Ifname(ifname.into()), addr])
}

pub fn ports(ifname: &str, addr: Field, proto: Proto, lo: u16, hi: u16) -> Element {
    Element(vec![
        Field::Ifname(ifname.into()),
        addr,
        Field::Proto(proto),
        Field::Port(Span::new(lo.into(), hi.into()).unwrap()),
    ])
}

fn v4_key(ports: bool) -> Vec<KeyType> {
    let mut k = vec![KeyType::Ifname, KeyType::Addr(Family::V4)];
    if ports {
        k.extend([KeyType::InetProto, KeyType::InetService]);
    }
    k
}

fn v4_selectors(ports: bool) -> Vec<Selector> {
    let mut k = vec![Selector::Iifname, Selector::Saddr(Family::V4)];
    if ports {
        k.extend([Selector::L4proto, Selector::Dport]);
    }
    k
}

/// A pod's ingress as the compiler writes it: `all` (`ifname . addr`, every port) and `ports`
/// accepted, the rest dropped on `ifname` (isolated). `all_set` names the first set (the
/// double-buffer measurement alternates two names).
pub fn ingress(
    ifname: &str,
    all_set: &'static str,
    all: Vec<Element>,
    ports: Vec<Element>,
) -> Table {
    let mut t = Table::with_chains(&[Hook::Input, Hook::Output]);
    let set = |name, p: bool, elements| Set {
        name,
        key: v4_key(p),
        interval: true,
        elements,
    };
    t.add_lookup(
        Hook::Input,
        v4_selectors(true),
        set("in_ports4", true, ports),
        Verdict::Accept,
    );
    t.add_lookup(
        Hook::Input,
        v4_selectors(false),
        set(all_set, false, all),
        Verdict::Accept,
    );
    t.add_lookup(
        Hook::Input,
        vec![Selector::Iifname],
        Set {
            name: "in_isolated",
            key: vec![KeyType::Ifname],
            interval: false,
            elements: vec![Element(vec![Field::Ifname(ifname.into())])],
        },
        Verdict::Drop,
    );
    t
}

/// The network level: `ifname . addr` of networks the pod may not talk to, dropped. `name`
/// names the set (see [`ingress`]).
pub fn netdeny(name: &'static str, deny: Vec<Element>) -> Table {
    let mut t = Table::with_chains(&[Hook::Input, Hook::Output]);
    t.add_lookup(
        Hook::Input,
        v4_selectors(false),
        Set {
            name,
            key: v4_key(false),
            interval: true,
            elements: deny,
        },
        Verdict::Drop,
    );
    t
}

/// The `add set` command (with its elements) for `name` in the full replacement of `table`.
pub fn add_set_cmd(table: &Table, name: &str) -> Value {
    table.to_nft_json()["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["add"]["set"]["name"] == name)
        .unwrap_or_else(|| panic!("no set {name}"))
        .clone()
}

/// `flush set` and `add element` of all its elements, for each set whose elements changed.
pub fn flush_and_fill(old: &Table, new: &Table) -> Value {
    let mut cmds = Vec::new();
    for set in &new.sets {
        if old.set(set.name) == Some(set) {
            continue;
        }
        let mut obj = add_set_cmd(new, set.name)["add"]["set"].clone();
        let elem = obj["elem"].take();
        let r = json!({"family": "inet", "table": "vfgenie", "name": set.name});
        cmds.push(json!({"flush": {"set": r}}));
        let mut add = r;
        add["elem"] = elem;
        cmds.push(json!({"add": {"element": add}}));
    }
    json!({ "nftables": cmds })
}
