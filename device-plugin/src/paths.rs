//! The kubelet's well-known socket locations. Every function takes the directory, so tests and
//! non-default kubelet roots work the same way as production.

use std::path::{Path, PathBuf};

/// The kubelet's device-plugin directory on a default installation.
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The kubelet's Registration socket inside the device-plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The kubelet's PodResources socket on a default installation.
pub const POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The kubelet's device-manager checkpoint, read when PodResources is unavailable.
pub const KUBELET_CHECKPOINT: &str = "kubelet_internal_checkpoint";

/// `<dir>/kubelet.sock`
pub fn kubelet_socket(dir: &Path) -> PathBuf {
    dir.join(KUBELET_SOCKET)
}

/// `<dir>/kubelet_internal_checkpoint`
pub fn kubelet_checkpoint(dir: &Path) -> PathBuf {
    dir.join(KUBELET_CHECKPOINT)
}
