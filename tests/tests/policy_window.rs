//! Host tier: no window for a new pod. A pod that a MultiNetworkPolicy selects must not receive
//! a single packet from a peer the policy does not allow, not even while genie's ADD is
//! creating its interfaces.
//!
//! The node: a bridge network `team/blue` (Debian's bridge plugin with host-local), a
//! "disallowed" sender pod and an "allowed" one on it (plain namespaces with veths into the
//! bridge), both sending a UDP datagram every millisecond to the address the new pod will get
//! (a one-address host-local range), from before ADD starts until after it ends. The sender's
//! neighbour entry for that address is the broadcast MAC, so no ARP resolution stands between
//! the moment the interface has its address and the first datagram. The new pod listens (a UDP
//! socket bound in its namespace before ADD). The agent's socket server runs in this process
//! with a fixed snapshot of the inputs; genie is exec'd as a runtime does.
//!
//! With `policySocket`, the table is in the pod's namespace before the bridge plugin creates
//! `net1`: the new pod receives nothing from the disallowed sender, and the allowed sender's
//! datagrams do arrive (so the path works and zero means "dropped"). The control runs the same
//! ADD without `policySocket`, the rules coming from a reconcile after ADD (as the watches
//! would): the disallowed sender's datagrams arrive until then.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vfagent::policy::engine::Engine;
use vfagent::policy::model::{
    Inputs, Interface, MultiPolicy, Network, NetworkKey, Pod, TrafficPath,
};
use vfagent::policy::nft::{Family, Nft};
use vfagent::policy::socket::{bind, serve, Server, SocketOptions};
use vfcore::netns::NetNs;
use vfgenie_tests::runtime::{require_root, run, unique, HostLink, Node, Sandbox};

const NS: &str = "team";
const PORT: u16 = 47001;

/// Counts what one namespace receives on [`PORT`], by source address.
struct Listener {
    counts: Arc<Mutex<BTreeMap<IpAddr, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(netns: &Path) -> Self {
        let socket = NetNs::open(netns)
            .unwrap()
            .run(|| UdpSocket::bind(("0.0.0.0", PORT)))
            .unwrap()
            .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    *c.lock().unwrap().entry(from.ip()).or_insert(0) += 1;
                }
            }
        });
        Self {
            counts,
            stop,
            thread: Some(thread),
        }
    }

    fn from(&self, ip: Ipv4Addr) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(&IpAddr::V4(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Waits until more than `n` datagrams from `ip` arrived; false when `within` passed.
    fn await_more_than(&self, ip: Ipv4Addr, n: u64, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.from(ip) > n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pod-like namespace on the bridge that sends a datagram to `target` every millisecond.
struct Sender {
    _sandbox: Sandbox,
    _link: HostLink,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sender {
    fn start(bridge: &str, ip: Ipv4Addr, target: Ipv4Addr) -> Self {
        let sandbox = Sandbox::new().unwrap();
        let host = unique("pws");
        run(
            "ip",
            &[
                "link",
                "add",
                &host,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &sandbox.name,
            ],
        )
        .unwrap();
        let link = HostLink(host.clone());
        run("ip", &["link", "set", &host, "master", bridge, "up"]).unwrap();
        let n = |args: &[&str]| {
            let mut all = vec!["-n", sandbox.name.as_str()];
            all.extend_from_slice(args);
            run("ip", &all).unwrap();
        };
        n(&["link", "set", "eth0", "up"]);
        n(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        // No ARP between the new pod's address and the first datagram.
        n(&[
            "neigh",
            "replace",
            &target.to_string(),
            "lladdr",
            "ff:ff:ff:ff:ff:ff",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
        let socket = NetNs::open(&sandbox.path)
            .unwrap()
            .run(|| UdpSocket::bind((ip, 0)))
            .unwrap()
            .unwrap();
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (sent.clone(), stop.clone());
        let to = SocketAddr::from((target, PORT));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if socket.send_to(b"hello", to).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                // Pacing, not synchronisation: one datagram a millisecond.
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Self {
            _sandbox: sandbox,
            _link: link,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The node: genie's directories and API stand-in, the blue bridge, the two senders, the
/// agent's inputs.
struct Setup {
    node: Node,
    _bridge: HostLink,
    target: Ipv4Addr,
    disallowed: Ipv4Addr,
    allowed: Ipv4Addr,
    senders: Vec<Sender>,
    inputs: Inputs,
}

fn blue() -> NetworkKey {
    NetworkKey::new(NS, "blue")
}

impl Setup {
    fn new() -> Self {
        require_root();
        let node = Node::new().unwrap();
        // Unique per process, so parallel test processes do not share addresses.
        let pid = std::process::id();
        let second = 160 + (pid / 200 % 40) as u8;
        let third = (pid % 200) as u8 + 20;
        let net = format!("10.{second}.{third}");
        let subnet = format!("{net}.0/24");
        let target: Ipv4Addr = format!("{net}.10").parse().unwrap();
        let disallowed: Ipv4Addr = format!("{net}.200").parse().unwrap();
        let allowed: Ipv4Addr = format!("{net}.201").parse().unwrap();

        let bridge = HostLink(unique("pwb"));
        run("ip", &["link", "add", &bridge.0, "type", "bridge"]).unwrap();
        run("ip", &["link", "set", &bridge.0, "up"]).unwrap();
        // The cluster network: a bridge without a gateway address on the host (nothing routed).
        node.write_conf(
            "10-cluster.conflist",
            &json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
                {"type": "bridge", "bridge": node.bridge, "isGateway": false, "ipMasq": false,
                 "ipam": node.ipam(&format!("10.{}.{third}.0/24", second + 40))}]}),
        )
        .unwrap();
        // team/blue: the new pod always gets .10.
        let mut ipam = node.ipam(&subnet);
        ipam["rangeStart"] = json!(target.to_string());
        ipam["rangeEnd"] = json!(target.to_string());
        let nad = json!({"cniVersion": "1.0.0", "name": "blue", "type": "bridge", "bridge": bridge.0,
                         "isGateway": false, "ipMasq": false, "ipam": ipam});
        node.api.add_nad(NS, "blue", &nad.to_string(), None);
        node.api
            .create(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "target", "namespace": NS, "uid": "uid-target",
                             "labels": {"app": "target"},
                             "annotations": {"k8s.v1.cni.cncf.io/networks": "blue"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "node-1"},
                "status": {"phase": "Pending"}
            }))
            .unwrap();

        let senders = vec![
            Sender::start(&bridge.0, disallowed, target),
            Sender::start(&bridge.0, allowed, target),
        ];
        let inputs = inputs(&subnet, disallowed, allowed);
        Self {
            node,
            _bridge: bridge,
            target,
            disallowed,
            allowed,
            senders,
            inputs,
        }
    }

    /// What the disallowed sender has sent so far.
    fn sent(&self) -> u64 {
        self.senders[0].sent()
    }

    fn add(&self, sandbox: &Sandbox, conf: &Value) {
        let out = self
            .node
            .cni(
                "ADD",
                "cw1",
                &sandbox.path,
                "eth0",
                Some((NS, "target")),
                conf,
            )
            .unwrap();
        assert!(out.success, "ADD failed: {} / {}", out.stdout, out.stderr);
    }

    fn del(&self, sandbox: &Sandbox, conf: &Value) {
        let out = self
            .node
            .cni(
                "DEL",
                "cw1",
                &sandbox.path,
                "eth0",
                Some((NS, "target")),
                conf,
            )
            .unwrap();
        assert!(out.success, "DEL failed: {} / {}", out.stdout, out.stderr);
    }
}

/// What the agent knows: team/blue, the two senders as peers, and a MultiNetworkPolicy for
/// team/blue that lets only `role=allowed` into `app=target`.
fn inputs(subnet: &str, disallowed: Ipv4Addr, allowed: Ipv4Addr) -> Inputs {
    let mut inputs = Inputs::default();
    inputs.networks.insert(
        blue(),
        Network {
            key: blue(),
            subnets: vec![subnet.parse().unwrap()],
            path: TrafficPath::Host,
        },
    );
    inputs.namespaces.insert(NS.into(), BTreeMap::new());
    for (name, role, ip) in [("s1", "disallowed", disallowed), ("s2", "allowed", allowed)] {
        inputs.pods.push(Pod {
            namespace: NS.into(),
            name: name.into(),
            labels: [("role".to_string(), role.to_string())].into(),
            interfaces: vec![Interface {
                network: blue(),
                ifname: "eth0".into(),
                ips: vec![IpAddr::V4(ip)],
            }],
            netns: None,
        });
    }
    inputs.multi.push(MultiPolicy {
        namespace: NS.into(),
        name: "target-from-allowed".into(),
        policy_for: vec![blue()],
        spec: serde_json::from_value(json!({
            "podSelector": {"matchLabels": {"app": "target"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "allowed"}}}]}]
        }))
        .unwrap(),
    });
    inputs
}

/// The agent's socket server in this process; stopped on drop.
struct Agent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    _rt: tokio::runtime::Runtime,
}

impl Agent {
    fn start(inputs: Inputs, host: &Sandbox) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vfgenie/policy.sock");
        let engine = Engine::new(Nft::new(None).unwrap()).with_host_netns(host.path.clone());
        let server = Arc::new(Server {
            engine: Arc::new(Mutex::new(engine)),
            snapshots: Arc::new(inputs),
            options: SocketOptions {
                path: socket.clone(),
                ..SocketOptions::default()
            },
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = bind(&socket).unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        rt.spawn(serve(listener, server, stop_rx));
        Self {
            _dir: dir,
            socket,
            stop,
            _rt: rt,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// genie's step timings of its last ADD, from its debug log (`total=... policy=...`).
fn last_add_timings(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once("genie step timings: command=ADD "))
        .map(|(_, t)| t.trim().to_string())
        .next_back()
        .unwrap_or_else(|| "(no timings logged)".into())
}

/// How long a sender's datagrams are awaited (a loaded CI machine is slow, not lossy).
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_new_pod_selected_by_a_policy_never_receives_from_a_disallowed_peer() {
    let s = Setup::new();
    // The agent's own namespace stands apart, so the host's table of this test is not the
    // machine's.
    let agent_host = Sandbox::new().unwrap();

    // With policySocket: the table is there before net1 is.
    let agent = Agent::start(s.inputs.clone(), &agent_host);
    let log = s.node.dir.path().join("genie.log");
    let log_keys = json!({"logLevel": "debug", "logFile": log.display().to_string()});
    let mut keys =
        json!({"clusterNetwork": "cluster", "policySocket": agent.socket.display().to_string()});
    keys.as_object_mut()
        .unwrap()
        .extend(log_keys.as_object().unwrap().clone());
    let conf = s.node.genie_conf("1.0.0", keys);
    let pod = Sandbox::new().unwrap();
    let rx = Listener::start(&pod.path);
    let before = s.sent();
    let started = Instant::now();
    s.add(&pod, &conf);
    let add_time = started.elapsed();
    let during = s.sent() - before;
    // The allowed sender gets through: the path works, and the disallowed sender's datagrams
    // were sent on it the whole time.
    assert!(
        rx.await_more_than(s.allowed, 20, WAIT),
        "the allowed sender's datagrams do not arrive ({} so far)",
        rx.from(s.allowed)
    );
    let received = rx.from(s.disallowed);
    let allowed = rx.from(s.allowed);
    let listed = Nft::new(None)
        .unwrap()
        .list(Some(&pod.path), Family::Inet, "vfgenie")
        .unwrap()
        .expect("no table in the new pod's namespace");
    assert!(listed.to_string().contains(&s.allowed.to_string()));
    println!(
        "with policySocket: ADD took {:.1} ms, the disallowed sender sent {during} datagrams during \
         ADD; the new pod received from it: {received}, from the allowed sender: {allowed}",
        add_time.as_secs_f64() * 1e3
    );
    println!("  genie's steps: {}", last_add_timings(&log));
    assert_eq!(
        received, 0,
        "the new pod received {received} datagrams from the disallowed sender"
    );
    drop(rx);
    s.del(&pod, &conf);
    drop(pod);
    drop(agent);

    // Control: no policySocket; the rules come from a reconcile after ADD.
    let mut keys = json!({"clusterNetwork": "cluster"});
    keys.as_object_mut()
        .unwrap()
        .extend(log_keys.as_object().unwrap().clone());
    let conf = s.node.genie_conf("1.0.0", keys);
    let pod = Sandbox::new().unwrap();
    let rx = Listener::start(&pod.path);
    let before = s.sent();
    let started = Instant::now();
    s.add(&pod, &conf);
    let add_time = started.elapsed();
    let during = s.sent() - before;
    // The watches would see the pod some time after ADD; here: once it has been reached.
    let reached = rx.await_more_than(s.disallowed, 0, WAIT);
    let mut known = s.inputs.clone();
    known.pods.push(Pod {
        namespace: NS.into(),
        name: "target".into(),
        labels: [("app".to_string(), "target".to_string())].into(),
        interfaces: vec![Interface {
            network: blue(),
            ifname: "net1".into(),
            ips: vec![IpAddr::V4(s.target)],
        }],
        netns: Some(pod.path.clone()),
    });
    let mut engine = Engine::new(Nft::new(None).unwrap()).with_host_netns(agent_host.path.clone());
    let report = engine.reconcile(&known);
    assert!(report.converged(), "{:?}", report.failed);
    let before_rules = rx.from(s.disallowed);
    // After the reconcile the allowed sender still gets through, the disallowed one no more
    // (what was queued in the socket before the rules may still be read: it is counted once the
    // allowed sender has had 20 more datagrams through, then must not grow).
    let allowed_then = rx.from(s.allowed);
    assert!(rx.await_more_than(s.allowed, allowed_then + 20, WAIT));
    let settled = rx.from(s.disallowed);
    let allowed_then = rx.from(s.allowed);
    assert!(rx.await_more_than(s.allowed, allowed_then + 50, WAIT));
    let after_rules = rx.from(s.disallowed) - settled;
    println!(
        "without policySocket (control): ADD took {:.1} ms, the disallowed sender sent {during} \
         datagrams during ADD; \
         received from the disallowed sender before the reconcile: {before_rules}, after it: \
         {after_rules}",
        add_time.as_secs_f64() * 1e3
    );
    println!("  genie's steps: {}", last_add_timings(&log));
    assert!(
        reached && before_rules > 0,
        "the control lets nothing through, so the test above proves nothing"
    );
    assert_eq!(
        after_rules, 0,
        "datagrams from the disallowed sender after the rules"
    );
    drop(rx);
    s.del(&pod, &conf);
}

#[test]
fn an_unreachable_agent_fails_add_with_try_again_later_and_leaves_nothing() {
    require_root();
    let node = Node::new().unwrap();
    node.write_conf(
        "10-cluster.conflist",
        &json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
            {"type": "bridge", "bridge": node.bridge, "isGateway": false, "ipMasq": false,
             "ipam": node.ipam("10.159.1.0/24")}]}),
    )
    .unwrap();
    let nad = json!({"cniVersion": "1.0.0", "name": "blue", "type": "bridge", "bridge": node.bridge,
                     "isGateway": false, "ipMasq": false, "ipam": node.ipam("10.159.2.0/24")});
    node.api.add_nad(NS, "blue", &nad.to_string(), None);
    node.api
        .add_pod(NS, "web", &[("k8s.v1.cni.cncf.io/networks", "blue")]);
    let socket = node.dir.path().join("no-agent/policy.sock");
    let conf = node.genie_conf(
        "1.0.0",
        json!({"clusterNetwork": "cluster", "policySocket": socket.display().to_string()}),
    );
    let sb = Sandbox::new().unwrap();
    let out = node
        .cni("ADD", "cu1", &sb.path, "eth0", Some((NS, "web")), &conf)
        .unwrap();
    assert!(!out.success);
    let err = out.json().unwrap();
    assert_eq!(err["code"], 11, "{err}");
    assert_eq!(
        err["msg"],
        format!(
            "the policy agent at {} cannot be reached to set up pod team/web: No such file or \
             directory (os error 2)",
            socket.display()
        )
    );
    node.assert_nothing_left(&sb);
}
