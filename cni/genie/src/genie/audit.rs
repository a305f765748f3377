//! genie's audit records ([`vfaudit`]): one `call` record per invocation (ADD, DEL, CHECK, GC,
//! STATUS) written when it returns, and one `delegate` record per network whose plugins it ran,
//! written when they return. A DEL's records carry the addresses it released, from the pod's cache
//! record. The invocation's context lives in a thread-local for the length of the call (genie
//! runs one call per process; delegates run on the calling thread), so that the code that runs
//! delegates does not thread it through. Writing never fails the call ([`vfaudit::Writer`]).

use std::cell::RefCell;
use std::time::Instant;

use serde_json::Value;
use vfaudit::{ErrorInfo, Kind, PodRef, Record, ResultInfo, Source, Writer};

use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;

struct Call {
    writer: Writer,
    verb: &'static str,
    container_id: String,
    ifname: Option<String>,
    pod: Option<PodRef>,
    /// Every address the call's delegates handed out (ADD) or released (DEL).
    addresses: Vec<String>,
    /// The smart selection of the pod's default network, when one was made.
    selection: Option<vfaudit::Selection>,
    /// Selections made for selectable groups, each written in the delegate record of the
    /// network it chose.
    group_selections: Vec<vfaudit::Selection>,
}

thread_local! {
    static CALL: RefCell<Option<Call>> = const { RefCell::new(None) };
}

/// Starts the call's context (no log: nothing is recorded).
pub(super) fn begin(log: Option<&vfaudit::AuditConfig>, env: &CniEnv, verb: &'static str) {
    let call = log.map(|c| Call {
        writer: Writer::new(c.clone()),
        verb,
        container_id: env.container_id.clone(),
        ifname: env.ifname.as_ref().map(|i| i.to_string()),
        pod: match (
            env.args.k8s_pod_namespace.as_deref(),
            env.args.k8s_pod_name.as_deref(),
        ) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Some(PodRef {
                namespace: ns.to_string(),
                name: name.to_string(),
                uid: env.args.k8s_pod_uid.clone().filter(|u| !u.is_empty()),
            }),
            _ => None,
        },
        addresses: Vec::new(),
        selection: None,
        group_selections: Vec::new(),
    });
    CALL.with(|c| *c.borrow_mut() = call);
}

/// The pod's UID as the API server has it (ADD reads the pod), and its name from a DEL's cache
/// record when CNI_ARGS had none.
pub(super) fn pod_seen(namespace: Option<&str>, name: Option<&str>, uid: Option<&str>) {
    CALL.with(|c| {
        let mut c = c.borrow_mut();
        let Some(call) = c.as_mut() else { return };
        if call.pod.is_none() {
            if let (Some(ns), Some(n)) = (namespace, name) {
                call.pod = Some(PodRef {
                    namespace: ns.to_string(),
                    name: n.to_string(),
                    uid: None,
                });
            }
        }
        if let (Some(p), Some(u)) = (call.pod.as_mut(), uid.filter(|u| !u.is_empty())) {
            p.uid = Some(u.to_string());
        }
    });
}

/// A smart selection made for the pod, with the KPI values behind it, so that reports can list
/// the selections and their reasons: the default network's goes in the call record, a selectable
/// group's in the delegate record of the network it chose.
pub(super) fn selection(sel: &vfkube::kpi::Selection) {
    CALL.with(|c| {
        let mut c = c.borrow_mut();
        let Some(call) = c.as_mut() else { return };
        match sel.group {
            None => call.selection = Some(selection_record(sel)),
            Some(_) => call.group_selections.push(selection_record(sel)),
        }
    });
}

/// The audit form of a selection: the strategy's name as in the conf, the reason (prefixed
/// `fallback:` when no usable KPIs decided it), each candidate's figures by their KPI-file keys.
pub(super) fn selection_record(sel: &vfkube::kpi::Selection) -> vfaudit::Selection {
    let strategy = serde_json::to_value(sel.strategy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let candidates = sel
        .candidates
        .iter()
        .map(|c| {
            let mut kpis = std::collections::BTreeMap::new();
            if let Some(Value::Object(m)) =
                c.kpis.as_ref().and_then(|k| serde_json::to_value(k).ok())
            {
                for (k, v) in m {
                    if k != "sampledAt" {
                        kpis.insert(k, v.as_f64());
                    }
                }
            }
            if let Some(score) = c.score {
                kpis.insert("score".to_string(), Some(score));
            }
            vfaudit::Candidate {
                network: c.network.clone(),
                kpis,
                age_seconds: c.age_seconds,
            }
        })
        .collect();
    vfaudit::Selection {
        group: sel.group.clone(),
        strategy,
        chosen: sel.chosen.clone(),
        reason: match sel.fallback {
            true => format!("fallback: {}", sel.reason),
            false => sel.reason.clone(),
        },
        candidates,
    }
}

/// The addresses of a result, as written in it (`10.1.2.3/24`).
pub(super) fn addresses_of(r: &CniResult) -> Vec<String> {
    r.ips.iter().map(|ip| ip.address.to_string()).collect()
}

/// The type of a network config's first plugin (the one that makes the interface).
pub(super) fn main_plugin(config: &Value) -> Option<String> {
    let first = match config.get("plugins") {
        Some(Value::Array(list)) => list.first()?,
        _ => config,
    };
    first.get("type")?.as_str().map(str::to_string)
}

/// What one network's delegates did.
pub(super) struct Delegated<'a> {
    pub command: CniCommand,
    /// The attachment's container (GC deletes other containers' attachments than its call's).
    pub container_id: &'a str,
    pub network: &'a str,
    pub ifname: &'a str,
    pub config: &'a Value,
    pub device: Option<&'a str>,
    pub started: Instant,
}

/// A delegate record: `addresses` handed out (ADD) or released (DEL), or the error.
pub(super) fn delegate(d: Delegated<'_>, outcome: Result<Vec<String>, &CniError>) {
    CALL.with(|c| {
        let mut c = c.borrow_mut();
        let Some(call) = c.as_mut() else { return };
        let mut r = base(call, Kind::Delegate, d.started);
        r.verb = Some(d.command.as_str().to_string());
        r.container_id = Some(d.container_id.to_string()).filter(|c| !c.is_empty());
        r.network = Some(d.network.to_string());
        r.plugin = main_plugin(d.config);
        r.ifname = Some(d.ifname.to_string());
        r.device = d.device.map(str::to_string);
        if d.command == CniCommand::Add {
            if let Some(i) = call
                .group_selections
                .iter()
                .position(|s| s.chosen == d.network)
            {
                r.selection = Some(call.group_selections.remove(i));
            }
        }
        match outcome {
            Ok(addresses) => {
                call.addresses.extend(addresses.iter().cloned());
                if d.command != CniCommand::Check {
                    r.result = Some(ResultInfo { addresses });
                }
            }
            Err(e) => r.error = Some(error_info(e)),
        }
        call.writer.write(&r);
    });
}

/// The call record, when the call returns; ends the context.
pub(super) fn finish(started: Instant, outcome: Result<(), &CniError>) {
    let Some(call) = CALL.with(|c| c.borrow_mut().take()) else {
        return;
    };
    let mut r = base(&call, Kind::Call, started);
    r.verb = Some(call.verb.to_string());
    r.plugin = Some("genie".to_string());
    r.selection = call.selection.clone();
    match outcome {
        Ok(()) => {
            if matches!(call.verb, "ADD" | "DEL" | "UPDATE") {
                r.result = Some(ResultInfo {
                    addresses: call.addresses.clone(),
                });
            }
        }
        Err(e) => r.error = Some(error_info(e)),
    }
    call.writer.write(&r);
}

fn base(call: &Call, kind: Kind, started: Instant) -> Record {
    Record {
        pod: call.pod.clone(),
        container_id: Some(call.container_id.clone()).filter(|c| !c.is_empty()),
        ifname: call.ifname.clone(),
        duration_us: Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)),
        ..Record::new(Source::Cni, kind)
    }
}

fn error_info(e: &CniError) -> ErrorInfo {
    ErrorInfo {
        code: e.code,
        msg: e.msg.clone(),
    }
}
