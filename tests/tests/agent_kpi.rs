//! Host tier: the agent's network KPIs against the real thing: host-local leases taken by
//! Debian's host-local plugin, and traffic sent between two network namespaces over a veth pair
//! whose ends genie's records name as two pods' interfaces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::{json, Value};
use vfagent::kpi::traffic::{attachments, TrafficSampler};
use vfagent::kpi::{Collector, KpiOptions, NoAttachStats};
use vfagent::podres::Held;
use vfcore::netns::NetNs;
use vfgenie_tests::runtime::{exec_cni, require_root, run, unique, Sandbox, DEBIAN_CNI_DIR};
use vfmeta::cache::{CacheDir, PodAttachment, PodKey, PodRecord};

fn host_local(command: &str, container: &str, conf: &Value) -> vfgenie_tests::runtime::CniOutput {
    exec_cni(
        &Path::new(DEBIAN_CNI_DIR).join("host-local"),
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", DEBIAN_CNI_DIR),
        ],
        &serde_json::to_vec(conf).unwrap(),
    )
    .unwrap()
}

fn collector(dir: &Path) -> (Collector, std::path::PathBuf) {
    let conf_dir = dir.join("net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let mut opts = KpiOptions::new(dir.join("kpi.json"));
    opts.cni_conf_dir = conf_dir.clone();
    opts.genie_cni_dir = dir.join("cache");
    opts.host_local_dir = dir.join("no-default");
    (Collector::new(opts, Box::new(NoAttachStats)), conf_dir)
}

#[test]
fn ip_occupancy_matches_the_leases_host_local_hands_out() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let (mut c, conf_dir) = collector(d.path());
    let data = d.path().join("ipam");
    let conf = |name: &str, ipam: Value| json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "ipam": ipam});
    // A /28 (host-local: .1 to .14 less the gateway .1) and a range within a /24.
    let small = conf(
        "small",
        json!({"type": "host-local", "subnet": "10.97.0.0/28",
        "dataDir": data.display().to_string()}),
    );
    let ranged = conf(
        "ranged",
        json!({"type": "host-local", "dataDir": data.display().to_string(),
        "ranges": [[{"subnet": "10.97.1.0/24", "rangeStart": "10.97.1.10", "rangeEnd": "10.97.1.15"}]]}),
    );
    let dhcp = conf("dhcp", json!({"type": "dhcp"}));
    for (f, v) in [
        ("10-small.conf", &small),
        ("20-ranged.conf", &ranged),
        ("30-dhcp.conf", &dhcp),
    ] {
        std::fs::write(conf_dir.join(f), v.to_string()).unwrap();
    }
    let s = c.sample(&[], &Held::NoKubelet, &[]);
    assert_eq!(s.networks["small"].ip_used, Some(0));
    assert_eq!(s.networks["dhcp"].ip_used, None);
    assert_eq!(s.networks["dhcp"].ip_total, None);

    // host-local leases until it runs out: the total is what it handed out.
    for (name, net) in [("small", &small), ("ranged", &ranged)] {
        let mut leased = 0u64;
        loop {
            let out = host_local("ADD", &format!("{name}{leased}"), net);
            if !out.success {
                assert!(
                    out.stdout.contains("no IP addresses available"),
                    "{}",
                    out.stdout
                );
                break;
            }
            leased += 1;
            assert!(leased < 300);
        }
        let s = c.sample(&[], &Held::NoKubelet, &[]);
        let k = s.networks[name];
        assert_eq!(
            (k.ip_used, k.ip_total),
            (Some(leased), Some(leased)),
            "{name}"
        );
        // Two released: two fewer used.
        for n in 0..2 {
            assert!(host_local("DEL", &format!("{name}{n}"), net).success);
        }
        let s = c.sample(&[], &Held::NoKubelet, &[]);
        assert_eq!(s.networks[name].ip_used, Some(leased - 2), "{name}");
    }
    assert_eq!(
        c.sample(&[], &Held::NoKubelet, &[]).networks["ranged"].ip_total,
        Some(6)
    );
    assert_eq!(
        c.sample(&[], &Held::NoKubelet, &[]).networks["small"].ip_total,
        Some(13)
    );
}

/// genie's record of a pod with one attachment.
fn record(cache: &CacheDir, container: &str, netns: &Path, network: &str, ifname: &str) {
    let key = PodKey::new(container, ifname).unwrap();
    let mut r = PodRecord::new(&key, netns.display().to_string());
    r.attachments = vec![PodAttachment {
        network: network.into(),
        if_name: ifname.into(),
        conf: json!({"type": "veth"}),
        result: None,
        extra: Default::default(),
    }];
    cache.write_pod(&r).unwrap();
}

#[test]
fn traffic_counts_the_bytes_sent_between_two_pods() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let (mut c, _) = collector(d.path());
    let cache = CacheDir::new(d.path().join("cache"));
    let (a, b) = (Sandbox::new().unwrap(), Sandbox::new().unwrap());
    let (ea, eb) = (unique("ka"), unique("kb"));
    run(
        "ip",
        &[
            "link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns",
            &b.name,
        ],
    )
    .unwrap();
    for (sb, link, addr) in [(&a, &ea, "10.98.0.1/24"), (&b, &eb, "10.98.0.2/24")] {
        run("ip", &["-n", &sb.name, "addr", "add", addr, "dev", link]).unwrap();
        run("ip", &["-n", &sb.name, "link", "set", link, "up"]).unwrap();
    }
    record(&cache, "pod-a", &a.path, "blue", &ea);
    record(&cache, "pod-b", &b.path, "green", &eb);
    let found = attachments(&d.path().join("cache"));
    assert_eq!(found.len(), 2, "{found:?}");

    // The first sample has no rate yet: unknown, not 0.
    let mut sampler = TrafficSampler::default();
    let first = sampler.sample(&found);
    assert_eq!(first["blue"].tx_bytes_per_second, None);
    // No conf files, but the recorded networks are sampled; no rate yet there either.
    let s = c.sample(&[], &Held::NoKubelet, &[]);
    assert_eq!(s.networks.keys().collect::<Vec<_>>(), ["blue", "green"]);
    assert_eq!(s.networks["blue"].rx_bytes_per_second, None, "{s:?}");

    // Neighbours resolved first so that only our datagrams count.
    run(
        "ip",
        &[
            "-n",
            &a.name,
            "neigh",
            "replace",
            "10.98.0.2",
            "lladdr",
            &mac_of(&b.name, &eb),
            "dev",
            &ea,
            "nud",
            "permanent",
        ],
    )
    .unwrap();
    let _ = sampler.sample(&found);
    const N: u64 = 200;
    const PAYLOAD: usize = 1000;
    NetNs::open(&a.path)
        .unwrap()
        .run(|| {
            let sock = std::net::UdpSocket::bind("10.98.0.1:0").unwrap();
            for _ in 0..N {
                sock.send_to(&[7u8; PAYLOAD], "10.98.0.2:9").unwrap();
            }
        })
        .unwrap();
    let t = sampler.sample(&found);
    // Ethernet 14 + IPv4 20 + UDP 8 per datagram.
    let sent = N * (PAYLOAD as u64 + 42);
    let blue = t["blue"];
    assert!(
        blue.tx_bytes >= sent && blue.tx_bytes < sent + 2000,
        "{blue:?} vs {sent}"
    );
    let green = t["green"];
    assert!(
        green.rx_bytes >= sent && green.rx_bytes < sent + 2000,
        "{green:?} vs {sent}"
    );
    let rate = blue.tx_bytes_per_second.unwrap();
    assert!(rate > 0.0, "{blue:?}");
    // A reset (the interface replaced): counted from 0, never negative.
    run("ip", &["-n", &a.name, "link", "del", &ea]).unwrap();
    run(
        "ip",
        &[
            "link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns",
            &b.name,
        ],
    )
    .unwrap();
    let t = sampler.sample(&found);
    assert!(t["blue"].tx_bytes < 1000, "{:?}", t["blue"]);
    for sb in [a, b] {
        let mut sb = sb;
        sb.destroy();
    }
}

fn mac_of(netns: &str, link: &str) -> String {
    let out = run("ip", &["-n", netns, "-j", "link", "show", link]).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

/// The KPI task as the agent runs it: the file genie reads, with attach figures from genie's
/// audit log, and the compact summary on the Node object, written again only when it changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kpi_task_writes_the_file_and_a_summary_on_the_node() {
    use std::time::{Duration, SystemTime};
    use vfagent::kpi::node::NodeAnnotation;
    use vfaudit::{AuditConfig, Kind, Record, Source, Writer};
    use vfgenie_tests::apiserver::ApiServer;

    let d = tempfile::tempdir().unwrap();
    let (_, conf_dir) = collector(d.path());
    let data = d.path().join("ipam");
    std::fs::write(
        conf_dir.join("10-blue.conf"),
        json!({"cniVersion": "1.0.0", "name": "blue", "type": "bridge",
               "ipam": {"type": "host-local", "subnet": "10.98.0.0/24",
                        "dataDir": data.display().to_string()}})
        .to_string(),
    )
    .unwrap();
    // genie's audit log: three ADDs of blue, 20, 30 and 40 ms, one failed.
    let log = d.path().join("cni-audit.log");
    let w = Writer::new(AuditConfig::with_defaults(&log));
    for (ms, failed) in [(20, false), (30, false), (40, true)] {
        let mut r = Record::new(Source::Cni, Kind::Delegate);
        r.verb = Some("ADD".into());
        r.network = Some("blue".into());
        r.duration_us = Some(ms * 1000);
        r.error = failed.then(|| vfaudit::ErrorInfo {
            code: 7,
            msg: "no".into(),
        });
        w.write(&r);
    }
    let server = ApiServer::start().unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": "n1", "annotations": {"other": "kept"}}}))
        .unwrap();
    let mut opts = KpiOptions::new(d.path().join("run/kpi.json"));
    opts.cni_conf_dir = conf_dir;
    opts.genie_cni_dir = d.path().join("cache");
    opts.interval = Duration::from_millis(100);
    opts.node = "n1".into();
    opts.genie_audit_log = Some(log);
    let node = NodeAnnotation::new(server.kube_client().unwrap(), "n1".into())
        .with_min_interval(Duration::ZERO);
    let (_state_tx, state_rx) = tokio::sync::watch::channel(Default::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(vfagent::kpi::run(
        opts.clone(),
        state_rx,
        d.path().join("no-kubelet.sock"),
        stop_rx,
        Some(node),
    ));
    let summary = |server: &ApiServer| -> Option<Value> {
        let n = server.get("nodes", "", "n1")?;
        let a = n["metadata"]["annotations"]["vfgenie.io/network-kpis"].as_str()?;
        Some(serde_json::from_str(a).unwrap())
    };
    let patches = |server: &ApiServer| {
        server
            .requests()
            .iter()
            .filter(|r| *r == "PATCH /api/v1/nodes/n1")
            .count()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let until = SystemTime::now() + Duration::from_secs(20);
        while !f() {
            assert!(SystemTime::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait("the summary", &|| summary(&server).is_some());
    let s = summary(&server).unwrap();
    assert_eq!(
        s["networks"]["blue"],
        json!({"ip": "0/253", "bps": 0, "p50Ms": 20.0, "errors": 0.333}),
        "{s}"
    );
    let n = server.get("nodes", "", "n1").unwrap();
    assert_eq!(n["metadata"]["annotations"]["other"], "kept");
    // The file genie reads has the same figures.
    let f: Value = serde_json::from_slice(&std::fs::read(&opts.file).unwrap()).unwrap();
    assert_eq!(f["networks"]["blue"]["attachLatencyP50Ms"], 20.0);
    assert_eq!(f["networks"]["blue"]["ipUsed"], 0);

    // Five more samples with the same figures: no further write.
    let generated = |p: &Path| -> f64 {
        serde_json::from_slice::<Value>(&std::fs::read(p).unwrap_or_default())
            .map(|v| v["generatedAt"].as_f64().unwrap_or(0.0))
            .unwrap_or(0.0)
    };
    for _ in 0..5 {
        let before = generated(&opts.file);
        wait("a sample", &|| generated(&opts.file) > before);
    }
    assert_eq!(patches(&server), 1);

    // A lease taken: the summary changes and is written again.
    std::fs::create_dir_all(data.join("blue")).unwrap();
    std::fs::write(data.join("blue/10.98.0.9"), "c1\neth0").unwrap();
    wait("the new summary", &|| {
        summary(&server).is_some_and(|s| s["networks"]["blue"]["ip"] == "1/253")
    });
    assert_eq!(patches(&server), 2);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}
