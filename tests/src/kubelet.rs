//! A kubelet stand-in: the kubelet's side of the device-plugin protocol, over the same unix sockets
//! and the same gRPC services. It serves Registration on `<dir>/kubelet.sock`; for every plugin that
//! registers it dials the plugin's endpoint, asks for its options and keeps a ListAndWatch stream
//! open, as the kubelet's device manager does. Tests then drive Allocate and
//! GetPreferredAllocation through [`KubeletStandIn::plugin`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use vfdp::v1beta1::device_plugin_client::DevicePluginClient;
use vfdp::v1beta1::registration_server::{Registration, RegistrationServer};
use vfdp::v1beta1::{Device, Empty, RegisterRequest};

/// What the stand-in knows of one registered resource.
#[derive(Debug, Clone, Default)]
pub struct Resource {
    pub registration: Option<RegisterRequest>,
    /// How many times the resource registered.
    pub registrations: usize,
    /// The newest device list from ListAndWatch.
    pub devices: Vec<Device>,
    /// How many ListAndWatch messages arrived.
    pub updates: usize,
}

type State = Arc<Mutex<BTreeMap<String, Resource>>>;
type Streams = Arc<Mutex<Vec<JoinHandle<()>>>>;

#[derive(Clone)]
struct Registrar {
    dir: PathBuf,
    state: State,
    streams: Streams,
    changed: Arc<watch::Sender<u64>>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        if req.version != vfdp::API_VERSION {
            return Err(Status::invalid_argument(format!(
                "version {} is not supported",
                req.version
            )));
        }
        if req.endpoint.contains('/') {
            return Err(Status::invalid_argument("endpoint must be a file name"));
        }
        let endpoint = self.dir.join(&req.endpoint);
        let channel = vfdp::connect(&endpoint, Duration::from_secs(5))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = DevicePluginClient::new(channel);
        client.get_device_plugin_options(Empty {}).await?;
        let mut stream = client.list_and_watch(Empty {}).await?.into_inner();
        let name = req.resource_name.clone();
        {
            let mut st = self.state.lock().await;
            let r = st.entry(name.clone()).or_default();
            r.registration = Some(req);
            r.registrations += 1;
        }
        self.changed.send_modify(|n| *n += 1);
        let state = self.state.clone();
        let changed = self.changed.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                let mut st = state.lock().await;
                let r = st.entry(name.clone()).or_default();
                r.devices = msg.devices;
                r.updates += 1;
                drop(st);
                changed.send_modify(|n| *n += 1);
            }
        });
        self.streams.lock().await.push(task);
        Ok(Response::new(Empty {}))
    }
}

/// The stand-in; dropping it stops its server.
pub struct KubeletStandIn {
    dir: PathBuf,
    state: State,
    streams: Streams,
    changed: Arc<watch::Sender<u64>>,
    server: Option<JoinHandle<()>>,
}

impl KubeletStandIn {
    /// Serves Registration on `<dir>/kubelet.sock`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let (tx, _) = watch::channel(0);
        let mut k = Self {
            dir: dir.to_path_buf(),
            state: State::default(),
            streams: Streams::default(),
            changed: Arc::new(tx),
            server: None,
        };
        k.serve()?;
        Ok(k)
    }

    fn serve(&mut self) -> anyhow::Result<()> {
        let incoming = vfdp::serve_on(&vfdp::paths::kubelet_socket(&self.dir))?;
        let svc = RegistrationServer::new(Registrar {
            dir: self.dir.clone(),
            state: self.state.clone(),
            streams: self.streams.clone(),
            changed: self.changed.clone(),
        });
        self.server = Some(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        }));
        Ok(())
    }

    /// Restarts as a kubelet does: its server goes away, every socket in the directory is
    /// removed, and `kubelet.sock` is created anew. Registrations are forgotten.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.server.take() {
            s.abort();
            let _ = s.await;
        }
        for t in self.streams.lock().await.drain(..) {
            t.abort();
        }
        for entry in std::fs::read_dir(&self.dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "sock") {
                std::fs::remove_file(&p)?;
            }
        }
        self.state.lock().await.clear();
        self.serve()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A snapshot of one resource.
    pub async fn resource(&self, name: &str) -> Option<Resource> {
        self.state.lock().await.get(name).cloned()
    }

    /// Waits until `pred` holds for resource `name`, and returns it.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Resource) -> bool,
    ) -> anyhow::Result<Resource> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.resource(name).await {
                if pred(&r) {
                    return Ok(r);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the kubelet stand-in stopped"),
                Err(_) => {
                    let now = self.resource(name).await;
                    return Err(anyhow!(
                        "resource {name} did not reach the expected state within {timeout:?}; it is {now:#?}"
                    ));
                }
            }
        }
    }

    /// A client for the plugin serving `name`, dialled at the endpoint it registered.
    pub async fn plugin(&self, name: &str) -> anyhow::Result<DevicePluginClient<Channel>> {
        let reg = self
            .resource(name)
            .await
            .and_then(|r| r.registration)
            .with_context(|| format!("{name} is not registered"))?;
        let channel = vfdp::connect(&self.dir.join(reg.endpoint), Duration::from_secs(5)).await?;
        Ok(DevicePluginClient::new(channel))
    }
}

impl Drop for KubeletStandIn {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}
