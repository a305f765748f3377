//! `controller`: the real release `vfgenie-controller serve` against the API-server stand-in
//! holding 10,000 NetworkAttachmentDefinitions and 10,000 LogicalNetworks over 100 namespaces.
//! Figures: the time from spawn to `/readyz` 200 (the caches' first listing), the latency of pod
//! CREATE reviews (2-3 NADs by the NPWG annotation and one LogicalNetwork by CNI-Genie's
//! `networks`, one in ten denied) and of LogicalNetwork CREATE reviews (the overlap check against
//! every LogicalNetwork on the same physical network), all over one keep-alive HTTPS connection
//! as the API server keeps them, and the process's resident memory. Every answer is checked
//! against what the review was built to get: a wrong answer fails the bench.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use vfgenie_tests::apiserver::{unused_addr, ApiServer, KubeAuth};

use super::{fmt, rss_kib, sibling_binary, verdict, AgentProcess, Samples};

const NAMESPACES: usize = 100;
/// NADs, and LogicalNetworks, per namespace.
const PER_NAMESPACE: usize = 100;
const OBJECTS: usize = NAMESPACES * PER_NAMESPACE;
const POD_REVIEWS: usize = 5_000;
const LN_REVIEWS: usize = 1_000;
/// Untimed reviews first: connection, allocator and caches warm.
const WARM_UP: usize = 500;
/// Every LogicalNetwork is on this physical network: a new one is compared with all of them.
const PHYSICAL_NET: &str = "dc1";
const RESOURCE: &str = "example.com/vf";
const CERT_NAMESPACE: &str = "vfgenie";
const SERVICE: &str = "webhook";
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

fn namespace(n: usize) -> String {
    format!("tenant-{n:03}")
}

/// The k-th LogicalNetwork's subnet: 10.0.0.0/24 upwards, none overlapping.
fn ln_subnet(k: usize) -> String {
    format!("10.{}.{}.0/24", k / 256, k % 256)
}

/// NAD `net-{i}`: one in ten an SR-IOV network with a device-plugin resource, the rest macvlan.
fn nad_config(i: usize) -> (String, Option<&'static str>) {
    if i % 10 == 0 {
        let c = json!({"cniVersion": "1.0.0", "name": format!("net-{i}"), "type": "sriov",
            "vlan": 100 + i, "ipam": {"type": "host-local", "subnet": format!("10.200.{i}.0/24")}});
        (c.to_string(), Some(RESOURCE))
    } else {
        let c = json!({"cniVersion": "1.0.0", "name": format!("net-{i}"), "type": "macvlan",
            "master": "eth1", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": format!("10.100.{i}.0/24")}});
        (c.to_string(), None)
    }
}

fn populate(api: &ApiServer) -> anyhow::Result<()> {
    for n in 0..NAMESPACES {
        let ns = namespace(n);
        api.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))?;
        for i in 0..PER_NAMESPACE {
            let (config, resource) = nad_config(i);
            api.add_nad(&ns, &format!("net-{i}"), &config, resource);
            let k = n * PER_NAMESPACE + i;
            api.add_logical_network(
                &ns,
                &format!("ln-{i}"),
                PHYSICAL_NET,
                "bridge",
                &ln_subnet(k),
            );
        }
    }
    Ok(())
}

/// An AdmissionReview v1 CREATE, as the API server posts it.
fn admission_review(uid: &str, kind: Value, resource: Value, ns: &str, object: Value) -> Bytes {
    let name = object["metadata"]["name"].clone();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": kind, "resource": resource,
            "requestKind": kind, "requestResource": resource,
            "name": name, "namespace": ns, "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "5b3f7e0c-7d5e-4a9e-9f38-2f1f9a3c1d11",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                           "system:authenticated"]
            },
            "object": object, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    });
    Bytes::from(review.to_string())
}

/// A review and the answer it must get: allowed, or denied with this in the message.
struct Case {
    uid: String,
    body: Bytes,
    denied_saying: Option<String>,
}

/// The j-th pod: NADs `net-a`, `net-b` (and `net-c` for odd j) of its namespace, LogicalNetwork
/// `ln-l`, and as many devices of the resource as its SR-IOV NADs need. One in ten is denied:
/// a missing NAD, a missing LogicalNetwork, too few devices, a namespace that does not exist.
fn pod_case(j: usize) -> Case {
    let ns = namespace(j % NAMESPACES);
    let a = (j / NAMESPACES) % PER_NAMESPACE;
    let mut nads = vec![a, (a + 37) % PER_NAMESPACE];
    if j % 2 == 1 {
        nads.push((a + 71) % PER_NAMESPACE);
    }
    let mut networks: Vec<String> = nads.iter().map(|i| format!("net-{i}")).collect();
    let mut devices = nads.iter().filter(|i| *i % 10 == 0).count();
    let mut ln = format!("ln-{}", (j * 17) % PER_NAMESPACE);
    let name = format!("web-{j}");
    let mut denied_saying = None;
    if j % 10 == 9 {
        match (j / 10) % 4 {
            0 => {
                networks.push("net-missing".into());
                denied_saying = Some(format!(
                    "NetworkAttachmentDefinition {ns}/net-missing, which does not exist"
                ));
            }
            1 => {
                ln = "ln-missing".into();
                denied_saying = Some(format!(
                    "LogicalNetwork {ns}/ln-missing, which does not exist"
                ));
            }
            2 => {
                networks.push("net-90".into());
                devices = 0;
                denied_saying = Some("but its containers request 0".into());
            }
            _ => {
                networks.push("nowhere/net-1".into());
                denied_saying = Some("but namespace nowhere does not exist".into());
            }
        }
    }
    let resources = if devices > 0 {
        json!({"requests": {RESOURCE: devices.to_string(), "cpu": "100m"},
               "limits": {RESOURCE: devices.to_string()}})
    } else {
        json!({"requests": {"cpu": "100m"}})
    };
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"},
            "annotations": {"k8s.v1.cni.cncf.io/networks": networks.join(","), "networks": ln}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1",
            "resources": resources}]}
    });
    let uid = format!("pod-{j}");
    let body = admission_review(
        &uid,
        json!({"group": "", "version": "v1", "kind": "Pod"}),
        json!({"group": "", "version": "v1", "resource": "pods"}),
        &ns,
        pod,
    );
    Case {
        uid,
        body,
        denied_saying,
    }
}

/// The j-th new LogicalNetwork on the shared physical network: in 172.16.0.0/12, apart from
/// every stored one (allowed, after comparing with all of them), or, when `overlapping`, inside
/// a stored one's subnet (denied).
fn ln_case(j: usize, overlapping: bool) -> Case {
    let ns = namespace(j % NAMESPACES);
    let (subnet, denied_saying) = if overlapping {
        let k = (j * 7919) % OBJECTS;
        let s = format!("10.{}.{}.128/25", k / 256, k % 256);
        (s.clone(), Some(format!("spec.subnet {s} overlaps")))
    } else {
        (
            format!("172.{}.{}.0/24", 16 + (j / 256) % 16, j % 256),
            None,
        )
    };
    let name = format!("new-{j}");
    let ln = json!({"apiVersion": "alpha.network.k8s.io/v1", "kind": "LogicalNetwork",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"physicalNet": PHYSICAL_NET, "plugin": "bridge", "subnet": subnet}});
    let uid = format!("ln-{j}-{overlapping}");
    let body = admission_review(
        &uid,
        json!({"group": "alpha.network.k8s.io", "version": "v1", "kind": "LogicalNetwork"}),
        json!({"group": "alpha.network.k8s.io", "version": "v1", "resource": "logicalnetworks"}),
        &ns,
        ln,
    );
    Case {
        uid,
        body,
        denied_saying,
    }
}

/// The answer is the one the case was built to get.
fn check(case: &Case, status: StatusCode, body: &[u8]) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(body);
    if status != StatusCode::OK {
        bail!("review {}: HTTP {status}: {text}", case.uid);
    }
    let v: Value = serde_json::from_slice(body).with_context(|| format!("answer {text}"))?;
    let r = &v["response"];
    if r["uid"] != json!(case.uid) {
        bail!("review {}: the answer is for uid {}", case.uid, r["uid"]);
    }
    let allowed = r["allowed"].as_bool() == Some(true);
    let message = r["status"]["message"].as_str().unwrap_or_default();
    match &case.denied_saying {
        None if !allowed => bail!("review {} was denied: {message}", case.uid),
        Some(s) if allowed => bail!("review {} was allowed; it must be denied ({s})", case.uid),
        Some(s) if !message.contains(s.as_str()) => {
            bail!(
                "review {} was denied saying {message:?}, not {s:?}",
                case.uid
            )
        }
        _ => Ok(()),
    }
}

/// One keep-alive HTTPS connection to the webhook, trusting only its CA.
struct Https {
    sender: SendRequest<Full<Bytes>>,
}

impl Https {
    async fn connect(addr: SocketAddr, ca_pem: &str) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(format!("{SERVICE}.{CERT_NAMESPACE}.svc"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{SERVICE}.{CERT_NAMESPACE}.svc:443"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Posts each case to `/validate`: the time of each (send to whole answer), every answer
    /// checked after its time is taken.
    async fn reviews(&mut self, cases: &[Case]) -> anyhow::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(cases.len());
        for case in cases {
            let t = Instant::now();
            let (status, body) = self
                .send(Method::POST, "/validate", case.body.clone())
                .await?;
            times.push(t.elapsed());
            check(case, status, &body)?;
        }
        Ok(times)
    }
}

/// `RssAnon` and `RssFile` of `pid` in MB (the heap and stacks apart from the mapped binary), and
/// `VmHWM`, the peak (the first listing's pages and decoding come and go).
fn rss_split(pid: u32) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let kib: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name}"))?;
        Ok(kib / 1024.0)
    };
    Ok(format!(
        "RssAnon {:.1} MB, RssFile {:.1} MB, peak VmHWM {:.1} MB",
        field("RssAnon:")?,
        field("RssFile:")?,
        field("VmHWM:")?
    ))
}

/// User and system CPU time of `pid` so far (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command, which is in parentheses and may hold spaces.
    let rest = text.rsplit_once(')').context("no command")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks =
        |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i).context("short stat")?.parse()?) };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// The controller's stderr, for a failure's message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

pub fn controller() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let bin = sibling_binary("vfgenie-controller")?;
    let dir = tempfile::tempdir()?;
    let api = ApiServer::start()?;
    let t = Instant::now();
    populate(&api)?;
    println!(
        "controller: the API-server stand-in holds {OBJECTS} NADs and {OBJECTS} LogicalNetworks in {NAMESPACES} namespaces (stored in {})",
        fmt(t.elapsed())
    );
    let kubeconfig = api.write_kubeconfig(&dir.path().join("kubeconfig"), KubeAuth::None)?;
    let tls_dir = dir.path().join("tls");
    let out = Command::new(&bin)
        .args([
            "certs",
            "--namespace",
            CERT_NAMESPACE,
            "--service",
            SERVICE,
            "--out",
        ])
        .arg(&tls_dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "vfgenie-controller certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ca = std::fs::read_to_string(tls_dir.join("ca.crt"))?;
    let addr = unused_addr()?;
    let log = dir.path().join("controller.log");
    let started = Instant::now();
    let child = Command::new(&bin)
        .arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--tls-dir")
        .arg(&tls_dir)
        .env("KUBECONFIG", &kubeconfig)
        .env("VFGENIE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut controller = AgentProcess(child);
    let pid = controller.0.id();

    // Ready: connect once it listens, then ask /readyz on that connection until it says 200.
    let mut client = None;
    let ready = loop {
        if started.elapsed() > SYNC_TIMEOUT {
            bail!("not ready after {SYNC_TIMEOUT:?}:\n{}", log_tail(&log));
        }
        if let Some(status) = controller.0.try_wait()? {
            bail!(
                "vfgenie-controller serve exited ({status}):\n{}",
                log_tail(&log)
            );
        }
        let c = match &mut client {
            Some(c) => c,
            None => match Https::connect(addr, &ca).await {
                Ok(c) => client.insert(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let (status, _) = c.send(Method::GET, "/readyz", Bytes::new()).await?;
        if status == StatusCode::OK {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut client = client.context("no connection")?;
    println!(
        "controller.sync_20k_objects: {} from spawn to /readyz 200 ({OBJECTS} NADs, {OBJECTS} LogicalNetworks, {NAMESPACES} namespaces listed and watched; the controller's CPU time meanwhile {})",
        fmt(ready),
        fmt(cpu_time(pid)?)
    );
    let rss = rss_kib(pid)?;
    println!(
        "controller.rss_synced: {:.1} MB VmRSS ({}; caches of {} objects)  aim < 40 MB: {}",
        rss as f64 / 1024.0,
        rss_split(pid)?,
        2 * OBJECTS + NAMESPACES,
        verdict(rss < 40 * 1024)
    );

    let pods: Vec<Case> = (0..WARM_UP + POD_REVIEWS).map(pod_case).collect();
    client.reviews(&pods[..WARM_UP]).await?;
    let p = Samples::new(client.reviews(&pods[WARM_UP..]).await?);
    let denied = pods[WARM_UP..]
        .iter()
        .filter(|c| c.denied_saying.is_some())
        .count();
    println!(
        "controller.pod_create_review: p50 {} p90 {} p99 {} (n={}, {denied} denied as built; 2-3 NADs and a LogicalNetwork each; one keep-alive HTTPS connection)  aim p99 < 2 ms: {}",
        fmt(p.pct(50.0)),
        fmt(p.pct(90.0)),
        fmt(p.pct(99.0)),
        p.n(),
        verdict(p.pct(99.0) < Duration::from_millis(2))
    );

    let lns: Vec<Case> = (0..WARM_UP / 5 + LN_REVIEWS)
        .map(|j| ln_case(j, false))
        .collect();
    client.reviews(&lns[..WARM_UP / 5]).await?;
    let l = Samples::new(client.reviews(&lns[WARM_UP / 5..]).await?);
    println!(
        "controller.logical_network_create_review: p50 {} p99 {} (n={}, allowed, each compared with the {OBJECTS} LogicalNetworks on its physicalNet)",
        fmt(l.pct(50.0)),
        fmt(l.pct(99.0)),
        l.n()
    );
    let overlapping: Vec<Case> = (0..LN_REVIEWS / 10).map(|j| ln_case(j, true)).collect();
    let o = Samples::new(client.reviews(&overlapping).await?);
    println!(
        "controller.logical_network_overlap_review: p50 {} p99 {} (n={}, denied: the subnet overlaps a stored one)",
        fmt(o.pct(50.0)),
        fmt(o.pct(99.0)),
        o.n()
    );

    // The status loop's first pass: every network gets its status (all are new to it). The
    // figure after the reviews counts only once it is complete.
    let with_status = || {
        api.list("logicalnetworks", None)
            .iter()
            .filter(|l| l.pointer("/status/conditions/0/type").is_some())
            .count()
    };
    let mut written = with_status();
    while written < OBJECTS {
        if started.elapsed() > SYNC_TIMEOUT * 2 {
            bail!(
                "only {written} of {OBJECTS} LogicalNetworks have a status:\n{}",
                log_tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        written = with_status();
    }
    println!(
        "controller.status_first_pass: {OBJECTS} LogicalNetwork statuses written {} after /readyz (while the reviews ran)",
        fmt(started.elapsed().saturating_sub(ready))
    );

    let rss = rss_kib(pid)?;
    println!(
        "controller.rss_after_reviews_and_status: {:.1} MB VmRSS ({})  aim < 40 MB: {}",
        rss as f64 / 1024.0,
        rss_split(pid)?,
        verdict(rss < 40 * 1024)
    );
    drop(client);
    drop(controller);
    drop(api);
    Ok(())
}
