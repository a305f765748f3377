//! The kubelet's PodResources API (v1): which devices a pod's containers were allocated.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::Code;
use vfdp::podresources::pod_resources_lister_client::PodResourcesListerClient;
use vfdp::podresources::{ListPodResourcesRequest, PodResources};

use super::PodDevices;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nobody listens there: no socket file, or a stale one. The caller may read the checkpoint.
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

/// Every device the kubelet reports for pod `namespace/name`, by resource.
pub fn pod_devices(
    socket: &Path,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<PodDevices, Error> {
    let failed = |reason: String| Error::Failed {
        path: socket.to_path_buf(),
        reason,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("no async runtime: {e}")))?;
    let timed_out = || Error::Timeout {
        path: socket.to_path_buf(),
        timeout,
    };
    let call = async {
        // A connection refused or a missing file is "no kubelet API here"; anything that accepts
        // the connection is the kubelet, and its silence is an error rather than a reason to guess.
        if let Err(source) = tokio::net::UnixStream::connect(socket).await {
            return Err(match source.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => Error::Unreachable {
                    path: socket.to_path_buf(),
                    source,
                },
                _ => failed(source.to_string()),
            });
        }
        // The transport's own bounds are looser than the one on the whole call, so that a silent
        // kubelet is reported as such.
        let channel = vfdp::connect(socket, timeout * 2)
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
    let pods = rt
        .block_on(async { tokio::time::timeout(timeout, call).await })
        .map_err(|_| timed_out())??;
    Ok(devices_of(&pods, namespace, name))
}

fn devices_of(pods: &[PodResources], namespace: &str, name: &str) -> PodDevices {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.namespace == namespace && p.name == name)
    {
        for c in &pod.containers {
            for d in &c.devices {
                out.entry(d.resource_name.clone())
                    .or_default()
                    .extend(d.device_ids.iter().cloned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfdp::podresources::{ContainerDevices, ContainerResources};

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
    fn only_the_named_pod_counts() {
        let pods = vec![
            pod("a", "web", &[("x.com/r", &["2", "1"])]),
            pod("b", "web", &[("x.com/r", &["9"])]),
        ];
        let d = devices_of(&pods, "a", "web");
        assert_eq!(d["x.com/r"].iter().collect::<Vec<_>>(), vec!["1", "2"]);
        assert!(devices_of(&pods, "a", "db").is_empty());
    }

    #[test]
    fn a_missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let e = pod_devices(
            &dir.path().join("kubelet.sock"),
            "a",
            "b",
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    }
}
