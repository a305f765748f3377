//! A pool served to the kubelet stand-in over real gRPC on unix sockets: registration, the
//! ListAndWatch stream and its health updates, Allocate with device-info files, GetPreferredAllocation,
//! re-registration after a kubelet restart, and cleanup at shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vfagent::config::ResourceConfig;
use vfagent::pool::{Pool, PoolDevice};
use vfdp::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest,
    PreferredAllocationRequest,
};
use vfgenie_tests::kubelet::KubeletStandIn;

const T: Duration = Duration::from_secs(10);

fn vf(addr: &str, pf: &str, numa: u32, group: Option<u32>) -> PoolDevice {
    PoolDevice {
        address: addr.parse().unwrap(),
        pf: Some(pf.parse().unwrap()),
        vf_index: None,
        numa_node: Some(numa),
        driver: Some(if group.is_some() { "vfio-pci" } else { "igbvf" }.into()),
        iommu_group: group,
        netdev: None,
        need_vhost_net: false,
        healthy: true,
    }
}

fn pool(name: &str, devices: Vec<PoolDevice>) -> Pool {
    Pool {
        config: ResourceConfig {
            resource_name: name.into(),
            resource_prefix: "example.com".into(),
            exclude_topology: false,
            selectors: Vec::new(),
            additional_info: BTreeMap::new(),
        },
        devices: devices.into_iter().map(|d| (d.address, d)).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_lifecycle_with_the_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = dir.path().join("device-plugins");
    let devinfo = dir.path().join("devinfo");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let mut kubelet = KubeletStandIn::start(&plugin_dir).await.unwrap();

    let (pool_tx, pool_rx) = watch::channel(pool(
        "vfio",
        vec![
            vf("0000:01:10.0", "0000:01:00.0", 0, Some(20)),
            vf("0000:01:10.2", "0000:01:00.0", 0, Some(21)),
            vf("0000:02:10.0", "0000:02:00.0", 0, Some(22)),
        ],
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(vfagent::serve::run_pool(
        plugin_dir.clone(),
        pool_rx,
        devinfo.clone(),
        stop_rx,
    ));

    // Registration, then the first ListAndWatch message with every device healthy on NUMA 0.
    let name = "example.com/vfio";
    let r = kubelet
        .wait_for(name, T, |r| r.devices.len() == 3)
        .await
        .unwrap();
    let reg = r.registration.unwrap();
    assert_eq!(reg.endpoint, "example.com_vfio.sock");
    assert!(reg.options.unwrap().get_preferred_allocation_available);
    assert!(plugin_dir.join("example.com_vfio.sock").exists());
    for d in &r.devices {
        assert_eq!(d.health, "Healthy");
        assert_eq!(d.topology.as_ref().unwrap().nodes[0].id, 0);
    }

    // A health change reaches the kubelet as a new message.
    pool_tx.send_modify(|p| {
        let a = "0000:01:10.2".parse().unwrap();
        p.devices.get_mut(&a).unwrap().healthy = false;
    });
    kubelet
        .wait_for(name, T, |r| {
            r.devices
                .iter()
                .any(|d| d.id == "0000:01:10.2" && d.health == "Unhealthy")
        })
        .await
        .unwrap();

    // Preferred allocation spreads over the two PFs and skips the unhealthy device.
    let mut client = kubelet.plugin(name).await.unwrap();
    let pref = client
        .get_preferred_allocation(PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: vec![
                    "0000:01:10.0".into(),
                    "0000:01:10.2".into(),
                    "0000:02:10.0".into(),
                ],
                must_include_device_i_ds: vec![],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pref.container_responses[0].device_i_ds,
        vec!["0000:01:10.0".to_string(), "0000:02:10.0".to_string()]
    );

    // Allocate: env, vfio device nodes, and a read-only device-info file per device.
    let resp = client
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["0000:01:10.0".into(), "0000:02:10.0".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let c = &resp.container_responses[0];
    assert_eq!(
        c.envs["PCIDEVICE_EXAMPLE_COM_VFIO"],
        "0000:01:10.0,0000:02:10.0"
    );
    let hosts: Vec<&str> = c.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(
        hosts,
        vec!["/dev/vfio/20", "/dev/vfio/22", "/dev/vfio/vfio"]
    );
    let info_file = devinfo.join("dp/example.com-vfio-0000:01:10.0-device.json");
    let info = vfdp::devinfo::read(&info_file).unwrap();
    assert_eq!(info.pci.unwrap().pf_pci_address, "0000:01:00.0");

    // Allocating a device that is not in the pool is refused with InvalidArgument.
    let err = client
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["0000:09:00.0".into()],
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("0000:09:00.0"), "{}", err.message());

    // The kubelet restarts (sockets wiped, kubelet.sock recreated): we register again, quickly.
    let restarted = Instant::now();
    kubelet.restart().await.unwrap();
    kubelet
        .wait_for(name, T, |r| r.registrations == 1 && r.devices.len() == 3)
        .await
        .unwrap();
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "re-registration took {took:?}"
    );
    assert!(plugin_dir.join("example.com_vfio.sock").exists());

    // Shutdown removes our socket and the device-info files we wrote.
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
    assert!(!plugin_dir.join("example.com_vfio.sock").exists());
    assert!(!info_file.exists());
    assert!(plugin_dir.join("kubelet.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_started_before_the_kubelet_registers_when_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = dir.path().to_path_buf();
    let (_pool_tx, pool_rx) = watch::channel(pool(
        "net",
        vec![vf("0000:01:10.0", "0000:01:00.0", 0, None)],
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(vfagent::serve::run_pool(
        plugin_dir.clone(),
        pool_rx,
        dir.path().join("devinfo"),
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kubelet = KubeletStandIn::start(&plugin_dir).await.unwrap();
    kubelet
        .wait_for("example.com/net", T, |r| r.devices.len() == 1)
        .await
        .unwrap();
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_socket_and_device_info_files_are_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = dir.path().join("device-plugins");
    let devinfo = dir.path().join("devinfo");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let kubelet = KubeletStandIn::start(&plugin_dir).await.unwrap();
    let (_pool_tx, pool_rx) = watch::channel(pool(
        "vfio",
        vec![vf("0000:01:10.0", "0000:01:00.0", 0, Some(20))],
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(vfagent::serve::run_pool(
        plugin_dir.clone(),
        pool_rx,
        devinfo.clone(),
        stop_rx,
    ));
    let name = "example.com/vfio";
    kubelet
        .wait_for(name, T, |r| r.devices.len() == 1)
        .await
        .unwrap();
    assert_eq!(mode(&plugin_dir.join("example.com_vfio.sock")), 0o600);

    kubelet
        .plugin(name)
        .await
        .unwrap()
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["0000:01:10.0".into()],
            }],
        })
        .await
        .unwrap();
    let info_file = devinfo.join("dp/example.com-vfio-0000:01:10.0-device.json");
    assert_eq!(mode(&info_file), 0o600);
    assert_eq!(mode(&devinfo.join("dp")), 0o700);
    // Nothing else was left in the kubelet's directory (no temporary socket or directory).
    let mut names: Vec<String> = std::fs::read_dir(&plugin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["example.com_vfio.sock", "kubelet.sock"]);

    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}
