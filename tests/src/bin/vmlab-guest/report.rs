//! The console protocol: one line per check, then a verdict.

use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, Default)]
pub struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    /// Runs one check and prints its line. Returns whether it passed, so later checks that depend on
    /// it can be skipped (and reported as failed) rather than run against a broken state.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> bool {
        match f() {
            Ok(()) => {
                self.passed += 1;
                emit(&format!("VMLAB CHECK {name}: ok"));
                true
            }
            Err(e) => {
                self.fail(name, &format!("{e:#}"));
                false
            }
        }
    }

    /// [`Report::check`] for a check with a figure to show: its line reads `ok (<detail>)`.
    pub fn check_detail(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<String>) -> bool {
        match f() {
            Ok(detail) => {
                self.passed += 1;
                emit(&format!("VMLAB CHECK {name}: ok ({detail})"));
                true
            }
            Err(e) => {
                self.fail(name, &format!("{e:#}"));
                false
            }
        }
    }

    pub fn fail(&mut self, name: &str, reason: &str) {
        self.failed += 1;
        let reason = reason.replace('\n', " | ");
        emit(&format!("VMLAB CHECK {name}: FAIL {reason}"));
    }

    pub fn finish(self) -> ExitCode {
        emit(&format!(
            "VMLAB RESULT passed={} failed={}",
            self.passed, self.failed
        ));
        if self.failed == 0 && self.passed > 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// A free-form line for people reading the console; the host echoes lines starting `VMLAB-OUT`.
pub fn note(text: &str) {
    for line in text.lines() {
        emit(&format!("VMLAB-OUT {line}"));
    }
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // The console is the only channel; nothing better to do if it is gone.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
