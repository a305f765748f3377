use super::*;

const NOW: f64 = 1_764_900_000.0;

fn policy(strategy: Strategy) -> Policy {
    Policy {
        strategy,
        candidates: vec!["net-a".into(), "net-b".into(), "net-c".into()],
        max_age_seconds: 30.0,
        weights: Weights::default(),
    }
}

fn k(traffic: f64, used: u64, total: u64, free: Option<u64>) -> NetworkKpis {
    NetworkKpis {
        sampled_at: NOW - 5.0,
        ip_used: Some(used),
        ip_total: Some(total),
        free_vfs: free,
        rx_bytes_per_second: Some(traffic / 2.0),
        tx_bytes_per_second: Some(traffic / 2.0),
        attach_latency_p50_ms: None,
        error_rate: None,
    }
}

fn file(nets: &[(&'static str, NetworkKpis)]) -> KpiFile<'static> {
    KpiFile {
        generated_at: NOW - 5.0,
        node: Some("n1"),
        networks: nets.iter().map(|(n, k)| (*n, *k)).collect(),
        pools: BTreeMap::new(),
    }
}

#[test]
fn each_strategy_picks_the_least_loaded() {
    // a: busy, nearly full, few VFs; b: idle, empty, most VFs; c: between.
    let f = file(&[
        ("net-a", k(9000.0, 200, 253, Some(1))),
        ("net-b", k(10.0, 3, 253, Some(7))),
        ("net-c", k(500.0, 100, 253, Some(4))),
    ]);
    for s in [
        Strategy::LeastTraffic,
        Strategy::LeastIpOccupancy,
        Strategy::MostFreeVfs,
        Strategy::Weighted,
    ] {
        let sel = select(&policy(s), Ok(&f), NOW);
        assert_eq!(sel.chosen, "net-b", "{s:?}: {sel:?}");
        assert!(!sel.fallback);
        assert_eq!(sel.candidates.len(), 3);
        assert_eq!(sel.candidates[1].kpis, Some(f.networks["net-b"]));
    }
    // Each strategy follows its own figure.
    let f = file(&[
        ("net-a", k(10.0, 200, 253, Some(1))),
        ("net-b", k(9000.0, 3, 253, Some(2))),
        ("net-c", k(500.0, 100, 253, Some(7))),
    ]);
    let pick = |s| select(&policy(s), Ok(&f), NOW).chosen;
    assert_eq!(pick(Strategy::LeastTraffic), "net-a");
    assert_eq!(pick(Strategy::LeastIpOccupancy), "net-b");
    assert_eq!(pick(Strategy::MostFreeVfs), "net-c");
}

#[test]
fn weighted_follows_the_weights() {
    let f = file(&[
        ("net-a", k(10.0, 250, 253, Some(1))),
        ("net-b", k(9000.0, 3, 253, Some(1))),
    ]);
    let mut p = policy(Strategy::Weighted);
    p.candidates.truncate(2);
    p.weights = Weights {
        traffic: 1.0,
        ip_occupancy: 0.0,
        free_vfs: 0.0,
    };
    assert_eq!(select(&p, Ok(&f), NOW).chosen, "net-a");
    p.weights = Weights {
        traffic: 0.0,
        ip_occupancy: 1.0,
        free_vfs: 0.0,
    };
    assert_eq!(select(&p, Ok(&f), NOW).chosen, "net-b");
}

#[test]
fn ties_go_to_the_lowest_name() {
    let f = file(&[
        ("net-c", k(10.0, 1, 10, None)),
        ("net-b", k(10.0, 1, 10, None)),
        ("net-a", k(99.0, 1, 10, None)),
    ]);
    let sel = select(&policy(Strategy::LeastTraffic), Ok(&f), NOW);
    assert_eq!(sel.chosen, "net-b");
}

#[test]
fn stale_or_missing_figures_fall_back_to_the_first_candidate() {
    let mut f = file(&[
        ("net-a", k(9000.0, 1, 10, None)),
        ("net-b", k(10.0, 1, 10, None)),
    ]);
    let mut p = policy(Strategy::LeastTraffic);
    p.candidates.truncate(2);
    let sel = select(&p, Err("cannot read /x: gone".into()), NOW);
    assert_eq!((sel.chosen.as_str(), sel.fallback), ("net-a", true));
    assert!(sel.reason.contains("/x"), "{}", sel.reason);

    f.generated_at = NOW - 31.0;
    let sel = select(&p, Ok(&f), NOW);
    assert_eq!((sel.chosen.as_str(), sel.fallback), ("net-a", true));
    assert!(sel.reason.contains("31 s old"), "{}", sel.reason);

    // A fresh file with one stale network: that network is skipped, not chosen.
    f.generated_at = NOW;
    f.networks.get_mut("net-b").unwrap().sampled_at = NOW - 60.0;
    let sel = select(&p, Ok(&f), NOW);
    assert_eq!((sel.chosen.as_str(), sel.fallback), ("net-a", false));
    assert!(sel.reason.contains("skipped"), "{}", sel.reason);

    // Unknown figures (null) are not zero: mostFreeVfs without any pool falls back.
    p.strategy = Strategy::MostFreeVfs;
    let sel = select(&p, Ok(&f), NOW);
    assert!(sel.fallback, "{sel:?}");
}

#[test]
fn the_file_decodes_borrowed_and_the_annotation_round_trips() {
    let bytes = br#"{"generatedAt": 1764900000.5, "node": "n1", "networks": {
        "net-a": {"sampledAt": 1764900000.0, "ipUsed": 3, "ipTotal": 253, "freeVfs": null,
                  "rxBytesPerSecond": 1.5, "txBytesPerSecond": 2.5,
                  "attachLatencyP50Ms": null, "errorRate": null}}}"#;
    let f = parse_kpi_file(bytes).unwrap();
    assert_eq!(f.networks.keys().copied().collect::<Vec<_>>(), ["net-a"]);
    assert_eq!(f.node, Some("n1"));
    assert_eq!(f.networks["net-a"].traffic(), Some(4.0));
    assert!(parse_kpi_file(b"{\"networks\": 3}").is_err());
    let sel = select(&policy(Strategy::LeastTraffic), Ok(&f), 1_764_900_001.0);
    let json = serde_json::to_string(&sel).unwrap();
    assert!(json.contains("\"strategy\":\"leastTraffic\""), "{json}");
    assert!(json.contains("\"ageSeconds\":1.0"), "{json}");
    let back: Selection = serde_json::from_str(&json).unwrap();
    assert_eq!(back, sel);
}

#[test]
fn a_candidate_absent_from_a_fresh_file_has_no_traffic_and_no_other_figures() {
    let f = file(&[
        ("net-a", k(9000.0, 1, 10, Some(4))),
        ("net-b", k(10.0, 1, 10, Some(4))),
    ]);
    let mut p = policy(Strategy::LeastTraffic);
    p.candidates = vec!["net-a".into(), "net-b".into(), "net-idle".into()];
    let sel = select(&p, Ok(&f), NOW);
    assert_eq!((sel.chosen.as_str(), sel.fallback), ("net-idle", false));
    let idle = sel
        .candidates
        .iter()
        .find(|c| c.network == "net-idle")
        .unwrap();
    assert_eq!(idle.kpis.unwrap().traffic(), Some(0.0));
    assert_eq!(idle.kpis.unwrap().ip_occupancy(), None);
    // Its occupancy and VFs are unknown: those strategies skip it.
    p.strategy = Strategy::LeastIpOccupancy;
    let sel = select(&p, Ok(&f), NOW);
    assert!(!sel.fallback && sel.chosen != "net-idle", "{sel:?}");
    assert!(sel.reason.contains("skipped"), "{}", sel.reason);
    p.strategy = Strategy::MostFreeVfs;
    assert_ne!(select(&p, Ok(&f), NOW).chosen, "net-idle");
}

#[test]
fn group_members_are_plain_names_listed_once() {
    assert_eq!(
        parse_group("fast", " fast-a, fast-b ,fast-c").unwrap(),
        ["fast-a", "fast-b", "fast-c"]
    );
    for (bad, why) in [
        ("", "no member"),
        (" , ", "no member"),
        ("a,../b", "not an object name"),
        ("a,other/b", "not an object name"),
        ("a,Fast", "not an object name"),
        ("a,fast", "itself"),
        ("a,b,a", "twice"),
    ] {
        let e = parse_group("fast", bad).unwrap_err();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("m{i}")).collect();
    assert!(parse_group("fast", &many.join(","))
        .unwrap_err()
        .contains("at most 16"));
}

#[test]
fn thresholds_read_and_cross() {
    let t = Threshold::parse("errorRate > 0.2").unwrap();
    assert_eq!(
        t,
        Threshold {
            kpi: ThresholdKpi::ErrorRate,
            limit: 0.2
        }
    );
    let mut kp = k(10.0, 1, 10, Some(3));
    assert_eq!(t.crossed(&kp), None, "unknown is not crossed");
    kp.error_rate = Some(0.3);
    assert_eq!(t.crossed(&kp), Some(true));
    kp.error_rate = Some(0.2);
    assert_eq!(t.crossed(&kp), Some(false));
    let f = Threshold::parse("freeVfs<4").unwrap();
    assert_eq!(f.crossed(&kp), Some(true));
    assert_eq!(Threshold::parse("traffic>1e8").unwrap().limit, 1e8);
    for bad in [
        "",
        "traffic",
        "traffic<3",
        "freeVfs>1",
        "speed>1",
        "errorRate>x",
        "traffic>-1",
        "traffic>inf",
        "a>1<2",
    ] {
        assert!(Threshold::parse(bad).is_err(), "{bad}");
    }
}
