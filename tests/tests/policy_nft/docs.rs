//! The nftables documents the tests apply: small hand-written stand-ins for the compiler's
//! output, in its shape (one `inet vfgenie` table, added, deleted and re-added, then filled).

use serde_json::{json, Value};

/// `{"family": "inet", "table": "vfgenie", ...}` plus `extra`.
pub fn obj(extra: Value) -> Value {
    let mut o = json!({"family": "inet", "table": "vfgenie"});
    o.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    o
}

pub fn rule(chain: &str, expr: Value) -> Value {
    json!({"add": {"rule": obj(json!({"chain": chain, "expr": expr}))}})
}

pub fn matches(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

pub fn saddr(proto: &str) -> Value {
    json!({"payload": {"protocol": proto, "field": "saddr"}})
}

pub fn daddr(proto: &str) -> Value {
    json!({"payload": {"protocol": proto, "field": "daddr"}})
}

pub fn nd_accept(chain: &str) -> Value {
    rule(
        chain,
        json!([matches(
            json!({"payload": {"protocol": "icmpv6", "field": "type"}}),
            json!({"set": ["nd-neighbor-solicit", "nd-neighbor-advert",
                           "nd-router-solicit", "nd-router-advert"]})
        ), {"accept": null}]),
    )
}

pub fn ct_established(chain: &str) -> Value {
    rule(
        chain,
        json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}},
                          "right": ["established", "related"]}}, {"accept": null}]),
    )
}

/// The compiler's shape: add, delete and re-add the table, then fill it; one transaction.
pub fn table_doc(body: Vec<Value>) -> Value {
    let t = json!({"family": "inet", "name": "vfgenie"});
    let mut cmds = vec![
        json!({"add": {"table": t}}),
        json!({"delete": {"table": t}}),
        json!({"add": {"table": t}}),
    ];
    cmds.extend(body);
    json!({ "nftables": cmds })
}

pub fn chain(name: &str, hook: &str, policy: &str) -> Value {
    json!({"add": {"chain": obj(json!({"name": name, "type": "filter", "hook": hook,
                                       "prio": 0, "policy": policy}))}})
}

/// Input policy drop; loopback, neighbour discovery, (optionally) established flows and the
/// sources in `allowed` (IPv4 and IPv6 addresses, or prefixes) accepted.
pub fn allow_from(allowed: &[String], established: bool) -> Value {
    let (v4, v6): (Vec<&String>, Vec<&String>) = allowed.iter().partition(|a| !a.contains(':'));
    let elems = |v: Vec<&String>| -> Vec<Value> {
        v.into_iter()
            .map(|a| match a.split_once('/') {
                Some((addr, len)) => {
                    json!({"prefix": {"addr": addr, "len": len.parse::<u8>().unwrap()}})
                }
                None => json!(a),
            })
            .collect()
    };
    // Hash sets for addresses, interval sets only when there are prefixes (replacing a table
    // with interval sets is not lossless: see `update_forms_side_by_side`).
    let interval = allowed.iter().any(|a| a.contains('/'));
    let set = |name: &str, ty: &str, e: Vec<Value>| {
        let mut s = obj(json!({"name": name, "type": ty}));
        if interval {
            s["flags"] = json!(["interval"]);
        }
        if !e.is_empty() {
            s["elem"] = json!(e);
        }
        json!({"add": {"set": s}})
    };
    let mut body = vec![
        chain("input", "input", "drop"),
        set("allowed4", "ipv4_addr", elems(v4)),
        set("allowed6", "ipv6_addr", elems(v6)),
        rule(
            "input",
            json!([matches(json!({"meta": {"key": "iifname"}}), json!("lo")), {"accept": null}]),
        ),
        nd_accept("input"),
    ];
    if established {
        body.push(ct_established("input"));
    }
    body.push(rule(
        "input",
        json!([matches(saddr("ip"), json!("@allowed4")), {"accept": null}]),
    ));
    body.push(rule(
        "input",
        json!([matches(saddr("ip6"), json!("@allowed6")), {"accept": null}]),
    ));
    table_doc(body)
}

/// Drops all inet traffic between pod and `peer`, both ways; ND accepted first when `nd`.
pub fn drop_peer(peer4: &str, peer6: &str, nd: bool) -> Value {
    let mut body = vec![
        chain("input", "input", "accept"),
        chain("output", "output", "accept"),
    ];
    if nd {
        body.push(nd_accept("input"));
        body.push(nd_accept("output"));
    }
    for (chain, dir) in [("input", saddr as fn(&str) -> Value), ("output", daddr)] {
        body.push(rule(
            chain,
            json!([matches(dir("ip"), json!(peer4)), {"drop": null}]),
        ));
        body.push(rule(
            chain,
            json!([matches(dir("ip6"), json!(peer6)), {"drop": null}]),
        ));
    }
    table_doc(body)
}
