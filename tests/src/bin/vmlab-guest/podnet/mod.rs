//! A Kubernetes node in the lab, for the scenarios with pods (`genie-pods`, `demo`).
//!
//! - the real `vfgenie-agent run` provisions PF0 (6 VFs: 0-3 igbvf, 4-5 vfio-pci; the chaos
//!   scenario all 7: 0-4 igbvf, 5-6 vfio-pci) and serves them
//!   as two pools ([`NET_POOL`], [`VFIO_POOL`]) to the kubelet stand-in;
//! - the kubelet's part for a pod: Allocate over the real device-plugin gRPC, then the allocated
//!   device IDs put into the PodResources stand-in (served where the agent and genie look);
//! - the API-server stand-in with the pods and their NetworkAttachmentDefinitions;
//! - the container runtime's part: a network namespace per pod and the `genie` binary exec'd with
//!   the CNI environment, Debian's plugins (bridge, host-local) and the `sriov` plugin (the same
//!   binary, installed under that name) as delegates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use serde_json::{json, Value};
use vfcore::netlink::{LinkOps, Netlink, VfConfig};
use vfcore::netns::NetNs;
use vfcore::sysfs;
use vfcore::{bind, provision, MacAddr, PciAddress, SysRoot, VfIndex};
use vfdp::v1beta1::{AllocateRequest, ContainerAllocateRequest};
use vfgenie_tests::kubelet::KubeletStandIn;
use vfgenie_tests::podresources::PodResourcesStandIn;
use vfgenie_tests::runtime::Node;

use crate::agent::{AgentProc, Paths};
use crate::core_checks::{igb_pfs, pf_up, ping_from};
use crate::report::note;
use crate::util::{run_program, wait_for};

pub const NS: &str = "default";
pub const NET_POOL: &str = "example.com/igb_net";
pub const VFIO_POOL: &str = "example.com/igb_vfio";
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// The cluster network (bridge, host-local).
pub const CLUSTER_SUBNET: &str = "10.244.0.0/24";
/// The VF networks' subnet: VLANs 100 and 200 share it (separate address ranges), so only the
/// VLAN keeps pods of the two networks apart.
pub const VF_SUBNET: &str = "10.56.0.0/24";
mod inspect;

use inspect::*;
pub use inspect::{netns_name, show_mac, vf_table};

const GENIE: &str = "/usr/local/bin/genie";
const CNI_BIN: &str = "/opt/cni/bin";
const WORK: &str = "/tmp/podnet";
/// The sriov plugin's log: a network config's `logFile` must be under /var/log.
const SRIOV_LOG: &str = "/var/log/vfgenie-lab/podnet-sriov.log";
/// Creating VFs, binding vfio-pci and the PF link coming back, under TCG.
const PROVISION_TIMEOUT: Duration = Duration::from_secs(45);
const TIMEOUT: Duration = Duration::from_secs(20);

/// A VF of PF0 as it was in the host before any pod.
#[derive(Debug, Clone)]
pub struct VfOriginal {
    pub pci: PciAddress,
    pub index: VfIndex,
    /// Its netdev's name, MAC and MTU; none when bound to vfio-pci.
    pub netdev: Option<(String, Option<MacAddr>, u32)>,
    /// What the PF reports for it (MAC, VLAN, spoof check, trust).
    pub pf_side: VfConfig,
}

/// A pod's links: name → (MAC, IPv4 addresses as CIDR).
pub type PodLinks = BTreeMap<String, (Option<MacAddr>, Vec<String>)>;

/// What the kubelet's admission gave a pod: `(pool, device ID)`s and the Allocate environment.
pub struct Admitted {
    pub devices: Vec<(String, String)>,
    pub envs: HashMap<String, String>,
}

/// A pod with its sandbox.
pub struct Pod {
    pub name: String,
    pub container_id: String,
    pub netns: NetNs,
    /// `(pool, device ID)` the kubelet allocated to it.
    pub devices: Vec<(String, String)>,
    /// The environment Allocate gave its container.
    pub envs: HashMap<String, String>,
    /// genie's ADD result.
    pub result: Value,
}

impl Pod {
    /// `ping -c COUNT` from inside the pod; whether every answer came, and the output.
    pub fn ping(&self, target: Ipv4Addr, count: u32) -> Result<(bool, String)> {
        ping_from(&self.netns, target, count)
    }

    /// Pings until every answer of a round comes (the first packets may wait for ARP), up to
    /// `rounds` rounds of 2; whether they did, and the last output.
    pub fn reaches(&self, target: Ipv4Addr, rounds: u32) -> Result<(bool, String)> {
        let mut last = String::new();
        for _ in 0..rounds {
            let (ok, out) = self.ping(target, 2)?;
            if ok {
                return Ok((true, out));
            }
            last = out;
        }
        Ok((false, last))
    }

    /// The pod's links other than `lo`: name → (MAC, IPv4 addresses as CIDR).
    pub fn links(&self) -> Result<PodLinks> {
        self.netns.run(|| -> Result<_> {
            let mut nl = Netlink::open()?;
            let mut out = BTreeMap::new();
            for l in nl.links()? {
                if l.name == "lo" {
                    continue;
                }
                let addrs = nl
                    .addresses(l.index)?
                    .into_iter()
                    .filter(|a| a.addr.is_ipv4())
                    .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                    .collect();
                out.insert(l.name, (l.mac, addrs));
            }
            Ok(out)
        })?
    }

    /// The first IPv4 address of `ifname` in the pod.
    pub fn ipv4(&self, ifname: &str) -> Result<Ipv4Addr> {
        let links = self.links()?;
        let (_, addrs) = links
            .get(ifname)
            .ok_or_else(|| anyhow!("{} has no {ifname}", self.name))?;
        let first = addrs
            .first()
            .ok_or_else(|| anyhow!("{} {ifname} has no IPv4 address", self.name))?;
        Ok(first.split('/').next().unwrap_or_default().parse()?)
    }

    /// `ip addr` as seen inside the pod (busybox).
    pub fn ip_addr(&self) -> Result<String> {
        self.netns.run(|| run_program("ip", &["addr"]))?
    }

    /// Waits until `ifname` in the pod has carrier (a VF follows its PF's link).
    pub fn wait_carrier(&self, ifname: &str) -> Result<()> {
        let name = ifname.to_string();
        self.netns.run(move || -> Result<()> {
            let mut nl = Netlink::open()?;
            wait_for(&format!("{name} carrier"), TIMEOUT, || {
                nl.link_by_name(&name)
                    .ok()
                    .flatten()
                    .filter(|l| l.oper_state.eq_ignore_ascii_case("up"))
            })?;
            Ok(())
        })?
    }
}

/// CNI's "try again later" error code.
const TRY_AGAIN_LATER: u64 = 11;
/// ADDs of one pod at most, when genie answers "try again later".
const ADD_TRIES: u32 = 3;

/// The node: agent, kubelet and API-server stand-ins, and the CNI directories.
pub struct Cluster {
    pub root: SysRoot,
    pub pf_name: String,
    /// PF0's VFs in index order, as they were before any pod.
    pub vfs: Vec<VfOriginal>,
    pub node: Node,
    pub paths: Paths,
    /// The sriov plugin's state dir (locks and attachment records): the default, as genie is
    /// exec'd with a runtime's bare environment (no `VFGENIE_SRIOV_STATE_DIR`).
    pub state_dir: PathBuf,
    podres: PodResourcesStandIn,
    kubelet: KubeletStandIn,
    agent: AgentProc,
    /// The kubelet's record of devices given to pods (pods are added from several threads).
    allocated: Mutex<BTreeSet<String>>,
    /// Each pool and its device count.
    pools: Vec<(&'static str, usize)>,
    /// Agents started so far (their logs are numbered).
    agents: u32,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// Everything up: the agent serving both pools (all healthy), genie installed, NADs `vlan100`,
    /// `vlan200` (netdev pool) and `dpdk` (vfio pool), the cluster network as the default. PF0
    /// has 6 VFs: 4 netdevs, 2 on vfio-pci.
    pub fn start() -> Result<Self> {
        Self::start_with(4, 2)
    }

    /// As [`Cluster::start`] with `net` netdev VFs and `vfio` VFs on vfio-pci (the 82576 has 7).
    pub fn start_with(net: u32, vfio: u32) -> Result<Self> {
        let root = SysRoot::host();
        let pfs = igb_pfs(&root)?;
        let pf = pfs.first().ok_or_else(|| anyhow!("no igb PF"))?.clone();
        let pf_name = pf
            .netdevs
            .first()
            .map(|n| n.name.clone())
            .ok_or_else(|| anyhow!("PF {} has no netdev", pf.address))?;
        // A PF that is down never answers its VFs' mailbox: up before the agent creates VFs.
        pf_up(&root, &pf)?;

        std::fs::create_dir_all(WORK).with_context(|| format!("creating {WORK}"))?;
        if let Some(dir) = Path::new(SRIOV_LOG).parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(SRIOV_LOG);
        let paths = Paths::new()?;
        if let Some(dir) = paths.podres.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let podres = PodResourcesStandIn::start(&paths.podres)?;
        let config = json!({
            "resourceList": [
                {"resourceName": "igb_net", "resourcePrefix": "example.com",
                 "selectors": {"pfNames": [pf_name], "drivers": ["igbvf"]}},
                {"resourceName": "igb_vfio", "resourcePrefix": "example.com",
                 "selectors": {"pfNames": [pf_name], "drivers": ["vfio-pci"]}}
            ],
            "provisioning": [
                {"pfName": pf_name, "numVfs": net + vfio,
                 "vfs": [{"range": format!("0-{}", net - 1), "driver": "netdevice"},
                         {"range": format!("{net}-{}", net + vfio - 1), "driver": "vfio-pci"}]}
            ]
        });
        std::fs::write(&paths.config, serde_json::to_string_pretty(&config)?)?;

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let kubelet = rt.block_on(KubeletStandIn::start(&paths.plugins))?;
        let agent = AgentProc::start(&paths, 1)?;
        let provisioned = provisioned(&root, &pf.address, net, vfio);
        let vfs = match provisioned {
            Ok(v) => v,
            Err(e) => {
                agent.show_log(30);
                return Err(e);
            }
        };
        // Creating VFs resets the PF: wait for its link again.
        pf_up(&root, &pf)?;
        repair_mailbox(&root, &pf_name, &vfs)?;
        let originals = originals(&pf_name, &vfs)?;

        let pools = rt.block_on(async {
            for (pool, n) in [(NET_POOL, net as usize), (VFIO_POOL, vfio as usize)] {
                kubelet
                    .wait_for(pool, TIMEOUT, |r| {
                        r.registration.is_some()
                            && r.devices.len() == n
                            && r.devices.iter().all(|d| d.health == "Healthy")
                    })
                    .await?;
            }
            anyhow::Ok(())
        });
        if let Err(e) = pools {
            agent.show_log(30);
            return Err(e);
        }

        let node = Node::with_genie(Path::new(GENIE))?;
        // The runtime's CNI bin dir: Debian's plugins, and the sriov plugin (genie's binary).
        for e in std::fs::read_dir(CNI_BIN).with_context(|| format!("reading {CNI_BIN}"))? {
            let p = e?.path();
            if let Some(name) = p.file_name() {
                std::os::unix::fs::symlink(&p, node.bin_dir.join(name))?;
            }
        }
        std::os::unix::fs::symlink(GENIE, node.bin_dir.join("sriov"))?;
        node.write_conf(
            "10-cluster.conflist",
            &node.cluster_conflist(CLUSTER_SUBNET),
        )?;
        let state_dir = PathBuf::from(vfcni::sriov::node::DEFAULT_STATE_DIR);
        let cluster = Self {
            root,
            pf_name,
            vfs: originals,
            node,
            paths,
            state_dir,
            podres,
            kubelet,
            agent,
            allocated: Mutex::new(BTreeSet::new()),
            pools: vec![(NET_POOL, net as usize), (VFIO_POOL, vfio as usize)],
            agents: 1,
            rt,
        };
        for (name, vlan, range_start, pool) in [
            ("vlan100", 100, "10.56.0.10", NET_POOL),
            ("vlan200", 200, "10.56.0.200", NET_POOL),
        ] {
            let conf = cluster.sriov_netconf(name, vlan, Some(range_start));
            cluster
                .node
                .api
                .add_nad(NS, name, &conf.to_string(), Some(pool));
        }
        let dpdk = cluster.sriov_netconf("dpdk", 100, None);
        cluster
            .node
            .api
            .add_nad(NS, "dpdk", &dpdk.to_string(), Some(VFIO_POOL));
        Ok(cluster)
    }

    /// Waits until every pool is registered (more than `before` times, per pool) with all its
    /// devices healthy.
    fn wait_pools(&self, before: &[usize]) -> Result<()> {
        self.rt.block_on(async {
            for (i, (pool, n)) in self.pools.iter().enumerate() {
                let min = before.get(i).copied().unwrap_or(0);
                self.kubelet
                    .wait_for(pool, PROVISION_TIMEOUT, |r| {
                        r.registration.is_some()
                            && r.registrations > min
                            && r.devices.len() == *n
                            && r.devices.iter().all(|d| d.health == "Healthy")
                    })
                    .await?;
            }
            anyhow::Ok(())
        })
    }

    fn registrations(&self) -> Vec<usize> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for (pool, _) in &self.pools {
                out.push(
                    self.kubelet
                        .resource(pool)
                        .await
                        .map_or(0, |r| r.registrations),
                );
            }
            out
        })
    }

    pub fn agent_pid(&self) -> u32 {
        self.agent.pid()
    }

    /// A new agent in place of one that was killed; returns once it has registered both pools
    /// again, all devices healthy.
    pub fn restart_agent(&mut self) -> Result<()> {
        let before = self.registrations();
        self.agents += 1;
        self.agent = AgentProc::start(&self.paths, self.agents)?;
        self.wait_pools(&before)
            .inspect_err(|_| self.agent.show_log(30))
    }

    /// The kubelet restarts (its sockets go, registrations are forgotten); returns once the agent
    /// has registered both pools again.
    pub fn restart_kubelet(&mut self) -> Result<()> {
        self.rt.block_on(self.kubelet.restart())?;
        self.wait_pools(&[])
            .inspect_err(|_| self.agent.show_log(30))
    }

    /// An sriov netconf on VLAN `vlan`; with host-local from `range_start` in [`VF_SUBNET`].
    pub fn sriov_netconf(&self, name: &str, vlan: u16, range_start: Option<&str>) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": name, "type": "sriov",
            "vlan": vlan, "spoofchk": "on", "trust": "off",
            "logLevel": "debug",
            "logFile": SRIOV_LOG,
        });
        if let Some(start) = range_start {
            c["ipam"] = self.ipam_range(start);
        }
        c
    }

    /// host-local in [`VF_SUBNET`] from `start`, its leases under the node.
    pub fn ipam_range(&self, start: &str) -> Value {
        json!({"type": "host-local",
               "ranges": [[{"subnet": VF_SUBNET, "rangeStart": start}]],
               "dataDir": self.node.ipam_dir.display().to_string()})
    }

    /// The genie conf the runtime is given: the cluster network by default, PodResources and
    /// device-info where the agent and the stand-in keep them, and CNI-Genie's `sriov` key from
    /// the agent's pools (VLAN 100, its own address range).
    pub fn genie_conf(&self) -> Value {
        let mut sriov = self.sriov_netconf("sriov", 100, Some("10.56.0.100"));
        sriov["agentConfig"] = json!(self.paths.config.display().to_string());
        for k in ["cniVersion", "name", "type"] {
            if let Some(m) = sriov.as_object_mut() {
                m.remove(k);
            }
        }
        self.node.genie_conf(
            "1.0.0",
            json!({
                "clusterNetwork": "cluster",
                "podResourcesSocket": self.paths.podres.display().to_string(),
                "kubeletCheckpoint": format!("{WORK}/kubelet_internal_checkpoint"),
                "deviceInfoDir": self.paths.devinfo.display().to_string(),
                "logLevel": "debug",
                "logFile": format!("{WORK}/genie.log"),
                "sriov": sriov,
                // The NADs' sriov logs and host-local leases, where this node lets tenants put them.
                "allowedTenantPaths": {
                    "logFile": ["/var/log/vfgenie-lab"],
                    "dataDir": [self.node.ipam_dir.display().to_string()],
                },
            }),
        )
    }

    /// The kubelet's part: Allocate `n` free devices of `pool` (lowest IDs first) over gRPC.
    fn allocate(&self, pool: &str, n: usize) -> Result<(Vec<String>, HashMap<String, String>)> {
        let kubelet = &self.kubelet;
        // Held through the Allocate: the kubelet admits one pod at a time.
        let mut allocated = self
            .allocated
            .lock()
            .map_err(|_| anyhow!("allocation lock poisoned"))?;
        let (ids, envs) = self.rt.block_on(async {
            let r = kubelet
                .resource(pool)
                .await
                .ok_or_else(|| anyhow!("{pool} is not registered"))?;
            let mut free: Vec<String> = r
                .devices
                .iter()
                .filter(|d| d.health == "Healthy" && !allocated.contains(&d.id))
                .map(|d| d.id.clone())
                .collect();
            free.sort();
            ensure!(
                free.len() >= n,
                "{pool}: {} free devices, {n} wanted",
                free.len()
            );
            free.truncate(n);
            let mut client = kubelet.plugin(pool).await?;
            let resp = client
                .allocate(AllocateRequest {
                    container_requests: vec![ContainerAllocateRequest {
                        devices_ids: free.clone(),
                    }],
                })
                .await
                .with_context(|| format!("Allocate on {pool}"))?
                .into_inner();
            let envs = resp
                .container_responses
                .into_iter()
                .next()
                .map(|c| c.envs)
                .unwrap_or_default();
            anyhow::Ok((free, envs))
        })?;
        allocated.extend(ids.iter().cloned());
        Ok((ids, envs.into_iter().collect()))
    }

    /// The kubelet's admission of a pod: the pod in the API server with `annotations`, devices
    /// allocated from `pools` (`(pool, count)`) and listed by PodResources. Nothing is held when
    /// it fails.
    pub fn admit(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
        pools: &[(&str, usize)],
    ) -> Result<Admitted> {
        self.node.api.add_pod(NS, name, annotations);
        let mut devices: Vec<(String, String)> = Vec::new();
        let mut envs = HashMap::new();
        for (pool, n) in pools {
            match self.allocate(pool, *n) {
                Ok((ids, e)) => {
                    devices.extend(ids.into_iter().map(|id| (pool.to_string(), id)));
                    envs.extend(e);
                }
                Err(e) => {
                    if let Ok(mut allocated) = self.allocated.lock() {
                        for (_, id) in &devices {
                            allocated.remove(id);
                        }
                    }
                    return Err(e);
                }
            }
        }
        let containers: Vec<(&str, &str, Vec<&str>)> = pools
            .iter()
            .map(|(pool, _)| {
                let ids = devices
                    .iter()
                    .filter(|(p, _)| p == pool)
                    .map(|(_, id)| id.as_str())
                    .collect();
                ("app", *pool, ids)
            })
            .collect();
        let containers: Vec<(&str, &str, &[&str])> = containers
            .iter()
            .map(|(c, p, ids)| (*c, *p, ids.as_slice()))
            .collect();
        self.podres.set_pod(NS, name, &containers);
        Ok(Admitted { devices, envs })
    }

    /// A pod as the kubelet and the runtime make it: the pod in the API server with
    /// `annotations`, devices allocated from `pools` (`(pool, count)`) and listed by PodResources,
    /// its sandbox, and genie's ADD on eth0.
    pub fn add_pod(
        &self,
        name: &str,
        annotations: &[(&str, &str)],
        pools: &[(&str, usize)],
    ) -> Result<Pod> {
        let Admitted { devices, envs } = self.admit(name, annotations, pools)?;
        // Prefixed: other scenarios of the same boot name their pods' namespaces `pod-a`, ...
        let netns = NetNs::create_named(&self.root, &netns_name(name))?;
        let container_id = format!("sandbox-{name}");
        // As the kubelet does with a sandbox, ADD again when genie says "try again later" (code
        // 11): under TCG on a loaded host a bounded call to a stand-in can run out of time.
        let mut tries = 0;
        let out = loop {
            tries += 1;
            let out = self.node.cni(
                "ADD",
                &container_id,
                netns.path(),
                "eth0",
                Some((NS, name)),
                &self.genie_conf(),
            )?;
            let again = !out.success
                && out
                    .json()
                    .ok()
                    .is_some_and(|e| e["code"] == TRY_AGAIN_LATER);
            if !again || tries == ADD_TRIES {
                break out;
            }
            println!(
                "VMLAB-OUT genie ADD of {name}: try again later ({}), retrying",
                out.stdout.trim()
            );
        };
        if !out.success {
            let _ = NetNs::delete_named(&self.root, &netns_name(name));
            return Err(anyhow!(
                "genie ADD of {name} failed: {} {}",
                out.stdout,
                last_lines(&out.stderr, 10)
            ));
        }
        Ok(Pod {
            name: name.to_string(),
            container_id,
            netns,
            devices,
            envs,
            result: out.json()?,
        })
    }

    /// The kubelet's part when a pod ends: its devices free for other pods and gone from
    /// PodResources. The kubelet may do this before the pod's sandbox is torn down.
    pub fn free_devices(&self, pod: &mut Pod) {
        let devices = std::mem::take(&mut pod.devices);
        self.release(&pod.name, &devices);
    }

    /// As [`Cluster::free_devices`], for pod `name` holding `devices`.
    pub fn release(&self, name: &str, devices: &[(String, String)]) {
        self.podres.set_pod(NS, name, &[]);
        if let Ok(mut allocated) = self.allocated.lock() {
            for (_, id) in devices {
                allocated.remove(id);
            }
        }
    }

    /// genie's DEL, then the sandbox deleted, the pod gone from the API and PodResources, and
    /// its devices free again.
    pub fn del_pod(&self, mut pod: Pod) -> Result<()> {
        let out = self.node.cni(
            "DEL",
            &pod.container_id,
            pod.netns.path(),
            "eth0",
            Some((NS, &pod.name)),
            &self.genie_conf(),
        )?;
        self.free_devices(&mut pod);
        drop(pod.netns);
        let deleted = NetNs::delete_named(&self.root, &netns_name(&pod.name));
        self.node.api.delete_pod(NS, &pod.name);
        ensure!(
            out.success,
            "genie DEL of {} failed: {} {}",
            pod.name,
            out.stdout,
            last_lines(&out.stderr, 10)
        );
        deleted?;
        Ok(())
    }
}
