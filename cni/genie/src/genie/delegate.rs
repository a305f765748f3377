//! Running one attachment's network (a conf or a conflist) through its plugins as libcni would:
//! ADD in order with each result passed on as `prevResult`, DEL in reverse with the cached result,
//! CHECK in order.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::exec::{exec_add, exec_no_result, ExecError, Invocation};
use crate::spec::conf::{DelegateContext, NetConf, NetConfList};
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::CniVersion;
use crate::timing::timed;

/// Bound on one delegate call.
pub const DELEGATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why running a network through its plugins failed.
#[derive(Debug, thiserror::Error)]
pub enum DelegateError {
    #[error("config cannot be encoded")]
    Encode(#[source] serde_json::Error),
    /// The CNI protocol refused the network's config or the cached result (its own code).
    #[error(transparent)]
    Spec(CniError),
    /// A plugin of the network could not run, or failed (its own CNI error).
    #[error("network {network} ({ifname})")]
    Exec {
        network: String,
        ifname: String,
        #[source]
        source: Box<ExecError>,
    },
    /// The protocol refused the network's config for this attachment.
    #[error("network {network} ({ifname}): {}", .source.msg)]
    Refused {
        network: String,
        ifname: String,
        source: CniError,
    },
    #[error("network {network} ({ifname}): no time was left to run plugin {plugin:?}")]
    NoTimeLeft {
        network: String,
        ifname: String,
        plugin: String,
    },
    /// DEL goes on past failures: all of them, the first one's code.
    #[error("{} failures: {}", .0.len(), super::error::join(.0))]
    Several(Vec<DelegateError>),
}

impl From<CniError> for DelegateError {
    fn from(e: CniError) -> Self {
        DelegateError::Spec(e)
    }
}

/// The protocol's refusal of a config, with the code spec picks for it.
impl From<crate::spec::conf::ConfError> for DelegateError {
    fn from(e: crate::spec::conf::ConfError) -> Self {
        DelegateError::Spec(e.into())
    }
}

/// What the meta-plugin adds to a network's config for one attachment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injected {
    /// Capability args (`ips`, `mac`, `portMappings`, `bandwidth`, `deviceID`, ...).
    pub runtime_config: Map<String, Value>,
    /// NPWG `cni-args`, merged into `args.cni`.
    pub cni_args: Option<Map<String, Value>>,
}

/// A network config as a list, whatever its form (a single conf becomes a list of one).
pub fn as_list(config: &Value) -> Result<NetConfList, DelegateError> {
    let bytes = serde_json::to_vec(config).map_err(DelegateError::Encode)?;
    Ok(NetConfList::from_bytes_any(&bytes)?)
}

fn invocation(env: &CniEnv, command: CniCommand, ifname: &str) -> Invocation {
    Invocation::from_env(env, command, ifname, DELEGATE_TIMEOUT)
}

fn config_for(
    plugin: &NetConf,
    list: &NetConfList,
    version: CniVersion,
    prev: Option<&CniResult>,
    inj: &Injected,
) -> Result<Vec<u8>, CniError> {
    plugin
        .delegate_config(&DelegateContext {
            name: &list.name,
            cni_version: version,
            prev_result: prev,
            runtime_config: &inj.runtime_config,
            cni_args: inj.cni_args.as_ref(),
        })
        .map_err(CniError::from)
}

fn refused<E: Into<CniError>>(network: &str, ifname: &str) -> impl FnOnce(E) -> DelegateError {
    let (network, ifname) = (network.to_string(), ifname.to_string());
    move |source| DelegateError::Refused {
        network,
        ifname,
        source: source.into(),
    }
}

fn failed(network: &str, ifname: &str) -> impl FnOnce(ExecError) -> DelegateError {
    let (network, ifname) = (network.to_string(), ifname.to_string());
    move |source| DelegateError::Exec {
        network,
        ifname,
        source: Box::new(source),
    }
}

/// ADD through every plugin of the list; the last result is the attachment's.
pub fn add(
    env: &CniEnv,
    network: &str,
    ifname: &str,
    list: &NetConfList,
    inj: &Injected,
) -> Result<CniResult, DelegateError> {
    add_until(env, network, ifname, list, inj, None)
}

/// As [`add`], each plugin bounded by [`DELEGATE_TIMEOUT`] or what is left until `deadline`,
/// whichever is less; a plugin that would start at or after the deadline does not start.
pub fn add_until(
    env: &CniEnv,
    network: &str,
    ifname: &str,
    list: &NetConfList,
    inj: &Injected,
    deadline: Option<Instant>,
) -> Result<CniResult, DelegateError> {
    let version = list.negotiated_version()?;
    list.check_capabilities(&inj.runtime_config)
        .map_err(refused(network, ifname))?;
    let mut inv = invocation(env, CniCommand::Add, ifname);
    let mut prev: Option<CniResult> = None;
    for plugin in &list.plugins {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DelegateError::NoTimeLeft {
                    network: network.to_string(),
                    ifname: ifname.to_string(),
                    plugin: plugin.plugin_type.clone(),
                });
            }
            inv.timeout = DELEGATE_TIMEOUT.min(left);
        }
        let conf = config_for(plugin, list, version, prev.as_ref(), inj)?;
        let result = timed("delegates", || {
            exec_add(&plugin.plugin_type, &inv, &conf, version)
        })
        .map_err(failed(network, ifname))?;
        prev = Some(result);
    }
    info!(network, ifname, "attached");
    Ok(prev.unwrap_or_else(|| CniResult::empty(version)))
}

/// DEL through every plugin in reverse, continuing past failures; the errors are returned together.
pub fn del(
    env: &CniEnv,
    network: &str,
    ifname: &str,
    list: &NetConfList,
    inj: &Injected,
    cached: Option<&CniResult>,
) -> Result<(), DelegateError> {
    let version = list.negotiated_version()?;
    let inv = invocation(env, CniCommand::Del, ifname);
    let mut errors = Vec::new();
    for plugin in list.plugins.iter().rev() {
        let outcome = config_for(plugin, list, version, cached, inj)
            .map_err(refused(network, ifname))
            .and_then(|conf| {
                timed("delegates", || {
                    exec_no_result(&plugin.plugin_type, &inv, &conf)
                })
                .map_err(failed(network, ifname))
            });
        if let Err(e) = outcome {
            warn!(network, ifname, plugin = %plugin.plugin_type, error = %crate::spec::error::chain(&e), "delegate DEL failed");
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(DelegateError::Several(errors)),
    }
}

/// CHECK through every plugin in order with the cached result.
pub fn check(
    env: &CniEnv,
    network: &str,
    ifname: &str,
    list: &NetConfList,
    inj: &Injected,
    cached: Option<&CniResult>,
) -> Result<(), DelegateError> {
    let version = list.negotiated_version()?;
    if list.disable_check || !version.allows(CniCommand::Check) {
        return Ok(());
    }
    let inv = invocation(env, CniCommand::Check, ifname);
    for plugin in &list.plugins {
        let conf = config_for(plugin, list, version, cached, inj)?;
        exec_no_result(&plugin.plugin_type, &inv, &conf).map_err(failed(network, ifname))?;
    }
    Ok(())
}
