//! The policy socket's protocol, version 1: one request line, one reply line, both JSON.
//!
//! ```text
//! → {"version":1,"op":"setup","namespace":"team","name":"web","uid":"5f0c…",
//!    "netns":"/var/run/netns/cni-1234","labels":{"app":"web"},
//!    "interfaces":[{"ifname":"net1","network":"team/blue"}]}
//! ← {"ok":true,"applied":true}             the table is in place (applied: nft ran)
//! ← {"ok":false,"error":"pod team/web: …"} nothing was installed
//! ```
//!
//! Everything in a request comes from genie, which is trusted, but the socket is the agent's
//! boundary: every field is checked as if it came from a tenant (names by Kubernetes' rules,
//! interface names by the kernel's, the namespace path against the places runtimes keep
//! namespaces), unknown fields are refused, and a request is at most [`MAX_REQUEST`] bytes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vfcore::netns::NetNs;
use vfcore::{IfName, SysRoot};
use vfkube::objects::{is_dns_label, is_dns_subdomain, is_label_key, is_label_value};

use crate::policy::engine::PendingPod;
use crate::policy::model::{Interface, NetworkKey, Pod};

/// The protocol version this agent speaks.
pub const VERSION: u64 = 1;
/// The largest request accepted, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;
/// The most interfaces one request may name (genie's `maxNetworksPerPod` is at most 256).
pub const MAX_INTERFACES: usize = 256;
/// The most labels one request may carry.
pub const MAX_LABELS: usize = 512;
/// The longest pod UID accepted (Kubernetes' are 36-character UUIDs).
const MAX_UID: usize = 128;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("no request arrived within {timeout:?}")]
    Timeout { timeout: std::time::Duration },
    #[error("the request is empty")]
    Empty,
    #[error("the request is not JSON: {reason}")]
    Json { reason: String },
    #[error("protocol version {got} is not supported; this agent speaks version {VERSION}")]
    Version { got: String },
    #[error("operation {op} is unknown; the only one is \"setup\"")]
    Op { op: String },
    #[error("the setup request is malformed: {reason}")]
    Shape { reason: String },
    #[error("pod {pod}: {problem}")]
    Invalid { pod: String, problem: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    // Checked before this is decoded.
    #[serde(rename = "version")]
    _version: u64,
    #[serde(rename = "op")]
    _op: String,
    namespace: String,
    name: String,
    uid: String,
    netns: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    interfaces: Vec<RawInterface>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    ifname: String,
    network: String,
}

/// A checked setup request (the namespace path is checked apart: it needs the filesystem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupRequest {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub netns: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub interfaces: Vec<(String, NetworkKey)>,
}

impl SetupRequest {
    /// `namespace/name`.
    pub fn pod(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod as the engine keeps it until the watches know it.
    pub fn pending(&self) -> PendingPod {
        PendingPod {
            uid: self.uid.clone(),
            pod: Pod {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                labels: self.labels.clone(),
                interfaces: self
                    .interfaces
                    .iter()
                    .map(|(ifname, network)| Interface {
                        network: network.clone(),
                        ifname: ifname.clone(),
                        ips: Vec::new(),
                    })
                    .collect(),
                netns: Some(self.netns.clone()),
            },
        }
    }
}

/// The reply line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn done(applied: bool) -> Self {
        Self {
            ok: true,
            applied: Some(applied),
            error: None,
        }
    }

    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            applied: None,
            error: Some(error.into()),
        }
    }

    /// The reply as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self)
            .unwrap_or_else(|_| br#"{"ok":false,"error":"the reply cannot be encoded"}"#.to_vec());
        v.push(b'\n');
        v
    }
}

/// Parses and checks one request (everything but the namespace path's target).
pub fn parse(line: &[u8]) -> Result<SetupRequest, RequestError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    let v: Value = serde_json::from_slice(line).map_err(|e| RequestError::Json {
        reason: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(RequestError::Shape {
            reason: "it is not a JSON object".into(),
        });
    }
    match v.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
        Some(other) => {
            return Err(RequestError::Version {
                got: other.to_string(),
            })
        }
        None => {
            return Err(RequestError::Version {
                got: "(none given)".into(),
            })
        }
    }
    match v.get("op") {
        Some(Value::String(op)) if op == "setup" => {}
        Some(other) => {
            return Err(RequestError::Op {
                op: other.to_string(),
            })
        }
        None => {
            return Err(RequestError::Op {
                op: "(none given)".into(),
            })
        }
    }
    let raw: RawRequest = serde_json::from_value(v).map_err(|e| RequestError::Shape {
        reason: e.to_string(),
    })?;
    check(raw)
}

fn check(raw: RawRequest) -> Result<SetupRequest, RequestError> {
    let invalid = |pod: &str, problem: String| RequestError::Invalid {
        pod: pod.to_string(),
        problem,
    };
    if !is_dns_label(&raw.namespace) {
        return Err(invalid(
            &format!("{:?}/{:?}", raw.namespace, raw.name),
            format!("namespace {:?} is not a DNS-1123 label", raw.namespace),
        ));
    }
    if !is_dns_subdomain(&raw.name) {
        return Err(invalid(
            &format!("{}/{:?}", raw.namespace, raw.name),
            format!("name {:?} is not a DNS-1123 subdomain", raw.name),
        ));
    }
    let pod = format!("{}/{}", raw.namespace, raw.name);
    if raw.uid.is_empty()
        || raw.uid.len() > MAX_UID
        || !raw
            .uid
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return Err(invalid(
            &pod,
            format!(
                "uid {:?} is not 1 to {MAX_UID} letters, digits and '-'",
                raw.uid
            ),
        ));
    }
    let netns = check_netns_form(&raw.netns).map_err(|p| invalid(&pod, p))?;
    if raw.labels.len() > MAX_LABELS {
        return Err(invalid(
            &pod,
            format!("{} labels, more than {MAX_LABELS}", raw.labels.len()),
        ));
    }
    for (k, v) in &raw.labels {
        if !is_label_key(k) {
            return Err(invalid(
                &pod,
                format!("label key {k:?} is not a valid label key"),
            ));
        }
        if !is_label_value(v) {
            return Err(invalid(
                &pod,
                format!("label {k:?} has value {v:?}, which is not a valid label value"),
            ));
        }
    }
    if raw.interfaces.len() > MAX_INTERFACES {
        return Err(invalid(
            &pod,
            format!(
                "{} interfaces, more than {MAX_INTERFACES}",
                raw.interfaces.len()
            ),
        ));
    }
    let mut interfaces: Vec<(String, NetworkKey)> = Vec::with_capacity(raw.interfaces.len());
    for i in raw.interfaces {
        IfName::new(i.ifname.as_str())
            .map_err(|e| invalid(&pod, format!("interface name {:?}: {e}", i.ifname)))?;
        if i.ifname.contains(['*', '\\']) {
            return Err(invalid(
                &pod,
                format!(
                    "interface name {:?} contains '*' or '\\', which nftables reads as a wildcard",
                    i.ifname
                ),
            ));
        }
        let network = match i.network.split_once('/') {
            Some((ns, name)) if is_dns_label(ns) && is_dns_subdomain(name) => {
                NetworkKey::new(ns, name)
            }
            _ => {
                return Err(invalid(
                    &pod,
                    format!(
                    "network {:?} of interface {} is not <namespace>/<name> with DNS-1123 names",
                    i.network, i.ifname
                ),
                ))
            }
        };
        if interfaces.iter().any(|(n, _)| *n == i.ifname) {
            return Err(invalid(
                &pod,
                format!("interface {} is named twice", i.ifname),
            ));
        }
        interfaces.push((i.ifname, network));
    }
    Ok(SetupRequest {
        namespace: raw.namespace,
        name: raw.name,
        uid: raw.uid,
        netns,
        labels: raw.labels,
        interfaces,
    })
}

/// An absolute path of plain components (no empty, `.` or `..` one).
fn check_netns_form(s: &str) -> Result<PathBuf, String> {
    let plain = s.strip_prefix('/').is_some_and(|rest| {
        rest.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    });
    match plain {
        true => Ok(PathBuf::from(s)),
        false => Err(format!(
            "netns {s:?} is not an absolute path of plain components"
        )),
    }
}

/// Where the agent accepts network namespace paths from genie: a file directly in one of
/// `dirs` (where runtimes pin namespaces), or `/proc/<pid>/ns/net`.
#[derive(Debug, Clone)]
pub struct NetnsPaths {
    pub dirs: Vec<PathBuf>,
    /// The root `/proc` is under.
    pub proc_root: SysRoot,
}

impl Default for NetnsPaths {
    fn default() -> Self {
        let host = SysRoot::host();
        Self {
            dirs: vec![host.run_netns(), PathBuf::from("/var/run/netns")],
            proc_root: host,
        }
    }
}

impl NetnsPaths {
    /// Checks that `path` is in an accepted place and is a network namespace.
    pub fn check(&self, path: &Path) -> Result<(), String> {
        let in_dir = path
            .parent()
            .is_some_and(|parent| self.dirs.iter().any(|d| d == parent));
        let in_proc = || {
            let mut c = path.components().rev();
            let pid = match (c.next(), c.next(), c.next()) {
                (Some(Component::Normal(net)), Some(Component::Normal(ns)), Some(pid))
                    if net == "net" && ns == "ns" =>
                {
                    pid.as_os_str().to_str().and_then(|p| p.parse::<u32>().ok())
                }
                _ => None,
            };
            pid.is_some_and(|pid| self.proc_root.proc_netns(pid) == path)
        };
        if !in_dir && !in_proc() {
            let dirs: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
            return Err(format!(
                "netns {} is neither in {} nor a process's ns/net",
                path.display(),
                dirs.join(" or ")
            ));
        }
        NetNs::open(path)
            .map(drop)
            .map_err(|e| vfcore::error::chain(&e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"version": 1, "op": "setup", "namespace": "team", "name": "web-0", "uid": "5f0c-11",
               "netns": "/run/netns/cni-1", "labels": {"app": "web", "example.com/tier": ""},
               "interfaces": [{"ifname": "net1", "network": "team/blue"},
                              {"ifname": "eth1", "network": "other/red.v1"}]})
    }

    fn refused(v: &Value) -> String {
        parse(v.to_string().as_bytes()).unwrap_err().to_string()
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = good();
        v[key] = value;
        v
    }

    #[test]
    fn a_good_request_becomes_a_pending_pod() {
        let r = parse(format!("{}\n", good()).as_bytes()).unwrap();
        assert_eq!(r.pod(), "team/web-0");
        assert_eq!(r.netns, PathBuf::from("/run/netns/cni-1"));
        let p = r.pending();
        assert_eq!(p.uid, "5f0c-11");
        assert_eq!(p.pod.labels["app"], "web");
        assert_eq!(
            p.pod.interfaces[1].network,
            NetworkKey::new("other", "red.v1")
        );
        assert!(p.pod.interfaces.iter().all(|i| i.ips.is_empty()));
    }

    #[test]
    fn what_is_not_a_request_is_named() {
        assert_eq!(parse(b"\n").unwrap_err(), RequestError::Empty);
        assert!(parse(b"{\"version\":1,")
            .unwrap_err()
            .to_string()
            .starts_with("the request is not JSON: "));
        assert_eq!(
            refused(&json!([1])),
            "the setup request is malformed: it is not a JSON object"
        );
        assert_eq!(
            refused(&with("version", json!(2))),
            "protocol version 2 is not supported; this agent speaks version 1"
        );
        assert_eq!(
            refused(&with("version", json!("1"))),
            "protocol version \"1\" is not supported; this agent speaks version 1"
        );
        let mut v = good();
        v.as_object_mut().unwrap().remove("version");
        assert_eq!(
            refused(&v),
            "protocol version (none given) is not supported; this agent speaks version 1"
        );
        assert_eq!(
            refused(&with("op", json!("teardown"))),
            "operation \"teardown\" is unknown; the only one is \"setup\""
        );
        assert!(refused(&with("extra", json!(1))).contains("unknown field `extra`"));
        let mut v = good();
        v.as_object_mut().unwrap().remove("uid");
        assert!(
            refused(&v).contains("missing field `uid`"),
            "{}",
            refused(&v)
        );
    }

    #[test]
    fn every_field_is_checked_and_the_error_names_the_pod() {
        let cases: Vec<(Value, &str)> = vec![
            (with("namespace", json!("Team")), "pod \"Team\"/\"web-0\": namespace \"Team\" is not a DNS-1123 label"),
            (with("name", json!("../x")), "pod team/\"../x\": name \"../x\" is not a DNS-1123 subdomain"),
            (with("uid", json!("a b")), "pod team/web-0: uid \"a b\" is not 1 to 128 letters, digits and '-'"),
            (with("netns", json!("/run/netns/../../etc/x")), "pod team/web-0: netns \"/run/netns/../../etc/x\" is not an absolute path of plain components"),
            (with("netns", json!("run/netns/x")), "pod team/web-0: netns \"run/netns/x\" is not an absolute path of plain components"),
            (with("netns", json!("/run/netns/./x")), "pod team/web-0: netns \"/run/netns/./x\" is not"),
            (with("netns", json!("/run/netns//x")), "pod team/web-0: netns \"/run/netns//x\" is not"),
            (with("labels", json!({"a": "b c"})), "pod team/web-0: label \"a\" has value \"b c\", which is not a valid label value"),
            (with("labels", json!({"-a": "b"})), "pod team/web-0: label key \"-a\" is not a valid label key"),
            (with("interfaces", json!([{"ifname": "../x", "network": "team/blue"}])),
             "pod team/web-0: interface name \"../x\": "),
            (with("interfaces", json!([{"ifname": "net*", "network": "team/blue"}])),
             "pod team/web-0: interface name \"net*\" contains '*' or '\\', which nftables reads as a wildcard"),
            (with("interfaces", json!([{"ifname": "net1", "network": "../../etc"}])),
             "pod team/web-0: network \"../../etc\" of interface net1 is not <namespace>/<name> with DNS-1123 names"),
            (with("interfaces", json!([{"ifname": "net1", "network": "team/a/b"}])),
             "pod team/web-0: network \"team/a/b\" of interface net1 is not"),
            (with("interfaces", json!([{"ifname": "net1", "network": "blue"}])),
             "pod team/web-0: network \"blue\" of interface net1 is not"),
            (with("interfaces", json!([{"ifname": "net1", "network": "team/a"}, {"ifname": "net1", "network": "team/b"}])),
             "pod team/web-0: interface net1 is named twice"),
        ];
        for (v, want) in cases {
            let got = refused(&v);
            assert!(got.starts_with(want), "got {got:?}, want {want:?}");
        }
        let many: Vec<Value> = (0..300)
            .map(|i| json!({"ifname": format!("n{i}"), "network": "team/blue"}))
            .collect();
        assert_eq!(
            refused(&with("interfaces", Value::Array(many))),
            "pod team/web-0: 300 interfaces, more than 256"
        );
    }

    #[test]
    fn namespace_paths_must_be_where_runtimes_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let paths = NetnsPaths {
            dirs: vec![dir.path().to_path_buf()],
            proc_root: SysRoot::host(),
        };
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let e = paths.check(&file).unwrap_err();
        assert!(e.contains("is not a network namespace"), "{e}");
        let e = paths.check(&dir.path().join("missing")).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "opening network namespace {} failed",
                dir.path().join("missing").display()
            )),
            "{e}"
        );
        let e = paths.check(Path::new("/etc/passwd")).unwrap_err();
        assert!(e.contains("is neither in"), "{e}");
        let e = paths.check(&dir.path().join("sub/x")).unwrap_err();
        assert!(e.contains("is neither in"), "{e}");
        // A process's namespace is accepted: our own.
        let own = SysRoot::host().proc_netns(std::process::id());
        assert_eq!(paths.check(&own), Ok(()));
        assert!(paths.check(Path::new("/proc/1/ns/mnt")).is_err());
        assert!(paths.check(Path::new("/proc/self/ns/net")).is_err());
    }
}
