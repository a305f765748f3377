//! gRPC over unix sockets: the transport the kubelet uses for both directions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint};

use crate::v1beta1::registration_client::RegistrationClient;
use crate::v1beta1::RegisterRequest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("registration of {resource} with the kubelet at {path} was refused: {status}")]
    Register {
        path: PathBuf,
        resource: String,
        status: tonic::Status,
    },
}

/// Binds a listener at `path`, replacing a stale socket file left by an earlier run.
pub fn serve_on(path: &Path) -> Result<UnixListenerStream, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::RemoveStale {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| Error::Listen {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(UnixListenerStream::new(listener))
}

/// Connects a gRPC channel to the unix socket at `path` (the URI is a placeholder gRPC requires).
pub async fn connect(path: &Path, timeout: Duration) -> Result<Channel, Error> {
    let socket = path.to_path_buf();
    let endpoint = Endpoint::from_static("http://localhost")
        .connect_timeout(timeout)
        .timeout(timeout);
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// Registers one resource with the kubelet listening at `kubelet_socket`.
pub async fn register(
    kubelet_socket: &Path,
    request: RegisterRequest,
    timeout: Duration,
) -> Result<(), Error> {
    let channel = connect(kubelet_socket, timeout).await?;
    let resource = request.resource_name.clone();
    RegistrationClient::new(channel)
        .register(request)
        .await
        .map(|_| ())
        .map_err(|status| Error::Register {
            path: kubelet_socket.to_path_buf(),
            resource,
            status,
        })
}
