//! Attach latency and error rate per network, from genie's audit log: its `delegate` records of
//! ADD (one per network attached to a pod, with the delegates' duration and the error, if any).
//!
//! The log is followed, not re-read: the first refresh reads the rotated set once, later ones
//! read only what was appended to the live file since (and the rest of the file it was rotated
//! to, when it was). Figures cover the last [`WINDOW`] (at most [`PER_NETWORK`] ADDs per
//! network); a network without an ADD in it has unknown figures, not zero.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use vfaudit::reader::View;
use vfaudit::{Kind, Source};

use super::AttachStats;

/// How far back the figures look.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// ADDs kept per network (the newest).
pub const PER_NETWORK: usize = 4096;
/// Rotated files looked at (genie's `auditLog.maxFiles` is at most 100).
const MAX_ROTATED: u32 = 100;
/// What one refresh reads at most from the live file (the rest waits for the next).
const MAX_READ: u64 = 64 << 20;

#[derive(Debug, Clone, Copy)]
struct Attach {
    /// Unix seconds.
    at: f64,
    duration_ms: f64,
    failed: bool,
}

/// Follows one audit log (genie's `auditLog.path`).
#[derive(Debug)]
pub struct AuditAttachStats {
    log: PathBuf,
    /// The live file's inode and how far it was read.
    position: Option<(u64, u64)>,
    /// An incomplete last line, kept until its end is written.
    partial: Vec<u8>,
    recent: BTreeMap<String, VecDeque<Attach>>,
    /// The newest figures, computed at the last refresh.
    figures: BTreeMap<String, (Option<f64>, f64)>,
}

impl AuditAttachStats {
    pub fn new(log: PathBuf) -> Self {
        Self {
            log,
            position: None,
            partial: Vec::new(),
            recent: BTreeMap::new(),
            figures: BTreeMap::new(),
        }
    }

    /// Reads what is new in the log, drops what fell out of the window, recomputes the figures.
    pub fn refresh_at(&mut self, now: SystemTime) {
        let live = std::fs::metadata(&self.log).ok();
        match (self.position, live.as_ref()) {
            (None, Some(m)) => {
                // First read: the rotated set, oldest first, then follow the live file.
                let mut seen = Vec::new();
                vfaudit::reader::Reader::new(std::slice::from_ref(&self.log))
                    .for_each(|v| seen.extend(attach_of(&v)));
                for (net, a) in seen {
                    self.push(net, a);
                }
                self.position = Some((m.ino(), m.len()));
            }
            (Some((ino, offset)), Some(m)) if m.ino() == ino => {
                if m.len() < offset {
                    // Truncated in place: start over from its beginning.
                    self.partial.clear();
                    self.follow(m.ino(), 0);
                } else {
                    self.follow(ino, offset);
                }
            }
            (Some((ino, offset)), Some(m)) => {
                // Rotated (once or more): finish the file it became (x.log.N), read the newer
                // rotated ones whole, then the new live one. When it has been rotated out of the
                // set, start over from the whole set.
                let log = self.log.clone();
                let numbered = |n: u32| rotated(&log, n);
                let mut n = 1;
                let found = loop {
                    match std::fs::metadata(numbered(n)) {
                        Ok(f) if f.ino() == ino => break Some(n),
                        Ok(_) if n < MAX_ROTATED => n += 1,
                        _ => break None,
                    }
                };
                match found {
                    Some(n) => {
                        self.read_from(&numbered(n), offset);
                        for k in (1..n).rev() {
                            self.partial.clear();
                            self.read_from(&numbered(k), 0);
                        }
                        self.partial.clear();
                        self.follow(m.ino(), 0);
                    }
                    None => {
                        self.position = None;
                        self.partial.clear();
                        self.recent.clear();
                        return self.refresh_at(now);
                    }
                }
            }
            (_, None) => {
                // No log (yet, or it was removed): the figures age out.
                self.position = None;
                self.partial.clear();
            }
        }
        self.expire(now);
        self.figures = self
            .recent
            .iter()
            .map(|(net, q)| (net.clone(), figures(q)))
            .collect();
    }

    fn follow(&mut self, ino: u64, offset: u64) {
        let log = self.log.clone();
        let end = self.read_from(&log, offset);
        self.position = Some((ino, end));
    }

    /// Reads `path` from `offset`, complete lines only; returns the offset after what was read.
    fn read_from(&mut self, path: &Path, offset: u64) -> u64 {
        let Ok(mut f) = File::open(path) else {
            return offset;
        };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            return offset;
        }
        let mut buf = std::mem::take(&mut self.partial);
        let before = buf.len();
        if (&mut f).take(MAX_READ).read_to_end(&mut buf).is_err() {
            self.partial = buf;
            return offset;
        }
        let read = (buf.len() - before) as u64;
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let mut seen = Vec::new();
        for line in buf[..complete].split(|b| *b == b'\n') {
            if let Ok(v) = serde_json::from_slice::<View<'_>>(line) {
                seen.extend(attach_of(&v));
            }
        }
        for (net, a) in seen {
            self.push(net, a);
        }
        self.partial = buf[complete..].to_vec();
        offset + read
    }

    fn push(&mut self, network: String, a: Attach) {
        let q = self.recent.entry(network).or_default();
        q.push_back(a);
        if q.len() > PER_NETWORK {
            q.pop_front();
        }
    }

    fn expire(&mut self, now: SystemTime) {
        let cutoff = unix(now) - WINDOW.as_secs_f64();
        for q in self.recent.values_mut() {
            while q.front().is_some_and(|a| a.at < cutoff) {
                q.pop_front();
            }
        }
        self.recent.retain(|_, q| !q.is_empty());
    }
}

impl AttachStats for AuditAttachStats {
    fn refresh(&mut self) {
        self.refresh_at(SystemTime::now());
    }
    fn attach_latency_p50_ms(&self, network: &str) -> Option<f64> {
        self.figures.get(network).and_then(|(p50, _)| *p50)
    }
    fn error_rate(&self, network: &str) -> Option<f64> {
        self.figures.get(network).map(|(_, rate)| *rate)
    }
}

/// p50 of the successful ADDs' durations (none succeeded: unknown), and failed / all.
fn figures(q: &VecDeque<Attach>) -> (Option<f64>, f64) {
    let mut ok: Vec<f64> = q
        .iter()
        .filter(|a| !a.failed)
        .map(|a| a.duration_ms)
        .collect();
    ok.sort_by(f64::total_cmp);
    let p50 = match ok.len() {
        0 => None,
        n => Some(ok[(n - 1) / 2]),
    };
    let failed = q.iter().filter(|a| a.failed).count();
    (p50, failed as f64 / q.len() as f64)
}

/// A delegate record of ADD, as `(network, attach)`.
fn attach_of(v: &View<'_>) -> Option<(String, Attach)> {
    if v.source != Source::Cni || v.kind != Kind::Delegate || v.verb.as_deref() != Some("ADD") {
        return None;
    }
    let network = v.network.as_deref()?.to_string();
    let at = vfaudit::time::parse(&v.time)?;
    Some((
        network,
        Attach {
            at,
            duration_ms: v.duration_us? as f64 / 1000.0,
            failed: v.error.is_some(),
        },
    ))
}

/// `x.log.n`.
fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vfaudit::{AuditConfig, ErrorInfo, Record, Writer};

    fn delegate(at: SystemTime, network: &str, duration_ms: u64, failed: bool) -> Record {
        let mut r = Record::new(Source::Cni, Kind::Delegate);
        r.time = vfaudit::time::format(at);
        r.verb = Some("ADD".to_string());
        r.network = Some(network.to_string());
        r.duration_us = Some(duration_ms * 1000);
        r.error = failed.then(|| ErrorInfo {
            code: 7,
            msg: "delegate failed".to_string(),
        });
        r
    }

    #[test]
    fn latency_and_error_rate_follow_the_log_through_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("cni-audit.log");
        // Small files: the writes below rotate several times.
        let w = Writer::new(AuditConfig {
            path: log.clone(),
            max_size: 4096,
            max_files: 50,
        });
        let now = SystemTime::now();
        let mut s = AuditAttachStats::new(log.clone());
        s.refresh_at(now);
        assert_eq!(s.attach_latency_p50_ms("red"), None, "no log: unknown");
        assert_eq!(s.error_rate("red"), None);
        // red: 10..=30 ms, one failure in four; blue: 100 ms, all fine.
        for i in 0..40u64 {
            w.write(&delegate(now, "red", 10 + i % 21, i % 4 == 3));
            w.write(&delegate(now, "blue", 100, false));
        }
        // A DEL and a call record do not count.
        let mut del = delegate(now, "red", 5000, true);
        del.verb = Some("DEL".to_string());
        w.write(&del);
        let mut call = delegate(now, "red", 5000, true);
        call.kind = Kind::Call;
        w.write(&call);
        s.refresh_at(now);
        let red_ok: Vec<u64> = (0..40u64)
            .filter(|i| i % 4 != 3)
            .map(|i| 10 + i % 21)
            .collect();
        let mut sorted = red_ok.clone();
        sorted.sort();
        let p50 = sorted[(sorted.len() - 1) / 2] as f64;
        assert_eq!(s.attach_latency_p50_ms("red"), Some(p50));
        assert_eq!(s.error_rate("red"), Some(0.25));
        assert_eq!(s.attach_latency_p50_ms("blue"), Some(100.0));
        assert_eq!(s.error_rate("blue"), Some(0.0));
        assert!(
            std::fs::metadata(dir.path().join("cni-audit.log.1")).is_ok(),
            "the log rotated"
        );

        // Followed, not re-read: more lines, across another rotation, count once each.
        for _ in 0..60 {
            w.write(&delegate(now, "blue", 300, true));
        }
        s.refresh_at(now);
        assert_eq!(s.error_rate("blue"), Some(0.6));
        assert_eq!(s.attach_latency_p50_ms("blue"), Some(100.0));

        // A torn last line counts when its end is written.
        let line = delegate(now, "green", 42, false).to_line().unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&line[..10]).unwrap();
        s.refresh_at(now);
        assert_eq!(s.attach_latency_p50_ms("green"), None);
        f.write_all(&line[10..]).unwrap();
        s.refresh_at(now);
        assert_eq!(s.attach_latency_p50_ms("green"), Some(42.0));

        // A reader started now reads the rotated set and agrees.
        let mut fresh = AuditAttachStats::new(log.clone());
        fresh.refresh_at(now);
        for net in ["red", "blue", "green"] {
            assert_eq!(
                fresh.attach_latency_p50_ms(net),
                s.attach_latency_p50_ms(net),
                "{net}"
            );
            assert_eq!(fresh.error_rate(net), s.error_rate(net), "{net}");
        }

        // Out of the window: unknown again.
        s.refresh_at(now + WINDOW + Duration::from_secs(1));
        assert_eq!(s.attach_latency_p50_ms("red"), None);
        assert_eq!(s.error_rate("red"), None);
    }

    #[test]
    fn a_network_whose_adds_all_failed_has_no_latency_and_rate_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let w = Writer::new(AuditConfig::with_defaults(&log));
        let now = SystemTime::now();
        for _ in 0..3 {
            w.write(&delegate(now, "vf", 9, true));
        }
        let mut s = AuditAttachStats::new(log);
        s.refresh_at(now);
        assert_eq!(s.attach_latency_p50_ms("vf"), None);
        assert_eq!(s.error_rate("vf"), Some(1.0));
    }
}
