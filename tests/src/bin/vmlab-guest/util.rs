//! Small helpers shared by the scenarios: bounded waits and sysfs reads.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Polls `cond` every 50 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("{what} did not happen within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn read_trim(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim().to_string())
}

/// Runs a program and returns its stdout; fails with its output when it exits non-zero.
pub fn run_program(program: &str, args: &[&str]) -> Result<String> {
    run_program_env(program, args, &[])
}

/// [`run_program`] with extra environment variables.
pub fn run_program_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("running {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{program} {} exited with {}: {} {}",
            args.join(" "),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}
