//! gRPC over unix sockets: the transport the kubelet uses for both directions.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The mode of every socket we serve on: only root (the kubelet) may connect.
pub const SOCKET_MODE: u32 = 0o600;

static BIND_SEQ: AtomicU64 = AtomicU64::new(0);

/// Binds a listener at `path` with mode [`SOCKET_MODE`], replacing a stale socket file left by an
/// earlier run.
///
/// The socket is bound inside a private (0700) directory next to `path`, given its mode there and
/// then renamed into place, so at no moment can anyone else connect to it.
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
    let listener = bind_private(path).map_err(|source| Error::Listen {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(UnixListenerStream::new(listener))
}

fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // A short name: a socket path must fit in 108 bytes, and this one must whenever `path` does.
    let private = dir.join(format!(
        ".b{}-{}",
        std::process::id(),
        BIND_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(SOCKET_MODE))?;
        fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_dir(&private);
    bound
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    #[tokio::test]
    async fn sockets_are_private_and_leave_nothing_else_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.com_net.sock");
        std::fs::write(&path, "stale").unwrap();
        let _listener = serve_on(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["example.com_net.sock"]);
        // The socket answers where it was renamed to.
        tokio::net::UnixStream::connect(&path).await.unwrap();
    }
}
