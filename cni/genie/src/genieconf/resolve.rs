//! Finding the CNI config of a network: a NetworkAttachmentDefinition's spec.config or conf file,
//! a CNI-Genie plugin's conf file, and a LogicalNetwork's subnet applied to its plugin's IPAM.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ResolveError;
use crate::annotations::{is_plugin_name, IpCidr};
use crate::k8s::objects::{LogicalNetwork, NetworkAttachmentDefinition};

/// Where a resolved config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    SpecConfig,
    File(PathBuf),
}

/// A NetworkAttachmentDefinition's CNI config: a single conf or a conflist (`plugins`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedConfig {
    /// The JSON object; `name` is set (to the NAD's name when spec.config had none).
    pub config: Map<String, Value>,
    pub source: ConfigSource,
}

impl ResolvedConfig {
    pub fn is_conflist(&self) -> bool {
        self.config.get("plugins").is_some_and(Value::is_array)
    }

    pub fn name(&self) -> Option<&str> {
        self.config.get("name").and_then(Value::as_str)
    }
}

/// The config of a NAD: its `spec.config` when not empty, else the file in `conf_dir` (`.conf`,
/// `.json`, `.conflist`, in file-name order) whose JSON `name` equals the NAD's name. File names
/// come from listing the directory; none is built from the NAD's name. Unparsable files are skipped.
/// A `spec.config` is a tenant's: it must pass [`super::untrusted::check_config`] (the files of
/// `conf_dir` are the node's own).
pub fn resolve_nad_config(
    nad: &NetworkAttachmentDefinition,
    conf_dir: &Path,
    allowed: &super::untrusted::TenantPaths,
) -> Result<ResolvedConfig, ResolveError> {
    let namespace = nad.metadata.namespace.clone();
    let name = nad.metadata.name.clone();
    let spec = nad.spec.config.trim();
    if !spec.is_empty() {
        let spec_err = |problem: String| ResolveError::SpecConfig {
            namespace: namespace.clone(),
            name: name.clone(),
            problem,
        };
        let v: Value = serde_json::from_str(spec).map_err(|e| spec_err(e.to_string()))?;
        let Value::Object(mut config) = v else {
            return Err(spec_err("it is not a JSON object".into()));
        };
        check_shape(&config).map_err(spec_err)?;
        match config.get("name") {
            None | Some(Value::Null) => {
                config.insert("name".into(), Value::String(name.clone()));
            }
            Some(Value::String(_)) => {}
            Some(_) => return Err(spec_err("\"name\" must be a string".into())),
        }
        super::untrusted::check_config(&config, allowed).map_err(|refused| {
            ResolveError::Untrusted {
                namespace: namespace.clone(),
                name: name.clone(),
                refused,
            }
        })?;
        return Ok(ResolvedConfig {
            config,
            source: ConfigSource::SpecConfig,
        });
    }
    find_conf_file(conf_dir, &name)?.ok_or(ResolveError::NoFile {
        namespace,
        name,
        conf_dir: conf_dir.to_path_buf(),
    })
}

/// The conf files of `conf_dir` (`.conf`, `.json`, `.conflist`) that hold a JSON object, in
/// file-name order. Unreadable or unparsable files are skipped.
fn conf_files(conf_dir: &Path) -> Result<Vec<ResolvedConfig>, ResolveError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .map_err(|source| ResolveError::ReadDir {
            conf_dir: conf_dir.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "json" | "conflist")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let Ok(bytes) = crate::bounded::read(&path, crate::bounded::CONFIG_MAX) else {
            tracing::debug!(path = %path.display(), "unreadable conf file skipped");
            continue;
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(config)) => out.push(ResolvedConfig {
                config,
                source: ConfigSource::File(path),
            }),
            _ => {
                tracing::debug!(path = %path.display(), "conf file that is not a JSON object skipped")
            }
        }
    }
    Ok(out)
}

/// The first conf file in `conf_dir` whose JSON `name` is `name`. genie's own conf (`"type":
/// "genie"`) is never chosen: a NetworkAttachmentDefinition named like it must not make genie its
/// own delegate.
pub fn find_conf_file(conf_dir: &Path, name: &str) -> Result<Option<ResolvedConfig>, ResolveError> {
    Ok(conf_files(conf_dir)?
        .into_iter()
        .find(|r| r.name() == Some(name) && check_shape(&r.config).is_ok() && !is_genie(&r.config)))
}

/// Whether a conf (or any plugin of a conflist) is genie's own.
fn is_genie(c: &Map<String, Value>) -> bool {
    let genie = |c: &Map<String, Value>| {
        c.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("genie"))
    };
    match c.get("plugins") {
        Some(Value::Array(p)) => p.iter().filter_map(Value::as_object).any(genie),
        _ => genie(c),
    }
}

/// The conf of a CNI-Genie plugin (`cni: "weave"`): the first file whose `name` is the plugin,
/// else the first whose `type` (or, for a conflist, its first plugin's `type`) is the plugin.
/// genie's own conf (`"type": "genie"`) is never chosen.
pub fn find_plugin_conf(
    conf_dir: &Path,
    plugin: &str,
) -> Result<Option<ResolvedConfig>, ResolveError> {
    if !is_plugin_name(plugin) {
        return Err(ResolveError::PluginName {
            plugin: plugin.to_string(),
        });
    }
    let mut files: Vec<ResolvedConfig> = conf_files(conf_dir)?
        .into_iter()
        .filter(|r| check_shape(&r.config).is_ok() && !is_genie(&r.config))
        .collect();
    let index = files
        .iter()
        .position(|r| r.name() == Some(plugin))
        .or_else(|| {
            files
                .iter()
                .position(|r| first_type(&r.config) == Some(plugin))
        });
    Ok(index.map(|i| files.swap_remove(i)))
}

fn first_type(c: &Map<String, Value>) -> Option<&str> {
    match c.get("plugins") {
        Some(Value::Array(p)) => p
            .first()
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str),
        _ => c.get("type").and_then(Value::as_str),
    }
}

/// A LogicalNetwork's subnet that cannot be applied to its plugin's config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LogicalNetwork {namespace}/{name}: {problem}")]
pub struct LogicalNetworkError {
    pub namespace: String,
    pub name: String,
    pub problem: String,
}

/// Applies a LogicalNetwork's `spec.subnet` to its plugin's config: the subnet replaces the
/// plugin's `ipam.subnet` (or the matching `ipam.ranges` set) and must lie inside the plugin's
/// range. A gateway, rangeStart or rangeEnd outside the new subnet is dropped. An empty subnet
/// changes nothing.
pub fn apply_logical_network(
    resolved: &mut ResolvedConfig,
    ln: &LogicalNetwork,
) -> Result<(), LogicalNetworkError> {
    let err = |problem: String| LogicalNetworkError {
        namespace: ln.metadata.namespace.clone(),
        name: ln.metadata.name.clone(),
        problem,
    };
    let subnet_text = ln.spec.subnet.trim();
    if subnet_text.is_empty() {
        return Ok(());
    }
    let subnet: IpCidr = subnet_text
        .parse()
        .map_err(|p: String| err(format!("spec.subnet: {p}")))?;
    let plugin = ln.spec.plugin.clone();
    let ipam = ipam_mut(&mut resolved.config).ok_or_else(|| {
        err(format!(
            "the config of plugin {plugin:?} has no ipam section to apply spec.subnet to"
        ))
    })?;
    let parse = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| s.parse::<IpCidr>().ok())
    };
    if let Some(outer) = parse(ipam.get("subnet")) {
        if !contains(outer, subnet) {
            return Err(err(format!(
                "spec.subnet {subnet} is not inside the range {outer} of plugin {plugin:?}"
            )));
        }
        ipam.insert("subnet".into(), Value::String(subnet.to_string()));
        for key in ["gateway", "rangeStart", "rangeEnd"] {
            let outside = ipam
                .get(key)
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok())
                .is_some_and(|a| {
                    !contains(
                        subnet,
                        IpCidr {
                            addr: a,
                            prefix: subnet.prefix,
                        },
                    )
                });
            if outside {
                ipam.remove(key);
            }
        }
        return Ok(());
    }
    if let Some(Value::Array(sets)) = ipam.get_mut("ranges") {
        let mut ranges_seen = Vec::new();
        for set in sets.iter_mut() {
            let inside = set.as_array().is_some_and(|ranges| {
                ranges.iter().any(|r| match parse(r.get("subnet")) {
                    Some(outer) => {
                        ranges_seen.push(outer.to_string());
                        contains(outer, subnet)
                    }
                    None => false,
                })
            });
            if inside {
                *set = serde_json::json!([{ "subnet": subnet.to_string() }]);
                return Ok(());
            }
        }
        return Err(err(format!(
            "spec.subnet {subnet} is not inside the ranges of plugin {plugin:?} ({})",
            ranges_seen.join(", ")
        )));
    }
    Err(err(format!(
        "the ipam of plugin {plugin:?} has no subnet for spec.subnet to narrow"
    )))
}

/// The `ipam` object of a conf, or of the first plugin of a conflist that has one.
fn ipam_mut(config: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    if config.get("plugins").is_some_and(Value::is_array) {
        let plugins = config.get_mut("plugins")?.as_array_mut()?;
        return plugins
            .iter_mut()
            .find_map(|p| p.get_mut("ipam").and_then(Value::as_object_mut));
    }
    config.get_mut("ipam").and_then(Value::as_object_mut)
}

/// Whether `inner` lies inside `outer` (same family, longer or equal prefix, same network bits).
pub(crate) fn contains(outer: IpCidr, inner: IpCidr) -> bool {
    use std::net::IpAddr;
    if inner.prefix < outer.prefix {
        return false;
    }
    match (outer.addr, inner.addr) {
        (IpAddr::V4(o), IpAddr::V4(i)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(outer.prefix))
                .unwrap_or(0);
            u32::from(o) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(o), IpAddr::V6(i)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(outer.prefix))
                .unwrap_or(0);
            u128::from(o) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// A conf needs a plain `type`; a conflist needs a non-empty `plugins` list of such confs.
fn check_shape(config: &Map<String, Value>) -> Result<(), String> {
    let check_type = |c: &Map<String, Value>| -> Result<(), String> {
        match c.get("type").and_then(Value::as_str) {
            Some(t) if is_plugin_name(t) => Ok(()),
            Some(t) => Err(format!("plugin type {t:?} is not a plain file name")),
            None => Err("it has no \"type\"".into()),
        }
    };
    match config.get("plugins") {
        Some(Value::Array(plugins)) => {
            if plugins.is_empty() {
                return Err("\"plugins\" is empty".into());
            }
            for p in plugins {
                check_type(
                    p.as_object()
                        .ok_or("an element of \"plugins\" is not an object")?,
                )?;
            }
            Ok(())
        }
        Some(_) => Err("\"plugins\" is not a list".into()),
        None => check_type(config),
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
