//! 50 writer processes append at once: 50 whole lines, none interleaved.

use std::path::PathBuf;
use std::process::Command;

use vfaudit::{AuditConfig, Kind, Record, Source, Writer};

const CHILD_ENV: &str = "VFAUDIT_TEST_CHILD_LOG";

/// In a child: write one long record and exit.
fn child(path: PathBuf, n: &str) {
    let w = Writer::new(AuditConfig::with_defaults(path));
    let r = Record {
        container_id: Some(format!("writer-{n}")),
        // Long enough that a torn or interleaved write would show.
        detail: Some(n.repeat(2000)),
        ..Record::new(Source::Cni, Kind::Call)
    };
    if let Err(e) = w.try_write(&r) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

#[test]
fn fifty_writer_processes_give_fifty_whole_lines() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(p) = std::env::var(CHILD_ENV) {
        child(PathBuf::from(p), &std::env::var("VFAUDIT_TEST_N")?);
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("audit/cni-audit.log");
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..50)
        .map(|i| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "fifty_writer_processes_give_fifty_whole_lines",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &log)
                .env("VFAUDIT_TEST_N", format!("{}", i % 10))
                .stdout(std::process::Stdio::null())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut c in children {
        assert!(c.wait()?.success());
    }
    let text = std::fs::read_to_string(&log)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50);
    let mut per_digit = [0; 10];
    for l in lines {
        let r: Record = serde_json::from_str(l)?;
        let detail = r.detail.unwrap_or_default();
        assert_eq!(detail.len(), 2000);
        let d = &detail[..1];
        assert!(
            detail.chars().all(|c| c.to_string() == d),
            "an interleaved line"
        );
        assert_eq!(
            r.container_id.as_deref(),
            Some(format!("writer-{d}").as_str())
        );
        per_digit[d.parse::<usize>()?] += 1;
    }
    assert_eq!(per_digit, [5; 10]);
    Ok(())
}
