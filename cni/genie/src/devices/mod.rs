//! Devices behind attachments: which device-plugin devices the kubelet allocated to the pod
//! (PodResources, else the kubelet checkpoint), which one each resource-backed attachment gets
//! (the pod's device IDs of that resource sorted, the Nth attachment of the resource gets the Nth
//! device), how the delegate is told (`deviceID`), and the NPWG device-info files ([`info`]).

pub mod checkpoint;
pub mod info;
pub mod podresources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::info;

/// Why the pod's devices could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{pod}: cannot learn its devices")]
    PodResources {
        pod: String,
        #[source]
        source: podresources::Error,
    },
    #[error("{pod}: cannot learn its devices: {unreachable}, and without the pod's UID the kubelet checkpoint cannot be read")]
    NoUid {
        pod: String,
        unreachable: podresources::Error,
    },
    #[error("{pod}: cannot learn its devices: {unreachable}; and {checkpoint}")]
    Checkpoint {
        pod: String,
        unreachable: podresources::Error,
        checkpoint: checkpoint::Error,
    },
    #[error("{pod}: the kubelet reports device {id:?} of resource {resource}, which is not a usable device ID")]
    BadDeviceId {
        pod: String,
        id: String,
        resource: String,
    },
    #[error(transparent)]
    NotHeld(Box<NotHeld>),
    #[error(transparent)]
    Shortfall(Box<Shortfall>),
    /// The attachment's device-info file name cannot be made.
    #[error(transparent)]
    InfoPath(vfdp::devinfo::Error),
    /// Writing or removing the attachment's device-info file failed.
    #[error(transparent)]
    InfoWrite(vfdp::devinfo::Error),
    #[error("{pod}network {network} ({ifname}) asks for deviceID {id:?} in the pod's annotation, but the network has no {}: a device reaches a pod only through the kubelet's allocation", crate::k8s::objects::RESOURCE_NAME_ANNOTATION)]
    WishWithoutResource {
        /// `pod ns/name: `, or empty without a pod.
        pod: String,
        network: String,
        ifname: String,
        id: String,
    },
    #[error("network {network} ({ifname}) needs a device of resource {resources}, but CNI_ARGS name no pod to look its devices up for")]
    NoPod {
        network: String,
        ifname: String,
        resources: String,
    },
}

/// A pod's annotation asks for a device it does not hold, or one another of its networks asks for.
#[derive(Debug, thiserror::Error)]
#[error("{pod}: network {network} ({ifname}) asks for deviceID {wanted:?}, which the kubelet did not allocate to the pod from resource {resources} (it holds: {held}), or which another of its networks asks for too; a device reaches a pod only through the kubelet's allocation")]
pub struct NotHeld {
    pub pod: String,
    pub network: String,
    pub ifname: String,
    pub wanted: String,
    /// `a or b`.
    pub resources: String,
    /// The devices the pod holds, `none` without any.
    pub held: String,
}

/// A pod holds fewer devices of a resource than its networks need.
#[derive(Debug, thiserror::Error)]
#[error("{pod}: network {network} ({ifname}) needs a device of resource {resources}, but the pod holds {held} and {wanted} of its attachments need one: {request}")]
pub struct Shortfall {
    pub pod: String,
    pub network: String,
    pub ifname: String,
    pub resources: String,
    pub held: usize,
    pub wanted: usize,
    /// What to put in the pod's resources.
    pub request: String,
}

/// Device IDs by resource name.
pub type PodDevices = BTreeMap<String, BTreeSet<String>>;

/// Bound on the PodResources call.
pub const POD_RESOURCES_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the kubelet tells which devices a pod holds.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    pub pod_resources_socket: &'a Path,
    pub checkpoint: &'a Path,
    pub timeout: Duration,
}

/// The pod a lookup is for.
#[derive(Debug, Clone, Copy)]
pub struct PodIdentity<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Needed for the checkpoint, which knows pods by UID only.
    pub uid: Option<&'a str>,
}

impl PodIdentity<'_> {
    fn label(&self) -> String {
        format!("pod {}/{}", self.namespace, self.name)
    }
}

/// The pod's devices by resource: PodResources `List`, or the checkpoint when nothing listens on
/// the PodResources socket.
pub fn lookup(src: &Sources<'_>, pod: &PodIdentity<'_>) -> Result<PodDevices, DeviceError> {
    let unreachable = match podresources::pod_devices(
        src.pod_resources_socket,
        pod.namespace,
        pod.name,
        src.timeout,
    ) {
        Ok(d) => return Ok(d),
        Err(e @ podresources::Error::Unreachable { .. }) => e,
        Err(source) => {
            return Err(DeviceError::PodResources {
                pod: pod.label(),
                source,
            })
        }
    };
    let Some(uid) = pod.uid.filter(|u| !u.is_empty()) else {
        return Err(DeviceError::NoUid {
            pod: pod.label(),
            unreachable,
        });
    };
    info!(error = %unreachable, checkpoint = %src.checkpoint.display(), "reading the kubelet checkpoint instead");
    checkpoint::pod_devices(src.checkpoint, uid).map_err(|checkpoint| DeviceError::Checkpoint {
        pod: pod.label(),
        unreachable,
        checkpoint,
    })
}

pub use vfkube::resource::validate_resource_name;

/// A device ID as device plugins hand them out (PCI addresses for SR-IOV): it becomes part of a
/// file name and of the delegate's config.
pub fn is_device_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.contains("..")
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'.' | b'_' | b'-'))
}

/// One attachment that needs a device of one of `resources`.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    pub network: &'a str,
    pub ifname: &'a str,
    pub resources: &'a [String],
    /// The device the pod's annotation asks for (NPWG `deviceID`): it must be one the kubelet
    /// allocated to the pod, of one of `resources`.
    pub wanted: Option<&'a str>,
}

/// The device an attachment got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub resource: String,
    pub id: String,
}

/// Gives each need a device: first the needs whose annotation asks for a device, which must be one
/// the kubelet allocated to the pod and not given twice; then the others in order, each the lowest
/// device ID of its resources not given yet. An attachment alone on its resource thus gets the
/// first device, the second attachment of one resource the second device, and so on. A pod holding
/// too few devices is refused before anything is attached, naming what to request.
pub fn assign(
    pod: &PodIdentity<'_>,
    needs: &[Need<'_>],
    devices: &PodDevices,
) -> Result<Vec<Assigned>, DeviceError> {
    let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
    let mut out: Vec<Option<Assigned>> = vec![None; needs.len()];
    let wanted_first = needs
        .iter()
        .enumerate()
        .filter(|(_, n)| n.wanted.is_some())
        .chain(needs.iter().enumerate().filter(|(_, n)| n.wanted.is_none()));
    for (slot, need) in wanted_first {
        let mut candidates: Vec<(&String, &String)> = Vec::new();
        for r in need.resources {
            for id in devices.get(r).into_iter().flatten() {
                if !is_device_id(id) {
                    return Err(DeviceError::BadDeviceId {
                        pod: pod.label(),
                        id: id.clone(),
                        resource: r.clone(),
                    });
                }
                candidates.push((id, r));
            }
        }
        candidates.sort();
        let free = |(id, r): &(&String, &String)| !taken.contains(&((*r).clone(), (*id).clone()));
        let pick = match need.wanted {
            Some(w) => candidates
                .into_iter()
                .find(|c| c.0 == w && free(c))
                .ok_or_else(|| not_held(pod, need, w, devices))?,
            None => candidates
                .into_iter()
                .find(free)
                .ok_or_else(|| shortfall(pod, need, needs, devices))?,
        };
        let (id, r) = pick;
        taken.insert((r.clone(), id.clone()));
        out[slot] = Some(Assigned {
            resource: r.clone(),
            id: id.clone(),
        });
    }
    Ok(out.into_iter().flatten().collect())
}

/// A pod's annotation asks for a device it does not hold (or asks for one twice).
fn not_held(
    pod: &PodIdentity<'_>,
    need: &Need<'_>,
    wanted: &str,
    devices: &PodDevices,
) -> DeviceError {
    let held: Vec<&str> = need
        .resources
        .iter()
        .flat_map(|r| devices.get(r).into_iter().flatten())
        .map(String::as_str)
        .collect();
    DeviceError::NotHeld(Box::new(NotHeld {
        pod: pod.label(),
        network: need.network.to_string(),
        ifname: need.ifname.to_string(),
        wanted: wanted.to_string(),
        resources: need.resources.join(" or "),
        held: match held.is_empty() {
            true => "none".to_string(),
            false => held.join(", "),
        },
    }))
}

fn shortfall(
    pod: &PodIdentity<'_>,
    need: &Need<'_>,
    needs: &[Need<'_>],
    devices: &PodDevices,
) -> DeviceError {
    let wanted = needs
        .iter()
        .filter(|n| n.resources == need.resources)
        .count();
    let held: usize = need
        .resources
        .iter()
        .map(|r| devices.get(r).map_or(0, BTreeSet::len))
        .sum();
    let resources = need.resources.join(" or ");
    let request = match need.resources {
        [one] => format!("request {one}: {wanted} in the resources of one of its containers"),
        _ => format!("request {wanted} in all of {resources} in the resources of its containers"),
    };
    DeviceError::Shortfall(Box::new(Shortfall {
        pod: pod.label(),
        network: need.network.to_string(),
        ifname: need.ifname.to_string(),
        resources,
        held,
        wanted,
        request,
    }))
}

/// Tells the network's plugin which device to use, as Multus does: `deviceID` at the top level of
/// the conf (of a conflist's first plugin) and in its `runtimeConfig`; `host-device` reads
/// `pciBusID` instead.
pub fn set_device_id(config: &mut Value, id: &str) {
    let target = match config {
        Value::Object(m) if m.contains_key("plugins") => match m.get_mut("plugins") {
            Some(Value::Array(list)) => list.first_mut(),
            _ => None,
        },
        other => Some(other),
    };
    let Some(Value::Object(conf)) = target else {
        return;
    };
    conf.insert("deviceID".into(), Value::String(id.to_string()));
    if conf.get("type").and_then(Value::as_str) == Some("host-device") {
        conf.insert("pciBusID".into(), Value::String(id.to_string()));
    }
    let mut rc = match conf.remove("runtimeConfig") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    rc.insert("deviceID".into(), Value::String(id.to_string()));
    conf.insert("runtimeConfig".into(), Value::Object(rc));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the runtime would see (genie's boundary picks the code).
    fn cni(e: DeviceError) -> crate::spec::error::CniError {
        crate::genie::error::GenieError::from(e).into()
    }

    fn devs(list: &[(&str, &[&str])]) -> PodDevices {
        list.iter()
            .map(|(r, ids)| (r.to_string(), ids.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    const POD: PodIdentity<'static> = PodIdentity {
        namespace: "team",
        name: "web",
        uid: None,
    };

    #[test]
    fn nth_attachment_of_a_resource_gets_the_nth_sorted_device() {
        let a = vec!["x.com/a".to_string()];
        let b = vec!["x.com/b".to_string()];
        let both = vec!["x.com/a".to_string(), "x.com/b".to_string()];
        let d = devs(&[
            ("x.com/a", &["0000:02:10.2", "0000:02:10.0"]),
            ("x.com/b", &["0000:03:10.0"]),
        ]);
        let need = |n, r| Need {
            network: n,
            ifname: "net1",
            resources: r,
            wanted: None,
        };
        let got = assign(&POD, &[need("n1", &a), need("n2", &b), need("n3", &a)], &d).unwrap();
        let ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, vec!["0000:02:10.0", "0000:03:10.0", "0000:02:10.2"]);
        // Several candidate pools: never a device twice.
        let got = assign(
            &POD,
            &[need("n1", &both), need("n2", &both), need("n3", &both)],
            &d,
        )
        .unwrap();
        let set: BTreeSet<_> = got.iter().map(|g| g.id.clone()).collect();
        assert_eq!(set.len(), 3);
        assert_eq!(got[2].resource, "x.com/b");
        // Too few: the error names the pod, the network and what to request.
        let e = cni(assign(&POD, &[need("n1", &b), need("n2", &b)], &d).unwrap_err());
        assert!(e.msg.contains("pod team/web"), "{}", e.msg);
        assert!(e.msg.contains("network n2"), "{}", e.msg);
        assert!(e.msg.contains("request x.com/b: 2"), "{}", e.msg);
        let bad = devs(&[("x.com/a", &["../x"])]);
        assert!(assign(&POD, &[need("n1", &a)], &bad).is_err());
    }

    #[test]
    fn a_device_asked_for_by_the_annotation_must_be_held_and_is_given_first() {
        let a = vec!["x.com/a".to_string()];
        let d = devs(&[("x.com/a", &["0000:02:10.0", "0000:02:10.2"])]);
        let need = |n, wanted| Need {
            network: n,
            ifname: "net1",
            resources: &a,
            wanted,
        };
        // The second network asks for the first device: the first network gets the other one.
        let got = assign(
            &POD,
            &[need("n1", None), need("n2", Some("0000:02:10.0"))],
            &d,
        )
        .unwrap();
        let ids: Vec<&str> = got.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, vec!["0000:02:10.2", "0000:02:10.0"]);
        // A device of another pod (not allocated to this one) is refused, naming what it holds.
        let e = cni(assign(&POD, &[need("n1", Some("0000:02:10.4"))], &d).unwrap_err());
        assert_eq!(e.code, crate::spec::error::code::INVALID_NETWORK_CONFIG);
        assert!(
            e.msg.contains("0000:02:10.4") && e.msg.contains("0000:02:10.2"),
            "{}",
            e.msg
        );
        // The same device asked for twice.
        let twice = [
            need("n1", Some("0000:02:10.0")),
            need("n2", Some("0000:02:10.0")),
        ];
        assert!(assign(&POD, &twice, &d).is_err());
    }

    #[test]
    fn device_ids_are_plain() {
        assert!(is_device_id("0000:02:10.0"));
        assert!(!is_device_id("0000:02:10.0/.."));
        assert!(!is_device_id(""));
    }

    #[test]
    fn device_id_goes_to_the_top_level_and_runtime_config() {
        let mut c = json!({"type": "sriov", "runtimeConfig": {"mac": "x"}});
        set_device_id(&mut c, "0000:02:10.0");
        assert_eq!(
            c,
            json!({"type": "sriov", "deviceID": "0000:02:10.0", "runtimeConfig": {"mac": "x", "deviceID": "0000:02:10.0"}})
        );
        let mut l = json!({"name": "n", "plugins": [{"type": "host-device"}, {"type": "tuning"}]});
        set_device_id(&mut l, "0000:02:10.0");
        assert_eq!(l["plugins"][0]["pciBusID"], "0000:02:10.0");
        assert_eq!(l["plugins"][0]["deviceID"], "0000:02:10.0");
        assert!(l["plugins"][1].get("deviceID").is_none());
    }
}
