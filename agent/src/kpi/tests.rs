use super::*;
use crate::pool::tests::{device, pool_of};
use serde_json::json;
use std::collections::BTreeSet;

#[test]
fn a_sample_of_conf_networks_and_pools() {
    let d = tempfile::tempdir().unwrap();
    let conf_dir = d.path().join("net.d");
    let data = d.path().join("ipam");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(data.join("blue")).unwrap();
    std::fs::write(data.join("blue/10.1.0.7"), "c1").unwrap();
    let write = |f: &str, v: Value| std::fs::write(conf_dir.join(f), v.to_string()).unwrap();
    write(
        "00-genie.conflist",
        json!({"name": "genie", "plugins": [{"type": "genie"}]}),
    );
    write(
        "10-blue.conf",
        json!({"name": "blue", "type": "bridge",
        "ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}),
    );
    write(
        "20-red.conflist",
        json!({"name": "red", "plugins": [{"type": "macvlan",
        "ipam": {"type": "dhcp"}}]}),
    );
    std::fs::write(conf_dir.join("30-bad.conf"), "{").unwrap();
    let mut opts = KpiOptions::new(d.path().join("run/kpi.json"));
    opts.cni_conf_dir = conf_dir;
    opts.host_local_dir = data;
    opts.genie_cni_dir = d.path().join("cache");
    opts.node = "n1".into();
    let mut c = Collector::new(opts.clone(), Box::new(NoAttachStats));
    let mut sick = device("0000:01:00.3", None);
    sick.healthy = false;
    let pools = [pool_of(
        "vfgenie.io/fast",
        vec![
            device("0000:01:00.1", None),
            device("0000:01:00.2", None),
            sick,
        ],
    )];
    let held = Held::Known(BTreeSet::from(["0000:01:00.1".parse().unwrap()]));
    let extra = [ExtraNetwork {
        name: "team/fast".into(),
        config: json!({"type": "sriov", "ipam": {"type": "host-local", "subnet": "10.5.0.0/29"}}),
        resource: Some("vfgenie.io/fast".into()),
    }];
    let s = c.sample(&pools, &held, &extra);
    assert_eq!(
        s.networks.keys().collect::<Vec<_>>(),
        ["blue", "red", "team/fast"]
    );
    let blue = s.networks["blue"];
    assert_eq!((blue.ip_used, blue.ip_total), (Some(1), Some(253)));
    assert_eq!(blue.free_vfs, None);
    // No pods on it: no traffic, known.
    assert_eq!(blue.rx_bytes_per_second, Some(0.0));
    assert_eq!(blue.attach_latency_p50_ms, None);
    let red = s.networks["red"];
    assert_eq!((red.ip_used, red.ip_total), (None, None));
    // A nameless NAD config leases under `team-fast`, as genie names it.
    assert_eq!(s.networks["team/fast"].ip_total, Some(5));
    assert_eq!(s.networks["team/fast"].ip_used, Some(0));
    assert_eq!(s.networks["team/fast"].free_vfs, Some(1));
    assert_eq!(s.pools["vfgenie.io/fast"].free_vfs, Some(1));
    assert_eq!(s.pools["vfgenie.io/fast"].capacity, 3);
    // The kubelet cannot say: unknown, not 0.
    let s2 = c.sample(&pools, &Held::Unknown("gone".into()), &[]);
    assert_eq!(s2.pools["vfgenie.io/fast"].free_vfs, None);

    // The file genie reads.
    write_atomic(&opts.file, &s.to_json().unwrap()).unwrap();
    let bytes = std::fs::read(&opts.file).unwrap();
    let f = vfkube::kpi::parse_kpi_file(&bytes).unwrap();
    assert_eq!(f.node, Some("n1"));
    assert_eq!(f.networks["blue"].ip_used, Some(1));
    assert!(f.networks["blue"].sampled_at > 1.0e9);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&opts.file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    // No temporary file left beside it.
    assert_eq!(std::fs::read_dir(d.path().join("run")).unwrap().count(), 1);

    assert_eq!(render_sample(None), "");
    let m = render_sample(Some(&s));
    assert!(
        m.contains("vfgenie_network_ip_used{network=\"blue\",node=\"n1\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("vfgenie_network_ip_total{network=\"blue\",node=\"n1\"} 253\n"),
        "{m}"
    );
    assert!(
        m.contains("vfgenie_network_free_vfs{network=\"team/fast\",node=\"n1\"} 1\n"),
        "{m}"
    );
    assert!(
        !m.contains("vfgenie_network_ip_used{network=\"red\""),
        "{m}"
    );
    assert!(
        m.contains("# TYPE vfgenie_network_tx_bytes_per_second gauge"),
        "{m}"
    );
}

#[test]
fn networks_genie_attached_on_the_node_are_sampled_from_its_records() {
    use vfmeta::cache::{CacheDir, PodAttachment, PodKey, PodRecord};
    let d = tempfile::tempdir().unwrap();
    let mut opts = KpiOptions::new(d.path().join("kpi.json"));
    opts.cni_conf_dir = d.path().join("net.d");
    opts.host_local_dir = d.path().join("ipam");
    opts.genie_cni_dir = d.path().join("cache");
    let key = PodKey::new("c1", "eth0").unwrap();
    let mut r = PodRecord::new(&key, "");
    for (network, resource, subnet) in [
        ("team/vf-a", Some("vfgenie.io/fast"), "10.7.0.0/29"),
        ("team/overlay", None, "10.8.0.0/24"),
    ] {
        let mut extra = serde_json::Map::new();
        if let Some(res) = resource {
            extra.insert(
                vfmeta::genie::record::EXTRA_RESOURCE.into(),
                Value::String(res.into()),
            );
        }
        r.attachments.push(PodAttachment {
            network: network.into(),
            if_name: "net1".into(),
            conf: json!({"name": network.replace('/', "-"), "type": "sriov",
                         "ipam": {"type": "host-local", "subnet": subnet}}),
            result: None,
            extra,
        });
    }
    CacheDir::new(&opts.genie_cni_dir).write_pod(&r).unwrap();
    let pools = [pool_of(
        "vfgenie.io/fast",
        vec![device("0000:01:00.1", None), device("0000:01:00.2", None)],
    )];
    let held = Held::Known(BTreeSet::from(["0000:01:00.1".parse().unwrap()]));
    let mut c = Collector::new(opts, Box::new(NoAttachStats));
    let s = c.sample(&pools, &held, &[]);
    assert_eq!(
        s.networks.keys().collect::<Vec<_>>(),
        ["team/overlay", "team/vf-a"]
    );
    assert_eq!(s.networks["team/vf-a"].free_vfs, Some(1));
    assert_eq!(s.networks["team/vf-a"].ip_total, Some(5));
    assert_eq!(s.networks["team/overlay"].free_vfs, None);
    assert_eq!(s.networks["team/overlay"].ip_total, Some(253));
}
