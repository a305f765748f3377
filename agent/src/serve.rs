//! One pool's life with the kubelet: serve the plugin on `<prefix>_<name>.sock` in the kubelet's
//! device-plugin directory, register, and start over whenever the kubelet restarts (it recreates
//! `kubelet.sock` and removes plugin sockets). On shutdown the socket and the device-info files the
//! pool wrote are removed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};
use vfdp::v1beta1::device_plugin_server::DevicePluginServer;
use vfdp::v1beta1::RegisterRequest;

use crate::plugin::{options, PoolPlugin};
use crate::pool::Pool;

/// How often the kubelet's socket and ours are checked; a kubelet restart is noticed within this.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How long a stopping server may take to finish the calls in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Bound on one registration call.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// `<prefix>_<name>.sock`, as the SR-IOV network device plugin names its sockets.
pub fn socket_name(pool: &Pool) -> String {
    format!(
        "{}_{}.sock",
        pool.config.resource_prefix, pool.config.resource_name
    )
}

/// Identity of a socket file, to tell a recreated socket from the one we saw.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Serves `pool` until `shutdown` turns true.
pub async fn run_pool(
    plugin_dir: PathBuf,
    pool: watch::Receiver<Pool>,
    devinfo_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
) -> Result<(), vfdp::Error> {
    run_pool_reporting(plugin_dir, pool, devinfo_dir, shutdown, || {}).await
}

/// [`run_pool`], calling `listening` each time the pool's socket is bound and served (at start and
/// after every restart of the server), so that a supervisor can tell the pool is serving again.
pub async fn run_pool_reporting(
    plugin_dir: PathBuf,
    pool: watch::Receiver<Pool>,
    devinfo_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
    listening: impl Fn() + Send + 'static,
) -> Result<(), vfdp::Error> {
    let (name, sock_name) = {
        let p = pool.borrow();
        (p.full_name(), socket_name(&p))
    };
    let sock = plugin_dir.join(&sock_name);
    let kubelet = vfdp::paths::kubelet_socket(&plugin_dir);
    let plugin = PoolPlugin::new(pool, devinfo_dir);
    let mut backoff = Duration::from_millis(100);
    loop {
        let incoming = vfdp::serve_on(&sock)?;
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let mut server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(plugin.with_stop(stop_rx.clone())))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                }),
        );
        let ours = identity(&sock);
        listening();
        let registered = vfdp::unix::register(
            &kubelet,
            RegisterRequest {
                version: vfdp::API_VERSION.into(),
                endpoint: sock_name.clone(),
                resource_name: name.clone(),
                options: Some(options()),
            },
            REGISTER_TIMEOUT,
        )
        .await;
        let kubelet_id = identity(&kubelet);
        match &registered {
            Ok(()) => {
                info!(pool = %name, socket = %sock.display(), "registered with the kubelet");
                backoff = Duration::from_millis(100);
            }
            Err(e) => warn!(pool = %name, error = %e, "registration failed; retrying"),
        }
        // Watch until something asks for a restart: the kubelet's socket changed (it restarted),
        // ours vanished (the kubelet cleans the directory when it starts), or registration failed.
        let stop = loop {
            if registered.is_err() {
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break true,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                break false;
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break true,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
            let now = identity(&kubelet);
            if now.is_some() && now != kubelet_id {
                info!(pool = %name, "the kubelet restarted; registering again");
                break false;
            }
            if identity(&sock) != ours {
                info!(pool = %name, "our socket was removed; serving and registering again");
                break false;
            }
        };
        let _ = stop_tx.send(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                warn!(pool = %name, error = %e, "device-plugin server ended with an error")
            }
            Ok(Err(e)) => warn!(pool = %name, error = %e, "device-plugin server task failed"),
            Err(_) => {
                warn!(pool = %name, "device-plugin server did not stop in time; closing its connections");
                server.abort();
            }
        }
        if stop {
            if identity(&sock) == ours {
                let _ = std::fs::remove_file(&sock);
            }
            plugin.remove_devinfo_files();
            info!(pool = %name, "stopped");
            return Ok(());
        }
    }
}
