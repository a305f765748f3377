//! The CNI environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH),
//! read from a map handed in by the caller so parsing stays pure. Validation follows libcni; a
//! missing or invalid variable is error code 4 naming it.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use vfcore::{IfName, ParseError};

use super::conf::ConfError;
use super::error::CniError;
use super::is_plain_name;
use super::version::CniVersion;

/// A `CNI_*` variable missing or invalid (CNI code 4, naming the variable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("CNI_COMMAND {0:?} is invalid: expected ADD, DEL, CHECK, VERSION, GC or STATUS")]
    UnknownCommand(String),
    #[error("CNI_CONTAINERID {0:?} is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")]
    InvalidContainerId(String),
    #[error("CNI_IFNAME is invalid: {0}")]
    InvalidIfname(ParseError),
    #[error("CNI_ARGS is invalid: {0:?} is not KEY=VALUE")]
    ArgsNotPair(String),
    #[error("CNI_ARGS is invalid: {0:?} has an empty key")]
    ArgsEmptyKey(String),
    #[error("CNI_ARGS has unknown keys {0:?} and IgnoreUnknown is not set")]
    UnknownArgs(Vec<String>),
}

/// The verb the runtime asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl CniCommand {
    pub const fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
            CniCommand::Gc => "GC",
            CniCommand::Status => "STATUS",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            CniCommand::Add,
            CniCommand::Del,
            CniCommand::Check,
            CniCommand::Version,
            CniCommand::Gc,
            CniCommand::Status,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// The first spec version that has this verb.
    pub const fn min_version(self) -> CniVersion {
        match self {
            CniCommand::Add | CniCommand::Del | CniCommand::Version => CniVersion::V0_1_0,
            CniCommand::Check => CniVersion::V0_4_0,
            CniCommand::Gc | CniCommand::Status => CniVersion::V1_1_0,
        }
    }

    const fn needs_container_id(self) -> bool {
        matches!(self, CniCommand::Add | CniCommand::Del | CniCommand::Check)
    }
    const fn needs_netns(self) -> bool {
        matches!(self, CniCommand::Add | CniCommand::Check)
    }
    const fn needs_ifname(self) -> bool {
        matches!(self, CniCommand::Add | CniCommand::Del | CniCommand::Check)
    }
    const fn needs_path(self) -> bool {
        !matches!(self, CniCommand::Version)
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CNI_ARGS`: `K=V;K=V`. Every pair is kept in order (delegates receive them untouched); the
/// Kubernetes keys are typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: Vec<(String, String)>,
    pub ignore_unknown: bool,
    pub k8s_pod_namespace: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_pod_infra_container_id: Option<String>,
    pub k8s_pod_uid: Option<String>,
}

impl CniArgs {
    /// Keys this crate understands without `IgnoreUnknown`.
    pub const KNOWN: [&'static str; 5] = [
        "IgnoreUnknown",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    ];

    /// Parses `K=V;K=V` (empty means none). A pair without `=` or with an empty key is code 4.
    pub fn parse(s: &str) -> Result<Self, EnvError> {
        let mut args = CniArgs::default();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(EnvError::ArgsNotPair(pair.to_string()));
            };
            if k.is_empty() {
                return Err(EnvError::ArgsEmptyKey(pair.to_string()));
            }
            match k {
                "IgnoreUnknown" => {
                    args.ignore_unknown = matches!(v.to_ascii_lowercase().as_str(), "1" | "true")
                }
                "K8S_POD_NAMESPACE" => args.k8s_pod_namespace = Some(v.to_string()),
                "K8S_POD_NAME" => args.k8s_pod_name = Some(v.to_string()),
                "K8S_POD_INFRA_CONTAINER_ID" => {
                    args.k8s_pod_infra_container_id = Some(v.to_string())
                }
                "K8S_POD_UID" => args.k8s_pod_uid = Some(v.to_string()),
                _ => {}
            }
            args.pairs.push((k.to_string(), v.to_string()));
        }
        Ok(args)
    }

    /// The value of the last pair with key `k`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    /// Keys that are neither in [`CniArgs::KNOWN`] nor in `extra`.
    pub fn unknown_keys<'a>(&'a self, extra: &[&str]) -> Vec<&'a str> {
        self.pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !Self::KNOWN.contains(k) && !extra.contains(k))
            .collect()
    }

    /// As libcni's args loader: unknown keys are an error (code 4) unless `IgnoreUnknown` is set.
    pub fn reject_unknown(&self, extra: &[&str]) -> Result<(), EnvError> {
        let unknown = self.unknown_keys(extra);
        if unknown.is_empty() || self.ignore_unknown {
            Ok(())
        } else {
            Err(EnvError::UnknownArgs(
                unknown.into_iter().map(str::to_string).collect(),
            ))
        }
    }

    /// Back to the `K=V;K=V` form.
    pub fn to_env_string(&self) -> String {
        self.pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The parsed environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: CniCommand,
    /// Empty for VERSION, GC and STATUS.
    pub container_id: String,
    /// Empty when not given (DEL may omit it, GC/STATUS/VERSION have none).
    pub netns: String,
    /// `None` for VERSION, GC and STATUS.
    pub ifname: Option<IfName>,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

/// Checks a container ID as libcni does: non-empty, `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn container_id(id: &str) -> Result<(), EnvError> {
    if id.is_empty() {
        return Err(EnvError::Missing("CNI_CONTAINERID"));
    }
    if !is_plain_name(id) {
        return Err(EnvError::InvalidContainerId(id.to_string()));
    }
    Ok(())
}

/// [`container_id`] as a CNI error (code 4), for callers that keep its message.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    container_id(id).map_err(CniError::from)
}

/// Checks a network name as libcni does: `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$` (code 7, it comes from the config).
pub fn validate_network_name(name: &str) -> Result<(), ConfError> {
    if name.is_empty() {
        return Err(ConfError::NoNetworkName);
    }
    if !is_plain_name(name) {
        return Err(ConfError::NetworkName(name.to_string()));
    }
    Ok(())
}

/// Checks an interface name (vfcore's IfName rules), naming CNI_IFNAME.
pub fn ifname(name: &str) -> Result<IfName, EnvError> {
    IfName::new(name).map_err(EnvError::InvalidIfname)
}

/// [`ifname`] as a CNI error (code 4), for callers that keep its message.
pub fn validate_ifname(name: &str) -> Result<IfName, CniError> {
    ifname(name).map_err(CniError::from)
}

/// Splits CNI_PATH on ':' (empty entries skipped).
pub fn split_path(s: &str) -> Vec<PathBuf> {
    s.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

impl CniEnv {
    /// Reads the process environment into a map for [`CniEnv::from_map`]; the only impure step.
    pub fn capture() -> HashMap<String, String> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("CNI_"))
            .collect()
    }

    /// Parses and validates the variables the command needs.
    pub fn from_map(env: &HashMap<String, String>) -> Result<Self, EnvError> {
        let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
        let command_s = get("CNI_COMMAND");
        if command_s.is_empty() {
            return Err(EnvError::Missing("CNI_COMMAND"));
        }
        let command = CniCommand::parse(command_s)
            .ok_or_else(|| EnvError::UnknownCommand(command_s.to_string()))?;

        let id = get("CNI_CONTAINERID").to_string();
        if command.needs_container_id() || !id.is_empty() {
            container_id(&id)?;
        }

        let netns = get("CNI_NETNS").to_string();
        if command.needs_netns() && netns.is_empty() {
            return Err(EnvError::Missing("CNI_NETNS"));
        }

        let ifname_s = get("CNI_IFNAME");
        let ifname = if command.needs_ifname() || !ifname_s.is_empty() {
            if ifname_s.is_empty() {
                return Err(EnvError::Missing("CNI_IFNAME"));
            }
            Some(ifname(ifname_s)?)
        } else {
            None
        };

        let args = CniArgs::parse(get("CNI_ARGS"))?;

        let path_s = get("CNI_PATH");
        if command.needs_path() && path_s.is_empty() {
            return Err(EnvError::Missing("CNI_PATH"));
        }
        let path = split_path(path_s);

        Ok(Self {
            command,
            container_id: id,
            netns,
            ifname,
            args,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn add_env() -> HashMap<String, String> {
        env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1",
            ),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ])
    }

    #[test]
    fn parses_a_full_add() {
        let e = CniEnv::from_map(&add_env()).unwrap();
        assert_eq!(e.command, CniCommand::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.ifname.unwrap().as_str(), "eth0");
        assert!(e.args.ignore_unknown);
        assert_eq!(e.args.k8s_pod_namespace.as_deref(), Some("ns"));
        assert_eq!(e.args.k8s_pod_name.as_deref(), Some("p"));
        assert_eq!(e.args.k8s_pod_uid.as_deref(), Some("u-1"));
        assert_eq!(e.args.k8s_pod_infra_container_id.as_deref(), Some("abc123"));
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(e.args.to_env_string(), add_env()["CNI_ARGS"]);
    }

    fn err_with(k: &str, v: Option<&str>) -> CniError {
        let mut m = add_env();
        match v {
            Some(v) => m.insert(k.to_string(), v.to_string()),
            None => m.remove(k),
        };
        CniEnv::from_map(&m).unwrap_err().into()
    }

    #[test]
    fn missing_or_invalid_variables_are_code_4_naming_them() {
        let cases: &[(&str, Option<&str>)] = &[
            ("CNI_COMMAND", None),
            ("CNI_COMMAND", Some("MURDER")),
            ("CNI_CONTAINERID", None),
            ("CNI_CONTAINERID", Some("-leading-dash")),
            ("CNI_CONTAINERID", Some("../etc")),
            ("CNI_CONTAINERID", Some("a/b")),
            ("CNI_NETNS", None),
            ("CNI_IFNAME", None),
            ("CNI_IFNAME", Some("this-is-far-too-long")),
            ("CNI_IFNAME", Some("..")),
            ("CNI_IFNAME", Some("a/b")),
            ("CNI_IFNAME", Some("a b")),
            ("CNI_IFNAME", Some("eth0:1")),
            ("CNI_ARGS", Some("K8S_POD_NAME")),
            ("CNI_ARGS", Some("=v")),
            ("CNI_PATH", None),
        ];
        for (k, v) in cases {
            let e = err_with(k, *v);
            assert_eq!(e.code, 4, "{k}={v:?}: {e}");
            assert!(e.msg.contains(k), "{k}={v:?}: {e}");
        }
    }

    #[test]
    fn del_may_omit_the_netns_and_version_needs_nothing() {
        let mut m = add_env();
        m.insert("CNI_COMMAND".into(), "DEL".into());
        m.remove("CNI_NETNS");
        let e = CniEnv::from_map(&m).unwrap();
        assert_eq!(e.netns, "");
        let v = CniEnv::from_map(&env(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(v.command, CniCommand::Version);
        assert!(v.ifname.is_none());
        let gc = CniEnv::from_map(&env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")])).unwrap();
        assert_eq!(gc.command, CniCommand::Gc);
    }

    #[test]
    fn unknown_args_need_ignore_unknown() {
        let a = CniArgs::parse("K8S_POD_NAME=p;MAC=00:11:22:33:44:55").unwrap();
        assert_eq!(a.unknown_keys(&[]), vec!["MAC"]);
        assert_eq!(CniError::from(a.reject_unknown(&[]).unwrap_err()).code, 4);
        assert!(a.reject_unknown(&["MAC"]).is_ok());
        assert_eq!(a.get("MAC"), Some("00:11:22:33:44:55"));
        let b = CniArgs::parse("IgnoreUnknown=true;MAC=x").unwrap();
        assert!(b.reject_unknown(&[]).is_ok());
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
    }

    #[test]
    fn names() {
        assert!(validate_network_name("net-1.a_b").is_ok());
        for bad in ["", "../x", ".hidden"] {
            assert_eq!(
                CniError::from(validate_network_name(bad).unwrap_err()).code,
                7
            );
        }
        assert!(validate_container_id("A0_.-z").is_ok());
    }
}
