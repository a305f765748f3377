//! Report figures over a synthetic log, checked against figures computed here independently.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vfaudit::record::{ErrorInfo, Event, Kind, PodRef, Record, ResultInfo, Selection, Source};
use vfaudit::report::{report, Format, Query};
use vfaudit::{AuditConfig, Writer};

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default, Debug, PartialEq)]
struct Want {
    calls: u64,
    failures: BTreeMap<u32, u64>,
    durations: Vec<u64>,
    out: u64,
    released: u64,
    vfs: u64,
}

fn nearest_rank(sorted: &[u64], q: f64) -> Option<u64> {
    let idx = ((q * sorted.len() as f64).ceil() as usize).max(1) - 1;
    sorted.get(idx).copied()
}

#[test]
fn report_figures_match_a_synthetic_log() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let cni = tmp.path().join("cni.log");
    let agent = tmp.path().join("agent.log");
    // Small files: the set rotates, and the report reads all of it.
    let w = Writer::new(AuditConfig {
        path: cni.clone(),
        max_size: 64 * 1024,
        max_files: 1000,
    });
    let aw = Writer::new(AuditConfig::with_defaults(&agent));
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let networks = ["net-a", "net-b", "sriov-1"];
    let plugins = ["bridge", "macvlan", "sriov"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut want: BTreeMap<(String, String), Want> = BTreeMap::new();
    let mut want_recent: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut failing: BTreeMap<String, u64> = BTreeMap::new();
    let mut want_allocated = 0;
    let mut selections = 0;
    for i in 0..3000u64 {
        // Times spread over the last two hours, oldest first.
        let age = 7200 - i * 2;
        let t = now - Duration::from_secs(age);
        let net = rng.next(3) as usize;
        let verb = ["ADD", "DEL", "CHECK"][rng.next(3) as usize];
        let pod = format!("pod-{}", rng.next(7));
        let kind = if rng.next(4) == 0 {
            Kind::Call
        } else {
            Kind::Delegate
        };
        let failed = rng.next(10) == 0;
        let code = [7u32, 11, 5][rng.next(3) as usize];
        let dur = 100 + rng.next(5000);
        let addrs = rng.next(3) as usize;
        let device = plugins[net] == "sriov";
        let mut r = Record {
            time: vfaudit::time::format(t),
            verb: Some(verb.into()),
            pod: Some(PodRef {
                namespace: "ns".into(),
                name: pod.clone(),
                uid: None,
            }),
            duration_us: Some(dur),
            ..Record::new(Source::Cni, kind)
        };
        let (gn, gp) = match kind {
            Kind::Call => ("-".to_string(), "genie".to_string()),
            _ => {
                r.network = Some(networks[net].into());
                r.plugin = Some(plugins[net].into());
                if device {
                    r.device = Some("0000:3b:02.1".into());
                }
                (networks[net].to_string(), plugins[net].to_string())
            }
        };
        if failed {
            r.error = Some(ErrorInfo {
                code,
                msg: "it failed, \"badly\"".into(),
            });
        } else if verb != "CHECK" {
            r.result = Some(ResultInfo {
                addresses: (0..addrs).map(|a| format!("10.0.{a}.{i}/24")).collect(),
            });
        }
        if i % 500 == 0 {
            selections += 1;
            r.selection = Some(Selection {
                group: None,
                strategy: "leastTraffic".into(),
                chosen: networks[net].into(),
                reason: "lowest rx+tx".into(),
                candidates: vec![],
            });
        }
        w.try_write(&r)?;
        let e = want.entry((gn.clone(), gp.clone())).or_default();
        e.calls += 1;
        e.durations.push(dur);
        if age <= 3600 {
            *want_recent.entry((gn, gp)).or_default() += 1;
        }
        if failed {
            *e.failures.entry(code).or_default() += 1;
            if kind == Kind::Call {
                *failing.entry(format!("ns/{pod}")).or_default() += 1;
            }
        } else if verb == "ADD" {
            e.out += addrs as u64;
            if kind == Kind::Delegate && device {
                e.vfs += 1;
            }
        } else if verb == "DEL" {
            e.released += addrs as u64;
        }
        if i % 100 == 0 {
            let n = 1 + rng.next(4);
            want_allocated += n;
            let ev = Record {
                time: vfaudit::time::format(t),
                pool: Some("intel.com/sriov".into()),
                devices: (0..n).map(|d| format!("0000:3b:02.{d}")).collect(),
                ..Record::event(Event::Allocate)
            };
            aw.try_write(&ev)?;
        }
    }
    // Garbage and a torn line are skipped and counted.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&cni)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"garbage\n{\"time\":\"20")
        })?;
    let rotated = std::fs::read_dir(tmp.path())?.count();
    assert!(rotated > 5, "the log should have rotated");

    let logs = [cni.clone(), agent.clone()];
    let rep = report(&logs, &Query::default(), now);
    assert_eq!(rep.lines_read, 3000 + 30 + 2);
    assert_eq!(rep.lines_skipped, 2);
    let got: BTreeMap<(String, String), Want> = rep
        .groups
        .iter()
        .map(|g| ((g.network.clone(), g.plugin.clone()), g))
        .map(|(k, g)| {
            let w = &want[&k];
            let mut sorted = w.durations.clone();
            sorted.sort();
            assert_eq!(g.p50_us, nearest_rank(&sorted, 0.50), "{k:?}");
            assert_eq!(g.p99_us, nearest_rank(&sorted, 0.99), "{k:?}");
            assert_eq!(g.failures, w.failures.values().sum::<u64>());
            (
                k,
                Want {
                    calls: g.calls,
                    failures: g.failures_by_code.clone(),
                    durations: w.durations.clone(),
                    out: g.addresses_handed_out,
                    released: g.addresses_released,
                    vfs: g.vfs_allocated,
                },
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(rep.pools.len(), 1);
    assert_eq!(rep.pools[0].allocates, 30);
    assert_eq!(rep.pools[0].vfs_allocated, want_allocated);
    let mut top: Vec<(String, u64)> = failing.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let got_top: Vec<(String, u64)> = rep
        .failing_pods
        .iter()
        .map(|p| (p.pod.clone(), p.failures))
        .collect();
    assert_eq!(got_top, top);
    assert_eq!(rep.selections_total, selections);
    assert!(rep.selections.iter().all(|s| s.reason == "lowest rx+tx"));

    // since: only the last hour.
    let recent = report(
        &logs,
        &Query {
            since: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
        now,
    );
    let got_recent: BTreeMap<(String, String), u64> = recent
        .groups
        .iter()
        .map(|g| ((g.network.clone(), g.plugin.clone()), g.calls))
        .collect();
    assert_eq!(got_recent, want_recent);

    // network and pod filters.
    let one = report(
        &logs,
        &Query {
            network: Some("net-b".into()),
            pod: Some(("ns".into(), "pod-3".into())),
            ..Default::default()
        },
        now,
    );
    assert_eq!(one.groups.len(), 1);
    assert_eq!(one.groups[0].network, "net-b");
    assert!(
        one.groups[0].calls > 0
            && one.groups[0].calls < want[&("net-b".into(), "macvlan".into())].calls
    );

    // The renderings carry the same figures.
    let json: serde_json::Value = serde_json::from_str(&rep.render(Format::Json))?;
    assert_eq!(
        json["groups"].as_array().map(Vec::len),
        Some(rep.groups.len())
    );
    let csv = rep.render(Format::Csv);
    assert_eq!(csv.lines().count(), rep.groups.len() + 1);
    let g = &rep.groups[0];
    assert!(csv.lines().nth(1).is_some_and(|l| l.starts_with(&format!(
        "{},{},{},{}",
        g.network, g.plugin, g.calls, g.failures
    ))));
    let table = rep.render(Format::Table);
    assert!(table.contains("NETWORK") && table.contains("intel.com/sriov"));
    let _ = SystemTime::now();
    Ok(())
}
