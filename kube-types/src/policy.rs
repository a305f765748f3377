//! Network policy annotations.
//!
//! - CNI-Genie: a `networking.k8s.io/v1` NetworkPolicy annotated `genieNetworkpolicy` with a list
//!   of `{networkSelector: <logical network>, peerNetworks: "<net>,<net>"}`. CNI-Genie's users
//!   write it in YAML flow style without quotes (`peerNetworks: net3,net5`, which no YAML parser
//!   reads as one value) and with `#` comments; JSON is accepted too.
//! - NPWG MultiNetworkPolicy: `k8s.v1.cni.cncf.io/policy-for` lists the networks the policy
//!   applies to, `[namespace/]name` comma separated.
//!
//! Every name is a DNS-1123 label; errors name the annotation and the problem.

use serde::Deserialize;

use crate::objects::is_dns_label;

pub const GENIE_NETWORK_POLICY: &str = "genieNetworkpolicy";
pub const POLICY_FOR: &str = "k8s.v1.cni.cncf.io/policy-for";

/// One rule of `genieNetworkpolicy`: pods on `network_selector` accept traffic from
/// `peer_networks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeniePolicyRule {
    pub network_selector: String,
    pub peer_networks: Vec<String>,
}

/// An invalid policy annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation} is invalid: {problem}")]
pub struct PolicyError {
    pub annotation: &'static str,
    pub problem: String,
}

fn genie_err(problem: impl Into<String>) -> PolicyError {
    PolicyError {
        annotation: GENIE_NETWORK_POLICY,
        problem: problem.into(),
    }
}

fn label(what: &str, s: &str, err: fn(String) -> PolicyError) -> Result<String, PolicyError> {
    if is_dns_label(s) {
        Ok(s.to_string())
    } else {
        Err(err(format!(
            "{what} {s:?} is not a valid network name (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63)"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    network_selector: String,
    #[serde(default)]
    peer_networks: PeerNetworks,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum PeerNetworks {
    #[default]
    None,
    Text(String),
    List(Vec<String>),
}

/// Parses a `genieNetworkpolicy` value (JSON, or CNI-Genie's unquoted flow form).
pub fn parse_genie_policy(value: &str) -> Result<Vec<GeniePolicyRule>, PolicyError> {
    let text = strip_comments(value);
    let text = text.trim();
    if text.is_empty() {
        return Err(genie_err(
            "it is empty; it must list {networkSelector, peerNetworks} rules",
        ));
    }
    let raws: Vec<RawRule> = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => {
            let v = match v {
                serde_json::Value::Object(_) => serde_json::Value::Array(vec![v]),
                v => v,
            };
            serde_json::from_value(v).map_err(|e| genie_err(format!("not a list of rules: {e}")))?
        }
        Err(_) => parse_flow(text)?,
    };
    if raws.is_empty() {
        return Err(genie_err("the list of rules is empty"));
    }
    raws.into_iter()
        .map(|r| {
            let peers: Vec<String> = match r.peer_networks {
                PeerNetworks::None => Vec::new(),
                PeerNetworks::Text(t) => t
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                PeerNetworks::List(l) => l,
            };
            Ok(GeniePolicyRule {
                network_selector: label("networkSelector", r.network_selector.trim(), genie_err)?,
                peer_networks: peers
                    .iter()
                    .map(|p| label("peerNetworks", p.trim(), genie_err))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// Drops `#` comments to the end of the line (names never contain `#`).
fn strip_comments(s: &str) -> String {
    s.lines()
        .map(|l| l.split_once('#').map_or(l, |(a, _)| a))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, PartialEq)]
enum Tok {
    Open,
    Close,
    OpenList,
    CloseList,
    Colon,
    Comma,
    Word(String),
    Quoted(String),
}

fn tokens(s: &str) -> Result<Vec<Tok>, PolicyError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '{' | '}' | '[' | ']' | ':' | ',' => {
                chars.next();
                out.push(match c {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    '[' => Tok::OpenList,
                    ']' => Tok::CloseList,
                    ':' => Tok::Colon,
                    _ => Tok::Comma,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => w.push(x),
                        None => return Err(genie_err("a quoted value is not closed")),
                    }
                }
                out.push(Tok::Quoted(w));
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = chars.peek() {
                    if x.is_whitespace() || "{}[]:,\"'".contains(x) {
                        break;
                    }
                    w.push(x);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

/// `[{networkSelector: net1, peerNetworks: net2,net3}, ...]` with newlines or commas between
/// keys. A value runs until the next `key:`, so an unquoted comma list stays one value.
fn parse_flow(text: &str) -> Result<Vec<RawRule>, PolicyError> {
    let toks = tokens(text)?;
    let mut i = 0;
    let next = |i: &mut usize| {
        let t = toks.get(*i);
        *i += 1;
        t
    };
    if next(&mut i) != Some(&Tok::OpenList) {
        return Err(genie_err(
            "it is neither JSON nor a [ {networkSelector: ..., peerNetworks: ...} ] list",
        ));
    }
    let mut rules = Vec::new();
    loop {
        match next(&mut i) {
            Some(Tok::CloseList) => break,
            Some(Tok::Comma) => continue,
            Some(Tok::Open) => {}
            _ => {
                return Err(genie_err(
                    "expected '{' to start a rule or ']' to end the list",
                ))
            }
        }
        let mut selector: Option<String> = None;
        let mut peers: Vec<String> = Vec::new();
        loop {
            let key = match next(&mut i) {
                Some(Tok::Close) => break,
                Some(Tok::Comma) => continue,
                Some(Tok::Word(k) | Tok::Quoted(k)) => k.as_str(),
                _ => return Err(genie_err("expected a key or '}' in a rule")),
            };
            if next(&mut i) != Some(&Tok::Colon) {
                return Err(genie_err(format!("key {key:?} is not followed by ':'")));
            }
            // The value: words and quoted strings up to the next `key:` or '}'.
            let mut values: Vec<String> = Vec::new();
            loop {
                match (toks.get(i), toks.get(i + 1)) {
                    (Some(Tok::Word(_) | Tok::Quoted(_)), Some(Tok::Colon)) => break,
                    (Some(Tok::Word(w) | Tok::Quoted(w)), _) => {
                        values.extend(
                            w.split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_string),
                        );
                        i += 1;
                    }
                    (Some(Tok::Comma), _) => i += 1,
                    _ => break,
                }
            }
            match key {
                "networkSelector" => {
                    if selector.is_some() || values.len() != 1 {
                        return Err(genie_err(
                            "networkSelector must name exactly one network, once per rule",
                        ));
                    }
                    selector = values.pop();
                }
                "peerNetworks" => peers.extend(values),
                other => {
                    return Err(genie_err(format!(
                        "unknown key {other:?}; a rule has networkSelector and peerNetworks"
                    )))
                }
            }
        }
        let network_selector =
            selector.ok_or_else(|| genie_err("a rule has no networkSelector"))?;
        rules.push(RawRule {
            network_selector,
            peer_networks: PeerNetworks::List(peers),
        });
    }
    if i < toks.len() {
        return Err(genie_err("there is text after the closing ']'"));
    }
    Ok(rules)
}

/// One network of `k8s.v1.cni.cncf.io/policy-for`; `None` namespace means the policy's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTarget {
    pub namespace: Option<String>,
    pub name: String,
}

fn policy_for_err(problem: String) -> PolicyError {
    PolicyError {
        annotation: POLICY_FOR,
        problem,
    }
}

/// Parses `k8s.v1.cni.cncf.io/policy-for`: `[namespace/]name`, comma separated, at least one.
pub fn parse_policy_for(value: &str) -> Result<Vec<PolicyTarget>, PolicyError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(policy_for_err(
            "it is empty; it must name at least one network".into(),
        ));
    }
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            if item.is_empty() {
                return Err(policy_for_err("an element of the list is empty".into()));
            }
            match item.split_once('/') {
                Some((ns, name)) => {
                    if name.contains('/') {
                        return Err(policy_for_err(format!("{item:?} has more than one '/'")));
                    }
                    Ok(PolicyTarget {
                        namespace: Some(label("namespace", ns, policy_for_err)?),
                        name: label("network", name, policy_for_err)?,
                    })
                }
                None => Ok(PolicyTarget {
                    namespace: None,
                    name: label("network", item, policy_for_err)?,
                }),
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
