//! The agent's events in its audit log: a PF link going down makes each of its VFs' health change
//! a line naming the pool, the VF and why; the report counts them per pool.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use vfcore::SysRoot;

#[test]
fn health_changes_are_audit_events_and_reported_per_pool() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("agent-audit.log");
    vfagent::audit::init(vfaudit::AuditConfig::with_defaults(&log));

    let tree = tempfile::tempdir().unwrap();
    vfcore::fixtures::copy("ixgbe-82599", tree.path()).unwrap();
    let root = SysRoot::new(tree.path());
    let cfg = vfagent::config::Config::from_value(&serde_json::json!({"resourceList": [
        {"resourceName": "net", "selectors": {"drivers": ["ixgbevf"]}}
    ]}))
    .unwrap();
    let devices = vfcore::sysfs::discover(&root).unwrap();
    let mut pools = vfagent::select::build_pools(&root, &devices, &cfg.resource_list);
    let pool_name = pools[0].full_name();
    assert!(!vfagent::health::refresh(
        &root,
        &mut pools,
        &BTreeSet::new()
    ));
    assert!(!log.exists(), "no change, no line");

    let pf_net = root.netdev("enp3s0f0").unwrap();
    std::fs::write(pf_net.join("operstate"), "down\n").unwrap();
    std::fs::write(pf_net.join("carrier"), "0\n").unwrap();
    assert!(vfagent::health::refresh(
        &root,
        &mut pools,
        &BTreeSet::new()
    ));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let went_down: Vec<String> = pools[0]
        .devices
        .values()
        .filter(|d| !d.healthy)
        .map(|d| d.address.to_string())
        .collect();
    assert!(!went_down.is_empty());
    assert_eq!(lines.len(), went_down.len());
    for (l, vf) in lines.iter().zip(&went_down) {
        assert_eq!(l["source"], "agent");
        assert_eq!(l["kind"], "event");
        assert_eq!(l["event"], "healthChanged");
        assert_eq!(l["pool"], pool_name.as_str());
        assert_eq!(l["devices"], serde_json::json!([vf]));
        assert!(
            l["detail"].as_str().unwrap().starts_with("unhealthy: "),
            "{l}"
        );
    }
    let report = vfaudit::report::report(
        &[log],
        &vfaudit::Query::default(),
        std::time::SystemTime::now(),
    );
    assert_eq!(report.pools.len(), 1);
    assert_eq!(report.pools[0].pool, pool_name);
    assert_eq!(report.pools[0].health_changes, went_down.len() as u64);
}
