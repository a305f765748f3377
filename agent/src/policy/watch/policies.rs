//! Policies as the engine enforces them: each object is parsed once per resourceVersion; a
//! version that does not parse changes nothing (the last good version of that object stays
//! enforced; an object never good is ignored) and is reported.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicySpec;
use serde_json::Value;
use vfkube::policy::{parse_genie_policy, parse_policy_for, GENIE_NETWORK_POLICY, POLICY_FOR};

use super::objects::RawMultiPolicy;
use crate::policy::model::{GeniePolicy, MultiPolicy, NetworkKey};

/// The longest policy annotation read.
pub const MAX_ANNOTATION_BYTES: usize = 64 * 1024;
/// The most rules of one `genieNetworkpolicy`, and the most networks of one `policy-for`.
pub const MAX_RULES: usize = 256;

/// What one version of an object says.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed<P> {
    /// Not a policy of ours (a NetworkPolicy without `genieNetworkpolicy`).
    NotOurs,
    Good(P),
    /// `what` (an annotation, `spec`) cannot be parsed: `problem`.
    Bad {
        what: &'static str,
        problem: String,
    },
}

#[derive(Debug, Clone)]
struct Entry<P> {
    seen: String,
    good: Option<P>,
}

/// One object's version, as [`LastGood::refresh`] takes it.
pub struct Version<'a, O> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub resource_version: &'a str,
    pub object: O,
}

/// The last good version of every object of one kind.
#[derive(Debug)]
pub struct LastGood<P> {
    entries: BTreeMap<(String, String), Entry<P>>,
}

impl<P> Default for LastGood<P> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<P: Clone + PartialEq> LastGood<P> {
    /// Brings the state to `current` (every object of the kind now): a version not seen before is
    /// parsed; `bad` is called for each version that does not parse, with the object and the
    /// problem. Objects gone from `current` are forgotten. Returns whether the enforced set
    /// changed.
    pub fn refresh<'a, O: 'a>(
        &mut self,
        current: impl IntoIterator<Item = Version<'a, O>>,
        parse: impl Fn(&O, &str) -> Parsed<P>,
        mut bad: impl FnMut(&O, &'static str, &str),
    ) -> bool {
        let mut changed = false;
        let mut present = BTreeSet::new();
        for v in current {
            let key = (v.namespace.to_string(), v.name.to_string());
            present.insert(key.clone());
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.seen == v.resource_version)
            {
                continue;
            }
            let previous = self.entries.get(&key).and_then(|e| e.good.clone());
            let good = match parse(&v.object, v.namespace) {
                Parsed::NotOurs => None,
                Parsed::Good(p) => Some(p),
                Parsed::Bad { what, problem } => {
                    bad(&v.object, what, &problem);
                    previous.clone()
                }
            };
            changed |= previous != good;
            self.entries.insert(
                key,
                Entry {
                    seen: v.resource_version.to_string(),
                    good,
                },
            );
        }
        self.entries.retain(|k, e| {
            let keep = present.contains(k);
            changed |= !keep && e.good.is_some();
            keep
        });
        changed
    }

    /// Every object's enforced version, in (namespace, name) order.
    pub fn enforced(&self) -> Vec<P> {
        self.entries
            .values()
            .filter_map(|e| e.good.clone())
            .collect()
    }
}

fn bounded(annotation: &'static str, value: &str) -> Result<(), Parsed<()>> {
    if value.len() > MAX_ANNOTATION_BYTES {
        return Err(Parsed::Bad {
            what: annotation,
            problem: format!(
                "it is {} bytes, over the {MAX_ANNOTATION_BYTES} read",
                value.len()
            ),
        });
    }
    Ok(())
}

fn bad<P>(what: &'static str, problem: String) -> Parsed<P> {
    Parsed::Bad { what, problem }
}

/// A NetworkPolicy's `genieNetworkpolicy` (`None`: the annotation is absent).
pub fn parse_genie(namespace: &str, name: &str, annotation: Option<&str>) -> Parsed<GeniePolicy> {
    let Some(value) = annotation else {
        return Parsed::NotOurs;
    };
    if let Err(Parsed::Bad { what, problem }) = bounded(GENIE_NETWORK_POLICY, value) {
        return bad(what, problem);
    }
    match parse_genie_policy(value) {
        Ok(rules) if rules.len() > MAX_RULES => bad(
            GENIE_NETWORK_POLICY,
            format!("it has {} rules, over the {MAX_RULES} read", rules.len()),
        ),
        Ok(rules) => Parsed::Good(GeniePolicy {
            namespace: namespace.to_string(),
            name: name.to_string(),
            rules,
        }),
        Err(e) => bad(e.annotation, e.problem),
    }
}

/// A MultiNetworkPolicy: its `policy-for` (required) and its spec (a NetworkPolicySpec).
pub fn parse_multi(p: &RawMultiPolicy) -> Parsed<MultiPolicy> {
    let namespace = p.metadata.namespace.as_str();
    let value = p
        .metadata
        .annotations
        .get(POLICY_FOR)
        .map(String::as_str)
        .unwrap_or("");
    if let Err(Parsed::Bad { what, problem }) = bounded(POLICY_FOR, value) {
        return bad(what, problem);
    }
    let targets = match parse_policy_for(value) {
        Ok(t) if t.len() > MAX_RULES => {
            return bad(
                POLICY_FOR,
                format!("it names {} networks, over the {MAX_RULES} read", t.len()),
            )
        }
        Ok(t) => t,
        Err(e) => return bad(e.annotation, e.problem),
    };
    let spec = match &p.spec {
        Value::Null => {
            return bad(
                "spec",
                "it is missing; it must select pods (podSelector)".into(),
            )
        }
        v => match serde_json::from_value::<NetworkPolicySpec>(v.clone()) {
            Ok(s) => s,
            Err(e) => return bad("spec", format!("it is not a NetworkPolicy spec: {e}")),
        },
    };
    let mut policy_for: Vec<NetworkKey> = Vec::new();
    for t in targets {
        let key = NetworkKey::new(t.namespace.as_deref().unwrap_or(namespace), t.name);
        if !policy_for.contains(&key) {
            policy_for.push(key);
        }
    }
    Parsed::Good(MultiPolicy {
        namespace: namespace.to_string(),
        name: p.metadata.name.clone(),
        policy_for,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vfkube::objects::ObjectMeta;

    fn v<'a>(
        name: &'a str,
        rv: &'a str,
        annotation: Option<&'a str>,
    ) -> Version<'a, Option<&'a str>> {
        Version {
            namespace: "a",
            name,
            resource_version: rv,
            object: annotation,
        }
    }

    fn refresh(
        state: &mut LastGood<GeniePolicy>,
        objects: Vec<Version<'_, Option<&str>>>,
    ) -> (bool, Vec<String>) {
        let mut problems = Vec::new();
        let changed = state.refresh(
            objects,
            |o, ns| parse_genie(ns, "p", *o),
            |_, what, problem| problems.push(format!("{what}: {problem}")),
        );
        (changed, problems)
    }

    const GOOD: &str = "[{networkSelector: net1, peerNetworks: net2}]";
    const OTHER: &str = r#"[{"networkSelector": "net1", "peerNetworks": "net3"}]"#;

    #[test]
    fn a_bad_version_keeps_the_last_good_one_and_is_reported_once() {
        let mut s = LastGood::default();
        assert_eq!(
            refresh(&mut s, vec![v("p", "1", Some(GOOD))]),
            (true, vec![])
        );
        assert_eq!(s.enforced()[0].rules[0].peer_networks, vec!["net2"]);
        let (changed, problems) = refresh(&mut s, vec![v("p", "2", Some("[{oops"))]);
        assert!(!changed);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("genieNetworkpolicy: "),
            "{problems:?}"
        );
        assert_eq!(s.enforced()[0].rules[0].peer_networks, vec!["net2"]);
        // The same bad version again: nothing new to say.
        assert_eq!(
            refresh(&mut s, vec![v("p", "2", Some("[{oops"))]),
            (false, vec![])
        );
        assert!(refresh(&mut s, vec![v("p", "3", Some(OTHER))]).0);
        assert_eq!(s.enforced()[0].rules[0].peer_networks, vec!["net3"]);
        // The annotation removed: no longer a genie policy.
        assert!(refresh(&mut s, vec![v("p", "4", None)]).0);
        assert!(s.enforced().is_empty());
        // Bad from the start: ignored, reported.
        let (changed, problems) = refresh(&mut s, vec![v("q", "5", Some(""))]);
        assert!(!changed && problems.len() == 1 && s.enforced().is_empty());
        // Deleted.
        refresh(&mut s, vec![v("p", "6", Some(GOOD))]);
        assert!(refresh(&mut s, vec![]).0);
        assert!(s.enforced().is_empty());
    }

    #[test]
    fn oversized_annotations_are_bad() {
        let big = format!(
            "[{{networkSelector: net1, peerNetworks: {}}}]",
            "a,".repeat(MAX_ANNOTATION_BYTES)
        );
        assert!(matches!(
            parse_genie("a", "p", Some(&big)),
            Parsed::Bad { .. }
        ));
        let rules: Vec<Value> = (0..MAX_RULES + 1)
            .map(|i| json!({"networkSelector": format!("n{i}")}))
            .collect();
        let many = Value::from(rules).to_string();
        assert!(matches!(
            parse_genie("a", "p", Some(&many)),
            Parsed::Bad { .. }
        ));
    }

    fn multi(annotation: Option<&str>, spec: Value) -> RawMultiPolicy {
        let mut metadata = ObjectMeta {
            name: "m".into(),
            namespace: "a".into(),
            ..ObjectMeta::default()
        };
        if let Some(a) = annotation {
            metadata.annotations.insert(POLICY_FOR.into(), a.into());
        }
        RawMultiPolicy { metadata, spec }
    }

    #[test]
    fn multi_policies_need_policy_for_and_a_network_policy_spec() {
        let spec = json!({"podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                         "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}]}]});
        let Parsed::Good(p) = parse_multi(&multi(Some("blue, b/red, blue"), spec.clone())) else {
            panic!("not good")
        };
        assert_eq!(
            p.policy_for,
            vec![NetworkKey::new("a", "blue"), NetworkKey::new("b", "red")]
        );
        assert_eq!(p.spec.ingress.as_ref().unwrap().len(), 1);
        for (m, what) in [
            (multi(None, spec.clone()), POLICY_FOR),
            (multi(Some("Blue"), spec.clone()), POLICY_FOR),
            (multi(Some("blue"), Value::Null), "spec"),
            (multi(Some("blue"), json!({"podSelector": 5})), "spec"),
            (
                multi(Some("blue"), json!({"podSelector": {}, "ingress": "x"})),
                "spec",
            ),
        ] {
            match parse_multi(&m) {
                Parsed::Bad { what: w, .. } => assert_eq!(w, what),
                other => panic!("{other:?}"),
            }
        }
    }
}
