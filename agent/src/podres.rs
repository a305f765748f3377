//! Which of our devices pods hold now, from the kubelet's PodResources API.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use vfcore::PciAddress;
use vfdp::podresources::pod_resources_lister_client::PodResourcesListerClient;
use vfdp::podresources::ListPodResourcesRequest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Connect(#[from] vfdp::Error),
    #[error("the kubelet's PodResources List at {path} failed: {status}")]
    List { path: String, status: tonic::Status },
}

/// The devices of `resources` that pods hold, or `None` when there is no PodResources socket (no
/// kubelet on this node: nothing can be held).
pub async fn held_devices(
    socket: &Path,
    resources: &BTreeSet<String>,
    timeout: Duration,
) -> Result<Option<BTreeSet<PciAddress>>, Error> {
    if !socket.exists() {
        return Ok(None);
    }
    let channel = vfdp::connect(socket, timeout).await?;
    let list = PodResourcesListerClient::new(channel)
        .list(ListPodResourcesRequest {})
        .await
        .map_err(|status| Error::List {
            path: socket.display().to_string(),
            status,
        })?
        .into_inner();
    Ok(Some(
        list.pod_resources
            .iter()
            .flat_map(|p| &p.containers)
            .flat_map(|c| &c.devices)
            .filter(|d| resources.contains(&d.resource_name))
            .flat_map(|d| &d.device_ids)
            .filter_map(|id| id.parse().ok())
            .collect(),
    ))
}
