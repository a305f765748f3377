//! NPWG device-info files (device-info spec 1.1.0) on the CNI side: the device plugin's file for
//! the attachment's device (`<dir>/dp/<resource>-<device>-device.json`, `/` in the resource as
//! `-`) is copied to the attachment's own file (`<dir>/cni/<network>-<container>-<ifname>-device.json`,
//! unique per attachment) before its plugins run, offered to plugins that declare the
//! `CNIDeviceInfoFile` capability, read back after they ran for the pod's network-status, and
//! removed on DEL.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tracing::warn;

use super::DeviceError;

/// The capability through which a plugin receives the attachment's device-info file path.
pub const CAPABILITY: &str = "CNIDeviceInfoFile";

/// The attachment's own device-info file.
pub fn cni_file(
    devinfo_dir: &Path,
    network: &str,
    container: &str,
    ifname: &str,
) -> Result<PathBuf, DeviceError> {
    vfdp::devinfo::cni_file(devinfo_dir, network, container, ifname).map_err(DeviceError::InfoPath)
}

/// The device plugin's file for `device` of `resource`: the name the spec gives it, else any file
/// of the device plugin's directory for that device (`*-<device>-device.json`).
pub fn find_dp_file(devinfo_dir: &Path, resource: &str, device: &str) -> Option<PathBuf> {
    if let Ok(p) = vfdp::devinfo::dp_file(devinfo_dir, resource, device) {
        if p.is_file() {
            return Some(p);
        }
    }
    let suffix = format!("-{device}-device.json");
    let mut found: Vec<PathBuf> = std::fs::read_dir(devinfo_dir.join("dp"))
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// A device-info document: a JSON object with a `type`.
fn parse(bytes: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    v.get("type").and_then(Value::as_str)?;
    Some(v)
}

/// Copies the device plugin's file for the device to `cni_path` (atomically, mode 0444). Returns
/// false when the device plugin wrote none (or an unreadable one, which is logged): device-info is
/// information for the workload, never a reason to fail the pod.
pub fn publish(
    devinfo_dir: &Path,
    resource: &str,
    device: &str,
    cni_path: &Path,
) -> Result<bool, DeviceError> {
    let Some(dp) = find_dp_file(devinfo_dir, resource, device) else {
        return Ok(false);
    };
    let body = match crate::bounded::read(&dp, crate::bounded::CONFIG_MAX) {
        Ok(b) if parse(&b).is_some() => b,
        Ok(_) => {
            warn!(file = %dp.display(), "the device plugin's device-info file is not a device-info document; not copied");
            return Ok(false);
        }
        Err(e) => {
            warn!(file = %dp.display(), error = %e, "the device plugin's device-info file cannot be read; not copied");
            return Ok(false);
        }
    };
    vfdp::devinfo::write_raw(cni_path, &body).map_err(DeviceError::InfoWrite)?;
    Ok(true)
}

/// What network-status reports for the attachment: the content of its device-info file (copied
/// from the device plugin, or written by its plugin), else for a PCI device the minimal document.
pub fn status_info(cni_path: Option<&Path>, device: Option<&str>) -> Option<Value> {
    if let Some(v) = cni_path
        .and_then(|p| crate::bounded::read(p, crate::bounded::CONFIG_MAX).ok())
        .and_then(|b| parse(&b))
    {
        return Some(v);
    }
    let pci: vfcore::PciAddress = device?.parse().ok()?;
    Some(json!({
        "type": "pci",
        "version": vfdp::devinfo::VERSION,
        "pci": {"pci-address": pci.to_string()}
    }))
}

/// Removes the attachment's device-info file (one already gone is fine) and the temporary files
/// of a genie killed while writing it.
pub fn remove(cni_path: &Path) -> Result<(), DeviceError> {
    vfdp::devinfo::remove_attachment_file(cni_path).map_err(DeviceError::InfoWrite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_device_plugin_file_is_copied_read_only_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let dp = vfdp::devinfo::dp_file(dir.path(), "x.com/vf", "0000:02:10.0").unwrap();
        std::fs::create_dir_all(dp.parent().unwrap()).unwrap();
        let doc = r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:02:10.0","vhost-net":"/dev/vhost-net"}}"#;
        std::fs::write(&dp, doc).unwrap();
        let cni = cni_file(dir.path(), "team/blue", "c1", "net1").unwrap();
        assert!(cni.ends_with("cni/team-blue-c1-net1-device.json"));
        assert!(publish(dir.path(), "x.com/vf", "0000:02:10.0", &cni).unwrap());
        assert_eq!(std::fs::read_to_string(&cni).unwrap(), doc);
        let mode = std::fs::metadata(&cni).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
        let v = status_info(Some(&cni), Some("0000:02:10.0")).unwrap();
        assert_eq!(v["pci"]["vhost-net"], "/dev/vhost-net");
        // A genie killed while copying it (found by `hack/vmlab chaos`) left its temporary file:
        // DEL's removal takes it too.
        let tmp = cni.with_file_name(".team-blue-c1-net1-device.json.tmp-15185-0");
        std::fs::write(&tmp, "{").unwrap();
        remove(&cni).unwrap();
        remove(&cni).unwrap();
        assert!(!tmp.exists());
        assert_eq!(std::fs::read_dir(cni.parent().unwrap()).unwrap().count(), 0);
        // Found by device when the resource part differs; none for another device.
        assert_eq!(
            find_dp_file(dir.path(), "y.com/other", "0000:02:10.0"),
            Some(dp)
        );
        assert!(!publish(dir.path(), "x.com/vf", "0000:02:10.1", &cni).unwrap());
        // Without a file: the minimal PCI document, nothing for a non-PCI device.
        assert_eq!(
            status_info(Some(&cni), Some("0000:02:10.1")).unwrap(),
            json!({"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:02:10.1"}})
        );
        assert!(status_info(None, Some("dev-7")).is_none());
    }
}
