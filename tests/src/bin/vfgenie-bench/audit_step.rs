//! `vfgenie-bench audit`: a report over a generated 1,000,000-line audit log (genie's calls and
//! delegates over five rotated files, and the agent's Allocates), streamed and decoded field by
//! field as `vfgenie-agent report` does: lines per second and total time.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use vfaudit::{ErrorInfo, Event, Kind, PodRef, Record, ResultInfo, Source};

use crate::verdict;

const LINES: u64 = 1_000_000;
const FILES: u64 = 5;

/// One synthetic line: mostly delegate and call records of ADD and DEL, one in 50 failed, one in
/// 100 an agent Allocate.
fn line(i: u64, now: SystemTime) -> Record {
    let t = now - Duration::from_millis((LINES - i) * 3);
    if i % 100 == 0 {
        return Record {
            time: vfaudit::time::format(t),
            pool: Some("intel.com/sriov_netdevice".into()),
            devices: vec![format!("0000:3b:{:02x}.{}", i % 32, i % 8)],
            ..Record::event(Event::Allocate)
        };
    }
    let kind = if i % 4 == 0 {
        Kind::Call
    } else {
        Kind::Delegate
    };
    let net = ["cluster", "blue", "sriov-a", "sriov-b"][(i % 4) as usize];
    let mut r = Record {
        time: vfaudit::time::format(t),
        verb: Some(if i % 2 == 0 { "ADD" } else { "DEL" }.into()),
        pod: Some(PodRef {
            namespace: format!("team-{}", i % 20),
            name: format!("web-{}", i % 997),
            uid: Some(format!("0b6f{i:08x}-6a1c-4c7e-9f43-5b1c2a9d7e10")),
        }),
        container_id: Some(format!("{i:064x}")),
        ifname: Some("net1".into()),
        duration_us: Some(800 + (i * 7919) % 40_000),
        ..Record::new(Source::Cni, kind)
    };
    if kind == Kind::Delegate {
        r.network = Some(net.into());
        r.plugin = Some(
            if net.starts_with("sriov") {
                "sriov"
            } else {
                "bridge"
            }
            .into(),
        );
        if net.starts_with("sriov") {
            r.device = Some("0000:3b:02.1".into());
        }
    } else {
        r.plugin = Some("genie".into());
    }
    if i % 50 == 1 {
        r.error = Some(ErrorInfo {
            code: 11,
            msg: "network sriov-a (net1): the VF 0000:3b:02.1 is busy".into(),
        });
    } else {
        r.result = Some(ResultInfo {
            addresses: vec![format!("10.{}.{}.{}/16", i % 200, (i / 256) % 256, i % 256)],
        });
    }
    r
}

pub(crate) fn audit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cni = dir.path().join("cni-audit.log");
    let now = SystemTime::now();
    let t = Instant::now();
    let mut bytes = 0u64;
    let per_file = LINES / FILES;
    for f in 0..FILES {
        // Oldest in the highest number, as rotation leaves them.
        let path = match FILES - 1 - f {
            0 => cni.clone(),
            n => PathBuf::from(format!("{}.{n}", cni.display())),
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        for i in f * per_file..(f + 1) * per_file {
            let l = line(i, now).to_line()?;
            bytes += l.len() as u64;
            out.write_all(&l)?;
        }
        out.flush()?;
    }
    println!(
        "audit.generate: {LINES} lines, {:.0} MB in {FILES} files, in {:.2} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // Once untimed (the page cache), then timed.
    let logs = [cni];
    let query = vfaudit::Query::default();
    std::hint::black_box(vfaudit::report::report(&logs, &query, now));
    let t = Instant::now();
    let report = vfaudit::report::report(&logs, &query, now);
    let took = t.elapsed();
    if report.lines_read != LINES || report.lines_skipped != 0 {
        bail!(
            "the report read {} lines and skipped {}",
            report.lines_read,
            report.lines_skipped
        );
    }
    let calls: u64 = report.groups.iter().map(|g| g.calls).sum::<u64>()
        + report.pools.iter().map(|p| p.allocates).sum::<u64>();
    if calls != LINES {
        bail!("the report counted {calls} records of {LINES}");
    }
    println!(
        "audit.report: {LINES} lines ({:.0} MB) in {:.3} s, {:.2} M lines/s, {} groups  aim < 2 s: {}",
        bytes as f64 / 1e6,
        took.as_secs_f64(),
        LINES as f64 / took.as_secs_f64() / 1e6,
        report.groups.len(),
        verdict(took < Duration::from_secs(2))
    );
    let filtered = vfaudit::Query {
        since: Some(Duration::from_secs(600)),
        network: Some("sriov-a".into()),
        pod: None,
    };
    let t = Instant::now();
    let r = vfaudit::report::report(&logs, &filtered, now);
    println!(
        "audit.report_filtered (--since 10m --network sriov-a): {} calls matched in {:.3} s",
        r.groups.iter().map(|g| g.calls).sum::<u64>(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
