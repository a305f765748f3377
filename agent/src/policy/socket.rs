//! The agent's policy socket: genie asks here for a new pod's table before it creates the pod's
//! interfaces, so that no packet reaches a pod a policy selects before its rules are in place.
//!
//! During CNI ADD, once genie has planned the pod's attachments and before it runs any
//! delegate, it sends the pod (namespace, name, uid, labels, network namespace, and the
//! interface name and network of each attachment) on this node-local unix socket. The agent
//! compiles that pod's table from its current inputs plus the pod and installs it in the pod's
//! namespace ([`Engine::setup`]), and replies only after `nft` returned. The table depends only
//! on the pod's labels, its interface names and other pods' addresses, so it can be complete
//! before the interfaces exist: the delegates then create interfaces that `iifname`/`oifname`
//! rules already cover. If the agent refuses or cannot be reached, genie's ADD fails with
//! "try again later" before anything was created. The pod stays *pending* in the engine until
//! the watches know it, so a reconcile in between keeps its table.
//!
//! The protocol is in [`crate::policy::protocol`]. The socket is created with mode 0600 in a
//! directory of mode 0700 (created so when missing; an existing one that others may write to is
//! refused); a stale socket file from an earlier run is replaced. Each connection carries one
//! request (at most 64 KiB, read within a timeout) and gets one reply; at most
//! [`SocketOptions::max_connections`] are served at once, the others wait in the backlog.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::policy::engine::{Apply, Engine, Snapshots};
use crate::policy::protocol::{self, NetnsPaths, Reply, RequestError, MAX_REQUEST};

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/vfgenie/policy.sock";

#[derive(Debug, Clone)]
pub struct SocketOptions {
    pub path: PathBuf,
    /// Where namespace paths may point.
    pub netns: NetnsPaths,
    /// A request must arrive within this long after the connection.
    pub read_timeout: Duration,
    /// Writing the reply may take this long.
    pub write_timeout: Duration,
    pub max_connections: usize,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_SOCKET),
            netns: NetnsPaths::default(),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_connections: 16,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("creating the policy socket's directory {} failed", .dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy socket's directory {} may be written by other users (mode {mode:04o}); make it 0700 or choose another path", .dir.display())]
    DirOpen { dir: PathBuf, mode: u32 },
    #[error("{} exists and is not a socket; it is not replaced", .path.display())]
    NotASocket { path: PathBuf },
    #[error("binding the policy socket {} failed", .path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("accepting on the policy socket {} failed", .path.display())]
    Accept {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the socket at `path`: the directory (0700) when missing, a stale socket file
/// replaced, the socket itself 0600. Non-blocking, ready for [`serve`].
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, SocketError> {
    let bind_err = |source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let dir_err = |source| SocketError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.permissions().mode() & 0o022 != 0 => {
                return Err(SocketError::DirOpen {
                    dir: dir.to_path_buf(),
                    mode: m.permissions().mode() & 0o7777,
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?,
            Err(e) => return Err(dir_err(e)),
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            info!(socket = %path.display(), "replacing the policy socket of an earlier run");
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(listener)
}

/// What a connection needs: the engine (shared with the reconcile loop), the inputs, the
/// options.
pub struct Server<A: Apply> {
    pub engine: Arc<Mutex<Engine<A>>>,
    pub snapshots: Arc<dyn Snapshots>,
    pub options: SocketOptions,
}

impl<A: Apply> Server<A> {
    /// Handles one request line: checks it, installs the pod's table, and says how it went.
    /// Blocking (nft runs): call it off the async workers.
    pub fn handle(&self, line: &[u8]) -> Reply {
        let started = Instant::now();
        let request = match protocol::parse(line) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "policy setup request refused");
                return Reply::refused(e.to_string());
            }
        };
        let pod = request.pod();
        if let Err(problem) = self.options.netns.check(&request.netns) {
            let e = RequestError::Invalid { pod, problem };
            warn!(error = %e, "policy setup request refused");
            return Reply::refused(e.to_string());
        }
        let inputs = self.snapshots.snapshot();
        let outcome = match self.engine.lock() {
            Ok(mut engine) => engine.setup(&inputs, request.pending()),
            Err(_) => {
                return Reply::refused(format!(
                    "pod {pod}: the policy engine is unusable after a panic"
                ))
            }
        };
        match outcome {
            Ok(applied) => {
                info!(pod = %pod, netns = %request.netns.display(), applied,
                      ms = started.elapsed().as_secs_f64() * 1e3, "policy table in place for a new pod");
                Reply::done(applied)
            }
            Err(e) => {
                let msg = vfcore::error::chain(&e);
                warn!(error = %msg, "policy setup failed");
                Reply::refused(msg)
            }
        }
    }
}

/// Serves `listener` until `stop` turns true.
pub async fn serve<A: Apply + 'static>(
    listener: std::os::unix::net::UnixListener,
    server: Arc<Server<A>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SocketError> {
    let path = server.options.path.clone();
    let listener = UnixListener::from_std(listener).map_err(|source| SocketError::Bind {
        path: path.clone(),
        source,
    })?;
    let limit = Arc::new(Semaphore::new(server.options.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) if transient(&e) => {
                    warn!(error = %e, "policy socket accept failed; going on");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(source) => return Err(SocketError::Accept { path, source }),
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        let server = server.clone();
        tokio::spawn(async move {
            connection(stream, server).await;
            drop(permit);
        });
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Accept errors that concern one connection or a passing shortage, not the socket.
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(23 /* ENFILE */ | 24 /* EMFILE */ | 12 /* ENOMEM */)
    )
}

async fn connection<A: Apply + 'static>(mut stream: UnixStream, server: Arc<Server<A>>) {
    let timeout = server.options.read_timeout;
    let reply = match tokio::time::timeout(timeout, read_line(&mut stream)).await {
        Err(_) => Reply::refused(RequestError::Timeout { timeout }.to_string()),
        Ok(Err(e)) => Reply::refused(e.to_string()),
        Ok(Ok(line)) => {
            let s = server.clone();
            tokio::task::spawn_blocking(move || s.handle(&line))
                .await
                .unwrap_or_else(|e| Reply::refused(format!("the setup task failed: {e}")))
        }
    };
    let write = async {
        stream.write_all(&reply.to_line()).await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(server.options.write_timeout, write)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(ErrorKind::TimedOut)))
    {
        warn!(error = %e, "policy socket reply not delivered");
    }
}

/// Errors of reading one request.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("reading the request failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads up to the first newline (or the end of the stream), at most [`MAX_REQUEST`] bytes.
async fn read_line(stream: &mut UnixStream) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        let part = &chunk[..n];
        if let Some(i) = part.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&part[..=i]);
        } else {
            buf.extend_from_slice(part);
        }
        if buf.len() > MAX_REQUEST {
            return Err(RequestError::TooLarge { limit: MAX_REQUEST }.into());
        }
        if buf.last() == Some(&b'\n') {
            return Ok(buf);
        }
    }
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
