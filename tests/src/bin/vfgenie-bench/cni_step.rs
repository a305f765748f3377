//! `vfgenie-bench cni`: ADD and DEL of a pod with three networks through genie beside the same
//! delegates exec'd directly, genie's overhead and where its time goes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};
use vfgenie_tests::runtime::{run, unique, CniOutput, Node, Sandbox, DEBIAN_CNI_DIR};

use crate::{api_step, fmt, verdict, Samples, NS, PODS};

/// The same three networks as the genie_pods tests: the cluster network (bridge, default route),
/// NAD `team/blue` (ptp) and the CNI-Genie conf `red` (macvlan on a veth master).
struct Networks {
    node: Node,
    master: String,
    /// (plugin type, ifname, config) as genie delegates them, in ADD order.
    delegates: Vec<(String, String, Value)>,
}

impl Networks {
    fn new() -> anyhow::Result<Self> {
        let node = Node::new()?;
        let master = unique("gbm");
        run(
            "ip",
            &[
                "link",
                "add",
                &master,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{master}p"),
            ],
        )?;
        run("ip", &["link", "set", &master, "up"])?;
        let cluster = node.cluster_conflist("10.181.0.0/16");
        node.write_conf("10-cluster.conflist", &cluster)?;
        let red = json!({"cniVersion": "1.0.0", "name": "red", "type": "macvlan", "master": master,
                         "mode": "bridge", "ipam": node.ipam("10.183.0.0/16")});
        node.write_conf("20-red.conf", &red)?;
        let blue = json!({"cniVersion": "1.0.0", "name": "blue", "type": "ptp", "ipMasq": false,
                          "ipam": node.ipam("10.182.0.0/16")});
        node.api.add_nad(NS, "blue", &blue.to_string(), None);
        let mut bridge = cluster["plugins"][0].clone();
        bridge["cniVersion"] = json!("1.0.0");
        bridge["name"] = json!("cluster");
        let delegates = vec![
            ("bridge".into(), "eth0".into(), bridge),
            ("ptp".into(), "net1".into(), blue),
            ("macvlan".into(), "eth1".into(), red),
        ];
        Ok(Self {
            node,
            master,
            delegates,
        })
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.master]);
    }
}

fn checked(what: &str, out: CniOutput) -> anyhow::Result<()> {
    if !out.success {
        bail!("{what} failed: {} / {}", out.stdout, out.stderr);
    }
    Ok(())
}

pub(crate) fn cni() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the cni benchmark creates network namespaces and links: run it as root");
    }
    let nets = Networks::new()?;
    let node = &nets.node;
    let conf = node.genie_conf("1.0.0", json!({"clusterNetwork": "cluster"}));
    let plugin = |t: &str| Path::new(DEBIAN_CNI_DIR).join(t);

    let genie_pod_with = |i: usize, conf: &Value| -> anyhow::Result<(Duration, Duration)> {
        let name = format!("bench{i}");
        node.api.add_pod(
            NS,
            &name,
            &[("k8s.v1.cni.cncf.io/networks", "blue"), ("cni", "red")],
        );
        let sb = Sandbox::new()?;
        let cid = format!("genie{i}");
        let pod = Some((NS, name.as_str()));
        let t = Instant::now();
        let out = node.cni("ADD", &cid, &sb.path, "eth0", pod, conf)?;
        let add = t.elapsed();
        checked("genie ADD", out)?;
        let t = Instant::now();
        let out = node.cni("DEL", &cid, &sb.path, "eth0", pod, conf)?;
        let del = t.elapsed();
        checked("genie DEL", out)?;
        node.api.delete_pod(NS, &name);
        Ok((add, del))
    };
    let genie_pod = |i: usize| genie_pod_with(i, &conf);
    let direct_pod = |i: usize| -> anyhow::Result<(Duration, Duration)> {
        let name = format!("direct{i}");
        let sb = Sandbox::new()?;
        let cid = format!("direct{i}");
        let pod = Some((NS, name.as_str()));
        let t = Instant::now();
        for (ty, ifname, c) in &nets.delegates {
            let out = node.exec_plugin(&plugin(ty), "ADD", &cid, &sb.path, ifname, pod, "", c)?;
            checked(&format!("{ty} ADD"), out)?;
        }
        let add = t.elapsed();
        let t = Instant::now();
        for (ty, ifname, c) in nets.delegates.iter().rev() {
            let out = node.exec_plugin(&plugin(ty), "DEL", &cid, &sb.path, ifname, pod, "", c)?;
            checked(&format!("{ty} DEL"), out)?;
        }
        let del = t.elapsed();
        Ok((add, del))
    };

    // One untimed pod each: page cache and the API stand-in warm.
    genie_pod(PODS)?;
    direct_pod(PODS)?;
    let (mut g_add, mut g_del, mut d_add, mut d_del) = (vec![], vec![], vec![], vec![]);
    let (mut over_add, mut over_del) = (vec![], vec![]);
    let mut ratios = Vec::new();
    let mut writes = Vec::new();
    for i in 0..PODS {
        writes.push(cache_write(node)?);
        // Alternate the order so that neither side always runs on a just-disturbed machine.
        let (g, d) = if i % 2 == 0 {
            let g = genie_pod(i)?;
            (g, direct_pod(i)?)
        } else {
            let d = direct_pod(i)?;
            (genie_pod(i)?, d)
        };
        g_add.push(g.0);
        g_del.push(g.1);
        d_add.push(d.0);
        d_del.push(d.1);
        over_add.push(g.0.saturating_sub(d.0));
        over_del.push(g.1.saturating_sub(d.1));
        ratios.push(g.0.as_secs_f64() / d.0.as_secs_f64() - 1.0);
    }
    if !node.leases().is_empty() || !node.cache_records().is_empty() {
        bail!(
            "pods left leases {:?} or cache records {:?}",
            node.leases(),
            node.cache_records()
        );
    }
    let line = |name: &str, v: Vec<Duration>| {
        let s = Samples::new(v);
        println!(
            "{name}: p50 {} p99 {} (n={})",
            fmt(s.pct(50.0)),
            fmt(s.pct(99.0)),
            s.n()
        );
        s
    };
    line("cni.add_genie_3_networks", g_add);
    let da = line("cni.add_direct_3_delegates", d_add);
    line("cni.del_genie_3_networks", g_del);
    line("cni.del_direct_3_delegates", d_del);
    let oa = Samples::new(over_add);
    println!(
        "cni.add_overhead (genie - direct, per pod): p50 {} p99 {} (n={})  aim p50 < 2 ms: {}",
        fmt(oa.pct(50.0)),
        fmt(oa.pct(99.0)),
        oa.n(),
        verdict(oa.pct(50.0) < Duration::from_millis(2))
    );
    ratios.sort_by(f64::total_cmp);
    let r50 = ratios[ratios.len().div_ceil(2) - 1];
    println!(
        "cni.add_ratio (genie / direct): p50 {:.2} (overhead {:.0}% of the delegates' {})  aim < 10%: {}",
        1.0 + r50,
        r50 * 100.0,
        fmt(da.pct(50.0)),
        verdict(r50 < 0.10)
    );
    let od = Samples::new(over_del);
    println!(
        "cni.del_overhead (genie - direct, per pod): p50 {} p99 {} (n={})",
        fmt(od.pct(50.0)),
        fmt(od.pct(99.0)),
        od.n()
    );
    let w = Samples::new(writes);
    println!(
        "cni.cache_record_write (fsync, rename, fsync dir; ADD makes 2, the first one's directory fsync beside its first delegate): p50 {} p99 {} (n={})",
        fmt(w.pct(50.0)),
        fmt(w.pct(99.0)),
        w.n()
    );

    audit_cost(&conf, &genie_pod_with)?;

    // Where genie's time goes: more pods with debug logging on, which makes genie log its step
    // timings (vfcni::timing). Measured apart from the figures above, which run without it.
    let log = tempfile::NamedTempFile::new()?;
    let mut logged = conf.clone();
    logged["logLevel"] = json!("debug");
    logged["logFile"] = json!(log.path().display().to_string());
    let mut walls = (Vec::new(), Vec::new());
    for i in 0..BREAKDOWN_PODS {
        let (add, del) = genie_pod_with(PODS + 1 + i, &logged)?;
        walls.0.push(add);
        walls.1.push(del);
    }
    let runs = vfgenie_tests::timings::parse_timings(log.path(), "genie")?;
    for (command, wall) in [("ADD", walls.0), ("DEL", walls.1)] {
        let steps = runs.get(command).map(Vec::as_slice).unwrap_or_default();
        if steps.len() != BREAKDOWN_PODS {
            bail!(
                "{} {command} timing lines for {BREAKDOWN_PODS} pods",
                steps.len()
            );
        }
        println!("{}", breakdown(command, steps, &wall));
    }
    smart_step(&nets)?;
    api_step::api_step()
}

/// A one-network pod chosen by genie's smart selection (`cni: ""`, `smartSelection` over two
/// macvlan networks, a fresh KPI file) beside the same pod naming its network (`cni: "red"`),
/// alternated in one run; and the KPI file's read, decode and selection alone, in process.
fn smart_step(nets: &Networks) -> anyhow::Result<()> {
    let node = &nets.node;
    let red2 = json!({"cniVersion": "1.0.0", "name": "red2", "type": "macvlan", "master": nets.master,
                      "mode": "bridge", "ipam": node.ipam("10.184.0.0/16")});
    node.write_conf("21-red2.conf", &red2)?;
    let kpi_file = node.dir.path().join("kpi.json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    // Sixteen networks in the file, as a busy node's would have; red is the least loaded.
    let mut networks = serde_json::Map::new();
    for n in 0..16 {
        let name = match n {
            0 => "red".to_string(),
            1 => "red2".to_string(),
            n => format!("other{n}"),
        };
        networks.insert(
            name,
            json!({"sampledAt": now, "ipUsed": 10 + n, "ipTotal": 65533, "freeVfs": null,
                   "rxBytesPerSecond": 1000.0 * f64::from(n), "txBytesPerSecond": 10.0,
                   "attachLatencyP50Ms": null, "errorRate": null}),
        );
    }
    let file = json!({"generatedAt": now, "node": "bench", "networks": networks});
    std::fs::write(&kpi_file, serde_json::to_vec(&file)?)?;
    let conf = node.genie_conf(
        "1.0.0",
        json!({"smartSelection": {"strategy": "leastTraffic", "candidates": ["red2", "red"],
            "maxKpiAgeSeconds": 86400, "kpiFile": kpi_file.display().to_string()}}),
    );
    let pod = |i: usize, cni: &str| -> anyhow::Result<Duration> {
        let name = format!("smart{i}");
        node.api.add_pod(NS, &name, &[("cni", cni)]);
        let sb = Sandbox::new()?;
        let cid = format!("smart{i}");
        let p = Some((NS, name.as_str()));
        let t = Instant::now();
        let out = node.cni("ADD", &cid, &sb.path, "eth0", p, &conf)?;
        let add = t.elapsed();
        checked("genie ADD", out)?;
        checked(
            "genie DEL",
            node.cni("DEL", &cid, &sb.path, "eth0", p, &conf)?,
        )?;
        node.api.delete_pod(NS, &name);
        Ok(add)
    };
    pod(0, "")?;
    let writes = node.api.writes();
    let chosen = writes
        .last()
        .and_then(|w| w.annotation("vfgenie.io/smart-selection"))
        .map(serde_json::from_str::<Value>)
        .transpose()?
        .and_then(|v| v[0]["chosen"].as_str().map(str::to_string));
    if chosen.as_deref() != Some("red") {
        bail!("the smart pod got {chosen:?}, not red");
    }
    pod(1, "red")?;
    let (mut smart, mut explicit) = (Vec::new(), Vec::new());
    for i in 0..PODS {
        if i % 2 == 0 {
            smart.push(pod(2 + 2 * i, "")?);
            explicit.push(pod(3 + 2 * i, "red")?);
        } else {
            explicit.push(pod(3 + 2 * i, "red")?);
            smart.push(pod(2 + 2 * i, "")?);
        }
    }
    let (s, e) = (Samples::new(smart), Samples::new(explicit));
    println!(
        "cni.add_smart_selection_1_network: p50 {} p99 {} (n={})  explicit cni: \"red\": p50 {} p99 {} (n={})  difference of p50s {:.3} ms",
        fmt(s.pct(50.0)),
        fmt(s.pct(99.0)),
        s.n(),
        fmt(e.pct(50.0)),
        fmt(e.pct(99.0)),
        e.n(),
        (s.pct(50.0).as_secs_f64() - e.pct(50.0).as_secs_f64()) * 1e3
    );
    // What the selection adds inside genie: read the file, decode it borrowed, select.
    let smart_conf = vfcni::genieconf::GenieConf::from_value(&conf)?
        .smart_selection
        .ok_or_else(|| anyhow::anyhow!("no smartSelection"))?;
    let mut reads = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let bytes = std::fs::read(&smart_conf.kpi_file)?;
        let f = vfkube::kpi::parse_kpi_file(&bytes).map_err(anyhow::Error::msg)?;
        let sel = vfkube::kpi::select(&smart_conf.policy, Ok(&f), now);
        std::hint::black_box(&sel);
        reads.push(t.elapsed());
    }
    let r = Samples::new(reads);
    println!(
        "cni.smart_selection_kpi_read (read {} bytes, decode, select; in process): p50 {} p99 {} (n={})  aim p50 < 0.2 ms: {}",
        std::fs::metadata(&kpi_file)?.len(),
        fmt(r.pct(50.0)),
        fmt(r.pct(99.0)),
        r.n(),
        verdict(r.pct(50.0) < Duration::from_micros(200))
    );
    Ok(())
}

/// Genie runs logged with their step timings: pods in the breakdown.
const BREAKDOWN_PODS: usize = 40;

/// One line: the p50 of each of genie's steps over `runs`, of its own code (what no step covers)
/// and of process start and exit (the exec's wall time minus genie's own total), each taken per
/// run before the p50.
fn breakdown(command: &str, runs: &[vfgenie_tests::timings::Steps], wall: &[Duration]) -> String {
    let p50 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len().div_ceil(2) - 1]
    };
    let get = |r: &vfgenie_tests::timings::Steps, k: &str| r.get(k).copied().unwrap_or(0.0);
    let step = |k: &str| p50(runs.iter().map(|r| get(r, k)).collect());
    let own = p50(runs
        .iter()
        .map(|r| get(r, "total") - GENIE_STEPS.iter().map(|k| get(r, k)).sum::<f64>())
        .collect());
    let start_exit = p50(wall
        .iter()
        .zip(runs)
        .map(|(w, r)| w.as_secs_f64() * 1e3 - get(r, "total"))
        .collect());
    let wall_ms = p50(wall.iter().map(|d| d.as_secs_f64() * 1e3).collect());
    let mut line = format!("cni.{}.genie_breakdown:", command.to_lowercase());
    for k in GENIE_STEPS {
        line.push_str(&format!(" {k} {:.2} ms,", step(k)));
    }
    line.push_str(&format!(
        " own code {own:.2} ms, genie total {:.2} ms, process start/exit {start_exit:.2} ms of the exec's {wall_ms:.2} ms (p50s, n={})",
        step("total"),
        runs.len()
    ));
    line
}

/// genie's named steps (see `vfcni::timing`); `finish` is ADD's last one: routes, status write
/// and the results' cache write side by side.
const GENIE_STEPS: [&str; 7] = [
    "delegates",
    "cache",
    "api",
    "plan",
    "finish",
    "podresources",
    "device_info",
];

/// One durable write of a pod record on the cache's filesystem, as genie makes them (temp file,
/// fsync, rename, fsync of the directory): ADD makes two (every attachment, then the results; the
/// first one's directory fsync runs beside the first delegate). Taken once per
/// pod, at the same moments as the pods, because on a busy disk it is what most of genie's
/// overhead is made of.
fn cache_write(node: &Node) -> anyhow::Result<Duration> {
    let cache = vfcni::cache::CacheDir::new(&node.cache_dir);
    let key = vfcni::cache::PodKey::new("benchwrite", "eth0")?;
    let mut record = vfcni::cache::PodRecord::new(&key, "/run/netns/bench");
    record.pod_namespace = Some(NS.into());
    let t = Instant::now();
    cache.write_pod(&record)?;
    let took = t.elapsed();
    cache.remove_pod(&key)?;
    Ok(took)
}

/// One pod's ADD and DEL with a given genie conf.
type PodRun<'a> = dyn Fn(usize, &Value) -> anyhow::Result<(Duration, Duration)> + 'a;

/// Pods of each side in the audit comparison.
const AUDIT_PODS: usize = 100;

/// ADD with genie's audit log (the conf as deployed) beside ADD with `"auditLog": false`, pods
/// alternating in the same run; and the records' own cost, written in-process as genie writes
/// them for this pod (one call and three delegate records, each one open, write and close).
fn audit_cost(conf: &Value, pod: &PodRun<'_>) -> anyhow::Result<()> {
    let mut off = conf.clone();
    off["auditLog"] = json!(false);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let base = 2 * PODS + 100;
    for i in 0..AUDIT_PODS {
        let (a, b) = if i % 2 == 0 {
            let a = pod(base + 2 * i, conf)?.0;
            (a, pod(base + 2 * i + 1, &off)?.0)
        } else {
            let b = pod(base + 2 * i + 1, &off)?.0;
            (pod(base + 2 * i, conf)?.0, b)
        };
        with.push(a);
        without.push(b);
    }
    let w = Samples::new(with);
    let wo = Samples::new(without);
    let diff = w.pct(50.0).as_secs_f64() - wo.pct(50.0).as_secs_f64();
    println!(
        "cni.add_audit: p50 with the audit log {} / without {} (n={} each): difference {:+.3} ms  aim < 0.2 ms: {}",
        fmt(w.pct(50.0)),
        fmt(wo.pct(50.0)),
        w.n(),
        diff * 1e3,
        verdict(diff < 0.2e-3)
    );
    let dir = tempfile::tempdir()?;
    let writer = vfaudit::Writer::new(vfaudit::AuditConfig::with_defaults(
        dir.path().join("a.log"),
    ));
    let record = |kind| vfaudit::Record {
        verb: Some("ADD".into()),
        pod: Some(vfaudit::PodRef {
            namespace: NS.into(),
            name: "bench".into(),
            uid: Some("0b6f6a1c-6a1c-4c7e-9f43-5b1c2a9d7e10".into()),
        }),
        container_id: Some("f".repeat(64)),
        network: Some("blue".into()),
        plugin: Some("ptp".into()),
        ifname: Some("net1".into()),
        duration_us: Some(12_345),
        result: Some(vfaudit::ResultInfo {
            addresses: vec!["10.182.0.7/16".into()],
        }),
        ..vfaudit::Record::new(vfaudit::Source::Cni, kind)
    };
    let mut writes = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        for kind in [
            vfaudit::Kind::Delegate,
            vfaudit::Kind::Delegate,
            vfaudit::Kind::Delegate,
            vfaudit::Kind::Call,
        ] {
            writer.try_write(&record(kind))?;
        }
        writes.push(t.elapsed());
    }
    let s = Samples::new(writes);
    println!(
        "cni.audit_records_per_add (1 call + 3 delegate lines, in-process): p50 {} p99 {} (n={})",
        fmt(s.pct(50.0)),
        fmt(s.pct(99.0)),
        s.n()
    );
    Ok(())
}
