//! What the pod record keeps of a planned attachment besides its config and result (the
//! capability args, the device, the device-info file), read back by DEL, CHECK and GC; and the
//! attachment's network-status.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::delegate::Injected;
use super::plan::Planned;
use crate::cache::PodAttachment;
use crate::netstatus::AttachmentStatus;
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::CniVersion;

const EXTRA_RUNTIME_CONFIG: &str = "runtimeConfig";
const EXTRA_CNI_ARGS: &str = "cniArgs";
const EXTRA_DEFAULT: &str = "default";
const EXTRA_DEVICE_ID: &str = "deviceID";
/// The resource an attachment took its device from (read by the agent's KPIs).
pub const EXTRA_RESOURCE: &str = "resourceName";
pub(super) const EXTRA_DEVICE_INFO_FILE: &str = "deviceInfoFile";
/// The selectable group (`namespace/name`) the attachment's network was picked from.
pub const EXTRA_GROUP: &str = "group";
/// The interface's name in the pod when it is not the one its delegates know it by (a switch
/// renames the new interface to the old one's name; DEL names it back first).
pub(super) const EXTRA_LINK_NAME: &str = "linkName";

/// The group the attachment's network was picked from.
pub(super) fn group_of(a: &PodAttachment) -> Option<&str> {
    a.extra.get(EXTRA_GROUP).and_then(Value::as_str)
}

/// The interface's name in the pod.
pub(super) fn link_name(a: &PodAttachment) -> &str {
    a.extra
        .get(EXTRA_LINK_NAME)
        .and_then(Value::as_str)
        .unwrap_or(&a.if_name)
}

/// The group's members and strategy, as the selection saw them (the agent's threshold switch
/// picks among them without reading the group from the API).
pub const EXTRA_GROUP_MEMBERS: &str = "groupMembers";
pub const EXTRA_GROUP_STRATEGY: &str = "groupStrategy";

/// Marks each attachment whose network a group's selection chose with that group, its members
/// and strategy.
pub(super) fn mark_groups(attachments: &mut [PodAttachment], smart: &[vfkube::kpi::Selection]) {
    for s in smart {
        let Some(g) = &s.group else { continue };
        for a in attachments.iter_mut().filter(|a| a.network == s.chosen) {
            a.extra.insert(EXTRA_GROUP.into(), Value::String(g.clone()));
            a.extra.insert(
                EXTRA_GROUP_MEMBERS.into(),
                Value::Array(
                    s.candidates
                        .iter()
                        .map(|c| Value::String(c.network.clone()))
                        .collect(),
                ),
            );
            if let Ok(v) = serde_json::to_value(s.strategy) {
                a.extra.insert(EXTRA_GROUP_STRATEGY.into(), v);
            }
        }
    }
}

pub(super) fn attachment_record(p: &Planned) -> PodAttachment {
    let mut extra = Map::new();
    if !p.injected.runtime_config.is_empty() {
        extra.insert(
            EXTRA_RUNTIME_CONFIG.into(),
            Value::Object(p.injected.runtime_config.clone()),
        );
    }
    if let Some(a) = &p.injected.cni_args {
        extra.insert(EXTRA_CNI_ARGS.into(), Value::Object(a.clone()));
    }
    extra.insert(EXTRA_DEFAULT.into(), Value::Bool(p.default));
    if let Some(d) = &p.device {
        extra.insert(EXTRA_DEVICE_ID.into(), Value::String(d.id.clone()));
        extra.insert(EXTRA_RESOURCE.into(), Value::String(d.resource.clone()));
    }
    if let Some(f) = &p.device_info_file {
        extra.insert(
            EXTRA_DEVICE_INFO_FILE.into(),
            Value::String(f.display().to_string()),
        );
    }
    PodAttachment {
        network: p.network.clone(),
        if_name: p.ifname.clone(),
        conf: p.config.clone(),
        result: None,
        extra,
    }
}

/// The PCI address of the device the attachment took (genie's pools), or the one its runtime
/// config named (a VF the runtime passed), when either is recorded.
pub(super) fn device_of(a: &PodAttachment) -> Option<&str> {
    a.extra
        .get(EXTRA_DEVICE_ID)
        .or_else(|| match a.extra.get(EXTRA_RUNTIME_CONFIG) {
            Some(Value::Object(m)) => m.get("deviceID"),
            _ => None,
        })
        .and_then(Value::as_str)
}

/// A recorded attachment as the plan it came from (for its status, its policy interface).
pub(super) fn planned_of(a: &PodAttachment) -> Planned {
    let text = |k: &str| a.extra.get(k).and_then(Value::as_str).map(str::to_string);
    Planned {
        network: a.network.clone(),
        ifname: a.if_name.clone(),
        config: a.conf.clone(),
        injected: injected_of(a),
        default: a.extra.get(EXTRA_DEFAULT) == Some(&Value::Bool(true)),
        default_route: Vec::new(),
        resources: text(EXTRA_RESOURCE).into_iter().collect(),
        device: match (text(EXTRA_DEVICE_ID), text(EXTRA_RESOURCE)) {
            (Some(id), Some(resource)) => Some(crate::devices::Assigned { resource, id }),
            _ => None,
        },
        device_info_file: text(EXTRA_DEVICE_INFO_FILE).map(std::path::PathBuf::from),
    }
}

pub(super) fn injected_of(a: &PodAttachment) -> Injected {
    Injected {
        runtime_config: match a.extra.get(EXTRA_RUNTIME_CONFIG) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        },
        cni_args: match a.extra.get(EXTRA_CNI_ARGS) {
            Some(Value::Object(m)) => Some(m.clone()),
            _ => None,
        },
    }
}

pub(super) fn cached_result(a: &PodAttachment) -> Result<Option<CniResult>, CniError> {
    match &a.result {
        None => Ok(None),
        Some(v) => CniResult::from_value(v.clone(), CniVersion::LATEST)
            .map(Some)
            .map_err(CniError::from),
    }
}

pub(super) fn status_of(p: &Planned, r: &CniResult, netns: &str) -> AttachmentStatus {
    let device_info = crate::devices::info::status_info(
        p.device_info_file.as_deref(),
        p.device.as_ref().map(|d| d.id.as_str()),
    );
    // Interfaces in the pod (the sandbox), and the one the attachment is named after.
    let in_pod: BTreeSet<usize> = r
        .interfaces
        .iter()
        .enumerate()
        .filter(|(_, i)| !i.sandbox.is_empty() || netns.is_empty())
        .map(|(n, _)| n)
        .collect();
    let own = r
        .interfaces
        .iter()
        .find(|i| i.name == p.ifname && (!i.sandbox.is_empty() || netns.is_empty()));
    let ips: Vec<_> = r
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|n| in_pod.contains(&n)))
        .collect();
    AttachmentStatus {
        network: p.network.clone(),
        interface: Some(p.ifname.clone()),
        ips: ips.iter().map(|ip| ip.address.addr).collect(),
        mac: own.map(|i| i.mac.clone()).filter(|m| !m.is_empty()),
        mtu: own.and_then(|i| i.mtu),
        default: p.default,
        dns: (!r.dns.is_empty())
            .then(|| serde_json::to_value(&r.dns).ok())
            .flatten(),
        device_info,
        gateways: ips.iter().filter_map(|ip| ip.gateway).collect(),
    }
}
