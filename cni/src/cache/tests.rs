use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;

fn key() -> AttachmentKey {
    AttachmentKey::new("net-a", "c0ffee", "net1").unwrap()
}

fn record() -> AttachmentRecord {
    let mut r = AttachmentRecord::new(
        &key(),
        br#"{"cniVersion":"1.0.0","type":"bridge"}"#.to_vec(),
    );
    r.netns = "/var/run/netns/p".into();
    r.cni_args = vec![["K8S_POD_NAME".into(), "p".into()]];
    r.capability_args
        .insert("mac".into(), json!("0a:00:00:00:00:01"));
    r.result = Some(json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]}));
    r
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn attachment_round_trip_in_libcni_shape() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path().join("cni"));
    assert!(cache.read_attachment(&key()).unwrap().is_none());
    cache.write_attachment(&record()).unwrap();
    let path = d.path().join("cni/results/net-a-c0ffee-net1");
    assert_eq!(cache.attachment_path(&key()), path);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&d.path().join("cni/results")), 0o700);
    let on_disk: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({
            "kind": "cniCacheV1",
            "containerId": "c0ffee",
            "config": "eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJ0eXBlIjoiYnJpZGdlIn0=",
            "ifName": "net1",
            "networkName": "net-a",
            "netns": "/var/run/netns/p",
            "cniArgs": [["K8S_POD_NAME", "p"]],
            "capabilityArgs": {"mac": "0a:00:00:00:00:01"},
            "result": {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24"}]}
        })
    );
    assert_eq!(cache.read_attachment(&key()).unwrap().unwrap(), record());
    // Overwrite, then remove twice.
    let mut r2 = record();
    r2.result = None;
    cache.write_attachment(&r2).unwrap();
    assert_eq!(cache.read_attachment(&key()).unwrap().unwrap(), r2);
    cache.remove_attachment(&key()).unwrap();
    cache.remove_attachment(&key()).unwrap();
    assert!(cache.read_attachment(&key()).unwrap().is_none());
    // No temp files left behind.
    assert_eq!(
        fs::read_dir(d.path().join("cni/results")).unwrap().count(),
        0
    );
}

#[test]
fn reads_a_record_written_by_libcni() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    fs::create_dir_all(d.path().join("results")).unwrap();
    fs::write(
        d.path().join("results/net-a-c0ffee-net1"),
        r#"{"kind":"cniCacheV1","containerId":"c0ffee","config":"e30=","ifName":"net1","networkName":"net-a","result":{"cniVersion":"0.4.0","dns":{}}}"#,
    )
    .unwrap();
    let r = cache.read_attachment(&key()).unwrap().unwrap();
    assert_eq!(r.config, b"{}");
    assert!(r.cni_args.is_empty());
}

#[test]
fn a_corrupt_record_is_an_error_not_nothing() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    fs::create_dir_all(d.path().join("results")).unwrap();
    let path = d.path().join("results/net-a-c0ffee-net1");
    let cases: &[&str] = &[
        "",
        "{\"kind\":\"cniCacheV1\",\"containerId\":",
        "[]",
        r#"{"kind":"somethingElse","containerId":"c0ffee","config":"e30=","ifName":"net1","networkName":"net-a"}"#,
        r#"{"kind":"cniCacheV1","containerId":"c0ffee","config":"not base64!","ifName":"net1","networkName":"net-a"}"#,
        r#"{"kind":"cniCacheV1","containerId":"other","config":"e30=","ifName":"net1","networkName":"net-a"}"#,
    ];
    for c in cases {
        fs::write(&path, c).unwrap();
        let e = cache.read_attachment(&key()).unwrap_err();
        assert!(matches!(e, CacheError::Corrupt { .. }), "{c}: {e}");
        assert_eq!(e.to_cni_error().code, 6);
        assert!(e.to_string().contains("net-a-c0ffee-net1"), "{e}");
    }
    let listed = cache.list_attachments().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].record.is_err());
}

#[test]
fn keys_refuse_traversal() {
    let bad: &[(&str, &str, &str)] = &[
        ("../x", "c", "eth0"),
        ("n/a", "c", "eth0"),
        ("", "c", "eth0"),
        ("n", "../../etc", "eth0"),
        ("n", "", "eth0"),
        ("n", "c", ".."),
        ("n", "c", "a/b"),
        ("n", "c", ""),
    ];
    for (n, c, i) in bad {
        let e = AttachmentKey::new(*n, *c, *i).unwrap_err();
        assert!(matches!(e, CacheError::InvalidName { .. }), "{n} {c} {i}");
        assert_eq!(e.to_cni_error().code, 4);
    }
    assert!(PodKey::new("../c", "eth0").is_err());
    // A record carrying a bad name is refused before anything is written.
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    let mut r = record();
    r.network_name = "../../escape".into();
    assert!(cache.write_attachment(&r).is_err());
    assert!(!d.path().join("results").exists());
}

#[test]
fn listing_for_gc() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    assert!(cache.list_attachments().unwrap().is_empty());
    for (n, c) in [("net-a", "c1"), ("net-b", "c1"), ("net-a", "c2")] {
        let k = AttachmentKey::new(n, c, "eth0").unwrap();
        cache
            .write_attachment(&AttachmentRecord::new(&k, b"{}".to_vec()))
            .unwrap();
    }
    // A stale temp file from a crash is not an entry.
    fs::write(d.path().join("results/.net-a-c3-eth0.tmp.1.0"), "{").unwrap();
    let keys: Vec<AttachmentKey> = cache
        .list_attachments()
        .unwrap()
        .into_iter()
        .map(|l| l.record.unwrap().key().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            AttachmentKey::new("net-a", "c1", "eth0").unwrap(),
            AttachmentKey::new("net-a", "c2", "eth0").unwrap(),
            AttachmentKey::new("net-b", "c1", "eth0").unwrap(),
        ]
    );
}

#[test]
fn pod_records() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    let key = PodKey::new("c0ffee", "eth0").unwrap();
    assert!(cache.read_pod(&key).unwrap().is_none());
    let mut rec = PodRecord::new(&key, "/var/run/netns/p");
    rec.pod_namespace = Some("ns".into());
    rec.pod_name = Some("p".into());
    rec.attachments.push(PodAttachment {
        network: "ns/net-a".into(),
        if_name: "net1".into(),
        conf: json!({"cniVersion": "1.0.0", "name": "net-a", "type": "bridge"}),
        result: Some(json!({"cniVersion": "1.0.0"})),
        extra: Map::new(),
    });
    cache.write_pod(&rec).unwrap();
    let path = d.path().join("vfgenie/c0ffee-eth0.json");
    assert_eq!(cache.pod_path(&key), path);
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&d.path().join("vfgenie")), 0o700);
    assert_eq!(cache.read_pod(&key).unwrap().unwrap(), rec);
    assert_eq!(cache.list_pods().unwrap().len(), 1);
    fs::write(&path, "{\"kind\":\"vfgeniePodV1\"").unwrap();
    assert!(matches!(
        cache.read_pod(&key).unwrap_err(),
        CacheError::Corrupt { .. }
    ));
    cache.remove_pod(&key).unwrap();
    cache.remove_pod(&key).unwrap();
    assert!(cache.read_pod(&key).unwrap().is_none());
}

#[test]
fn an_unreadable_directory_is_an_io_error() {
    let d = tempfile::tempdir().unwrap();
    // The results "directory" is a file: every operation fails with I/O, none reports "absent".
    fs::write(d.path().join("results"), "").unwrap();
    let cache = CacheDir::new(d.path());
    let e = cache.read_attachment(&key()).unwrap_err();
    assert!(matches!(e, CacheError::Io { .. }), "{e}");
    assert_eq!(e.to_cni_error().code, 5);
    assert!(cache.write_attachment(&record()).is_err());
    assert!(cache.list_attachments().is_err());
}

#[test]
fn a_record_that_is_a_fifo_or_too_large_reads_as_corrupt_at_once() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    let k = PodKey::new("c0ffee", "eth0").unwrap();
    fs::create_dir_all(cache.pod_path(&k).parent().unwrap()).unwrap();
    nix::unistd::mkfifo(
        &cache.pod_path(&k),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    match cache.read_pod(&k).unwrap_err() {
        CacheError::Corrupt { reason, .. } => assert!(reason.contains("FIFO"), "{reason}"),
        other => panic!("{other}"),
    }
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    fs::remove_file(cache.pod_path(&k)).unwrap();
    File::create(cache.pod_path(&k))
        .unwrap()
        .set_len(crate::bounded::RECORD_MAX + 1)
        .unwrap();
    match cache.read_pod(&k).unwrap_err() {
        CacheError::Corrupt { reason, .. } => assert!(reason.contains("limit"), "{reason}"),
        other => panic!("{other}"),
    }
}
