//! Running one attachment's network (a conf or a conflist) through its plugins as libcni would:
//! ADD in order with each result passed on as `prevResult`, DEL in reverse with the cached result,
//! CHECK in order.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::exec::{exec_add, exec_no_result, Invocation};
use crate::spec::conf::{DelegateContext, NetConf, NetConfList};
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::CniVersion;
use crate::timing::timed;

/// Bound on one delegate call.
pub const DELEGATE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the meta-plugin adds to a network's config for one attachment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injected {
    /// Capability args (`ips`, `mac`, `portMappings`, `bandwidth`, `deviceID`, ...).
    pub runtime_config: Map<String, Value>,
    /// NPWG `cni-args`, merged into `args.cni`.
    pub cni_args: Option<Map<String, Value>>,
}

/// A network config as a list, whatever its form (a single conf becomes a list of one).
pub fn as_list(config: &Value) -> Result<NetConfList, CniError> {
    let bytes = serde_json::to_vec(config)
        .map_err(|e| CniError::invalid_config(format!("config cannot be encoded: {e}")))?;
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
    Ok(plugin.delegate_config(&DelegateContext {
        name: &list.name,
        cni_version: version,
        prev_result: prev,
        runtime_config: &inj.runtime_config,
        cni_args: inj.cni_args.as_ref(),
    })?)
}

/// Names the network and interface in a delegate's error.
fn context(network: &str, ifname: &str, e: CniError) -> CniError {
    CniError {
        msg: format!("network {network} ({ifname}): {}", e.msg),
        ..e
    }
}

/// ADD through every plugin of the list; the last result is the attachment's.
pub fn add(
    env: &CniEnv,
    network: &str,
    ifname: &str,
    list: &NetConfList,
    inj: &Injected,
) -> Result<CniResult, CniError> {
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
) -> Result<CniResult, CniError> {
    let version = list.negotiated_version()?;
    list.check_capabilities(&inj.runtime_config)
        .map_err(|e| context(network, ifname, e.into()))?;
    let mut inv = invocation(env, CniCommand::Add, ifname);
    let mut prev: Option<CniResult> = None;
    for plugin in &list.plugins {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(context(
                    network,
                    ifname,
                    CniError::io(format!(
                        "no time was left to run plugin {:?}",
                        plugin.plugin_type
                    )),
                ));
            }
            inv.timeout = DELEGATE_TIMEOUT.min(left);
        }
        let conf = config_for(plugin, list, version, prev.as_ref(), inj)?;
        let result = timed("delegates", || {
            exec_add(&plugin.plugin_type, &inv, &conf, version)
        })
        .map_err(|e| context(network, ifname, e.to_cni_error()))?;
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
) -> Result<(), CniError> {
    let version = list.negotiated_version()?;
    let inv = invocation(env, CniCommand::Del, ifname);
    let mut errors = Vec::new();
    for plugin in list.plugins.iter().rev() {
        let outcome = config_for(plugin, list, version, cached, inj).and_then(|conf| {
            timed("delegates", || {
                exec_no_result(&plugin.plugin_type, &inv, &conf)
            })
            .map_err(|e| e.to_cni_error())
        });
        if let Err(e) = outcome {
            warn!(network, ifname, plugin = %plugin.plugin_type, error = %e.msg, "delegate DEL failed");
            errors.push(context(network, ifname, e));
        }
    }
    combine(errors)
}

/// CHECK through every plugin in order with the cached result.
pub fn check(
    env: &CniEnv,
    network: &str,
    ifname: &str,
    list: &NetConfList,
    inj: &Injected,
    cached: Option<&CniResult>,
) -> Result<(), CniError> {
    let version = list.negotiated_version()?;
    if list.disable_check || !version.allows(CniCommand::Check) {
        return Ok(());
    }
    let inv = invocation(env, CniCommand::Check, ifname);
    for plugin in &list.plugins {
        let conf = config_for(plugin, list, version, cached, inj)?;
        exec_no_result(&plugin.plugin_type, &inv, &conf)
            .map_err(|e| context(network, ifname, e.to_cni_error()))?;
    }
    Ok(())
}

/// One error from several: the first one's code, every message.
pub fn combine(mut errors: Vec<CniError>) -> Result<(), CniError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let msg = errors
                .iter()
                .map(|e| e.msg.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let first = errors.remove(0);
            Err(CniError {
                msg: format!("{} failures: {msg}", errors.len() + 1),
                ..first
            })
        }
    }
}
