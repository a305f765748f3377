//! The one PodResources (v1) client of the project: genie asks which devices a pod holds, the agent
//! which of its devices any pod holds. Both need the same answers to the same failures: nothing
//! listening (no socket file, or a stale one) is [`ListError::Unreachable`]; a kubelet that
//! accepts the connection and then stays silent is [`ListError::Timeout`], never a guess.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Code;

use crate::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::podresources::{ListPodResourcesRequest, PodResources};

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// Nobody listens there: no socket file, or a stale one.
    #[error("nothing listens on the kubelet's PodResources socket {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kubelet's PodResources API on {path} did not answer List within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("the kubelet's PodResources API on {path} failed: {reason}")]
    Failed { path: PathBuf, reason: String },
}

/// PodResources `List` at `socket`, the whole call bounded by `timeout`.
pub async fn list(socket: &Path, timeout: Duration) -> Result<Vec<PodResources>, ListError> {
    let failed = |reason: String| ListError::Failed {
        path: socket.to_path_buf(),
        reason,
    };
    let timed_out = || ListError::Timeout {
        path: socket.to_path_buf(),
        timeout,
    };
    let call = async {
        // A connection refused or a missing file is "no kubelet API here"; anything that accepts
        // the connection is the kubelet, and its silence is an error rather than a reason to guess.
        if let Err(source) = tokio::net::UnixStream::connect(socket).await {
            return Err(match source.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => ListError::Unreachable {
                    path: socket.to_path_buf(),
                    source,
                },
                _ => failed(source.to_string()),
            });
        }
        // The transport's own bounds are looser than the one on the whole call, so that a silent
        // kubelet is reported as such.
        let channel = crate::connect(socket, timeout * 2)
            .await
            .map_err(|e| failed(e.to_string()))?;
        PodResourcesListerClient::new(channel)
            .list(ListPodResourcesRequest {})
            .await
            .map(|r| r.into_inner().pod_resources)
            .map_err(|s| match s.code() {
                Code::Cancelled | Code::DeadlineExceeded => timed_out(),
                _ => failed(format!("{}: {}", s.code(), s.message())),
            })
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| timed_out())?
}

/// The device IDs pod `namespace/name` holds, by resource name.
pub fn pod_devices(
    pods: &[PodResources],
    namespace: &str,
    name: &str,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.namespace == namespace && p.name == name)
    {
        for d in pod.containers.iter().flat_map(|c| &c.devices) {
            out.entry(d.resource_name.clone())
                .or_default()
                .extend(d.device_ids.iter().cloned());
        }
    }
    out
}

/// The device IDs of `resources` that any pod holds.
pub fn held_of<'a>(
    pods: &'a [PodResources],
    resources: &'a BTreeSet<String>,
) -> impl Iterator<Item = &'a str> + 'a {
    pods.iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
        .filter(|d| resources.contains(&d.resource_name))
        .flat_map(|d| &d.device_ids)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::podresources::{ContainerDevices, ContainerResources};

    fn pod(ns: &str, name: &str, devices: &[(&str, &[&str])]) -> PodResources {
        PodResources {
            name: name.into(),
            namespace: ns.into(),
            containers: vec![ContainerResources {
                name: "c".into(),
                devices: devices
                    .iter()
                    .map(|(r, ids)| ContainerDevices {
                        resource_name: (*r).into(),
                        device_ids: ids.iter().map(|s| s.to_string()).collect(),
                        topology: None,
                    })
                    .collect(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn only_the_named_pod_counts_and_held_spans_pods() {
        let pods = vec![
            pod("a", "web", &[("x.com/r", &["2", "1"])]),
            pod("b", "web", &[("x.com/r", &["9"]), ("x.com/s", &["7"])]),
        ];
        let d = pod_devices(&pods, "a", "web");
        assert_eq!(d["x.com/r"].iter().collect::<Vec<_>>(), vec!["1", "2"]);
        assert!(pod_devices(&pods, "a", "db").is_empty());
        let r = BTreeSet::from(["x.com/r".to_string()]);
        let mut held: Vec<&str> = held_of(&pods, &r).collect();
        held.sort();
        assert_eq!(held, vec!["1", "2", "9"]);
    }

    #[tokio::test]
    async fn a_missing_or_stale_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kubelet.sock");
        let e = list(&socket, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, ListError::Unreachable { .. }), "{e}");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let e = list(&socket, Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, ListError::Unreachable { .. }), "{e}");
    }
}
