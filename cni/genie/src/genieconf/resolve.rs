//! Finding the CNI config of a network: a NetworkAttachmentDefinition's spec.config or conf file,
//! a CNI-Genie plugin's conf file, and a LogicalNetwork's subnet applied to its plugin's IPAM.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ResolveError;
use crate::annotations::is_plugin_name;
use crate::k8s::objects::{LogicalNetwork, NetworkAttachmentDefinition};
pub use vfkube::logical::LogicalNetworkError;
use vfkube::netconf::{check_shape, is_genie, parse_spec_config};

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
        let config = parse_spec_config(&namespace, &name, spec, allowed)?;
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

/// Applies a LogicalNetwork's `spec.vlan` and `spec.subnet` to its plugin's config (see
/// [`vfkube::logical::apply_logical_network`]: the vlan needs a bridge or sriov plugin, the
/// subnet must lie inside the plugin's range).
pub fn apply_logical_network(
    resolved: &mut ResolvedConfig,
    ln: &LogicalNetwork,
) -> Result<(), LogicalNetworkError> {
    vfkube::logical::apply_logical_network(&mut resolved.config, ln)
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
