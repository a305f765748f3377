use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;

fn key() -> PodKey {
    PodKey::new("c0ffee", "eth0").unwrap()
}

fn record() -> PodRecord {
    let mut r = PodRecord::new(&key(), "/var/run/netns/p");
    r.attachments.push(PodAttachment {
        network: "net-a".into(),
        if_name: "net1".into(),
        conf: json!({"cniVersion": "1.0.0", "name": "net-a", "type": "bridge"}),
        result: None,
        extra: Map::new(),
    });
    r
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_corrupt_record_is_an_error_not_nothing() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    fs::create_dir_all(d.path().join("vfgenie")).unwrap();
    let path = cache.pod_path(&key());
    let cases: &[&str] = &[
        "",
        "{\"kind\":\"vfgeniePodV1\",\"containerId\":",
        "[]",
        r#"{"kind":"somethingElse","containerId":"c0ffee","ifName":"eth0","attachments":[]}"#,
        r#"{"kind":"vfgeniePodV1","containerId":"other","ifName":"eth0","attachments":[]}"#,
    ];
    for c in cases {
        fs::write(&path, c).unwrap();
        let e = cache.read_pod(&key()).unwrap_err();
        assert!(matches!(e, CacheError::Corrupt { .. }), "{c}: {e}");
        assert!(e.to_string().contains("c0ffee-eth0.json"), "{e}");
        assert_eq!(crate::genie::error::cni_code(e), 6);
    }
    let listed = cache.list_pods().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].record.is_err());
}

#[test]
fn keys_refuse_traversal() {
    let bad: &[(&str, &str)] = &[
        ("../../etc", "eth0"),
        ("", "eth0"),
        ("c", ".."),
        ("c", "a/b"),
        ("c", ""),
    ];
    for (c, i) in bad {
        let e = PodKey::new(*c, *i).unwrap_err();
        assert!(matches!(e, CacheError::InvalidName { .. }), "{c} {i}");
        assert_eq!(crate::genie::error::cni_code(e), 4);
    }
    // A record carrying a bad name is refused before anything is written.
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    let mut r = record();
    r.container_id = "../../escape".into();
    assert!(cache.write_pod(&r).is_err());
    assert!(!d.path().join("vfgenie").exists());
}

#[test]
fn listing_for_gc() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    assert!(cache.list_pods().unwrap().is_empty());
    for (c, i) in [("c1", "eth0"), ("c2", "eth0"), ("c1", "net1")] {
        let k = PodKey::new(c, i).unwrap();
        cache.write_pod(&PodRecord::new(&k, "")).unwrap();
    }
    // A stale temp file from a crash is not an entry.
    fs::write(d.path().join("vfgenie/.c3-eth0.json.tmp.1.0"), "{").unwrap();
    let keys: Vec<PodKey> = cache
        .list_pods()
        .unwrap()
        .into_iter()
        .map(|l| l.record.unwrap().key().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            PodKey::new("c1", "eth0").unwrap(),
            PodKey::new("c1", "net1").unwrap(),
            PodKey::new("c2", "eth0").unwrap(),
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
    // The records "directory" is a file: every operation fails with I/O, none reports "absent".
    fs::write(d.path().join("vfgenie"), "").unwrap();
    let cache = CacheDir::new(d.path());
    let e = cache.read_pod(&key()).unwrap_err();
    assert!(matches!(e, CacheError::Io { .. }), "{e}");
    assert_eq!(crate::genie::error::cni_code(e), 5);
    assert!(cache.write_pod(&record()).is_err());
    assert!(cache.list_pods().is_err());
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

#[test]
fn removing_a_record_removes_the_temp_files_killed_writers_left_for_it() {
    let d = tempfile::tempdir().unwrap();
    let cache = CacheDir::new(d.path());
    let k = PodKey::new("c80", "eth0").unwrap();
    cache.write_pod(&PodRecord::new(&k, "")).unwrap();
    // A writer of this record killed before its rename; another pod's, and another record of
    // a name that only starts the same, are not this record's.
    fs::write(d.path().join("vfgenie/.c80-eth0.json.tmp.9423.0"), "{").unwrap();
    fs::write(d.path().join("vfgenie/.c8-eth0.json.tmp.1.0"), "{").unwrap();
    let other = PodKey::new("c80", "eth00").unwrap();
    cache.write_pod(&PodRecord::new(&other, "")).unwrap();
    cache.remove_pod(&k).unwrap();
    let mut left: Vec<String> = fs::read_dir(d.path().join("vfgenie"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock") && n != "locks")
        .collect();
    left.sort();
    assert_eq!(left, [".c8-eth0.json.tmp.1.0", "c80-eth00.json"]);
}
