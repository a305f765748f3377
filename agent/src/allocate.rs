//! The kubelet's Allocate: what a container that was given some VFs of a pool receives, in the
//! SR-IOV network device plugin's format (environment variables, vfio device nodes).

use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use vfcore::{PciAddress, SysRoot};
use vfdp::v1beta1::{ContainerAllocateResponse, DeviceSpec};

use crate::pool::{Pool, PoolDevice};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("device {id:?} is not in pool {pool}")]
    UnknownDevice { pool: String, id: String },
    #[error("device {id} of pool {pool} is unhealthy")]
    Unhealthy { pool: String, id: PciAddress },
    #[error("vfio device {id} of pool {pool} has no IOMMU group")]
    NoIommuGroup { pool: String, id: PciAddress },
}

/// `PCIDEVICE_<PREFIX>_<NAME>`: upper case, `.` and `/` become `_`.
pub fn env_name(resource: &str) -> String {
    let mut s = String::from("PCIDEVICE_");
    s.extend(resource.chars().map(|c| match c {
        '.' | '/' => '_',
        c => c.to_ascii_uppercase(),
    }));
    s
}

/// The response for one container that was given `ids` from `pool`.
pub fn container_response(pool: &Pool, ids: &[String]) -> Result<ContainerAllocateResponse, Error> {
    let name = pool.full_name();
    let host = SysRoot::host();
    let mut devices: Vec<&PoolDevice> = Vec::with_capacity(ids.len());
    for id in ids {
        let dev = id
            .parse::<PciAddress>()
            .ok()
            .and_then(|a| pool.devices.get(&a))
            .ok_or_else(|| Error::UnknownDevice {
                pool: name.clone(),
                id: id.clone(),
            })?;
        if !dev.healthy {
            return Err(Error::Unhealthy {
                pool: name.clone(),
                id: dev.address,
            });
        }
        devices.push(dev);
    }
    let mut info = serde_json::Map::new();
    let mut specs: BTreeMap<String, DeviceSpec> = BTreeMap::new();
    let mut spec = |path: String| {
        specs.entry(path.clone()).or_insert(DeviceSpec {
            container_path: path.clone(),
            host_path: path,
            permissions: "rw".into(),
        });
    };
    for dev in &devices {
        let bdf = dev.address.to_string();
        let mut entry = serde_json::Map::new();
        entry.insert("generic".into(), json!({ "deviceID": bdf }));
        if dev.is_vfio() {
            let group = dev.iommu_group.ok_or_else(|| Error::NoIommuGroup {
                pool: name.clone(),
                id: dev.address,
            })?;
            let container = host.dev_vfio_container().display().to_string();
            let group_dev = host.dev_vfio_group(group, false).display().to_string();
            entry.insert(
                "vfio".into(),
                json!({ "mount": container, "dev-mount": group_dev }),
            );
            spec(container);
            spec(group_dev);
        }
        info.insert(bdf, serde_json::Value::Object(entry));
    }
    if pool.need_vhost_net() {
        for p in [host.dev_vhost_net(), host.dev_net_tun()] {
            spec(p.display().to_string());
        }
    }
    let env = env_name(&name);
    let mut envs = HashMap::new();
    envs.insert(
        env.clone(),
        devices
            .iter()
            .map(|d| d.address.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    envs.insert(
        format!("{env}_INFO"),
        serde_json::Value::Object(info).to_string(),
    );
    Ok(ContainerAllocateResponse {
        envs,
        mounts: Vec::new(),
        devices: specs.into_values().collect(),
        annotations: HashMap::new(),
        cdi_devices: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::tests::{device, pool_of};

    #[test]
    fn env_names_follow_the_device_plugin() {
        assert_eq!(
            env_name("intel.com/intel_sriov_netdevice"),
            "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE"
        );
    }

    #[test]
    fn netdev_vfs_get_env_and_info_but_no_device_nodes() {
        let pool = pool_of(
            "example.com/net",
            vec![device("0000:01:10.0", None), device("0000:01:10.2", None)],
        );
        let r = container_response(&pool, &["0000:01:10.2".into(), "0000:01:10.0".into()]).unwrap();
        assert_eq!(
            r.envs["PCIDEVICE_EXAMPLE_COM_NET"],
            "0000:01:10.2,0000:01:10.0"
        );
        let info: serde_json::Value =
            serde_json::from_str(&r.envs["PCIDEVICE_EXAMPLE_COM_NET_INFO"]).unwrap();
        assert_eq!(
            info,
            json!({
                "0000:01:10.0": {"generic": {"deviceID": "0000:01:10.0"}},
                "0000:01:10.2": {"generic": {"deviceID": "0000:01:10.2"}}
            })
        );
        assert!(r.devices.is_empty());
    }

    #[test]
    fn vfio_vfs_get_their_group_and_the_container_once() {
        let pool = pool_of(
            "example.com/dpdk",
            vec![
                device("0000:01:10.4", Some(17)),
                device("0000:01:10.6", Some(18)),
            ],
        );
        let r = container_response(&pool, &["0000:01:10.4".into(), "0000:01:10.6".into()]).unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&r.envs["PCIDEVICE_EXAMPLE_COM_DPDK_INFO"]).unwrap();
        assert_eq!(
            info["0000:01:10.4"]["vfio"],
            json!({"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/17"})
        );
        let paths: Vec<&str> = r.devices.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/dev/vfio/17", "/dev/vfio/18", "/dev/vfio/vfio"]
        );
        assert!(r
            .devices
            .iter()
            .all(|d| d.permissions == "rw" && d.container_path == d.host_path));
    }

    #[test]
    fn unknown_and_unhealthy_devices_are_refused_by_name() {
        let mut sick = device("0000:01:10.0", None);
        sick.healthy = false;
        let pool = pool_of("example.com/net", vec![sick]);
        assert_eq!(
            container_response(&pool, &["0000:09:00.0".into()]).unwrap_err(),
            Error::UnknownDevice {
                pool: "example.com/net".into(),
                id: "0000:09:00.0".into()
            }
        );
        assert_eq!(
            container_response(&pool, &["../../x".into()])
                .unwrap_err()
                .to_string(),
            "device \"../../x\" is not in pool example.com/net"
        );
        assert!(matches!(
            container_response(&pool, &["0000:01:10.0".into()]),
            Err(Error::Unhealthy { .. })
        ));
    }
}
