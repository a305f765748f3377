//! The NPWG device-info file (spec 1.1.0) Multus asks for with `runtimeConfig.CNIDeviceInfoFile`:
//! `{"type":"pci","version":"1.1.0","pci":{"pci-address":..,"pf-pci-address":..}}`, written
//! atomically by ADD and removed by DEL (the device-plugin crate's format and writer).

use std::path::Path;

use vfcore::PciAddress;
use vfdp::devinfo::{self, DeviceInfo};

pub use vfdp::devinfo::Error as DevInfoError;

pub fn write(path: &Path, pci: &PciAddress, pf: &PciAddress) -> Result<(), DevInfoError> {
    let info = DeviceInfo::pci(pci.to_string(), pf.to_string());
    devinfo::write(path, &info)
}

/// Removes the file (one already gone is fine) and the temporary files of a plugin killed while
/// writing it.
pub fn remove(path: &Path) -> Result<(), DevInfoError> {
    devinfo::remove_attachment_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cni/net1-device.json");
        let pci = "0000:01:10.1".parse().unwrap();
        let pf = "0000:01:00.0".parse().unwrap();
        write(&path, &pci, &pf).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["type"], "pci");
        assert_eq!(v["version"], "1.1.0");
        assert_eq!(v["pci"]["pci-address"], "0000:01:10.1");
        assert_eq!(v["pci"]["pf-pci-address"], "0000:01:00.0");
        // A plugin killed while writing it left its temporary file: removing takes it too.
        let tmp = path.with_file_name(".net1-device.json.tmp-4242-0");
        std::fs::write(&tmp, "{").unwrap();
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
        assert!(!tmp.exists());
    }
}
