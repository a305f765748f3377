//! The NPWG device-info file (spec 1.1.0) Multus asks for with `runtimeConfig.CNIDeviceInfoFile`:
//! `{"type":"pci","version":"1.1.0","pci":{"pci-address":..,"pf-pci-address":..}}`, written
//! atomically by ADD and removed by DEL.
//!
//! (The device-plugin crate has the same type; the CNI crate does not depend on it yet.)

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::json;
use vfcore::PciAddress;

use crate::spec::error::CniError;

fn io_err(op: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!(
        "{op} device-info file {} failed: {e}",
        path.display()
    ))
}

pub fn write(path: &Path, pci: &PciAddress, pf: &PciAddress) -> Result<(), CniError> {
    let body = json!({
        "type": "pci",
        "version": "1.1.0",
        "pci": {"pci-address": pci.to_string(), "pf-pci-address": pf.to_string()},
    });
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_err("creating the directory of", path, e))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o444)
            .open(&tmp)?;
        f.write_all(body.to_string().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("writing", path, e));
    }
    Ok(())
}

pub fn remove(path: &Path) -> Result<(), CniError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path, e)),
    }
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
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["type"], "pci");
        assert_eq!(v["pci"]["pci-address"], "0000:01:10.1");
        assert_eq!(v["pci"]["pf-pci-address"], "0000:01:00.0");
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
    }
}
