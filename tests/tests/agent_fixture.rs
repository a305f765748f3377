//! The agent's run loop on a private copy of a fixture sysfs tree, serving the kubelet stand-in over
//! real gRPC: registration, ListAndWatch contents, Allocate for netdev and vfio pools, PF link
//! health, config reload (valid and invalid), a hot-added PF, kubelet restart and agent restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use vfagent::run::{run, RunOptions};
use vfagent::state::Snapshot;
use vfcore::SysRoot;
use vfdp::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use vfgenie_tests::fixtures::{contents, copy_fixture};
use vfgenie_tests::kubelet::{KubeletStandIn, Resource};

const T: Duration = Duration::from_secs(10);
const NET: &str = "example.com/net";
const DPDK: &str = "example.com/dpdk";
const PF1: &str = "example.com/pf1";

fn config(net_selector: serde_json::Value) -> String {
    serde_json::json!({
        "resourceList": [
            {"resourceName": "net", "resourcePrefix": "example.com", "selectors": net_selector},
            {"resourceName": "dpdk", "resourcePrefix": "example.com", "selectors": {"drivers": ["vfio-pci"]}},
            {"resourceName": "pf1", "resourcePrefix": "example.com", "selectors": {"pciAddresses": ["0000:03:00.1"]}}
        ],
        "provisioning": [
            {"pfName": "enp3s0f0", "numVfs": 4, "vfs": [{"range": "0-2", "driver": "netdevice"}, {"range": "3", "driver": "vfio-pci"}]}
        ]
    })
    .to_string()
}

struct Node {
    _dir: tempfile::TempDir,
    sys: PathBuf,
    plugins: PathBuf,
    config: PathBuf,
    devinfo: PathBuf,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("node");
        let plugins = dir.path().join("device-plugins");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(&plugins).unwrap();
        copy_fixture("ixgbe-82599", &sys).unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, config_text_default()).unwrap();
        Self {
            devinfo: dir.path().join("devinfo"),
            _dir: dir,
            sys,
            plugins,
            config,
        }
    }

    fn start(
        &self,
    ) -> (
        JoinHandle<()>,
        watch::Sender<bool>,
        watch::Receiver<Snapshot>,
    ) {
        let mut opts = RunOptions::new(self.config.clone());
        opts.root = SysRoot::new(&self.sys);
        opts.plugin_dir = self.plugins.clone();
        opts.devinfo_dir = self.devinfo.clone();
        opts.pod_resources_socket = self.plugins.join("no-pod-resources.sock");
        opts.health_interval = Duration::from_millis(100);
        opts.resync_interval = Duration::from_millis(300);
        opts.config_poll = Duration::from_millis(100);
        opts.kernel_events = false;
        let (state_tx, state_rx) = watch::channel(Snapshot::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move { run(opts, state_tx, stop_rx).await.unwrap() });
        (task, stop_tx, state_rx)
    }

    fn pf0_link(&self, up: bool) {
        let net = SysRoot::new(&self.sys).netdev("enp3s0f0").unwrap();
        std::fs::write(net.join("operstate"), if up { "up\n" } else { "down\n" }).unwrap();
        std::fs::write(net.join("carrier"), if up { "1\n" } else { "0\n" }).unwrap();
    }
}

fn config_text_default() -> String {
    config(serde_json::json!({"drivers": ["ixgbevf"]}))
}

fn ids(r: &Resource) -> Vec<String> {
    let mut v: Vec<String> = r.devices.iter().map(|d| d.id.clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_a_fixture_node() {
    let node = Node::new();
    // The agent's audit log (set once per process; the other test of this file writes none).
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("agent-audit.log");
    vfagent::audit::init(vfaudit::AuditConfig::with_defaults(&audit_log));
    // PF1 is not on the bus yet: it is hot-added later.
    let bus_link = SysRoot::new(&node.sys).pci_device(&"0000:03:00.1".parse().unwrap());
    let bus_target = std::fs::read_link(&bus_link).unwrap();
    std::fs::remove_file(&bus_link).unwrap();
    let before = contents(&node.sys).unwrap();

    let mut kubelet = KubeletStandIn::start(&node.plugins).await.unwrap();
    let (agent, stop, state) = node.start();

    let net = kubelet
        .wait_for(NET, T, |r| r.devices.len() == 3)
        .await
        .unwrap();
    assert_eq!(
        ids(&net),
        vec!["0000:03:10.0", "0000:03:10.2", "0000:03:10.4"]
    );
    assert!(net
        .devices
        .iter()
        .all(|d| d.health == "Healthy" && d.topology.as_ref().unwrap().nodes[0].id == 0));
    let dpdk = kubelet
        .wait_for(DPDK, T, |r| r.devices.len() == 1)
        .await
        .unwrap();
    assert_eq!(ids(&dpdk), vec!["0000:03:10.6"]);
    // The pf1 pool registers, empty, until its PF appears.
    kubelet
        .wait_for(PF1, T, |r| r.registration.is_some())
        .await
        .unwrap();

    // Allocate: netdev VFs get env only, the vfio VF its group.
    let mut c = kubelet.plugin(NET).await.unwrap();
    let r = c
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["0000:03:10.2".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.container_responses[0].envs["PCIDEVICE_EXAMPLE_COM_NET"],
        "0000:03:10.2"
    );
    assert!(r.container_responses[0].devices.is_empty());
    let mut c = kubelet.plugin(DPDK).await.unwrap();
    let r = c
        .allocate(AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec!["0000:03:10.6".into()],
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let paths: Vec<&str> = r.container_responses[0]
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(paths, vec!["/dev/vfio/73", "/dev/vfio/vfio"]);
    assert!(node
        .devinfo
        .join("dp/example.com-dpdk-0000:03:10.6-device.json")
        .exists());

    // PF0's link goes down: all its VFs turn unhealthy in the stream, and back.
    node.pf0_link(false);
    let net = kubelet
        .wait_for(NET, T, |r| {
            r.devices.iter().all(|d| d.health == "Unhealthy")
        })
        .await
        .unwrap();
    assert_eq!(net.devices.len(), 3);
    kubelet
        .wait_for(DPDK, T, |r| {
            r.devices.iter().all(|d| d.health == "Unhealthy")
        })
        .await
        .unwrap();
    node.pf0_link(true);
    kubelet
        .wait_for(NET, T, |r| {
            r.devices.len() == 3 && r.devices.iter().all(|d| d.health == "Healthy")
        })
        .await
        .unwrap();
    kubelet
        .wait_for(DPDK, T, |r| r.devices.iter().all(|d| d.health == "Healthy"))
        .await
        .unwrap();

    // The audit log has both Allocates and each VF's way down and back up.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let allocates: Vec<(String, serde_json::Value)> = events
        .iter()
        .filter(|e| e["event"] == "allocate")
        .map(|e| {
            (
                e["pool"].as_str().unwrap().to_string(),
                e["devices"].clone(),
            )
        })
        .collect();
    assert_eq!(
        allocates,
        vec![
            (NET.to_string(), serde_json::json!(["0000:03:10.2"])),
            (DPDK.to_string(), serde_json::json!(["0000:03:10.6"])),
        ]
    );
    for vf in [
        "0000:03:10.0",
        "0000:03:10.2",
        "0000:03:10.4",
        "0000:03:10.6",
    ] {
        let changes: Vec<&str> = events
            .iter()
            .filter(|e| e["event"] == "healthChanged" && e["devices"][0] == vf)
            .map(|e| e["detail"].as_str().unwrap())
            .collect();
        assert_eq!(changes.len(), 2, "{vf}: {changes:?}");
        assert!(changes[0].starts_with("unhealthy: "), "{vf}: {changes:?}");
        assert_eq!(changes[1], "healthy", "{vf}");
    }
    assert!(events
        .iter()
        .all(|e| e["source"] == "agent" && e["kind"] == "event"));

    // Hot-added PF: the bus link appears and the next resync puts it in its pool.
    std::os::unix::fs::symlink(&bus_target, &bus_link).unwrap();
    let pf1 = kubelet
        .wait_for(PF1, T, |r| r.devices.len() == 1)
        .await
        .unwrap();
    assert_eq!(ids(&pf1), vec!["0000:03:00.1"]);

    // Config reload: the net pool narrows to VFs 0-1 of PF0.
    std::fs::write(
        &node.config,
        config(serde_json::json!({"pfNames": ["enp3s0f0#0-1"], "drivers": ["ixgbevf"]})),
    )
    .unwrap();
    let net = kubelet
        .wait_for(NET, T, |r| r.devices.len() == 2)
        .await
        .unwrap();
    assert_eq!(ids(&net), vec!["0000:03:10.0", "0000:03:10.2"]);

    // An invalid reload is refused; the last good config keeps serving.
    std::fs::write(
        &node.config,
        r#"{"resourceList": [{"resourceName": "bad name"}]}"#,
    )
    .unwrap();
    let mut st = state.clone();
    let snap = tokio::time::timeout(T, st.wait_for(|s| s.config_errors > 0))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let cond = &snap.conditions[0];
    assert_eq!(cond.reason, "ConfigInvalid");
    assert!(
        cond.message.contains("resourceList[0].resourceName"),
        "{}",
        cond.message
    );
    assert_eq!(snap.pools.len(), 3);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(ids(&kubelet.resource(NET).await.unwrap()).len(), 2);

    // Kubelet restart: every pool registers again.
    kubelet.restart().await.unwrap();
    for name in [NET, DPDK, PF1] {
        kubelet
            .wait_for(name, T, |r| {
                r.registrations == 1 && r.registration.is_some()
            })
            .await
            .unwrap();
    }

    // Agent restart: sockets and device-info files go with it; it comes back with the same pools.
    stop.send(true).unwrap();
    agent.await.unwrap();
    for s in [
        "example.com_net.sock",
        "example.com_dpdk.sock",
        "example.com_pf1.sock",
    ] {
        assert!(!node.plugins.join(s).exists(), "{s} left behind");
    }
    assert!(!node
        .devinfo
        .join("dp/example.com-dpdk-0000:03:10.6-device.json")
        .exists());
    std::fs::write(&node.config, config_text_default()).unwrap();
    let (agent, stop, _state) = node.start();
    kubelet
        .wait_for(NET, T, |r| r.registrations == 2 && r.devices.len() == 3)
        .await
        .unwrap();
    stop.send(true).unwrap();
    agent.await.unwrap();

    // On a node already as configured, neither start wrote to sysfs (only the test did).
    let mut after = contents(&node.sys).unwrap();
    let mut expected = before;
    // The test itself toggled PF0's link and re-added PF1's bus link; nothing else may differ.
    let pf_net = SysRoot::new(&node.sys).netdev("enp3s0f0").unwrap();
    for f in ["operstate", "carrier"] {
        let p = std::fs::canonicalize(pf_net.join(f)).unwrap();
        after.remove(&p);
        expected.remove(&p);
    }
    assert!(after == expected, "the agent wrote to sysfs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_at_start_is_an_error_naming_the_field() {
    let node = Node::new();
    std::fs::write(
        &node.config,
        r#"{"provisioning": [{"pfName": "enp3s0f0", "numVfs": 99999999}]}"#,
    )
    .unwrap();
    let mut opts = RunOptions::new(node.config.clone());
    opts.root = SysRoot::new(&node.sys);
    opts.plugin_dir = node.plugins.clone();
    opts.kernel_events = false;
    let (state_tx, _rx) = watch::channel(Snapshot::default());
    let (_stop_tx, stop_rx) = watch::channel(false);
    let err = run(opts, state_tx, stop_rx).await.unwrap_err().to_string();
    assert!(err.contains("provisioning[0].numVfs"), "{err}");
    assert!(std::fs::read_dir(&node.plugins).unwrap().next().is_none());
}
