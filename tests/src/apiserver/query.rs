//! The query of a LIST or WATCH: its parameters, and label and field selectors.

use serde_json::Value;

/// Decodes `%XX` escapes and `+` (a space in a query).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parameters the stand-in understands.
#[derive(Debug, Default, Clone)]
pub(super) struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

fn truthy(v: &str) -> bool {
    v == "true" || v == "1"
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match percent_decode(k).as_str() {
                "watch" => q.watch = truthy(&v),
                "resourceVersion" => q.resource_version = Some(v),
                "resourceVersionMatch" => q.resource_version_match = Some(v),
                "limit" => q.limit = v.parse().ok().filter(|l| *l > 0),
                "continue" => q.continue_token = Some(v).filter(|c| !c.is_empty()),
                "labelSelector" => q.label_selector = Some(v).filter(|s| !s.is_empty()),
                "fieldSelector" => q.field_selector = Some(v).filter(|s| !s.is_empty()),
                "timeoutSeconds" => q.timeout_seconds = v.parse().ok(),
                "allowWatchBookmarks" => q.bookmarks = truthy(&v),
                "sendInitialEvents" => q.send_initial_events = truthy(&v),
                _ => {}
            }
        }
        q
    }
}

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone)]
struct FieldReq {
    /// A dotted path into the object (`metadata.name`, `spec.nodeName`, `status.phase`).
    path: String,
    value: String,
    equal: bool,
}

/// Label and field selectors, every requirement ANDed.
#[derive(Debug, Clone, Default)]
pub(super) struct Selectors {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// Splits at commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|t| !t.is_empty()).collect()
}

/// `a!=b`, `a==b`, `a=b` into (a, b, equal).
fn comparison(term: &str) -> Option<(String, String, bool)> {
    if let Some((k, v)) = term.split_once("!=") {
        return Some((k.trim().into(), v.trim().into(), false));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Some((k.trim().into(), v.trim().into(), true));
    }
    let (k, v) = term.split_once('=')?;
    Some((k.trim().into(), v.trim().into(), true))
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn label_req(term: &str) -> Result<LabelReq, String> {
    if let Some((k, v, equal)) = comparison(term) {
        return Ok(if equal {
            LabelReq::Eq(k, v)
        } else {
            LabelReq::Ne(k, v)
        });
    }
    if let Some((k, rest)) = term.split_once(" notin ") {
        let values = set_values(rest).ok_or_else(|| format!("bad set in {term:?}"))?;
        return Ok(LabelReq::NotIn(k.trim().into(), values));
    }
    if let Some((k, rest)) = term.split_once(" in ") {
        let values = set_values(rest).ok_or_else(|| format!("bad set in {term:?}"))?;
        return Ok(LabelReq::In(k.trim().into(), values));
    }
    if let Some(k) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(k.trim().into()));
    }
    if term.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
        return Err(format!("unsupported label requirement {term:?}"));
    }
    Ok(LabelReq::Exists(term.into()))
}

/// The string at a dotted path (empty when absent, as the API server compares a missing field).
fn field(object: &Value, path: &str) -> String {
    let mut v = object;
    for seg in path.split('.') {
        v = &v[seg];
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Selectors {
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Selectors, String> {
        let mut out = Selectors::default();
        for term in terms(labels.unwrap_or("")) {
            out.labels.push(label_req(term)?);
        }
        for term in terms(fields.unwrap_or("")) {
            let (path, value, equal) =
                comparison(term).ok_or_else(|| format!("bad field selector term {term:?}"))?;
            out.fields.push(FieldReq { path, value, equal });
        }
        Ok(out)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str();
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self
                .fields
                .iter()
                .all(|f| (field(object, &f.path) == f.value) == f.equal)
    }
}
