//! The pods scenario's policy case: a MultiNetworkPolicy on a VF network, enforced by the agent's
//! policy engine, proven with traffic over the VFs.
//!
//! Three pods get a VF each on one network (NAD `vfnet`: sriov, VLAN 100, host-local in
//! [`SUBNET`]) from the sriov plugin. The engine's inputs are built the way its watches build
//! them: the network from the NAD object (`nad_network`: an sriov network's traffic never crosses
//! the host, so its rules go into the pods' namespaces), the pods' interfaces from the
//! network-status genie would write (the plugin's results), the policy from the
//! MultiNetworkPolicy object a tenant writes (`parse_multi`). The real [`Engine`] applies its
//! tables with the real `nft` (Debian's, in the initramfs) in each pod's namespace.
//!
//! The policy (`policy-for: vfnet`) selects pod-b and allows ingress from pod-a only. Checked
//! with ping and a TCP connect over the VFs: before it, pod-c reaches pod-b; with it, pod-a
//! reaches pod-b, pod-c does not, and pod-b still reaches pod-c (egress is not selected);
//! without it again, pod-c reaches pod-b; when pod-b leaves the inputs (its pod is deleted),
//! our table is gone from its namespace.
//!
//! The host's table (network level, empty here) goes to a namespace of its own: the VFs' traffic
//! never passes the host's forward path, and the guest's own namespace stays as the later
//! scenarios expect it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use vfagent::policy::engine::{Engine, Report as EngineReport};
use vfagent::policy::model::{Inputs, Pod as PolicyPod, TrafficPath};
use vfagent::policy::nft::{Family, Nft};
use vfagent::policy::ruleset::TABLE_NAME;
use vfagent::policy::watch::networks::{nad_network, Confs};
use vfagent::policy::watch::objects::RawMultiPolicy;
use vfagent::policy::watch::pods::status_interfaces;
use vfagent::policy::watch::policies::{parse_multi, Parsed};
use vfkube::objects::NetworkAttachmentDefinition;

use super::*;

const NETWORK: &str = "vfnet";
const SUBNET: &str = "10.56.60.0/24";
const NAMESPACE: &str = "default";
/// The echo servers' port in every pod.
const PORT: u16 = 7070;
/// What one probe may take: an allowed one answers in milliseconds over the VFs, a denied one
/// costs this.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The scratch namespace the host's table goes to.
const NODE_NETNS: &str = "mnp-node";

/// A pod of the case: its name (and `app` label), its netns, its VF and address.
struct PolicyPodNs {
    name: &'static str,
    pod: Pod,
    ip: Option<Ipv4Addr>,
}

impl PolicyPodNs {
    fn ip(&self) -> Result<Ipv4Addr> {
        self.ip
            .ok_or_else(|| anyhow!("{} has no address (ADD failed)", self.name))
    }
}

/// A TCP echo server in a pod's namespace (the socket stays in the namespace it was made in; its
/// accept loop runs on a thread of ours).
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &NetNs) -> Result<Self> {
        let listener = ns.run(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT)))??;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mnp-echo".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(PROBE_TIMEOUT));
                            let mut buf = [0u8; 16];
                            if let Ok(n) = conn.read(&mut buf) {
                                let _ = conn.write_all(buf.get(..n).unwrap_or_default());
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP connection from `ns` to `dst`'s echo server that carries a few bytes there and back
/// within [`PROBE_TIMEOUT`]: `Ok(true)` when it does, `Ok(false)` with the reason when not.
fn tcp_echo(ns: &NetNs, dst: Ipv4Addr) -> Result<(bool, String)> {
    let addr = SocketAddr::new(IpAddr::V4(dst), PORT);
    let started = Instant::now();
    let stream = match ns.run(|| TcpStream::connect_timeout(&addr, PROBE_TIMEOUT))? {
        Ok(s) => s,
        Err(e) => return Ok((false, format!("connect to {addr}: {e}"))),
    };
    let round_trip = (|| -> std::io::Result<bool> {
        let mut stream = stream;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.write_all(b"vmlab")?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf)?;
        Ok(&buf == b"vmlab")
    })();
    Ok(match round_trip {
        Ok(true) => (
            true,
            format!("echo from {addr} in {} ms", started.elapsed().as_millis()),
        ),
        Ok(false) => (false, format!("{addr} echoed something else")),
        Err(e) => (false, format!("echo from {addr}: {e}")),
    })
}

/// Pings until a round of 2 is answered (the first may wait for ARP), up to 3 rounds.
fn reaches(ns: &NetNs, dst: Ipv4Addr) -> Result<(bool, String)> {
    let mut last = String::new();
    for _ in 0..3 {
        let (ok, out) = ping(ns, IpAddr::V4(dst), 2)?;
        if ok {
            return Ok((true, out));
        }
        last = out;
    }
    Ok((false, last))
}

/// `from` reaches `to` with ping and TCP, or (when `allowed` is false) with neither.
fn traffic(from: &PolicyPodNs, to: &PolicyPodNs, allowed: bool) -> Result<String> {
    let dst = to.ip()?;
    let ns = from.pod.ns()?;
    let (pinged, out) = if allowed {
        reaches(&ns, dst)?
    } else {
        ping(&ns, IpAddr::V4(dst), 2)?
    };
    let (connected, why) = tcp_echo(&ns, dst)?;
    let (a, b) = (from.name, to.name);
    if allowed {
        ensure!(pinged, "{a} cannot ping {b} at {dst}: {}", out.trim());
        ensure!(connected, "{a} has no TCP to {b}: {why}");
        Ok(format!("{a} -> {b} {dst}: ping and TCP ({why})"))
    } else {
        ensure!(!pinged, "{a} pinged {b} at {dst}: {}", out.trim());
        ensure!(!connected, "{a} has TCP to {b}: {why}");
        Ok(format!("{a} -> {b} {dst}: no ping, no TCP ({why})"))
    }
}

/// The NAD of the network, as a tenant writes it.
fn nad() -> Result<NetworkAttachmentDefinition> {
    let config = json!({
        "cniVersion": "1.0.0", "name": NETWORK, "type": "sriov", "vlan": 100,
        "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": ipam_dir()},
    });
    Ok(serde_json::from_value(json!({
        "metadata": {"name": NETWORK, "namespace": NAMESPACE,
                     "annotations": {"k8s.v1.cni.cncf.io/resourceName": "example.com/igb_net"}},
        "spec": {"config": config.to_string()},
    }))?)
}

/// The MultiNetworkPolicy: on `vfnet`, pod-b accepts ingress from pod-a only.
fn policy() -> Result<RawMultiPolicy> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": "b-from-a", "namespace": NAMESPACE,
                     "annotations": {"k8s.v1.cni.cncf.io/policy-for": NETWORK}},
        "spec": {
            "podSelector": {"matchLabels": {"app": "pod-b"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "pod-a"}}}]}],
        },
    }))?)
}

/// The engine's inputs: the network, the pods in `with` and, when `with_policy`, the policy.
fn inputs(pods: &[PolicyPodNs], with: &[&str], with_policy: bool) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    let network = nad_network(&nad()?, &mut Confs::new(None)).map_err(|e| anyhow!("NAD: {e}"))?;
    inputs.networks.insert(network.key.clone(), network);
    inputs
        .namespaces
        .insert(NAMESPACE.into(), Default::default());
    for p in pods.iter().filter(|p| with.contains(&p.name)) {
        // What genie writes into the pod's network-status for this attachment.
        let status = json!([{
            "name": format!("{NAMESPACE}/{NETWORK}"), "interface": "net1",
            "ips": [p.ip()?.to_string()], "dns": {},
        }]);
        let (interfaces, problem) = status_interfaces(Some(&status.to_string()));
        ensure!(
            problem.is_none(),
            "network-status of {}: {problem:?}",
            p.name
        );
        inputs.pods.push(PolicyPod {
            namespace: NAMESPACE.into(),
            name: p.name.into(),
            labels: [("app".to_string(), p.name.to_string())].into(),
            interfaces,
            netns: Some(PathBuf::from(&p.pod.netns)),
        });
    }
    if with_policy {
        match parse_multi(&policy()?) {
            Parsed::Good(p) => inputs.multi.push(p),
            Parsed::Bad { what, problem } => anyhow::bail!("the policy's {what}: {problem}"),
            Parsed::NotOurs => anyhow::bail!("the policy was not read as ours"),
        }
    }
    Ok(inputs)
}

/// Every table in place, nothing the compiler could not enforce.
fn converged(r: &EngineReport) -> Result<()> {
    let failed: Vec<String> = r
        .failed
        .iter()
        .map(|f| format!("{:?}: {}", f.netns, vfcore::error::chain(&f.error)))
        .collect();
    ensure!(
        failed.is_empty(),
        "tables not applied: {}",
        failed.join("; ")
    );
    let problems: Vec<String> = r.problems.iter().map(ToString::to_string).collect();
    ensure!(problems.is_empty(), "problems: {}", problems.join("; "));
    Ok(())
}

/// Every string in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Our table in `pod`'s namespace as nft lists it: set name → the strings of its elements;
/// `None` when there is no table of ours.
fn listed(nft: &Nft, pod: &PolicyPodNs) -> Result<Option<BTreeMap<String, Vec<String>>>> {
    let Some(doc) = nft.list(Some(Path::new(&pod.pod.netns)), Family::Inet, TABLE_NAME)? else {
        return Ok(None);
    };
    let mut sets = BTreeMap::new();
    for item in doc["nftables"].as_array().into_iter().flatten() {
        if let Some(set) = item.get("set") {
            let mut elems = Vec::new();
            if let Some(e) = set.get("elem") {
                strings(e, &mut elems);
            }
            let name = set["name"].as_str().unwrap_or_default().to_string();
            sets.insert(name, elems);
        }
    }
    Ok(Some(sets))
}

/// Runs the case on VFs 0-2 (all back in the host after the earlier cases).
pub(super) fn run(report: &mut Report, lab: &Lab, root: &SysRoot) {
    let t0 = Instant::now();
    let names = ["pod-a", "pod-b", "pod-c"];
    let mut pods: Vec<PolicyPodNs> = names
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let mac = format!("02:00:00:00:60:{:02x}", i + 1);
            PolicyPodNs {
                name,
                pod: Pod::new(
                    &format!("mnp-{name}"),
                    conf(NETWORK, &lab.vfs[i], 100, SUBNET, json!({"mac": mac})),
                ),
                ip: None,
            }
        })
        .collect();
    let mut servers: Vec<Echo> = Vec::new();
    let mut engine: Option<Engine<Nft>> = None;
    let mut nft: Option<Nft> = None;

    let set_up = report.check_detail("pods-policy-setup", || {
        let network = nad_network(&nad()?, &mut Confs::new(None)).map_err(|e| anyhow!("{e}"))?;
        ensure!(
            network.path == TrafficPath::InPod,
            "an sriov NAD's traffic path is {:?}: its rules would not be in the pods",
            network.path
        );
        for p in &mut pods {
            p.pod.create_netns(root)?;
            let r = p.pod.call("ADD", None)?;
            r.require_ok(&format!("ADD {}", p.name))?;
            p.ip = match result_ip(&r.json()?)? {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(a) => anyhow::bail!("{} got IPv6 {a}", p.name),
            };
            servers.push(Echo::start(&p.pod.ns()?)?);
        }
        let node = NetNs::create_named(root, NODE_NETNS)?;
        let n = Nft::new(None)?;
        engine = Some(Engine::new(n.clone()).with_host_netns(node.path().to_path_buf()));
        nft = Some(n);
        let shown: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.name,
                    p.ip.map(|a| a.to_string()).unwrap_or_default()
                )
            })
            .collect();
        Ok(format!(
            "VFs 0-2 on {NETWORK} (VLAN 100, {SUBNET}, traffic path in-pod): {}",
            shown.join(", ")
        ))
    });

    if let (true, Some(engine), Some(nft)) = (set_up, engine.as_mut(), nft.as_ref()) {
        checks(report, engine, nft, &pods);
    } else {
        report.fail("pods-policy-rest", "skipped: setup failed");
    }

    drop(servers);
    drop(engine);
    report.check("pods-policy-cleanup", || {
        let mut errors = Vec::new();
        for (i, p) in pods.iter().enumerate() {
            let r = p.pod.call("DEL", None).and_then(|r| {
                r.require_ok(&format!("DEL {}", p.name))?;
                Ok(())
            });
            if let Err(e) = r.and_then(|()| assert_restored(lab, &lab.vfs[i])) {
                errors.push(format!("{e:#}"));
            }
            let _ = NetNs::delete_named(root, &p.pod.id);
        }
        let _ = NetNs::delete_named(root, NODE_NETNS);
        ensure!(errors.is_empty(), "{}", errors.join("; "));
        let left = leases(NETWORK)?;
        ensure!(left.is_empty(), "IP leases left: {left:?}");
        ensure!(records()?.is_empty(), "records left: {:?}", records()?);
        Ok(())
    });
    note(&format!(
        "policy case: {} ms in the guest",
        t0.elapsed().as_millis()
    ));
}

fn checks(report: &mut Report, engine: &mut Engine<Nft>, nft: &Nft, pods: &[PolicyPodNs]) {
    let [a, b, c] = pods else {
        report.fail("pods-policy-rest", "skipped: not three pods");
        return;
    };
    let all = ["pod-a", "pod-b", "pod-c"];
    let b_path = PathBuf::from(&b.pod.netns);

    // No policy: the engine's tables are in every pod and block nothing.
    let baseline = report.check_detail("pods-policy-before", || {
        let r = engine.reconcile(&inputs(pods, &all, false)?);
        converged(&r)?;
        ensure!(
            r.applied.len() == 4,
            "{} tables applied, want the host's and three pods'",
            r.applied.len()
        );
        let sets = listed(nft, b)?.ok_or_else(|| anyhow!("no table of ours in pod-b"))?;
        ensure!(
            !sets.contains_key("in_isolated"),
            "pod-b is isolated without a policy: {sets:?}"
        );
        let cb = traffic(c, b, true)?;
        let ab = traffic(a, b, true)?;
        Ok(format!("tables in 3 pods; {cb}; {ab}"))
    });

    let enforced = baseline
        && report.check_detail("pods-policy-applied", || {
            let r = engine.reconcile(&inputs(pods, &all, true)?);
            converged(&r)?;
            ensure!(
                r.applied == vec![Some(b_path.clone())],
                "tables changed: {:?}, want pod-b's only",
                r.applied
            );
            let sets = listed(nft, b)?.ok_or_else(|| anyhow!("no table of ours in pod-b"))?;
            let isolated = sets.get("in_isolated").cloned().unwrap_or_default();
            ensure!(
                isolated == ["net1"],
                "pod-b's isolated interfaces {isolated:?}, want net1: {sets:?}"
            );
            let allowed = sets.get("in_all4").cloned().unwrap_or_default();
            let (a_ip, c_ip) = (a.ip()?.to_string(), c.ip()?.to_string());
            ensure!(
                allowed.contains(&a_ip) && !allowed.contains(&c_ip),
                "pod-b's allowed sources {allowed:?}: want pod-a {a_ip}, not pod-c {c_ip}"
            );
            for p in [a, c] {
                let sets =
                    listed(nft, p)?.ok_or_else(|| anyhow!("no table of ours in {}", p.name))?;
                ensure!(
                    !sets.contains_key("in_isolated"),
                    "{} is isolated: {sets:?}",
                    p.name
                );
            }
            Ok(format!(
                "pod-b's table updated in place ({} ms): net1 isolated, {a_ip} allowed",
                r.apply_time.as_millis()
            ))
        });
    let gate = |ok: bool| -> Result<()> {
        ensure!(ok, "skipped: the policy is not in place");
        Ok(())
    };
    report.check_detail("pods-policy-a-to-b", || {
        gate(enforced)?;
        traffic(a, b, true)
    });
    report.check_detail("pods-policy-c-to-b-blocked", || {
        gate(enforced)?;
        traffic(c, b, false)
    });
    report.check_detail("pods-policy-b-to-c-egress-open", || {
        gate(enforced)?;
        traffic(b, c, true)
    });

    let removed = report.check_detail("pods-policy-removed", || {
        gate(enforced)?;
        let r = engine.reconcile(&inputs(pods, &all, false)?);
        converged(&r)?;
        let sets = listed(nft, b)?.ok_or_else(|| anyhow!("no table of ours in pod-b"))?;
        ensure!(
            !sets.contains_key("in_isolated"),
            "pod-b is still isolated: {sets:?}"
        );
        let cb = traffic(c, b, true)?;
        Ok(format!("pod-b isolated no more; {cb}"))
    });

    report.check_detail("pods-policy-pod-gone", || {
        ensure!(removed, "skipped: the policy's removal failed");
        let r = engine.reconcile(&inputs(pods, &["pod-a", "pod-c"], false)?);
        converged(&r)?;
        ensure!(
            r.removed == vec![b_path.clone()],
            "tables removed: {:?}, want pod-b's",
            r.removed
        );
        ensure!(
            listed(nft, b)?.is_none(),
            "our table is still in pod-b's namespace"
        );
        for p in [a, c] {
            ensure!(listed(nft, p)?.is_some(), "{}'s table went too", p.name);
        }
        Ok(
            "pod-b left the inputs: our table is gone from its namespace, pod-a's and pod-c's stay"
                .into(),
        )
    });
}
