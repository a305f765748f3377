//! The kubelet's PodResources API (v1): which devices a pod's containers were allocated, through
//! the project's one PodResources client (`vfdp::podres`), on a runtime of the call's own.

use std::path::Path;
use std::time::Duration;

use super::PodDevices;

pub use vfdp::podres::ListError as Error;

/// Every device the kubelet reports for pod `namespace/name`, by resource.
pub fn pod_devices(
    socket: &Path,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<PodDevices, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed {
            path: socket.to_path_buf(),
            reason: format!("no async runtime: {e}"),
        })?;
    let pods = rt.block_on(vfdp::podres::list(socket, timeout))?;
    Ok(vfdp::podres::pod_devices(&pods, namespace, name))
}

#[cfg(test)]
mod tests {
    use super::*;

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
