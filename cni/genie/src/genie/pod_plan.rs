//! What ADD and UPDATE do first, before anything changes: the pod read from the API, its
//! annotations parsed and bounded, and its attachments planned ([`plan`]).

use serde_json::Value;

use super::error::GenieError;
use super::plan::{self, Planned, PodContext};
use super::{audit, client_for, pod_ref, quarantine};
use crate::annotations::{parse_pod_annotations, PodRef};
use crate::genieconf::GenieConf;
use crate::k8s::Client;
use crate::spec::env::CniEnv;
use crate::timing::timed;

/// What ADD and UPDATE read and work out before changing anything: the pod (CNI_ARGS), its
/// object and annotations from the API, and its attachments as planned from them.
pub(super) struct Planning {
    pub(super) pod: Option<PodRef>,
    pub(super) client: Option<Client>,
    pub(super) pod_obj: Option<crate::k8s::objects::Pod>,
    pub(super) pod_whole: Option<Value>,
    pub(super) planned: Vec<Planned>,
    pub(super) smart: Vec<vfkube::kpi::Selection>,
    pub(super) pod_uid: Option<String>,
}

pub(super) fn read_and_plan(
    env: &CniEnv,
    conf: &GenieConf,
    ifname: &str,
) -> Result<Planning, GenieError> {
    let pod = pod_ref(env);
    let client = match &pod {
        Some(_) => Some(timed("api", || client_for(conf))?),
        None => None,
    };
    let (request, pod_obj, pod_whole) =
        match (&pod, &client) {
            (Some(p), Some(c)) => {
                let (obj, whole) = timed("api", || c.get_pod_object(&p.namespace, &p.name))
                    .map_err(|source| GenieError::ReadPod {
                        pod: p.clone(),
                        source: Box::new(source),
                    })?;
                let req = parse_pod_annotations(p, &obj.metadata.annotations)?;
                // Before any NetworkAttachmentDefinition is read: the pod's own list alone is over.
                let asked = req.networks.len()
                    + req
                        .genie_plugins
                        .as_ref()
                        .map_or(req.logical_networks.len(), Vec::len);
                too_many(p.to_string(), asked, conf.max_networks_per_pod)?;
                (req, Some(obj), Some(whole))
            }
            _ => (Default::default(), None, None),
        };
    let ctx = pod.as_ref().map(|p| PodContext {
        namespace: &p.namespace,
        name: &p.name,
        request: &request,
        switch_to: pod_obj
            .as_ref()
            .and_then(|o| o.metadata.annotations.get(vfkube::kpi::SWITCH_TO))
            .map(String::as_str),
        switch_reason: pod_obj
            .as_ref()
            .and_then(|o| o.metadata.annotations.get(vfkube::kpi::SWITCH_REASON))
            .map(String::as_str),
    });
    let ifname = ifname.to_string();
    let (planned, smart) = timed("plan", || {
        plan::plan_selecting(
            conf,
            &ifname,
            ctx.as_ref(),
            client.as_ref().map(|c| c as &dyn plan::KubeReads),
        )
    })?;
    let pod_name = pod.as_ref().map_or_else(
        || format!("of container {}", env.container_id),
        |p| p.to_string(),
    );
    too_many(pod_name, planned.len(), conf.max_networks_per_pod)?;
    quarantine::require_plugins(env, &planned)?;
    let pod_uid = pod_obj
        .as_ref()
        .map(|o| o.metadata.uid.clone())
        .filter(|u| !u.is_empty())
        .or_else(|| env.args.k8s_pod_uid.clone());
    audit::pod_seen(None, None, pod_uid.as_deref());
    for sel in &smart {
        audit::selection(sel);
    }
    Ok(Planning {
        pod,
        client,
        pod_obj,
        pod_whole,
        planned,
        smart,
        pod_uid,
    })
}

/// Refuses more than `max` attachments for `pod` (code 7).
fn too_many(pod: String, count: usize, max: usize) -> Result<(), GenieError> {
    match count > max {
        true => Err(GenieError::TooManyNetworks { pod, count, max }),
        false => Ok(()),
    }
}
