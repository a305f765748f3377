//! The kubelet device-plugin service of one pool.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use vfdp::devinfo::{self, DeviceInfo};
use vfdp::v1beta1::device_plugin_server::DevicePlugin;
use vfdp::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, Empty, ListAndWatchResponse, NumaNode, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
    TopologyInfo,
};

use crate::allocate::{self, container_response};
use crate::pool::Pool;
use crate::prefer::preferred;

/// The options every pool advertises: preferred allocation on, no PreStartContainer.
pub fn options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// The device list the kubelet sees for `pool`.
pub fn devices_of(pool: &Pool) -> Vec<Device> {
    pool.devices
        .values()
        .map(|d| Device {
            id: d.address.to_string(),
            health: if d.healthy {
                vfdp::HEALTHY
            } else {
                vfdp::UNHEALTHY
            }
            .into(),
            topology: d
                .numa_node
                .filter(|_| !pool.config.exclude_topology)
                .map(|n| TopologyInfo {
                    nodes: vec![NumaNode { id: i64::from(n) }],
                }),
        })
        .collect()
}

/// Serves one pool; cheap to clone (the server needs a fresh service each time it restarts).
#[derive(Clone)]
pub struct PoolPlugin {
    pool: watch::Receiver<Pool>,
    devinfo_dir: PathBuf,
    written: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// Turns true when the server instance this service belongs to stops: open ListAndWatch
    /// streams end then, so the server can shut down.
    stop: Option<watch::Receiver<bool>>,
}

impl PoolPlugin {
    pub fn new(pool: watch::Receiver<Pool>, devinfo_dir: PathBuf) -> Self {
        Self {
            pool,
            devinfo_dir,
            written: Arc::default(),
            stop: None,
        }
    }

    /// The same service for one server instance, whose streams end when `stop` turns true.
    pub fn with_stop(&self, stop: watch::Receiver<bool>) -> Self {
        Self {
            stop: Some(stop),
            ..self.clone()
        }
    }

    /// Removes the device-info files this plugin wrote (at shutdown).
    pub fn remove_devinfo_files(&self) {
        let files = match self.written.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for f in files {
            if let Err(e) = devinfo::remove(&f) {
                warn!(error = %e, "device-info file left behind");
            }
        }
    }

    fn remember(&self, path: PathBuf) {
        match self.written.lock() {
            Ok(mut w) => w.insert(path),
            Err(poisoned) => poisoned.into_inner().insert(path),
        };
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PoolPlugin {
    type ListAndWatchStream = ListStream;

    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        // The current list first, then one message per change of the pool.
        let stream = tokio_stream::wrappers::WatchStream::new(self.pool.clone()).map(|pool| {
            Ok(ListAndWatchResponse {
                devices: devices_of(&pool),
            })
        });
        let mut stop = self.stop.clone();
        let stopped = async move {
            if let Some(stop) = stop.as_mut() {
                let _ = stop.wait_for(|s| *s).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        Ok(Response::new(Box::pin(
            futures_util::StreamExt::take_until(stream, stopped),
        )))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let pool = self.pool.borrow();
        let container_responses = req
            .into_inner()
            .container_requests
            .iter()
            .map(|c| ContainerPreferredAllocationResponse {
                device_i_ds: preferred(
                    &pool,
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    usize::try_from(c.allocation_size).unwrap_or(0),
                ),
            })
            .collect();
        drop(pool);
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        req: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let req = req.into_inner();
        // Answer from the pool as it is now, without copying it and without holding it while the
        // device-info files are written.
        let (name, container_responses, files) = {
            let pool = self.pool.borrow();
            let name = pool.full_name();
            let mut responses = Vec::with_capacity(req.container_requests.len());
            let mut files = Vec::new();
            for c in &req.container_requests {
                let resp = container_response(&pool, &c.devices_ids).map_err(|e| match e {
                    allocate::Error::UnknownDevice { .. } => {
                        Status::invalid_argument(e.to_string())
                    }
                    _ => Status::failed_precondition(e.to_string()),
                })?;
                for id in &c.devices_ids {
                    let Some(dev) = id.parse().ok().and_then(|a| pool.devices.get(&a)) else {
                        continue;
                    };
                    let path = devinfo::dp_file(&self.devinfo_dir, &name, id)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    let pf = dev.pf.map(|p| p.to_string()).unwrap_or_default();
                    files.push((path, DeviceInfo::pci(id.clone(), pf)));
                }
                responses.push(resp);
            }
            (name, responses, files)
        };
        for (path, info) in files {
            devinfo::write_private(&path, &info).map_err(|e| Status::internal(e.to_string()))?;
            self.remember(path);
        }
        for c in &req.container_requests {
            crate::audit::record(vfaudit::Event::Allocate, |r| {
                r.pool = Some(name.clone());
                r.devices = c.devices_ids.clone();
            });
        }
        for c in &req.container_requests {
            info!(pool = %name, devices = ?c.devices_ids, "allocated");
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
