//! The kubelet's device-manager checkpoint (`kubelet_internal_checkpoint`), read when the
//! PodResources API is not there. Entries are keyed by pod UID:
//! `{"Data": {"PodDeviceEntries": [{"PodUID", "ContainerName", "ResourceName", "DeviceIDs"}]}}`,
//! where `DeviceIDs` is `{"<numa node>": [ids]}` in current kubelets and `[ids]` in older ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::PodDevices;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the kubelet checkpoint {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kubelet checkpoint {path} is not valid: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

impl Error {
    pub fn is_missing(&self) -> bool {
        matches!(self, Error::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Every device the checkpoint records for the pod with this UID, by resource.
pub fn pod_devices(path: &Path, pod_uid: &str) -> Result<PodDevices, Error> {
    let bytes =
        crate::bounded::read(path, crate::bounded::RECORD_MAX).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
    parse(&bytes, pod_uid).map_err(|problem| Error::Invalid {
        path: path.to_path_buf(),
        problem,
    })
}

fn parse(bytes: &[u8], pod_uid: &str) -> Result<PodDevices, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let entries = match v.get("Data").and_then(|d| d.get("PodDeviceEntries")) {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("Data.PodDeviceEntries is not a list".into()),
    };
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
        if field("PodUID") != pod_uid {
            continue;
        }
        let resource = field("ResourceName");
        if resource.is_empty() {
            return Err(format!("PodDeviceEntries[{i}] has no ResourceName"));
        }
        let ids = out.entry(resource.to_string()).or_default();
        let bad =
            || format!("PodDeviceEntries[{i}].DeviceIDs is neither a list nor a map of lists");
        let lists: Vec<&Value> = match e.get("DeviceIDs") {
            None | Some(Value::Null) => Vec::new(),
            Some(l @ Value::Array(_)) => vec![l],
            Some(Value::Object(by_numa)) => by_numa.values().collect(),
            Some(_) => return Err(bad()),
        };
        for l in lists {
            let Value::Array(a) = l else {
                return Err(bad());
            };
            for id in a {
                ids.insert(id.as_str().ok_or_else(bad)?.to_string());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_are_read() {
        let new = br#"{"Data":{"PodDeviceEntries":[
            {"PodUID":"u1","ContainerName":"c","ResourceName":"x.com/r","DeviceIDs":{"0":["b","a"],"1":["c"]},"AllocResp":"AA=="},
            {"PodUID":"u2","ContainerName":"c","ResourceName":"x.com/r","DeviceIDs":{"0":["z"]}}],
            "RegisteredDevices":{"x.com/r":["a","b","c","z"]}},"Checksum":1}"#;
        let d = parse(new, "u1").unwrap();
        assert_eq!(d["x.com/r"].iter().collect::<Vec<_>>(), vec!["a", "b", "c"]);
        let old = br#"{"Data":{"PodDeviceEntries":[
            {"PodUID":"u1","ContainerName":"c","ResourceName":"x.com/r","DeviceIDs":["q","p"]}]}}"#;
        let d = parse(old, "u1").unwrap();
        assert_eq!(d["x.com/r"].iter().collect::<Vec<_>>(), vec!["p", "q"]);
        assert!(parse(old, "u9").unwrap().is_empty());
        assert!(parse(b"{", "u1").is_err());
        assert!(parse(
            br#"{"Data":{"PodDeviceEntries":[{"PodUID":"u1","ResourceName":"r","DeviceIDs":7}]}}"#,
            "u1"
        )
        .is_err());
    }
}
