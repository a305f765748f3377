//! Running delegate plugins: find the binary by type in CNI_PATH, exec it with the CNI environment
//! and the config on stdin, bounded by a timeout, and read its result or error.
//!
//! The plugin runs in its own process group so that a timeout kills it and anything it started.
//! Its stderr goes to our log (tracing), never to our stdout.
//!
//! What a plugin says is bounded: its stdout may be at most [`STDOUT_MAX`] bytes (a plugin that
//! prints more is killed and the error names it and the limit); of its stderr at most
//! [`STDERR_LOG_MAX`] bytes are logged and the last [`STDERR_KEEP`] bytes kept for the error.
//!
//! A plugin inherits exactly one descriptor besides its pipes: the attachment lock of
//! [`crate::cache::lock`], which the caller marks inheritable while it holds it, so that the lock
//! outlives a killed caller until its last delegate has exited.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

mod talk;

use std::time::{Duration, Instant};
use talk::{kill_and_reap, talk, Failed, Talk};

use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::spec::conf::validate_plugin_type;
use crate::spec::conf::ConfError;
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::{chain, CniError};
use crate::spec::result::CniResult;
use crate::spec::result::ResultError;
use crate::spec::version::{CniVersion, VersionInfo};

/// How much of a plugin's output an error message quotes.
const QUOTE_MAX: usize = 512;
/// How much of a plugin's stderr is kept for error messages: the last this many bytes.
pub const STDERR_KEEP: usize = 4096;
/// How much of a plugin's stderr is logged; the rest is only counted.
pub const STDERR_LOG_MAX: usize = 256 << 10;
/// The longest stderr line logged as one; a longer one is logged in pieces.
const STDERR_LINE_MAX: usize = 4096;
/// The most a plugin may print on stdout (a result is a few kilobytes).
pub const STDOUT_MAX: usize = 16 << 20;
/// Reads from one pipe before the deadline is looked at again.
const READS_PER_ROUND: usize = 64;

/// Why running a delegate failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    InvalidType(ConfError),
    #[error("plugin {plugin_type:?} was not found in CNI_PATH ({})", join_paths(.path))]
    NotFound {
        plugin_type: String,
        path: Vec<PathBuf>,
    },
    #[error("could not start plugin {plugin:?} ({})", .binary.display())]
    Spawn {
        plugin: String,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin:?} did not finish {command} within {timeout:?} and was killed")]
    Timeout {
        plugin: String,
        command: CniCommand,
        timeout: Duration,
    },
    #[error("plugin {plugin:?} failed {command}: {error}")]
    Plugin {
        plugin: String,
        command: CniCommand,
        error: CniError,
    },
    #[error("plugin {plugin:?} failed {command} ({status}) without a CNI error: stdout {stdout:?}, stderr {stderr:?}")]
    Garbage {
        plugin: String,
        command: CniCommand,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("plugin {plugin:?} returned a malformed {command} answer: {}", chain(.error))]
    BadOutput {
        plugin: String,
        command: CniCommand,
        error: ResultError,
    },
    #[error("plugin {plugin:?} returned a malformed VERSION answer: not a VERSION answer: {error}: {output}")]
    BadVersion {
        plugin: String,
        error: serde_json::Error,
        output: String,
    },
    #[error("talking to plugin {plugin:?} failed: {what}")]
    Io { plugin: String, what: String },
    #[error("plugin {plugin:?} printed more than the limit of {limit} bytes on stdout in {command} and was killed")]
    OutputTooLarge {
        plugin: String,
        command: CniCommand,
        limit: usize,
    },
}

fn join_paths(p: &[PathBuf]) -> String {
    if p.is_empty() {
        return "empty".to_string();
    }
    p.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn quote(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    match s.char_indices().nth(QUOTE_MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Finds the binary for `plugin_type` in the CNI_PATH directories, first match wins. Only plain
/// file names are looked up.
pub fn find_plugin(plugin_type: &str, path: &[PathBuf]) -> Result<PathBuf, ExecError> {
    validate_plugin_type(plugin_type).map_err(ExecError::InvalidType)?;
    path.iter()
        .map(|dir| dir.join(plugin_type))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ExecError::NotFound {
            plugin_type: plugin_type.to_string(),
            path: path.to_vec(),
        })
}

/// The environment and limits of one delegate call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: CniCommand,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS as passed on (`K=V;K=V`).
    pub args: String,
    pub path: Vec<PathBuf>,
    pub timeout: Duration,
}

impl Invocation {
    /// The call our own invocation implies, for `ifname` (delegates of a meta-plugin get their
    /// own interface names).
    pub fn from_env(env: &CniEnv, command: CniCommand, ifname: &str, timeout: Duration) -> Self {
        Self {
            command,
            container_id: env.container_id.clone(),
            netns: env.netns.clone(),
            ifname: ifname.to_string(),
            args: env.args.to_env_string(),
            path: env.path.clone(),
            timeout,
        }
    }

    /// The same call with another verb (the DEL after a failed ADD, a CHECK).
    pub fn with_command(&self, command: CniCommand) -> Self {
        Self {
            command,
            ..self.clone()
        }
    }

    /// VERSION needs nothing but the path.
    pub fn version(path: &[PathBuf], timeout: Duration) -> Self {
        Self {
            command: CniCommand::Version,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: String::new(),
            path: path.to_vec(),
            timeout,
        }
    }
}

/// Runs `plugin_type` with `stdin` and returns its stdout when it exits successfully.
pub fn exec_raw(plugin_type: &str, inv: &Invocation, stdin: &[u8]) -> Result<Vec<u8>, ExecError> {
    let binary = find_plugin(plugin_type, &inv.path)?;
    run(plugin_type, &binary, inv, stdin)
}

/// ADD: runs the plugin and parses its result (missing `cniVersion` read as `version`).
pub fn exec_add(
    plugin_type: &str,
    inv: &Invocation,
    conf: &[u8],
    version: CniVersion,
) -> Result<CniResult, ExecError> {
    let out = exec_raw(plugin_type, inv, conf)?;
    CniResult::parse(&out, version).map_err(|error| ExecError::BadOutput {
        plugin: plugin_type.to_string(),
        command: inv.command,
        error,
    })
}

/// DEL, CHECK, GC, STATUS: success is exit status 0; any output is ignored.
pub fn exec_no_result(plugin_type: &str, inv: &Invocation, conf: &[u8]) -> Result<(), ExecError> {
    exec_raw(plugin_type, inv, conf).map(|_| ())
}

/// VERSION: what the plugin supports.
pub fn exec_version(
    plugin_type: &str,
    path: &[PathBuf],
    timeout: Duration,
) -> Result<VersionInfo, ExecError> {
    let inv = Invocation::version(path, timeout);
    let out = exec_raw(
        plugin_type,
        &inv,
        format!(r#"{{"cniVersion":"{}"}}"#, CniVersion::LATEST).as_bytes(),
    )?;
    serde_json::from_slice(&out).map_err(|error| ExecError::BadVersion {
        plugin: plugin_type.to_string(),
        error,
        output: quote(&out),
    })
}

/// Spawns `cmd`, again a few times if the binary is "busy": a file just written is briefly held
/// open for writing by any process that another thread forks meanwhile, until that child execs.
fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(Errno::ETXTBSY as i32)
                    && tries < SPAWN_BUSY_RETRIES =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Spawns retried while the binary is busy (10 ms apart).
const SPAWN_BUSY_RETRIES: u32 = 5;

fn run(plugin: &str, binary: &Path, inv: &Invocation, stdin: &[u8]) -> Result<Vec<u8>, ExecError> {
    let started = Instant::now();
    let deadline = started + inv.timeout;
    let cni_path = std::env::join_paths(&inv.path).map_err(|e| ExecError::Io {
        plugin: plugin.to_string(),
        what: format!("CNI_PATH cannot be built: {e}"),
    })?;
    let mut cmd = Command::new(binary);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CNI_COMMAND", inv.command.as_str())
        .env("CNI_CONTAINERID", &inv.container_id)
        .env("CNI_NETNS", &inv.netns)
        .env("CNI_IFNAME", &inv.ifname)
        .env("CNI_ARGS", &inv.args)
        .env("CNI_PATH", cni_path)
        .env(crate::nesting::ENV, crate::nesting::child_value())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    tracing::debug!(plugin, command = %inv.command, container_id = %inv.container_id, ifname = %inv.ifname, "running delegate");

    let mut child = spawn(&mut cmd).map_err(|source| ExecError::Spawn {
        plugin: plugin.to_string(),
        binary: binary.to_path_buf(),
        source,
    })?;
    let io_err = |what: String| ExecError::Io {
        plugin: plugin.to_string(),
        what,
    };
    let pid = i32::try_from(child.id())
        .map(Pid::from_raw)
        .map_err(|_| io_err(format!("pid {} does not fit", child.id())))?;
    let talked = talk(plugin, &mut child, pid, stdin, deadline);
    let Talk { stdout, stderr } = match talked {
        Ok(t) => t,
        Err(Failed::Timeout) => {
            kill_and_reap(&mut child, pid);
            return Err(ExecError::Timeout {
                plugin: plugin.to_string(),
                command: inv.command,
                timeout: inv.timeout,
            });
        }
        Err(Failed::Io(what)) => {
            kill_and_reap(&mut child, pid);
            return Err(io_err(what));
        }
        Err(Failed::TooLarge) => {
            kill_and_reap(&mut child, pid);
            return Err(ExecError::OutputTooLarge {
                plugin: plugin.to_string(),
                command: inv.command,
                limit: STDOUT_MAX,
            });
        }
    };
    let status = child
        .wait()
        .map_err(|e| io_err(format!("reaping it failed: {e}")))?;
    tracing::debug!(plugin, command = %inv.command, %status, elapsed = ?started.elapsed(), "delegate finished");

    if status.success() {
        return Ok(stdout);
    }
    match CniError::parse(&stdout) {
        Some(error) => Err(ExecError::Plugin {
            plugin: plugin.to_string(),
            command: inv.command,
            error,
        }),
        None => Err(ExecError::Garbage {
            plugin: plugin.to_string(),
            command: inv.command,
            status,
            stdout: quote(&stdout),
            stderr: quote(stderr.as_bytes()),
        }),
    }
}

#[cfg(test)]
mod tests;
