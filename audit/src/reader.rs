//! Reading logs back: each log's rotated set oldest first (`x.log.<n>` ... `x.log.1`, `x.log`),
//! one line at a time, decoding only the fields reports need, borrowed from the line where it has
//! no escapes. A line that does not decode (garbage, or the torn last line of a writer that died
//! mid-write) is counted and skipped.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::record::{Event, Kind, Selection, Source};

/// The fields of a line that reports use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct View<'a> {
    #[serde(borrow)]
    pub time: Cow<'a, str>,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub kind: Kind,
    #[serde(borrow, default)]
    pub verb: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub pod: Option<PodView<'a>>,
    #[serde(borrow, default)]
    pub network: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub plugin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub device: Option<Cow<'a, str>>,
    #[serde(default)]
    pub duration_us: Option<u64>,
    #[serde(default)]
    pub result: Option<ResultView>,
    #[serde(default)]
    pub error: Option<ErrorView>,
    #[serde(default)]
    pub selection: Option<Selection>,
    #[serde(default)]
    pub event: Option<Event>,
    #[serde(borrow, default)]
    pub pool: Option<Cow<'a, str>>,
    #[serde(default)]
    pub devices: Vec<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct PodView<'a> {
    #[serde(borrow)]
    pub namespace: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

/// How many addresses a result carries.
#[derive(Debug, Deserialize)]
pub struct ResultView {
    #[serde(default)]
    pub addresses: Vec<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorView {
    pub code: u32,
}

/// What a read went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub files: usize,
    pub lines: u64,
    /// Lines that did not decode (garbage, a torn last line), skipped.
    pub skipped: u64,
}

/// The rotated sets of one or more logs.
#[derive(Debug, Clone)]
pub struct Reader {
    files: Vec<PathBuf>,
}

impl Reader {
    /// Every file of each log's rotated set that exists, oldest first, log by log.
    pub fn new(logs: &[PathBuf]) -> Self {
        Reader {
            files: logs.iter().flat_map(|l| rotated_set(l)).collect(),
        }
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Calls `f` with every line that decodes; a file that cannot be opened counts as absent.
    pub fn for_each(&self, mut f: impl FnMut(View<'_>)) -> ReadStats {
        let mut stats = ReadStats::default();
        let mut buf = Vec::with_capacity(4096);
        for path in &self.files {
            let Ok(file) = File::open(path) else {
                continue;
            };
            stats.files += 1;
            let mut r = BufReader::with_capacity(1 << 20, file);
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "audit log read stopped");
                        break;
                    }
                }
                let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                stats.lines += 1;
                match serde_json::from_slice::<View<'_>>(line) {
                    Ok(v) => f(v),
                    Err(_) => stats.skipped += 1,
                }
            }
        }
        stats
    }
}

/// `log`'s rotated files that exist, oldest (highest number) first, the live file last.
fn rotated_set(log: &Path) -> Vec<PathBuf> {
    let mut numbered: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (log.parent(), log.file_name().and_then(|n| n.to_str())) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let file_name = e.file_name();
                let Some(n) = file_name
                    .to_str()
                    .and_then(|f| f.strip_prefix(name))
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|digits| digits.parse::<u32>().ok())
                else {
                    continue;
                };
                numbered.push((n, crate::writer::rotated(log, n)));
            }
        }
    }
    numbered.sort_by_key(|n| std::cmp::Reverse(n.0));
    let mut files: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    if log.exists() {
        files.push(log.to_path_buf());
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rotated_sets_oldest_first_and_skips_garbage_and_a_torn_line(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let log = tmp.path().join("a.log");
        let line = |n: u32| {
            format!("{{\"time\":\"2026-01-01T00:00:0{n}.000Z\",\"source\":\"cni\",\"kind\":\"call\",\"network\":\"n\\u0041\"}}\n")
        };
        std::fs::write(rotated_set_path(&log, 2), line(1))?;
        std::fs::write(rotated_set_path(&log, 1), line(2) + "not json\n\n")?;
        std::fs::write(&log, line(3) + "{\"time\":\"2026-01-01T00:0")?;
        std::fs::write(tmp.path().join("a.log.lock"), "")?;
        std::fs::write(tmp.path().join("a.log.x"), line(9))?;
        let r = Reader::new(std::slice::from_ref(&log));
        let mut seen = Vec::new();
        let stats =
            r.for_each(|v| seen.push((v.time.into_owned(), v.network.map(|n| n.into_owned()))));
        assert_eq!(stats.files, 3);
        assert_eq!(stats.lines, 5);
        assert_eq!(stats.skipped, 2);
        assert_eq!(seen.len(), 3);
        // Oldest file first; the escaped name decoded.
        let times: Vec<&str> = seen.iter().map(|(t, _)| &t[17..19]).collect();
        assert_eq!(times, ["01", "02", "03"]);
        assert!(seen.iter().all(|(_, n)| n.as_deref() == Some("nA")));
        Ok(())
    }

    fn rotated_set_path(log: &Path, n: u32) -> PathBuf {
        crate::writer::rotated(log, n)
    }
}
