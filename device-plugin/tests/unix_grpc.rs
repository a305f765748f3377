//! The generated services over real unix sockets: a plugin registers with a kubelet-side
//! Registration server and the kubelet side calls the plugin back on the endpoint it named.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tonic::{Request, Response, Status};
use vfdp::v1beta1::device_plugin_client::DevicePluginClient;
use vfdp::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
use vfdp::v1beta1::registration_server::{Registration, RegistrationServer};
use vfdp::v1beta1::*;

#[derive(Default, Clone)]
struct Kubelet {
    registered: Arc<Mutex<Vec<RegisterRequest>>>,
}

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let req = req.into_inner();
        if req.version != vfdp::API_VERSION {
            return Err(Status::invalid_argument(format!(
                "unsupported version {}",
                req.version
            )));
        }
        self.registered.lock().await.push(req);
        Ok(Response::new(Empty {}))
    }
}

struct Plugin;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    type ListAndWatchStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<ListAndWatchResponse, Status>>>;

    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }
    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let devices = vec![Device {
            id: "0000:01:10.0".into(),
            health: vfdp::HEALTHY.into(),
            topology: None,
        }];
        Ok(Response::new(tokio_stream::iter(vec![Ok(
            ListAndWatchResponse { devices },
        )])))
    }
    async fn get_preferred_allocation(
        &self,
        _: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn allocate(
        &self,
        _: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

#[tokio::test]
async fn plugin_registers_and_is_called_back_over_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet_sock = vfdp::paths::kubelet_socket(dir.path());
    let kubelet = Kubelet::default();
    let incoming = vfdp::serve_on(&kubelet_sock).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(kubelet.clone()))
            .serve_with_incoming(incoming),
    );

    let plugin_sock = dir.path().join("example.com_vf.sock");
    let plugin_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(Plugin))
            .serve_with_incoming(vfdp::serve_on(&plugin_sock).unwrap()),
    );

    vfdp::unix::register(
        &kubelet_sock,
        RegisterRequest {
            version: vfdp::API_VERSION.into(),
            endpoint: "example.com_vf.sock".into(),
            resource_name: "example.com/vf".into(),
            options: Some(DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }),
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let got = kubelet.registered.lock().await.clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].resource_name, "example.com/vf");

    // The kubelet dials the endpoint it was given, relative to its directory.
    let channel = vfdp::connect(&dir.path().join(&got[0].endpoint), Duration::from_secs(5))
        .await
        .unwrap();
    let mut client = DevicePluginClient::new(channel);
    let opts = client
        .get_device_plugin_options(Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(opts.get_preferred_allocation_available);
    let mut stream = client.list_and_watch(Empty {}).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.devices[0].id, "0000:01:10.0");
    assert_eq!(first.devices[0].health, "Healthy");

    // A registration in a version the kubelet does not speak is refused with its status.
    let err = vfdp::unix::register(
        &kubelet_sock,
        RegisterRequest {
            version: "v1alpha".into(),
            endpoint: "x.sock".into(),
            resource_name: "example.com/vf".into(),
            options: None,
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, vfdp::Error::Register { status, .. } if status.code() == tonic::Code::InvalidArgument),
        "{err}"
    );
    server.abort();
    plugin_server.abort();
}

#[tokio::test]
async fn connecting_to_a_missing_socket_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let err = vfdp::connect(&path, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nobody.sock"), "{err}");
}
