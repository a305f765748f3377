//! A traffic harness for network policy tests: networks routed through a node, pods on them, and
//! probes (ping, TCP, UDP, a sequenced UDP stream) whose results a test asserts on.
//!
//! Nothing touches the host's own namespace. A [`Topology`] makes a namespace that plays the
//! node (forwarding on), with one Linux bridge per network and the network's gateway addresses
//! on it (`10.91.K.1/24`, `fd00:91:K::1/64`); a pod is a namespace with a veth into the bridge,
//! addresses on the subnet and default routes via the gateway. [`Topology::link_pods`] adds a
//! veth straight between two pods (`10.92.L.0/24`, `fd00:92:L::/64`), as a VF or macvlan network
//! whose traffic never crosses the node. Namespace names are unique per process and call, so
//! tests run in parallel; dropping the topology stops the servers and deletes every namespace
//! (links go with them).
//!
//! Probes run in the source pod: sockets are created on a thread inside the pod's namespace (a
//! socket stays in the namespace it was made in), `ping` is spawned from such a thread. Servers
//! answer inside the destination pod, started on first use. Each probe is bounded by its
//! timeout, so a denied probe costs the timeout and an allowed one its round trip.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vfcore::netns::NetNs;

use crate::runtime::{run, Sandbox};

mod matrix;
mod probes;

pub use matrix::{Matrix, Probe};
use probes::{bind_udp, tcp_echo_server};
pub use probes::{StreamReport, TcpConn, UdpStream};

/// The timeout of a probe when the caller gives none: what a denied probe costs.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId(pub usize);

/// One interface of a pod: on a node network (`eth<n>`) or an in-pod link (`lnk<L>`).
#[derive(Debug, Clone)]
pub struct Iface {
    pub ifname: String,
    /// `net<K>` or `link<L>`.
    pub network: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

pub struct Pod {
    pub label: String,
    pub ifaces: Vec<Iface>,
    ns: NetNs,
    sandbox: Sandbox,
}

impl Pod {
    /// The namespace name (`/run/netns/<name>`).
    pub fn netns_name(&self) -> &str {
        &self.sandbox.name
    }

    pub fn netns_path(&self) -> &Path {
        &self.sandbox.path
    }

    pub fn netns(&self) -> &NetNs {
        &self.ns
    }

    /// The IPv4 address of the first interface.
    pub fn v4(&self) -> IpAddr {
        self.ifaces
            .first()
            .map_or(Ipv4Addr::UNSPECIFIED.into(), |i| i.v4.into())
    }

    /// The IPv6 address of the first interface.
    pub fn v6(&self) -> IpAddr {
        self.ifaces
            .first()
            .map_or(Ipv6Addr::UNSPECIFIED.into(), |i| i.v6.into())
    }

    /// Runs `ip <args>` inside the pod; its stdout.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", self.netns_name()];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

struct Network {
    bridge: String,
    k: usize,
    hosts: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Proto {
    Tcp,
    Udp,
}

/// A server thread and what wakes it up to stop.
struct Server {
    wake: Option<TcpListener>,
    thread: JoinHandle<()>,
}

pub struct Topology {
    networks: Vec<Network>,
    pods: Vec<Pod>,
    links: usize,
    servers: Mutex<HashMap<(PodId, Proto, u16), Server>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    stop: Arc<AtomicBool>,
    node: Sandbox,
    node_ns: NetNs,
}

/// Writes a sysctl of the namespace `ns` (the calling thread's /proc/sys/net is its namespace's).
fn sysctl(ns: &NetNs, key: &str, value: &str) -> anyhow::Result<()> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    ns.run(|| std::fs::write(&path, value))?
        .with_context(|| format!("setting {key}={value} in {}", ns.path().display()))
}

/// Runs `ip -n <ns> -batch -` with one command per line.
fn ip_batch(ns: &str, lines: &[String]) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.join("\n").as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -n {ns} -batch failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            lines.join("\n")
        );
    }
    Ok(())
}

/// A new namespace with loopback up and no IPv6 duplicate address detection (addresses are
/// usable at once).
fn new_netns() -> anyhow::Result<(Sandbox, NetNs)> {
    let sb = Sandbox::new()?;
    let ns = NetNs::open(&sb.path)?;
    for k in [
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        sysctl(&ns, k, "0")?;
    }
    ip_batch(&sb.name, &["link set lo up".to_string()])?;
    Ok((sb, ns))
}

impl Topology {
    /// The node namespace, forwarding IPv4 and IPv6, and no networks yet.
    pub fn new() -> anyhow::Result<Self> {
        let (node, node_ns) = new_netns()?;
        sysctl(&node_ns, "net.ipv4.ip_forward", "1")?;
        sysctl(&node_ns, "net.ipv6.conf.all.forwarding", "1")?;
        Ok(Self {
            networks: Vec::new(),
            pods: Vec::new(),
            links: 0,
            servers: Mutex::new(HashMap::new()),
            workers: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            node,
            node_ns,
        })
    }

    /// `n` networks with one pod each (labels `a`, `b`, ...).
    pub fn with_pods(n: usize) -> anyhow::Result<(Self, Vec<PodId>)> {
        let mut t = Self::new()?;
        let mut pods = Vec::new();
        for i in 0..n {
            let net = t.add_network()?;
            let label = char::from(b'a' + (i % 26) as u8).to_string();
            pods.push(t.add_pod(&label, net)?);
        }
        Ok((t, pods))
    }

    /// A bridge `br<K>` in the node with the gateway addresses of `10.91.K.0/24` and
    /// `fd00:91:K::/64`.
    pub fn add_network(&mut self) -> anyhow::Result<NetworkId> {
        let k = self.networks.len() + 1;
        if k > 250 {
            bail!("at most 250 networks");
        }
        let bridge = format!("br{k}");
        ip_batch(
            &self.node.name,
            &[
                format!("link add {bridge} type bridge mcast_snooping 0"),
                format!("addr add 10.91.{k}.1/24 dev {bridge}"),
                format!("addr add fd00:91:{k}::1/64 dev {bridge} nodad"),
                format!("link set {bridge} up"),
            ],
        )?;
        self.networks.push(Network {
            bridge,
            k,
            hosts: 0,
        });
        Ok(NetworkId(k - 1))
    }

    /// A pod on `net`: its interface `eth0` gets the next host address and the default routes.
    pub fn add_pod(&mut self, label: &str, net: NetworkId) -> anyhow::Result<PodId> {
        let (sandbox, ns) = new_netns()?;
        self.pods.push(Pod {
            label: label.to_string(),
            ifaces: Vec::new(),
            ns,
            sandbox,
        });
        let id = PodId(self.pods.len() - 1);
        self.attach(id, net)?;
        Ok(id)
    }

    /// Another interface `eth<n>` of `pod` on `net` (no default route: the first network has it).
    pub fn attach(&mut self, pod: PodId, net: NetworkId) -> anyhow::Result<Iface> {
        let network = self.networks.get_mut(net.0).context("no such network")?;
        let p = self.pods.get_mut(pod.0).context("no such pod")?;
        let (k, bridge) = (network.k, network.bridge.clone());
        let host = 10 + network.hosts;
        if host > 250 {
            bail!("network net{k} is full");
        }
        network.hosts += 1;
        let ifname = format!(
            "eth{}",
            p.ifaces
                .iter()
                .filter(|i| i.ifname.starts_with("eth"))
                .count()
        );
        let node_end = format!("p{}n{k}", pod.0);
        ip_batch(
            &self.node.name,
            &[
                format!(
                    "link add {node_end} type veth peer name {ifname} netns {}",
                    p.sandbox.name
                ),
                format!("link set {node_end} master {bridge}"),
                format!("link set {node_end} up"),
            ],
        )?;
        let iface = Iface {
            ifname: ifname.clone(),
            network: format!("net{k}"),
            v4: format!("10.91.{k}.{host}").parse()?,
            v6: format!("fd00:91:{k}::{host}").parse()?,
        };
        let mut cmds = vec![
            format!("link set {ifname} up"),
            format!("addr add {}/24 dev {ifname}", iface.v4),
            format!("addr add {}/64 dev {ifname} nodad", iface.v6),
        ];
        if p.ifaces.is_empty() {
            cmds.push(format!("route add default via 10.91.{k}.1 dev {ifname}"));
            cmds.push(format!("route add default via fd00:91:{k}::1 dev {ifname}"));
        }
        ip_batch(&p.sandbox.name, &cmds)?;
        p.ifaces.push(iface.clone());
        Ok(iface)
    }

    /// A veth `lnk<L>` straight between pods `a` and `b` (`10.92.L.1`/`.2`, `fd00:92:L::1`/`::2`):
    /// traffic on it never crosses the node.
    pub fn link_pods(&mut self, a: PodId, b: PodId) -> anyhow::Result<(Iface, Iface)> {
        if a == b || a.0 >= self.pods.len() || b.0 >= self.pods.len() {
            bail!("link_pods needs two different pods of this topology");
        }
        self.links += 1;
        let l = self.links;
        let ifname = format!("lnk{l}");
        ip_batch(
            self.pods[a.0].netns_name(),
            &[format!(
                "link add {ifname} type veth peer name {ifname} netns {}",
                self.pods[b.0].netns_name()
            )],
        )?;
        let mut ends = Vec::new();
        for (pod, host) in [(a, 1), (b, 2)] {
            let iface = Iface {
                ifname: ifname.clone(),
                network: format!("link{l}"),
                v4: format!("10.92.{l}.{host}").parse()?,
                v6: format!("fd00:92:{l}::{host}").parse()?,
            };
            ip_batch(
                self.pods[pod.0].netns_name(),
                &[
                    format!("link set {ifname} up"),
                    format!("addr add {}/24 dev {ifname}", iface.v4),
                    format!("addr add {}/64 dev {ifname} nodad", iface.v6),
                ],
            )?;
            self.pods[pod.0].ifaces.push(iface.clone());
            ends.push(iface);
        }
        let b_end = ends.pop().context("two ends")?;
        let a_end = ends.pop().context("two ends")?;
        Ok((a_end, b_end))
    }

    pub fn pod(&self, id: PodId) -> &Pod {
        &self.pods[id.0]
    }

    pub fn pods(&self) -> impl Iterator<Item = (PodId, &Pod)> {
        self.pods.iter().enumerate().map(|(i, p)| (PodId(i), p))
    }

    /// The node namespace (its bridges and the pods' veth ends).
    pub fn node_netns(&self) -> &NetNs {
        &self.node_ns
    }

    /// Every namespace name this topology made (the node's first).
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.node.name.clone())
            .chain(self.pods.iter().map(|p| p.netns_name().to_string()))
            .collect()
    }

    /// The pod that has `ip` on one of its interfaces.
    pub fn owner(&self, ip: IpAddr) -> Option<PodId> {
        self.pods().find_map(|(id, p)| {
            p.ifaces
                .iter()
                .any(|i| IpAddr::from(i.v4) == ip || IpAddr::from(i.v6) == ip)
                .then_some(id)
        })
    }

    /// One echo request from `src` to `dst`, answered within [`PROBE_TIMEOUT`].
    pub fn ping(&self, src: PodId, dst: IpAddr) -> bool {
        self.ping_within(src, dst, PROBE_TIMEOUT)
    }

    pub fn ping_within(&self, src: PodId, dst: IpAddr, timeout: Duration) -> bool {
        let wait = format!("{:.3}", timeout.as_secs_f64().max(0.001));
        let dst = dst.to_string();
        self.pod(src)
            .ns
            .run(|| {
                Command::new("ping")
                    .args(["-n", "-q", "-c", "1", "-W", &wait, &dst])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            })
            .is_ok_and(|r| r.is_ok_and(|s| s.success()))
    }

    /// A TCP connection from `src` to `dst:port` (an echo server in the pod that owns `dst`)
    /// that carries one byte there and back within `timeout`.
    pub fn tcp_connect(&self, src: PodId, dst: IpAddr, port: u16, timeout: Duration) -> bool {
        self.tcp_open(src, dst, port, timeout)
            .is_ok_and(|mut c| c.echo(timeout.saturating_sub(c.opened.elapsed())))
    }

    /// An open TCP connection to the echo server on `dst:port`, for tests that keep one across
    /// changes (an established flow).
    pub fn tcp_open(
        &self,
        src: PodId,
        dst: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> anyhow::Result<TcpConn> {
        let owner = self
            .owner(dst)
            .context("no pod has the destination address")?;
        self.serve(owner, Proto::Tcp, port)?;
        let opened = Instant::now();
        let addr = SocketAddr::new(dst, port);
        let stream = self
            .pod(src)
            .ns
            .run(|| TcpStream::connect_timeout(&addr, timeout))??;
        stream.set_nodelay(true)?;
        Ok(TcpConn { stream, opened })
    }

    /// A UDP datagram from `src` to `dst:port` echoed back within `timeout`.
    pub fn udp(&self, src: PodId, dst: IpAddr, port: u16, timeout: Duration) -> bool {
        let attempt = || -> anyhow::Result<bool> {
            let owner = self
                .owner(dst)
                .context("no pod has the destination address")?;
            self.serve(owner, Proto::Udp, port)?;
            let sock = self.pod(src).ns.run(|| bind_udp(dst, 0))??;
            sock.connect(SocketAddr::new(dst, port))?;
            sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
            sock.send(b"probe")?;
            let mut buf = [0u8; 16];
            Ok(sock.recv(&mut buf).is_ok_and(|n| &buf[..n] == b"probe"))
        };
        attempt().unwrap_or(false)
    }

    /// Sends sequence-numbered UDP datagrams from `src` to `dst:port` every `interval` until
    /// [`UdpStream::stop`]; a sink in the pod that owns `dst` records what arrives.
    pub fn udp_stream(
        &self,
        src: PodId,
        dst: IpAddr,
        port: u16,
        interval: Duration,
    ) -> anyhow::Result<UdpStream> {
        let owner = self
            .owner(dst)
            .context("no pod has the destination address")?;
        let sink = self.pod(owner).ns.run(|| bind_udp(dst, port))??;
        sink.set_read_timeout(Some(Duration::from_millis(50)))?;
        let sock = self.pod(src).ns.run(|| bind_udp(dst, 0))??;
        sock.connect(SocketAddr::new(dst, port))?;
        probes::start_stream(sock, sink, interval)
    }

    /// Starts the `proto` echo server on `port` in `pod` unless it runs already. It listens on
    /// every address of the pod, IPv4 and IPv6.
    fn serve(&self, pod: PodId, proto: Proto, port: u16) -> anyhow::Result<()> {
        let mut servers = self
            .servers
            .lock()
            .map_err(|_| anyhow::anyhow!("server table poisoned"))?;
        if servers.contains_key(&(pod, proto, port)) {
            return Ok(());
        }
        let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        let stop = self.stop.clone();
        let server = match proto {
            Proto::Tcp => {
                let listener = self.pod(pod).ns.run(|| TcpListener::bind(any))??;
                let wake = listener.try_clone()?;
                let workers = self.workers.clone();
                let thread = std::thread::Builder::new()
                    .spawn(move || tcp_echo_server(&listener, &stop, &workers))?;
                Server {
                    wake: Some(wake),
                    thread,
                }
            }
            Proto::Udp => {
                let sock = self.pod(pod).ns.run(|| UdpSocket::bind(any))??;
                sock.set_read_timeout(Some(Duration::from_millis(50)))?;
                let thread = std::thread::Builder::new().spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = sock.recv_from(&mut buf) {
                            let _ = sock.send_to(&buf[..n], from);
                        }
                    }
                })?;
                Server { wake: None, thread }
            }
        };
        servers.insert((pod, proto, port), server);
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let servers = match self.servers.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => HashMap::new(),
        };
        for (_, s) in servers {
            if let Some(w) = &s.wake {
                // Wakes the blocked accept (EINVAL).
                let _ = nix::sys::socket::shutdown(w.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
            let _ = s.thread.join();
        }
        let workers = match self.workers.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => Vec::new(),
        };
        for w in workers {
            let _ = w.join();
        }
        // The pods' namespaces (and their veths) go first, then the node's; Sandbox deletes each.
        self.pods.clear();
    }
}
