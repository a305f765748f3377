//! The agent's run loop on a private copy of a fixture sysfs tree, deciding whether it may change
//! VFs: with the kubelet's PodResources directory present but its socket missing (a kubelet
//! restarting) and a VF's netdev gone from the host namespace (a pod holds it), a config that
//! lowers the PF's VF count or rebinds that VF is refused, retried, counted in `/metrics`, and the
//! node is left untouched; once the kubelet answers and the netdev is back, the change is made. A
//! node without any kubelet still provisions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vfagent::run::{run, RunOptions};
use vfagent::state::Snapshot;
use vfcore::{PciAddress, SysRoot};
use vfgenie_tests::fixtures::{contents, copy_fixture};
use vfgenie_tests::podresources::PodResourcesStandIn;

const T: Duration = Duration::from_secs(10);
const PF0: &str = "0000:03:00.0";
const VF1: &str = "0000:03:10.2";

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

struct Node {
    _dir: tempfile::TempDir,
    sys: PathBuf,
    config: PathBuf,
    plugins: PathBuf,
    devinfo: PathBuf,
    pod_resources: PathBuf,
}

impl Node {
    /// A fixture node; `kubelet` says whether the kubelet's PodResources directory exists.
    fn new(kubelet: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("node");
        std::fs::create_dir_all(&sys).unwrap();
        copy_fixture("ixgbe-82599", &sys).unwrap();
        let plugins = dir.path().join("device-plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        let pod_resources = dir.path().join("pod-resources/kubelet.sock");
        if kubelet {
            std::fs::create_dir_all(pod_resources.parent().unwrap()).unwrap();
        }
        Self {
            config: dir.path().join("config.json"),
            devinfo: dir.path().join("devinfo"),
            _dir: dir,
            sys,
            plugins,
            pod_resources,
        }
    }

    fn root(&self) -> SysRoot {
        SysRoot::new(&self.sys)
    }

    fn write_config(&self, provisioning: serde_json::Value) {
        let cfg = serde_json::json!({
            "resourceList": [
                {"resourceName": "net", "resourcePrefix": "example.com",
                 "selectors": {"drivers": ["ixgbevf"]}}
            ],
            "provisioning": provisioning
        });
        std::fs::write(&self.config, cfg.to_string()).unwrap();
    }

    fn numvfs(&self, pf: &str) -> String {
        let p = self.root().pci_attr(&addr(pf), "sriov_numvfs");
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }

    /// The agent's loop and its HTTP server, as `vfgenie-agent run` wires them.
    async fn start(&self) -> Agent {
        let mut opts = RunOptions::new(self.config.clone());
        opts.root = self.root();
        opts.plugin_dir = self.plugins.clone();
        opts.devinfo_dir = self.devinfo.clone();
        opts.pod_resources_socket = self.pod_resources.clone();
        opts.health_interval = Duration::from_millis(100);
        opts.retry_interval = Duration::from_millis(200);
        opts.config_poll = Duration::from_millis(100);
        opts.kernel_events = false;
        // A fixture has no kernel behind it: VFs never appear after a write; do not wait long.
        opts.reconcile.provision_timeout = Duration::from_millis(200);
        opts.reconcile.bind_timeout = Duration::from_millis(200);
        let (state_tx, state) = watch::channel(Snapshot::default());
        let (stop, stop_rx) = watch::channel(false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = listener.local_addr().unwrap();
        let http = tokio::spawn(vfagent::http::serve(
            listener,
            state.clone(),
            stop_rx.clone(),
        ));
        let task = tokio::spawn(async move { run(opts, state_tx, stop_rx).await.unwrap() });
        Agent {
            task,
            http,
            stop,
            state,
            http_addr,
        }
    }
}

struct Agent {
    task: JoinHandle<()>,
    http: JoinHandle<Result<(), vfagent::http::Error>>,
    stop: watch::Sender<bool>,
    state: watch::Receiver<Snapshot>,
    http_addr: SocketAddr,
}

impl Agent {
    async fn wait_for(&self, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let mut rx = self.state.clone();
        let found = tokio::time::timeout(T, async {
            rx.wait_for(|s| pred(s)).await.map(|s| s.clone()).ok()
        })
        .await;
        match found {
            Ok(Some(s)) => s,
            _ => panic!(
                "no {what} within {T:?}; the agent published {:#?}",
                *self.state.borrow()
            ),
        }
    }

    /// `GET /metrics`, as a scraper sends it.
    async fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.http_addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        tokio::time::timeout(T, s.read_to_string(&mut raw))
            .await
            .unwrap()
            .unwrap();
        raw
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
        self.http.await.unwrap().unwrap();
    }
}

fn has_condition(s: &Snapshot, object: &str, reason: &str) -> bool {
    s.conditions
        .iter()
        .any(|c| c.object == object && c.reason == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_kubelet_and_a_vf_in_a_pod_stop_every_change_to_it() {
    let node = Node::new(true);
    // VF 1 is bound to ixgbevf but its netdev is in a pod's namespace: the host sees none.
    std::fs::remove_dir_all(node.root().pci_attr(&addr(VF1), "net")).unwrap();
    node.write_config(serde_json::json!([{"pfName": "enp3s0f0", "numVfs": 2}]));
    let before = contents(&node.sys).unwrap();

    let agent = node.start().await;
    // Refused, and refused again on the retries.
    let s = agent
        .wait_for("the VF count change refused twice", |s| {
            s.refused_changes >= 2 && has_condition(s, PF0, "VfsInUse")
        })
        .await;
    let c = s.conditions.iter().find(|c| c.object == PF0).unwrap();
    assert!(c.message.contains(VF1), "{}", c.message);
    assert_eq!(node.numvfs(PF0), "4");
    let metrics = agent.metrics().await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vfgenie_refused_changes_total "))
        .unwrap_or_else(|| panic!("no refused-changes counter in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(refused >= 2, "{metrics}");
    assert!(
        metrics.contains("vfgenie_conditions{object=\"0000:03:00.0\",reason=\"VfsInUse\"} 1"),
        "{metrics}"
    );

    // Rebinding that VF to vfio-pci is refused the same way.
    node.write_config(serde_json::json!([
        {"pfName": "enp3s0f0", "numVfs": 4, "vfs": [{"range": "1", "driver": "vfio-pci"}]}
    ]));
    agent
        .wait_for("the rebind refused", |s| has_condition(s, VF1, "VfInUse"))
        .await;
    assert!(
        contents(&node.sys).unwrap() == before,
        "a VF in use was touched"
    );

    // The netdev comes back to the host, but the kubelet still does not answer: other VFs may be
    // held, so the PF's VF count still does not change.
    std::fs::create_dir_all(node.root().pci_attr(&addr(VF1), "net/enp3s16f2")).unwrap();
    node.write_config(serde_json::json!([{"pfName": "enp3s0f0", "numVfs": 2}]));
    agent
        .wait_for("the change refused while the kubelet is silent", |s| {
            has_condition(s, PF0, "VfsMaybeInUse")
        })
        .await;
    assert_eq!(node.numvfs(PF0), "4");

    // The kubelet answers, holding nothing: the next retry makes the change.
    let socket = node.pod_resources.clone();
    let podres = tokio::task::spawn_blocking(move || PodResourcesStandIn::start(&socket))
        .await
        .unwrap()
        .unwrap();
    agent
        .wait_for("the VF count written", |_| node.numvfs(PF0) == "2")
        .await;
    agent.stop().await;
    tokio::task::spawn_blocking(move || drop(podres))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_kubelet_still_provisions() {
    let node = Node::new(false);
    node.write_config(serde_json::json!([
        {"pfName": "enp3s0f0", "numVfs": 2},
        {"pciAddress": "0000:03:00.1", "numVfs": 3}
    ]));
    let agent = node.start().await;
    // A fixture has no kernel behind it: the counts are written, no VFs follow.
    agent
        .wait_for("both VF counts written", |_| {
            node.numvfs(PF0) == "2" && node.numvfs("0000:03:00.1") == "3"
        })
        .await;
    let s = agent.wait_for("a reconcile", |s| s.reconciles > 0).await;
    assert_eq!(s.refused_changes, 0, "{:#?}", s.conditions);
    agent.stop().await;
}
