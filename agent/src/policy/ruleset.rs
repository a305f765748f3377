//! The nftables table the engine installs in a network namespace, as data, and its rendering as
//! libnftables JSON documents (libnftables-json(5)): one that replaces the table atomically (the
//! first install) and one that changes an installed table into another without losing a packet
//! (every later change).
//!
//! Chain and set names are fixed identifiers chosen by the compiler; every value that comes from
//! a tenant (interface names, addresses) is a JSON value in the document, never part of a name
//! or of nft syntax.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{json, Value};

use crate::policy::compile::ranges::{Family, Span};

pub const TABLE_FAMILY: &str = "inet";
pub const TABLE_NAME: &str = "vfgenie";

/// One `inet vfgenie` table. Equal tables render to equal documents, so the engine can skip a
/// network namespace whose table did not change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub chains: Vec<Chain>,
    pub sets: Vec<Set>,
}

/// A base chain with policy accept: it only ever drops what a rule says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub hook: Hook,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    Input,
    Output,
    Forward,
}

impl Hook {
    /// The hook's name, which is also the chain's.
    pub fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::Forward => "forward",
        }
    }
}

/// A named set. Interval sets hold disjoint elements (the kernel refuses overlaps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: &'static str,
    pub key: Vec<KeyType>,
    pub interval: bool,
    pub elements: Vec<Element>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ifname,
    Addr(Family),
    InetProto,
    InetService,
}

impl KeyType {
    fn name(self) -> &'static str {
        match self {
            Self::Ifname => "ifname",
            Self::Addr(Family::V4) => "ipv4_addr",
            Self::Addr(Family::V6) => "ipv6_addr",
            Self::InetProto => "inet_proto",
            Self::InetService => "inet_service",
        }
    }
}

/// One element: a value per key field (a concatenation when there are several).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element(pub Vec<Field>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Ifname(String),
    Addr(Family, Span),
    Proto(Proto),
    /// Ports; the span never goes past 65535.
    Port(Span),
}

/// The transport protocols a NetworkPolicy port can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `ct state established,related`
    EstablishedRelated,
    /// `meta l4proto ipv6-icmp icmpv6 type { nd-router-solicit, ... nd-redirect }`
    NeighbourDiscovery,
    /// `<key> . <key> @set`
    InSet {
        key: Vec<Selector>,
        set: &'static str,
    },
}

/// A packet field a set is looked up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    Iifname,
    Oifname,
    Saddr(Family),
    Daddr(Family),
    L4proto,
    /// The transport header's destination port (TCP, UDP and SCTP alike).
    Dport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

const ND_TYPES: [&str; 5] = [
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "nd-redirect",
];

impl Table {
    /// A table with one base chain per hook, each starting with the rules every table has:
    /// established and related traffic, and IPv6 neighbour discovery, are accepted.
    pub fn with_chains(hooks: &[Hook]) -> Self {
        let common = [Match::EstablishedRelated, Match::NeighbourDiscovery].map(|m| Rule {
            matches: vec![m],
            verdict: Verdict::Accept,
        });
        Self {
            chains: hooks
                .iter()
                .map(|&hook| Chain {
                    hook,
                    rules: common.to_vec(),
                })
                .collect(),
            sets: Vec::new(),
        }
    }

    pub fn chain(&self, hook: Hook) -> Option<&Chain> {
        self.chains.iter().find(|c| c.hook == hook)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Adds `set` unless it is empty, and a rule in `hook`'s chain matching `key` against it.
    /// An empty set would match nothing: neither it nor its rule is worth a lookup per packet.
    /// Returns whether the set was added.
    pub fn add_lookup(
        &mut self,
        hook: Hook,
        key: Vec<Selector>,
        set: Set,
        verdict: Verdict,
    ) -> bool {
        if set.elements.is_empty() {
            return false;
        }
        let name = set.name;
        self.sets.push(set);
        self.add_rule(hook, key, name, verdict);
        true
    }

    /// Appends a rule matching `key` against the set `set` (already added) to `hook`'s chain.
    pub fn add_rule(
        &mut self,
        hook: Hook,
        key: Vec<Selector>,
        set: &'static str,
        verdict: Verdict,
    ) {
        if let Some(chain) = self.chains.iter_mut().find(|c| c.hook == hook) {
            chain.rules.push(Rule {
                matches: vec![Match::InSet { key, set }],
                verdict,
            });
        }
    }

    /// The whole replacement as one transaction: `add table` (so that the delete cannot fail
    /// when there is none yet), `delete table`, `add table`, then chains, sets and rules.
    ///
    /// For the first install, when what the namespace holds is not known. Once a table is
    /// installed, change it with [`Table::update_json`]: on kernel 6.18 a transaction that
    /// deletes and re-adds a table whose rules look up interval sets loses a packet now and
    /// then (a lookup misses in the new table: allowed traffic is dropped, denied traffic
    /// passes): 1-3 datagrams per 200-400 replacements of a 1 ms stream, one per 30-75 of a
    /// 0.1 ms stream (`update_forms_side_by_side` in tests/tests/policy_nft.rs).
    pub fn to_nft_json(&self) -> Value {
        let table = json!({"family": TABLE_FAMILY, "name": TABLE_NAME});
        let mut cmds = vec![
            json!({"add": {"table": table}}),
            json!({"delete": {"table": table}}),
            json!({"add": {"table": table}}),
        ];
        cmds.extend(self.chains.iter().map(|c| add_chain_json(c.hook)));
        cmds.extend(self.sets.iter().map(add_set_json));
        cmds.extend(self.rules_json());
        json!({ "nftables": cmds })
    }

    /// The transaction that turns `applied`, the table installed in the namespace, into this
    /// one without losing a packet that both allow; `None` when there is nothing to change.
    /// With nothing applied (or not known), the full replacement [`Table::to_nft_json`].
    ///
    /// The table is never deleted (see `to_nft_json`). When only set elements changed, the
    /// document deletes the elements that went and adds the ones that came, per set: rules
    /// and untouched elements stay as they are. When the structure changed (a chain, a rule or
    /// a set declaration), it also flushes the chains and adds all their rules again, deletes
    /// the chains and sets that went (or whose declaration changed) and adds the new ones with
    /// their elements, all in the same transaction. Both forms were measured lossless on
    /// kernel 6.18 (tests/tests/policy_nft.rs): packets see the old rules or the new ones.
    ///
    /// Deleting an element that is not there fails the transaction, and nothing changes: when
    /// `applied` is not what the namespace holds (someone else changed our table), the caller
    /// applies the full replacement instead.
    pub fn update_json(&self, applied: Option<&Table>) -> Option<Value> {
        let Some(old) = applied else {
            return Some(self.to_nft_json());
        };
        if old == self {
            return None;
        }
        let restructure = old.chains != self.chains || old.declarations() != self.declarations();
        let mut cmds = Vec::new();
        if restructure {
            // Rules first: a set or chain can only go once no rule uses it.
            for chain in &old.chains {
                cmds.push(json!({"flush": {"chain": chain_ref(chain.hook)}}));
            }
            for chain in old.chains.iter().filter(|c| self.chain(c.hook).is_none()) {
                cmds.push(json!({"delete": {"chain": chain_ref(chain.hook)}}));
            }
            for set in &old.sets {
                if !self.set(set.name).is_some_and(|s| s.same_declaration(set)) {
                    cmds.push(json!({"delete": {"set": set_ref(set.name)}}));
                }
            }
            for chain in self.chains.iter().filter(|c| old.chain(c.hook).is_none()) {
                cmds.push(add_chain_json(chain.hook));
            }
        }
        for set in &self.sets {
            match old.set(set.name).filter(|prev| prev.same_declaration(set)) {
                Some(prev) => cmds.extend(set.element_changes(prev)),
                None => cmds.push(add_set_json(set)),
            }
        }
        if restructure {
            cmds.extend(self.rules_json());
        }
        if cmds.is_empty() {
            // The same elements in another order.
            return None;
        }
        Some(json!({ "nftables": cmds }))
    }

    /// The transaction that turns whatever `existing` table of ours a namespace holds (read
    /// back with `nft -j list table`, elements unknown to us) into this one without deleting
    /// the table: chains flushed and refilled, sets of the same declaration flushed and
    /// refilled, the others deleted and added, in one transaction. For an agent that starts
    /// and finds the tables of the agent before it: packets see the old rules or the new ones,
    /// as with [`Table::update_json`], where [`Table::to_nft_json`] would re-add the table.
    pub fn replace_json(&self, existing: &Existing) -> Value {
        let table = json!({"family": TABLE_FAMILY, "name": TABLE_NAME});
        let mut cmds = vec![json!({"add": {"table": table}})];
        for name in existing.chains.keys() {
            cmds.push(json!({"flush": {"chain": name_ref(name)}}));
        }
        let kept_chain = |c: &Chain| {
            existing
                .chains
                .get(c.hook.name())
                .is_some_and(|d| *d == chain_declaration(c.hook))
        };
        for (name, decl) in &existing.chains {
            let ours = self.chains.iter().find(|c| c.hook.name() == name);
            if ours.is_none_or(|c| chain_declaration(c.hook) != *decl) {
                cmds.push(json!({"delete": {"chain": name_ref(name)}}));
            }
        }
        let kept_set = |s: &Set| {
            existing
                .sets
                .get(s.name)
                .is_some_and(|d| *d == set_declaration(s))
        };
        for (name, decl) in &existing.sets {
            let ours = self.set(name);
            if ours.is_some_and(|s| set_declaration(s) == *decl) {
                cmds.push(json!({"flush": {"set": name_ref(name)}}));
            } else {
                cmds.push(json!({"delete": {"set": name_ref(name)}}));
            }
        }
        for chain in self.chains.iter().filter(|c| !kept_chain(c)) {
            cmds.push(add_chain_json(chain.hook));
        }
        for set in &self.sets {
            if !kept_set(set) {
                cmds.push(add_set_json(set));
            } else if !set.elements.is_empty() {
                let mut obj = set_ref(set.name);
                obj["elem"] = Value::Array(set.elements.iter().map(element_json).collect());
                cmds.push(json!({"add": {"element": obj}}));
            }
        }
        cmds.extend(self.rules_json());
        json!({ "nftables": cmds })
    }

    /// The set declarations (name, key, flags), sorted by name.
    fn declarations(&self) -> Vec<(&'static str, &[KeyType], bool)> {
        let mut d: Vec<_> = self
            .sets
            .iter()
            .map(|s| (s.name, s.key.as_slice(), s.interval))
            .collect();
        d.sort_by_key(|&(name, _, _)| name);
        d
    }

    /// `add rule` for every rule, chain by chain, in order.
    fn rules_json(&self) -> impl Iterator<Item = Value> + '_ {
        self.chains.iter().flat_map(|chain| {
            chain.rules.iter().map(move |rule| {
                let mut expr: Vec<Value> = rule.matches.iter().map(match_json).collect();
                expr.push(match rule.verdict {
                    Verdict::Accept => json!({"accept": null}),
                    Verdict::Drop => json!({"drop": null}),
                });
                json!({"add": {"rule": {
                    "family": TABLE_FAMILY,
                    "table": TABLE_NAME,
                    "chain": chain.hook.name(),
                    "expr": expr,
                }}})
            })
        })
    }
}

/// The chains and set declarations of a table of ours as nft lists it; elements and rules are
/// not read (the replacement flushes them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Chain name → its declaration (`type`, `hook`, `prio`, `policy`).
    chains: std::collections::BTreeMap<String, Value>,
    /// Set name → its declaration (`type`, `flags`).
    sets: std::collections::BTreeMap<String, Value>,
}

impl Existing {
    /// Reads `nft -j list table inet vfgenie`'s output; `None` when it lists no table of
    /// ours, or something this version cannot replace in place (then the caller installs the
    /// table whole).
    pub fn from_listing(doc: &Value) -> Option<Existing> {
        let items = doc.get("nftables")?.as_array()?;
        let mut out = Existing::default();
        let mut found = false;
        let ours = |o: &Value| {
            o.get("family").and_then(Value::as_str) == Some(TABLE_FAMILY)
                && o.get("table").and_then(Value::as_str) == Some(TABLE_NAME)
        };
        for item in items {
            if let Some(t) = item.get("table") {
                found |= t.get("family").and_then(Value::as_str) == Some(TABLE_FAMILY)
                    && t.get("name").and_then(Value::as_str) == Some(TABLE_NAME);
            } else if let Some(c) = item.get("chain") {
                if !ours(c) {
                    return None;
                }
                let name = c.get("name")?.as_str()?.to_string();
                let decl = json!({
                    "type": c.get("type"),
                    "hook": c.get("hook"),
                    "prio": c.get("prio"),
                    "policy": c.get("policy"),
                });
                out.chains.insert(name, decl);
            } else if let Some(set) = item.get("set") {
                if !ours(set) {
                    return None;
                }
                let name = set.get("name")?.as_str()?.to_string();
                let decl = json!({"type": set.get("type"), "flags": set_flags(set.get("flags"))});
                out.sets.insert(name, decl);
            } else if item.get("rule").is_some() || item.get("metainfo").is_some() {
                // Rules go with their chain's flush.
            } else {
                // A map, a counter, a flowtable: not ours; leave the decision to a whole install.
                return None;
            }
        }
        found.then_some(out)
    }
}

/// A set's flags as a sorted list (nft prints one flag as a string in some versions).
fn set_flags(flags: Option<&Value>) -> Value {
    let mut v: Vec<String> = match flags {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|f| f.as_str().map(String::from))
            .collect(),
        _ => vec![],
    };
    v.sort();
    json!(v)
}

fn chain_declaration(hook: Hook) -> Value {
    let add = add_chain_json(hook);
    let c = &add["add"]["chain"];
    json!({"type": c["type"], "hook": c["hook"], "prio": c["prio"], "policy": c["policy"]})
}

fn set_declaration(set: &Set) -> Value {
    let flags: Vec<&str> = if set.interval {
        vec!["interval"]
    } else {
        vec![]
    };
    json!({"type": key_type_json(&set.key), "flags": flags})
}

fn name_ref(name: &str) -> Value {
    json!({"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name})
}

fn chain_ref(hook: Hook) -> Value {
    json!({"family": TABLE_FAMILY, "table": TABLE_NAME, "name": hook.name()})
}

fn set_ref(name: &str) -> Value {
    json!({"family": TABLE_FAMILY, "table": TABLE_NAME, "name": name})
}

fn add_chain_json(hook: Hook) -> Value {
    json!({"add": {"chain": {
        "family": TABLE_FAMILY,
        "table": TABLE_NAME,
        "name": hook.name(),
        "type": "filter",
        "hook": hook.name(),
        "prio": 0,
        "policy": "accept",
    }}})
}

/// `add set` with the set's elements.
fn add_set_json(set: &Set) -> Value {
    let mut obj = set_ref(set.name);
    obj["type"] = key_type_json(&set.key);
    if set.interval {
        obj["flags"] = json!(["interval"]);
    }
    if !set.elements.is_empty() {
        obj["elem"] = Value::Array(set.elements.iter().map(element_json).collect());
    }
    json!({"add": {"set": obj}})
}

impl Set {
    fn same_declaration(&self, other: &Set) -> bool {
        self.name == other.name && self.key == other.key && self.interval == other.interval
    }

    /// `delete element` of what `applied` has and this set has not, then `add element` of
    /// what this set has and `applied` has not (in that order: an interval set refuses a new
    /// element that overlaps one still there); nothing for a command with no elements.
    fn element_changes(&self, applied: &Set) -> Vec<Value> {
        let old: BTreeSet<&Element> = applied.elements.iter().collect();
        let new: BTreeSet<&Element> = self.elements.iter().collect();
        [
            ("delete", old.difference(&new)),
            ("add", new.difference(&old)),
        ]
        .into_iter()
        .filter_map(|(verb, elements)| {
            let elem: Vec<Value> = elements.map(|e| element_json(e)).collect();
            if elem.is_empty() {
                return None;
            }
            let mut obj = set_ref(self.name);
            obj["elem"] = Value::Array(elem);
            Some(json!({ verb: {"element": obj} }))
        })
        .collect()
    }

    /// The elements as nft would print them (`net1 . 10.0.0.0/24 . tcp . 80-90`), for logs and
    /// tests.
    pub fn element_strings(&self) -> Vec<String> {
        self.elements.iter().map(ToString::to_string).collect()
    }
}

fn key_type_json(key: &[KeyType]) -> Value {
    match key {
        [one] => json!(one.name()),
        _ => Value::Array(key.iter().map(|k| json!(k.name())).collect()),
    }
}

fn field_json(field: &Field) -> Value {
    match field {
        Field::Ifname(name) => json!(name),
        Field::Addr(family, span) => {
            let lo = family.addr(span.lo).to_string();
            if span.lo == span.hi {
                json!(lo)
            } else if let Some(len) = span.prefix_len(*family) {
                json!({"prefix": {"addr": lo, "len": len}})
            } else {
                json!({"range": [lo, family.addr(span.hi).to_string()]})
            }
        }
        Field::Proto(p) => json!(p.name()),
        Field::Port(span) => {
            if span.lo == span.hi {
                json!(span.lo as u64)
            } else {
                json!({"range": [span.lo as u64, span.hi as u64]})
            }
        }
    }
}

fn element_json(element: &Element) -> Value {
    match element.0.as_slice() {
        [one] => field_json(one),
        fields => json!({"concat": fields.iter().map(field_json).collect::<Vec<_>>()}),
    }
}

fn selector_json(selector: Selector) -> Value {
    let payload =
        |protocol: &str, field: &str| json!({"payload": {"protocol": protocol, "field": field}});
    let ip = |family| match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    match selector {
        Selector::Iifname => json!({"meta": {"key": "iifname"}}),
        Selector::Oifname => json!({"meta": {"key": "oifname"}}),
        Selector::Saddr(f) => payload(ip(f), "saddr"),
        Selector::Daddr(f) => payload(ip(f), "daddr"),
        Selector::L4proto => json!({"meta": {"key": "l4proto"}}),
        Selector::Dport => payload("th", "dport"),
    }
}

fn match_json(m: &Match) -> Value {
    match m {
        Match::EstablishedRelated => json!({"match": {
            "op": "in",
            "left": {"ct": {"key": "state"}},
            "right": ["established", "related"],
        }}),
        Match::NeighbourDiscovery => json!({"match": {
            "op": "==",
            "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
            "right": {"set": ND_TYPES},
        }}),
        Match::InSet { key, set } => {
            let left = match key.as_slice() {
                [one] => selector_json(*one),
                keys => {
                    json!({"concat": keys.iter().map(|k| selector_json(*k)).collect::<Vec<_>>()})
                }
            };
            json!({"match": {"op": "==", "left": left, "right": format!("@{set}")}})
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Ifname(name) => write!(f, "{name:?}"),
            Field::Addr(family, span) => {
                let lo = family.addr(span.lo);
                if span.lo == span.hi {
                    write!(f, "{lo}")
                } else if let Some(len) = span.prefix_len(*family) {
                    write!(f, "{lo}/{len}")
                } else {
                    write!(f, "{lo}-{}", family.addr(span.hi))
                }
            }
            Field::Proto(p) => f.write_str(p.name()),
            Field::Port(span) if span.lo == span.hi => write!(f, "{}", span.lo),
            Field::Port(span) => write!(f, "{}-{}", span.lo, span.hi),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            field.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "ruleset_tests.rs"]
mod tests;
