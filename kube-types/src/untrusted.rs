//! What a tenant's network config may not say.
//!
//! A NetworkAttachmentDefinition's `spec.config` and a pod's `cni-args` are written by tenants,
//! and every key of them reaches a plugin that runs as root on the node. Only the node's own files
//! (the genie conf, the conf files in `confDir`) choose host paths, credentials, API endpoints and
//! devices. So before genie hands such a config to any plugin, ours or another's, these are
//! refused, at any depth of the JSON:
//!
//! - keys that name host paths in the plugins of the field: every key whose name ends in `dir`,
//!   `file`, `path`, `socket` or `sock` (`dataDir`, `logFile`, `stateDir`, `cniDir`,
//!   `daemonSocketPath`, `kernelpath`, `CNIDeviceInfoFile`, ...), and `resolvConf`, `kubeconfig`,
//!   `cniOutput`;
//! - keys that choose a device: `deviceID`, `pciBusID`, `device`, `hwaddr`, `rdmaDevice`. A
//!   device reaches a pod only as the kubelet allocated it (the NAD's `resourceName`);
//! - keys that belong to the runtime or to genie's own conf: `runtimeConfig`, `prevResult`,
//!   `kubernetes`, `k8s_api_root`, `delegates`, `clusterNetwork`, `defaultNetworks`;
//! - rules for the host's firewall: portmap's `conditionsV4`/`conditionsV6` and
//!   `externalSetMarkChain`, the firewall plugin's `iptablesAdminChainName`;
//! - a `type` that is not a plain plugin name (`ipam.type: "../../bin/x"`), and genie itself as a
//!   type (the clearer error; [`crate::nesting`] is what makes it impossible);
//! - tuning's `sysctl` entries outside `net.`, or with `/` or `..`;
//! - any key with a character outside ASCII: Go plugins match keys case-insensitively with
//!   Unicode folding (`ſ` is `s`), so a non-ASCII spelling could reach a refused key.
//!
//! Keys are compared ASCII case-insensitively, as Go's JSON decoding matches them.

use serde_json::{Map, Value};

use crate::annotations::is_plugin_name;

/// Suffixes of key names that name host files or directories in the plugins of the field.
const PATH_SUFFIXES: &[&str] = &["dir", "file", "path", "socket", "sock"];

/// Whole key names (lower case) refused in a tenant's config, with the reason.
const REFUSED: &[(&str, &str)] = &[
    ("resolvconf", "names a host file"),
    ("kubeconfig", "names a host file with credentials"),
    ("cnioutput", "names a host file"),
    (
        "deviceid",
        "chooses a device; a device reaches a pod only through the kubelet's allocation (the NetworkAttachmentDefinition's resourceName)",
    ),
    ("pcibusid", "chooses a device"),
    ("device", "chooses a host device"),
    ("hwaddr", "chooses a host device"),
    ("rdmadevice", "chooses a device"),
    ("runtimeconfig", "is set by the runtime and genie only"),
    ("prevresult", "is set by the runtime and genie only"),
    ("kubernetes", "belongs to the node's genie conf"),
    ("k8s_api_root", "belongs to the node's genie conf"),
    ("delegates", "belongs to the node's genie conf"),
    ("clusternetwork", "belongs to the node's genie conf"),
    ("defaultnetworks", "belongs to the node's genie conf"),
    ("conditionsv4", "adds rules to the host's firewall"),
    ("conditionsv6", "adds rules to the host's firewall"),
    ("externalsetmarkchain", "names a chain of the host's firewall"),
    ("iptablesadminchainname", "names a chain of the host's firewall"),
];

/// Host-path keys the node's genie conf lets tenants set, each to a path at or under one of its
/// prefixes (genie conf `allowedTenantPaths`: `{"dataDir": ["/var/lib/cni/networks"]}`). Empty
/// by default: no tenant chooses a host path unless the node says where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPaths {
    /// Lower-case key name, the prefixes its value may lie under.
    allowed: Vec<(String, Vec<std::path::PathBuf>)>,
}

impl TenantPaths {
    /// `key` may name a path under `prefixes` (absolute paths without `.` or `..`).
    pub fn allow(&mut self, key: &str, prefixes: Vec<std::path::PathBuf>) -> Result<(), String> {
        if let Some(p) = prefixes
            .iter()
            .find(|p| !is_clean_absolute(&p.to_string_lossy()))
        {
            return Err(format!(
                "{} is not an absolute path without '.' or '..'",
                p.display()
            ));
        }
        self.allowed.push((key.to_ascii_lowercase(), prefixes));
        Ok(())
    }

    fn prefixes(&self, key: &str) -> Option<&[std::path::PathBuf]> {
        let lower = key.to_ascii_lowercase();
        self.allowed
            .iter()
            .find(|(k, _)| *k == lower)
            .map(|(_, p)| p.as_slice())
    }
}

fn is_clean_absolute(s: &str) -> bool {
    s.starts_with('/') && !s.split('/').any(|c| c == "." || c == "..")
}

/// Deeper than any real network config; deeper JSON is refused rather than walked.
pub const MAX_DEPTH: usize = 32;

/// A key or value a tenant's config may not carry: `path` is where it is (`ipam.dataDir`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} {problem}")]
pub struct Refused {
    pub path: String,
    pub problem: String,
}

fn refused(path: &str, problem: impl Into<String>) -> Refused {
    Refused {
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// Why `key` may not appear in a tenant's config, if it may not.
fn refused_key(key: &str) -> Option<String> {
    if !key.is_ascii() {
        return Some("has a character outside ASCII; keys of network configs are ASCII".into());
    }
    let lower = key.to_ascii_lowercase();
    if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == lower) {
        return Some((*why).to_string());
    }
    PATH_SUFFIXES
        .iter()
        .any(|s| lower.ends_with(s))
        .then(|| "names a host path; only the node's own conf files choose host paths".into())
}

/// One walk over a tenant's JSON, with what the node allows.
struct Walk<'a> {
    allowed: &'a TenantPaths,
}

impl Walk<'_> {
    fn value(&self, path: &str, v: &Value, depth: usize) -> Result<(), Refused> {
        if depth > MAX_DEPTH {
            return Err(refused(
                path,
                format!("is nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        match v {
            Value::Object(m) => self.map(path, m, depth + 1),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, e)| self.value(&format!("{path}[{i}]"), e, depth + 1)),
            _ => Ok(()),
        }
    }

    /// A key the node allows tenants to set, to a path under one of its prefixes.
    fn allowed_path(&self, path: &str, key: &str, v: &Value) -> Option<Result<(), Refused>> {
        let prefixes = self.allowed.prefixes(key)?;
        let ok = v.as_str().is_some_and(|s| {
            is_clean_absolute(s)
                && prefixes
                    .iter()
                    .any(|p| std::path::Path::new(s).starts_with(p))
        });
        Some(match ok {
            true => Ok(()),
            false => Err(refused(
                path,
                format!(
                    "must be a path at or below {} (the node's allowedTenantPaths), without '.' or '..'",
                    prefixes
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        })
    }

    fn map(&self, prefix: &str, m: &Map<String, Value>, depth: usize) -> Result<(), Refused> {
        for (k, v) in m {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            self.entry(&path, k, v, depth)?;
        }
        Ok(())
    }

    fn entry(&self, path: &str, k: &str, v: &Value, depth: usize) -> Result<(), Refused> {
        if !k.is_ascii() {
            return Err(refused(
                path,
                "has a character outside ASCII; keys of network configs are ASCII",
            ));
        }
        if let Some(allowed) = self.allowed_path(path, k, v) {
            return allowed;
        }
        if let Some(why) = refused_key(k) {
            return Err(refused(path, why));
        }
        match k.to_ascii_lowercase().as_str() {
            "type" => check_type(path, v)?,
            "sysctl" => check_sysctl(path, v)?,
            // Capability declarations (`"CNIDeviceInfoFile": true`) name what the plugin wants the
            // runtime to inject; their values are what is checked, and they are only booleans.
            "capabilities" if v.is_object() => return check_capabilities(path, v),
            _ => {}
        }
        self.value(path, v, depth)
    }
}

fn check_type(path: &str, v: &Value) -> Result<(), Refused> {
    let Some(t) = v.as_str() else {
        return Ok(());
    };
    if !is_plugin_name(t) {
        return Err(refused(path, format!("{t:?} is not a plain plugin name")));
    }
    if t.eq_ignore_ascii_case("genie") {
        return Err(refused(
            path,
            "names genie itself; genie is the node's meta-plugin and is never a delegate",
        ));
    }
    Ok(())
}

fn check_capabilities(path: &str, v: &Value) -> Result<(), Refused> {
    let Some(m) = v.as_object() else {
        return Ok(());
    };
    for (name, on) in m {
        if !name.is_ascii() || !on.is_boolean() {
            return Err(refused(
                &format!("{path}.{name}"),
                "is not a capability declaration (an ASCII name and true or false)",
            ));
        }
    }
    Ok(())
}

fn check_sysctl(path: &str, v: &Value) -> Result<(), Refused> {
    let Some(m) = v.as_object() else {
        return Ok(());
    };
    for name in m.keys() {
        let ok = name.starts_with("net.")
            && !name.contains("..")
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !ok {
            return Err(refused(
                &format!("{path}.{name}"),
                "is not a network sysctl of the pod's namespace (net.*, no '/' or '..')",
            ));
        }
    }
    Ok(())
}

/// Checks a tenant's network config (a conf or a conflist object) before any plugin sees it. Its
/// `name` becomes a directory name in plugins (host-local's leases), so it must be a plain name.
pub fn check_config(config: &Map<String, Value>, allowed: &TenantPaths) -> Result<(), Refused> {
    if let Some(name) = config.get("name") {
        if !name.as_str().is_some_and(is_network_name) {
            return Err(refused(
                "name",
                "is not a network name (letters, digits, '-', '_' and '.', starting with a letter or digit)",
            ));
        }
    }
    Walk { allowed }.map("", config, 0)
}

/// A CNI network name: `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`, at most 253 bytes.
fn is_network_name(s: &str) -> bool {
    s.len() <= 253
        && s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Checks a pod's NPWG `cni-args` (they become the plugins' `args.cni`); no host path is allowed
/// there.
pub fn check_cni_args(args: &Map<String, Value>) -> Result<(), Refused> {
    Walk {
        allowed: &TenantPaths::default(),
    }
    .map("cni-args", args, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), Refused> {
        check_config(v.as_object().unwrap(), &TenantPaths::default())
    }

    #[test]
    fn ordinary_configs_of_the_field_pass() {
        for v in [
            json!({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan", "master": "ens2f0",
                   "mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.1.0.0/24",
                   "routes": [{"dst": "0.0.0.0/0"}], "gateway": "10.1.0.1"}}),
            json!({"cniVersion": "1.0.0", "name": "v100", "type": "sriov", "vlan": 100,
                   "spoofchk": "on", "trust": "off",
                   "capabilities": {"mac": true, "ips": true, "CNIDeviceInfoFile": true},
                   "ipam": {"type": "static"}}),
            json!({"cniVersion": "1.0.0", "name": "c", "plugins": [
                   {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.2.0.0/16"}]]}},
                   {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                   {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}, "mtu": 1400},
                   {"type": "bandwidth", "ingressRate": 1000, "ingressBurst": 100}]}),
            json!({"type": "ipvlan", "master": "eth1", "args": {"cni": {"labels": [{"key": "a"}]}}}),
        ] {
            check(v.clone()).unwrap_or_else(|e| panic!("{v} refused: {e}"));
        }
    }

    #[test]
    fn host_paths_devices_and_runtime_keys_are_refused_at_any_depth_and_case() {
        for (v, path) in [
            (
                json!({"type": "sriov", "logFile": "/etc/passwd"}),
                "logFile",
            ),
            (json!({"type": "sriov", "LOGFILE": "/x"}), "LOGFILE"),
            (json!({"type": "sriov", "stateDir": "/etc"}), "stateDir"),
            (
                json!({"type": "bridge", "ipam": {"type": "host-local", "dataDir": "/etc"}}),
                "ipam.dataDir",
            ),
            (
                json!({"type": "bridge", "ipam": {"type": "host-local", "resolvConf": "/etc/shadow"}}),
                "ipam.resolvConf",
            ),
            (
                json!({"type": "bridge", "ipam": {"type": "dhcp", "daemonSocketPath": "/x"}}),
                "ipam.daemonSocketPath",
            ),
            (
                json!({"type": "sriov", "deviceID": "0000:01:10.1"}),
                "deviceID",
            ),
            (json!({"type": "host-device", "device": "eth0"}), "device"),
            (
                json!({"type": "host-device", "pciBusID": "0000:01:00.0"}),
                "pciBusID",
            ),
            (
                json!({"type": "host-device", "kernelpath": "/sys/x"}),
                "kernelpath",
            ),
            (
                json!({"type": "sriov", "runtimeConfig": {"CNIDeviceInfoFile": "/etc/x"}}),
                "runtimeConfig",
            ),
            (
                json!({"plugins": [{"type": "bridge"}, {"type": "debug", "cniOutput": "/etc/x"}]}),
                "plugins[1].cniOutput",
            ),
            (
                json!({"type": "genie", "kubernetes": {"k8s_api_root": "http://10.0.0.1"}}),
                "kubernetes",
            ),
            (
                json!({"plugins": [{"type": "portmap", "conditionsV4": ["-j", "ACCEPT"]}]}),
                "plugins[0].conditionsV4",
            ),
            (
                json!({"type": "x", "kubeconfig": "/etc/kubernetes/admin.conf"}),
                "kubeconfig",
            ),
            (
                json!({"type": "x", "a": [{"b": {"podSocket": "/x"}}]}),
                "a[0].b.podSocket",
            ),
            (
                json!({"type": "x", "capabilities": {"CNIDeviceInfoFile": "/etc/x"}}),
                "capabilities.CNIDeviceInfoFile",
            ),
        ] {
            let e = check(v.clone()).expect_err(&v.to_string());
            assert_eq!(e.path, path, "{v}: {e}");
        }
    }

    #[test]
    fn types_must_be_plain_and_never_genie() {
        for (v, path) in [
            (json!({"type": "../../usr/bin/x"}), "type"),
            (
                json!({"type": "bridge", "ipam": {"type": "/bin/sh"}}),
                "ipam.type",
            ),
            (json!({"type": "genie"}), "type"),
            (
                json!({"type": "macvlan", "ipam": {"type": "Genie"}}),
                "ipam.type",
            ),
            (
                json!({"plugins": [{"type": "bridge"}, {"type": "genie"}]}),
                "plugins[1].type",
            ),
        ] {
            let e = check(v.clone()).expect_err(&v.to_string());
            assert_eq!(e.path, path, "{v}: {e}");
        }
    }

    #[test]
    fn non_ascii_keys_sysctls_and_deep_nesting_are_refused() {
        // U+017F folds to 's' in Go's case-insensitive key match: "reſolvConf" is resolvConf.
        let e = check(json!({"type": "bridge", "ipam": {"re\u{17f}olvConf": "/etc/shadow"}}))
            .unwrap_err();
        assert!(e.problem.contains("ASCII"), "{e}");
        for name in ["kernel.core_pattern", "net.ipv4/../../kernel.x", "net..x"] {
            let v = json!({"type": "tuning", "sysctl": {name: "1"}});
            assert!(check(v).is_err(), "{name}");
        }
        let mut deep = json!("x");
        for _ in 0..(MAX_DEPTH + 2) {
            deep = json!({ "a": deep });
        }
        let e = check(json!({"type": "bridge", "x": deep})).unwrap_err();
        assert!(e.problem.contains("nested deeper"), "{e}");
    }

    #[test]
    fn the_node_may_let_tenants_choose_paths_below_its_prefixes() {
        let mut allowed = TenantPaths::default();
        allowed
            .allow("dataDir", vec!["/var/lib/cni/networks".into()])
            .unwrap();
        let with = |dir: &str| {
            let v = json!({"type": "bridge", "ipam": {"type": "host-local", "DataDir": dir}});
            check_config(v.as_object().unwrap(), &allowed)
        };
        with("/var/lib/cni/networks/blue").unwrap();
        with("/var/lib/cni/networks").unwrap();
        for bad in [
            "/var/lib/cni/networks/../../../etc",
            "/var/lib/cni/networks/./x",
            "/var/lib/cni/networks-evil/x",
            "relative/x",
            "/etc",
        ] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.path, "ipam.DataDir", "{bad}");
            assert!(e.problem.contains("/var/lib/cni/networks"), "{e}");
        }
        // Other path keys stay refused.
        let v = json!({"type": "sriov", "logFile": "/var/lib/cni/networks/x"});
        assert!(check_config(v.as_object().unwrap(), &allowed).is_err());
        assert!(allowed.allow("dataDir", vec!["/a/../b".into()]).is_err());
    }

    #[test]
    fn the_network_name_is_a_plain_name() {
        for bad in ["../../etc", "a/b", "", ".x", "x y"] {
            let e = check(json!({"name": bad, "type": "bridge"})).unwrap_err();
            assert_eq!(e.path, "name", "{bad}");
        }
        check(json!({"name": "blue-1.x_y", "type": "bridge"})).unwrap();
    }

    #[test]
    fn cni_args_are_checked_like_configs() {
        let ok = json!({"ips": ["10.0.0.1/24"], "mac": "02:00:00:00:00:01"});
        check_cni_args(ok.as_object().unwrap()).unwrap();
        let bad = json!({"logFile": "/etc/x"});
        let e = check_cni_args(bad.as_object().unwrap()).unwrap_err();
        assert_eq!(e.path, "cni-args.logFile");
    }
}
