//! Reading the plugins' step timings back from their logs (see `vfcni::timing`): the benchmarks
//! use them to say where a run's time goes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

/// One plugin run's step timings in ms, keyed by step (`total` included).
pub type Steps = BTreeMap<String, f64>;

/// The `<plugin> step timings` lines of a log, per command, in order.
pub fn parse_timings(log: &Path, plugin: &str) -> Result<BTreeMap<String, Vec<Steps>>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    Ok(parse_timing_lines(&text, plugin))
}

/// [`parse_timings`] of a log's text.
pub fn parse_timing_lines(text: &str, plugin: &str) -> BTreeMap<String, Vec<Steps>> {
    let marker = format!("{plugin} step timings: ");
    let mut out: BTreeMap<String, Vec<Steps>> = BTreeMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(&marker) else {
            continue;
        };
        let mut command = String::new();
        let mut steps = Steps::new();
        for field in rest.split_whitespace() {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            if k == "command" {
                command = v.to_string();
            } else if let Some(us) = v.strip_suffix("us").and_then(|n| n.parse::<f64>().ok()) {
                steps.insert(k.to_string(), us / 1000.0);
            }
        }
        out.entry(command).or_default().push(steps);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_grouped_by_command_in_milliseconds() {
        let log = "2026-11-23T10:00:00Z DEBUG genie: genie step timings: command=ADD total=5123us api=1000us\n\
                   noise\n\
                   x genie step timings: command=DEL total=800us cache=200us\n\
                   x sriov step timings: command=ADD total=1us\n";
        let got = parse_timing_lines(log, "genie");
        assert_eq!(got.len(), 2);
        assert_eq!(got["ADD"][0]["total"], 5.123);
        assert_eq!(got["ADD"][0]["api"], 1.0);
        assert_eq!(got["DEL"][0]["cache"], 0.2);
    }
}
