//! Unit tests of ruleset.rs: which update a table change gets, and that every update nft is
//! given leaves the namespace holding what the full replacement would (checked with nft in a
//! scratch network namespace holding the applied table).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use serde_json::{json, Value};

use super::*;
use crate::policy::compile::compile;
use crate::policy::compile::testdata::{add_net, iface, key, multi, net, pod};
use crate::policy::model::{Inputs, TrafficPath};

fn v4(a: [u8; 4], len: u8) -> Field {
    let lo = u128::from(u32::from(Ipv4Addr::from(a)));
    let size = 1u128 << (32 - len);
    Field::Addr(Family::V4, Span::new(lo, lo + size - 1).unwrap())
}

fn ifname_addr(ifname: &str, addr: Field) -> Element {
    Element(vec![Field::Ifname(ifname.into()), addr])
}

fn ports(ifname: &str, addr: Field, proto: Proto, lo: u128, hi: u128) -> Element {
    Element(vec![
        Field::Ifname(ifname.into()),
        addr,
        Field::Proto(proto),
        Field::Port(Span::new(lo, hi).unwrap()),
    ])
}

fn interval_set(name: &'static str, key: Vec<KeyType>, elements: Vec<Element>) -> Set {
    Set {
        name,
        key,
        interval: true,
        elements,
    }
}

fn in_all4(elements: Vec<Element>) -> Set {
    interval_set(
        "in_all4",
        vec![KeyType::Ifname, KeyType::Addr(Family::V4)],
        elements,
    )
}

fn in_ports4(elements: Vec<Element>) -> Set {
    interval_set(
        "in_ports4",
        vec![
            KeyType::Ifname,
            KeyType::Addr(Family::V4),
            KeyType::InetProto,
            KeyType::InetService,
        ],
        elements,
    )
}

fn isolated(ifnames: &[&str]) -> Set {
    Set {
        name: "in_isolated",
        key: vec![KeyType::Ifname],
        interval: false,
        elements: ifnames
            .iter()
            .map(|i| Element(vec![Field::Ifname(i.to_string())]))
            .collect(),
    }
}

/// A pod table in the compiler's shape: ingress allowed from `all` (every port) and `ports`,
/// the interfaces in `isolated` denied the rest.
fn pod_table(all: Vec<Element>, ports: Vec<Element>, iso: &[&str]) -> Table {
    let mut t = Table::with_chains(&[Hook::Input, Hook::Output]);
    let l4 = vec![
        Selector::Iifname,
        Selector::Saddr(Family::V4),
        Selector::L4proto,
        Selector::Dport,
    ];
    t.add_lookup(Hook::Input, l4, in_ports4(ports), Verdict::Accept);
    let key = vec![Selector::Iifname, Selector::Saddr(Family::V4)];
    t.add_lookup(Hook::Input, key, in_all4(all), Verdict::Accept);
    t.add_lookup(
        Hook::Input,
        vec![Selector::Iifname],
        isolated(iso),
        Verdict::Drop,
    );
    t
}

fn base() -> Table {
    pod_table(
        vec![
            ifname_addr("net1", v4([10, 91, 1, 0], 24)),
            ifname_addr("net1", v4([10, 200, 0, 0], 24)),
        ],
        vec![ports(
            "net1",
            v4([10, 92, 0, 0], 16),
            Proto::Tcp,
            8000,
            8100,
        )],
        &["net1"],
    )
}

/// The commands of a document as (verb, kind) pairs.
fn verbs(doc: &Value) -> Vec<(String, String)> {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            let kind = body.as_object().unwrap().keys().next().unwrap();
            (verb.clone(), kind.clone())
        })
        .collect()
}

fn has(doc: &Value, verb: &str, kind: &str) -> bool {
    verbs(doc).iter().any(|(v, k)| v == verb && k == kind)
}

/// Runs `script` (sh, with the documents as files `$1`, `$2`, ...) in a network namespace of
/// its own, which goes when it exits; its stdout, or why it failed.
fn in_scratch_netns(script: &str, docs: &[&Value]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "-n".to_string(),
        "sh".into(),
        "-ec".into(),
        script.into(),
        "sh".into(),
    ];
    for (i, doc) in docs.iter().enumerate() {
        let path = dir.path().join(format!("{i}.json"));
        std::fs::write(&path, doc.to_string()).unwrap();
        args.push(path.to_string_lossy().into_owned());
    }
    let out = Command::new("unshare")
        .args(&args)
        .output()
        .expect("unshare (util-linux) runs the nft checks; they need root");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Our table as `nft -j list` shows it, without handles and in an order that does not depend
/// on the order things were added: chains and sets by name (elements sorted), rules in chain
/// order.
fn canonical(listing: &str) -> BTreeMap<String, Value> {
    let v: Value = serde_json::from_str(listing).unwrap();
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for entry in v["nftables"].as_array().unwrap() {
        let (kind, body) = entry.as_object().unwrap().iter().next().unwrap();
        let mut body = body.clone();
        let Some(obj) = body.as_object_mut() else {
            continue;
        };
        obj.remove("handle");
        match kind.as_str() {
            "metainfo" | "table" => {}
            "rule" => {
                let chain = obj["chain"].as_str().unwrap().to_string();
                out.entry(format!("rules {chain}"))
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .unwrap()
                    .push(body);
            }
            _ => {
                if let Some(elem) = obj.get_mut("elem").and_then(Value::as_array_mut) {
                    elem.sort_by_key(|e| e.to_string());
                }
                let name = obj["name"].as_str().unwrap().to_string();
                out.insert(format!("{kind} {name}"), body);
            }
        }
    }
    out
}

const LIST: &str = "nft -j list table inet vfgenie";

/// What the namespace holds after the full replacement with `table`.
fn installed(table: &Table) -> BTreeMap<String, Value> {
    let script = format!("nft -j -f \"$1\"; {LIST}");
    let held = canonical(&in_scratch_netns(&script, &[&table.to_nft_json()]).unwrap());
    assert!(held.contains_key("rules input"), "{held:#?}");
    held
}

/// Installs `applied`, has nft check `update` against it (`--check`: the kernel validates the
/// transaction and discards it), applies it and returns what the namespace then holds.
fn updated(applied: &Table, update: &Value) -> BTreeMap<String, Value> {
    let script = format!("nft -j -f \"$1\"; nft --check -j -f \"$2\"; nft -j -f \"$2\"; {LIST}");
    let out = in_scratch_netns(&script, &[&applied.to_nft_json(), update])
        .unwrap_or_else(|e| panic!("nft refused the update: {e}\n{update:#}"));
    canonical(&out)
}

/// The update from `old` to `new`: never a table deletion, accepted by nft against `old`, and
/// leaving what the full replacement with `new` would.
fn assert_update(old: &Table, new: &Table) -> Value {
    let doc = new.update_json(Some(old)).expect("the tables differ");
    assert!(!has(&doc, "delete", "table"), "{doc:#}");
    assert!(!has(&doc, "add", "table"), "{doc:#}");
    assert_eq!(updated(old, &doc), installed(new), "{doc:#}");
    doc
}

#[test]
fn nothing_to_apply_for_an_equal_table() {
    let t = base();
    assert_eq!(t.update_json(Some(&t.clone())), None);
    // The same elements in another order are the same set.
    let mut shuffled = t.clone();
    for set in &mut shuffled.sets {
        set.elements.reverse();
    }
    assert_ne!(shuffled, t);
    assert_eq!(shuffled.update_json(Some(&t)), None);
}

#[test]
fn nothing_applied_gets_the_full_replacement() {
    let t = base();
    assert_eq!(t.update_json(None), Some(t.to_nft_json()));
    assert!(has(&t.to_nft_json(), "delete", "table"));
}

#[test]
fn changed_elements_are_deleted_and_added_and_nothing_else() {
    let old = base();
    let mut new = old.clone();
    // One peer goes, another comes; a peer's range grows over a neighbour (merged by the
    // compiler: the old element goes, a larger one comes); a port range changes.
    new.sets[1].elements = vec![
        ifname_addr("net1", v4([10, 91, 0, 0], 23)),
        ifname_addr("net1", v4([10, 201, 0, 0], 24)),
        ifname_addr("net2", v4([10, 202, 0, 1], 32)),
    ];
    new.sets[0].elements = vec![ports(
        "net1",
        v4([10, 92, 0, 0], 16),
        Proto::Tcp,
        8000,
        8200,
    )];
    let doc = assert_update(&old, &new);
    let v = verbs(&doc);
    assert!(
        v.iter().all(|(_, kind)| kind == "element"),
        "not element-only: {v:?}"
    );
    assert_eq!(
        v.iter().map(|(verb, _)| verb.as_str()).collect::<Vec<_>>(),
        ["delete", "add", "delete", "add"],
        "per set, deletions first"
    );
    let cmds = doc["nftables"].as_array().unwrap();
    assert_eq!(cmds[2]["delete"]["element"]["name"], "in_all4");
    assert_eq!(
        cmds[2]["delete"]["element"]["elem"],
        json!([
            {"concat": ["net1", {"prefix": {"addr": "10.91.1.0", "len": 24}}]},
            {"concat": ["net1", {"prefix": {"addr": "10.200.0.0", "len": 24}}]},
        ])
    );
    assert_eq!(
        cmds[3]["add"]["element"]["elem"].as_array().unwrap().len(),
        3
    );

    // Only additions, only deletions: one command each.
    let mut more = old.clone();
    more.sets[2]
        .elements
        .push(Element(vec![Field::Ifname("net2".into())]));
    let doc = assert_update(&old, &more);
    assert_eq!(verbs(&doc), [("add".to_string(), "element".to_string())]);
    let doc = assert_update(&more, &old);
    assert_eq!(verbs(&doc), [("delete".to_string(), "element".to_string())]);
}

#[test]
fn a_structure_change_swaps_the_rules_in_place() {
    let old = base();
    let all = old.sets[1].elements.clone();
    let port = old.sets[0].elements.clone();
    let no_ports = pod_table(all.clone(), vec![], &["net1"]);
    let mut with_output = base();
    with_output.add_lookup(
        Hook::Output,
        vec![Selector::Oifname, Selector::Daddr(Family::V4)],
        interval_set(
            "out_all4",
            vec![KeyType::Ifname, KeyType::Addr(Family::V4)],
            vec![ifname_addr("net1", v4([10, 93, 0, 0], 16))],
        ),
        Verdict::Accept,
    );
    let mut input_only = Table::with_chains(&[Hook::Input]);
    input_only.sets = no_ports.sets.clone();
    input_only.chains[0] = no_ports.chains[0].clone();
    let mut redeclared = base();
    redeclared.sets[2].interval = true;
    let mut reordered = base();
    reordered.chains[0].rules.swap(2, 3);
    let cases: [(&str, &Table, &Table); 7] = [
        ("a new kind of rule with its set", &no_ports, &old),
        ("a rule and its set gone", &old, &no_ports),
        ("a rule in the other chain", &old, &with_output),
        ("a chain gone", &old, &input_only),
        ("a chain added", &input_only, &old),
        ("a set redeclared", &old, &redeclared),
        ("rules reordered", &old, &reordered),
    ];
    for (what, from, to) in cases {
        let doc = assert_update(from, to);
        assert!(has(&doc, "flush", "chain"), "{what}: {doc:#}");
        assert!(has(&doc, "add", "rule"), "{what}: {doc:#}");
    }
    // Unchanged sets keep their elements: no command touches in_ports4 when only a rule of
    // another chain came.
    let doc = assert_update(&old, &with_output);
    assert!(
        !doc.to_string().contains(r#""name":"in_ports4""#),
        "{doc:#}"
    );
    // While the set that came is added whole.
    let doc = assert_update(&no_ports, &old);
    let added = doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["add"]["set"]["name"] == "in_ports4")
        .unwrap();
    assert_eq!(
        added["add"]["set"]["elem"].as_array().unwrap().len(),
        port.len()
    );
}

#[test]
fn an_update_that_does_not_fit_the_namespace_is_refused_whole() {
    // The namespace holds `base`, the caller believes it holds something else: deleting an
    // element that is not there fails the transaction, which leaves the table as it was.
    let old = base();
    let mut believed = old.clone();
    believed.sets[1]
        .elements
        .push(ifname_addr("net1", v4([10, 250, 0, 0], 24)));
    let doc = old.update_json(Some(&believed)).unwrap();
    let script = format!("nft -j -f \"$1\"; nft -j -f \"$2\" || {LIST}");
    let out = in_scratch_netns(&script, &[&old.to_nft_json(), &doc]).unwrap();
    assert_eq!(canonical(&out), installed(&old));
}

fn pod_ip(i: u32) -> String {
    format!("10.100.{}.{}", i / 200, i % 200 + 1)
}

/// Pods `p0..n` on one VF network; pods of tier `a` accept TCP 8000-8100 from tier `b` and
/// everything from 10.0.0.0/8 except 10.100.0.0/24; `extra` pods of tier `b` come in addition.
fn inputs(extra: &[u32], b_policy: bool) -> Inputs {
    let mut inputs = Inputs::default();
    add_net(
        &mut inputs,
        net("t", "vf", &["10.100.0.0/16"], TrafficPath::InPod),
    );
    let mut add = |i: u32| {
        let tier = if i % 2 == 0 { "a" } else { "b" };
        inputs.pods.push(pod(
            "t",
            &format!("p{i}"),
            &[("tier", tier)],
            vec![iface(key("t", "vf"), "net1", &[&pod_ip(i)])],
            Some(&format!("/run/netns/p{i}")),
        ));
    };
    for i in (0..20).chain(extra.iter().copied()) {
        add(i);
    }
    let mut ingress = vec![json!({
        "from": [{"podSelector": {"matchLabels": {"tier": "b"}}}],
        "ports": [{"port": 8000, "endPort": 8100}],
    })];
    if b_policy {
        ingress.push(json!({
            "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.100.0.0/24"]}}],
        }));
    }
    inputs.multi.push(multi(
        "t",
        "a",
        &[key("t", "vf")],
        json!({
            "podSelector": {"matchLabels": {"tier": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        }),
    ));
    inputs
}

#[test]
fn compiled_tables_update_in_place() {
    let table = |extra: &[u32], b: bool| {
        let plan = compile(&inputs(extra, b));
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        plan.pods[&std::path::PathBuf::from("/run/netns/p0")].clone()
    };
    let old = table(&[], false);
    // Pods of tier b come (next to others: their addresses merge into ranges) and go.
    let grown = table(&[21, 23, 25, 201], false);
    let doc = assert_update(&old, &grown);
    assert!(verbs(&doc).iter().all(|(_, k)| k == "element"), "{doc:#}");
    let doc = assert_update(&grown, &old);
    assert!(verbs(&doc).iter().all(|(_, k)| k == "element"), "{doc:#}");
    // A rule without ports: a new set and rule.
    let wider = table(&[21], true);
    let doc = assert_update(&old, &wider);
    assert!(has(&doc, "add", "set"), "{doc:#}");
    assert_update(&wider, &grown);
    assert_ne!(old.set("in_ports4"), grown.set("in_ports4"));
    assert!(old.set("in_all4").is_none() && wider.set("in_all4").is_some());
}
