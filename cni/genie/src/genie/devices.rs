//! The planned attachments' devices and device-info files, settled before anything is attached:
//! a pod that lacks a device one of its networks needs is refused here, with nothing to undo.

use serde_json::Value;

use super::delegate::as_list;
use super::plan::Planned;
use crate::devices::{self, info, DeviceError, Need, PodIdentity, Sources};
use crate::genieconf::GenieConf;
use crate::spec::env::CniEnv;

const DEVICE_ID: &str = "deviceID";

/// Gives every attachment that needs one its device (`deviceID` in its config) and every
/// attachment with a device, or with a plugin declaring `CNIDeviceInfoFile`, its device-info file.
/// `in_use`: devices the pod's running attachments already have (a hot-add must not take them).
pub fn prepare(
    env: &CniEnv,
    conf: &GenieConf,
    pod: Option<&PodIdentity<'_>>,
    planned: &mut [Planned],
    in_use: &std::collections::BTreeSet<String>,
) -> Result<(), DeviceError> {
    // A device named by the pod's annotation is a wish, never an order: it is given only when it
    // is one the kubelet allocated to the pod from the network's resource.
    let mut wanted: Vec<Option<String>> = Vec::with_capacity(planned.len());
    for p in planned.iter_mut() {
        let w = match p.injected.runtime_config.remove(DEVICE_ID) {
            Some(Value::String(id)) => Some(id),
            _ => None,
        };
        if let (Some(id), true) = (&w, p.resources.is_empty()) {
            return Err(DeviceError::WishWithoutResource {
                pod: pod
                    .map(|p| format!("pod {}/{}: ", p.namespace, p.name))
                    .unwrap_or_default(),
                network: p.network.clone(),
                ifname: p.ifname.clone(),
                id: id.clone(),
            });
        }
        wanted.push(w);
    }
    let needs: Vec<Need<'_>> = planned
        .iter()
        .zip(&wanted)
        .filter(|(p, _)| !p.resources.is_empty())
        .map(|(p, w)| Need {
            network: &p.network,
            ifname: &p.ifname,
            resources: &p.resources,
            wanted: w.as_deref(),
        })
        .collect();
    if let Some(first) = needs.first() {
        let pod = pod.ok_or_else(|| DeviceError::NoPod {
            network: first.network.to_string(),
            ifname: first.ifname.to_string(),
            resources: first.resources.join(" or "),
        })?;
        let sources = Sources {
            pod_resources_socket: &conf.pod_resources_socket,
            checkpoint: &conf.kubelet_checkpoint,
            timeout: devices::POD_RESOURCES_TIMEOUT,
        };
        let mut held = crate::timing::timed("podresources", || devices::lookup(&sources, pod))?;
        for ids in held.values_mut() {
            ids.retain(|id| !in_use.contains(id));
        }
        let assigned = devices::assign(pod, &needs, &held)?;
        let mut assigned = assigned.into_iter();
        for p in planned.iter_mut().filter(|p| !p.resources.is_empty()) {
            if let Some(a) = assigned.next() {
                devices::set_device_id(&mut p.config, &a.id);
                p.device = Some(a);
            }
        }
    }
    for p in planned.iter_mut() {
        let declares = as_list(&p.config)
            .map(|l| l.plugins.iter().any(|c| c.declares(info::CAPABILITY)))
            .unwrap_or(false);
        if p.device.is_none() && !declares {
            continue;
        }
        let path = info::cni_file(
            &conf.device_info_dir,
            &p.network,
            &env.container_id,
            &p.ifname,
        )?;
        if declares {
            p.injected.runtime_config.insert(
                info::CAPABILITY.into(),
                Value::String(path.display().to_string()),
            );
        }
        p.device_info_file = Some(path);
    }
    Ok(())
}
