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
    let s = c.sample(&[], &Held::NoKubelet, &[]);
    assert!(s.networks.is_empty(), "no conf files: {s:?}");

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
