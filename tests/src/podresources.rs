//! The kubelet's PodResources API (v1) stand-in: `PodResourcesLister` served over gRPC on a unix
//! socket, answering from a pod → devices table the test sets. It runs on its own runtime, so the
//! synchronous host-tier tests (which exec the CNI binary) can use it as they are.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};
use vfdp::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use vfdp::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, PodResources,
};

type Pods = Arc<Mutex<Vec<PodResources>>>;

#[derive(Clone)]
struct Lister {
    pods: Pods,
    lists: Arc<Mutex<usize>>,
}

fn snapshot(pods: &Pods) -> Vec<PodResources> {
    pods.lock().map(|p| p.clone()).unwrap_or_default()
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _req: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        if let Ok(mut n) = self.lists.lock() {
            *n += 1;
        }
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: snapshot(&self.pods),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _req: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        let devices = snapshot(&self.pods)
            .into_iter()
            .flat_map(|p| p.containers)
            .flat_map(|c| c.devices)
            .collect();
        Ok(Response::new(AllocatableResourcesResponse {
            devices,
            ..Default::default()
        }))
    }

    async fn get(
        &self,
        req: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        let req = req.into_inner();
        snapshot(&self.pods)
            .into_iter()
            .find(|p| p.name == req.pod_name && p.namespace == req.pod_namespace)
            .map(|p| {
                Response::new(GetPodResourcesResponse {
                    pod_resources: Some(p),
                })
            })
            .ok_or_else(|| {
                Status::not_found(format!(
                    "pod {}/{} not found",
                    req.pod_namespace, req.pod_name
                ))
            })
    }
}

/// The stand-in; dropping it stops the server and removes the socket.
pub struct PodResourcesStandIn {
    path: PathBuf,
    pods: Pods,
    lists: Arc<Mutex<usize>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl PodResourcesStandIn {
    /// Serves PodResourcesLister on `path`.
    pub fn start(path: &Path) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let pods = Pods::default();
        let lists = Arc::new(Mutex::new(0));
        let svc = PodResourcesListerServer::new(Lister {
            pods: pods.clone(),
            lists: lists.clone(),
        });
        let incoming = runtime.block_on(async { vfdp::serve_on(path) })?;
        runtime.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        Ok(Self {
            path: path.to_path_buf(),
            pods,
            lists,
            runtime: Some(runtime),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the devices of pod `namespace/name`, one container per element:
    /// `(container, resource, device IDs)`. An empty list leaves the pod listed without devices.
    pub fn set_pod(&self, namespace: &str, name: &str, containers: &[(&str, &str, &[&str])]) {
        let mut by_container: Vec<ContainerResources> = Vec::new();
        for (c, resource, ids) in containers {
            let dev = ContainerDevices {
                resource_name: resource.to_string(),
                device_ids: ids.iter().map(|s| s.to_string()).collect(),
                topology: None,
            };
            match by_container.iter_mut().find(|x| x.name == *c) {
                Some(x) => x.devices.push(dev),
                None => by_container.push(ContainerResources {
                    name: c.to_string(),
                    devices: vec![dev],
                    ..Default::default()
                }),
            }
        }
        if let Ok(mut pods) = self.pods.lock() {
            pods.retain(|p| !(p.namespace == namespace && p.name == name));
            pods.push(PodResources {
                name: name.to_string(),
                namespace: namespace.to_string(),
                containers: by_container,
            });
        }
    }

    /// How many List calls were answered.
    pub fn lists(&self) -> usize {
        self.lists.lock().map(|n| *n).unwrap_or_default()
    }
}

impl Drop for PodResourcesStandIn {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
