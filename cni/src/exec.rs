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

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::spec::conf::validate_plugin_type;
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
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
    InvalidType(CniError),
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
    #[error("plugin {plugin:?} returned a malformed {command} answer: {error}")]
    BadOutput {
        plugin: String,
        command: CniCommand,
        error: CniError,
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

impl ExecError {
    /// The CNI error to report for this failure (the one place exec failures get codes): a
    /// plugin's own error keeps its code and details; a bad type or missing plugin is 7, a
    /// plugin's unreadable output is 6, a timeout or an I/O failure is 5.
    pub fn to_cni_error(&self) -> CniError {
        match self {
            ExecError::InvalidType(e) => e.clone(),
            ExecError::Plugin { plugin, error, .. } => CniError {
                code: error.code,
                msg: format!("plugin {plugin:?}: {}", error.msg),
                details: error.details.clone(),
            },
            ExecError::BadOutput { error, .. } => CniError::new(error.code, self.to_string()),
            ExecError::NotFound { .. } => CniError::invalid_config(self.to_string()),
            ExecError::Garbage { .. } => CniError::decode(self.to_string()),
            ExecError::Spawn { .. }
            | ExecError::Timeout { .. }
            | ExecError::Io { .. }
            | ExecError::OutputTooLarge { .. } => CniError::io(self.to_string()),
        }
    }
}

impl From<ExecError> for CniError {
    fn from(e: ExecError) -> Self {
        e.to_cni_error()
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
    serde_json::from_slice(&out).map_err(|e| ExecError::BadOutput {
        plugin: plugin_type.to_string(),
        command: CniCommand::Version,
        error: CniError::decode(format!("not a VERSION answer: {e}: {}", quote(&out))),
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

/// What a plugin said, once it has exited (not yet reaped).
struct Talk {
    stdout: Vec<u8>,
    /// The start of its stderr (all of it is logged).
    stderr: String,
}

/// Why talking to a plugin stopped; the caller kills its group and reaps it.
enum Failed {
    /// It had not exited by the deadline.
    Timeout,
    Io(String),
    /// Its stdout passed [`STDOUT_MAX`].
    TooLarge,
}

/// How long stderr may stay open after everything else is done: a plugin's stray child may hold
/// it, and it only feeds the log.
const STDERR_GRACE: Duration = Duration::from_millis(100);

/// Feeds the plugin its config and reads its stdout and stderr until it has exited and closed
/// them, all on this thread: one poll(2) over the pipes and a pidfd for the exit. When a process
/// the plugin started keeps a pipe open after the plugin exited, its group is ended at the
/// deadline (the error names the pipe). The plugin is left unreaped, so its pid and process group
/// stay ours until the caller reaps it.
fn talk(
    plugin: &str,
    child: &mut Child,
    pid: Pid,
    input: &[u8],
    deadline: Instant,
) -> Result<Talk, Failed> {
    use rustix::event::{poll, PollFd, PollFlags};
    let (Some(child_in), Some(child_out), Some(child_err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Failed::Io("its pipes were not set up".to_string()));
    };
    for fd in [child_in.as_fd(), child_out.as_fd(), child_err.as_fd()] {
        rustix::io::ioctl_fionbio(fd, true)
            .map_err(|e| Failed::Io(format!("its pipes cannot be made non-blocking: {e}")))?;
    }
    // Without pidfds (kernels before 5.3) the exit is polled for every few milliseconds.
    let pidfd = rustix::process::Pid::from_raw(pid.as_raw())
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());

    let mut child_in = Some(child_in);
    let mut child_out = Some(child_out);
    let mut child_err = Some(child_err);
    let mut written = 0;
    let mut exited = false;
    let mut stdout = Vec::new();
    let mut stderr = StderrLog::new(plugin);
    let mut stderr_until: Option<Instant> = None;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let rest_done = exited && child_in.is_none() && child_out.is_none();
        if rest_done && child_err.is_none() {
            break;
        }
        let now = Instant::now();
        let limit = if rest_done {
            *stderr_until.get_or_insert_with(|| deadline.max(now + STDERR_GRACE))
        } else {
            deadline
        };
        if now >= limit {
            if rest_done {
                break; // stderr still held open: it only feeds the log
            }
            if !exited {
                return Err(Failed::Timeout);
            }
            let _ = killpg(pid, Signal::SIGKILL);
            let pipe = if child_in.is_some() {
                "stdin open unread"
            } else {
                "stdout open"
            };
            return Err(Failed::Io(format!(
                "it exited but a process it started kept its {pipe}"
            )));
        }
        let mut wait = limit - now;
        if pidfd.is_none() && !exited {
            wait = wait.min(Duration::from_millis(5));
        }

        // The poll set, in this order: stdin, stdout, stderr, pidfd (each while it matters).
        let mut fds = Vec::with_capacity(4);
        let mut slots = [false; 4];
        if let Some(f) = &child_in {
            fds.push(PollFd::new(f, PollFlags::OUT));
            slots[0] = true;
        }
        if let Some(f) = &child_out {
            fds.push(PollFd::new(f, PollFlags::IN));
            slots[1] = true;
        }
        if let Some(f) = &child_err {
            fds.push(PollFd::new(f, PollFlags::IN));
            slots[2] = true;
        }
        if let (Some(f), false) = (&pidfd, exited) {
            fds.push(PollFd::new(f, PollFlags::IN));
            slots[3] = true;
        }
        let timeout = rustix::time::Timespec::try_from(wait).unwrap_or(rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Failed::Io(format!("polling its pipes failed: {e}"))),
        }
        let mut ready = [false; 4];
        let mut n = 0;
        for (slot, on) in slots.iter().enumerate() {
            if *on {
                ready[slot] = !fds[n].revents().is_empty();
                n += 1;
            }
        }
        drop(fds);

        if ready[0] {
            if let Some(f) = child_in.as_mut() {
                match f.write(&input[written..]) {
                    Ok(k) => written += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // A plugin may exit without reading its config.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => written = input.len(),
                    Err(e) => return Err(Failed::Io(format!("writing its config failed: {e}"))),
                }
            }
        }
        if written >= input.len() {
            child_in = None; // closed: the plugin reads to the end
        }
        if ready[1] {
            if let Some(f) = child_out.as_mut() {
                let ended = drain(f, &mut buf, |b| stdout.extend_from_slice(b))
                    .map_err(|e| Failed::Io(format!("reading its stdout failed: {e}")))?;
                if stdout.len() > STDOUT_MAX {
                    return Err(Failed::TooLarge);
                }
                if ended {
                    child_out = None;
                }
            }
        }
        if ready[2] {
            if let Some(f) = child_err.as_mut() {
                // A read error on stderr only ends the log.
                if drain(f, &mut buf, |b| stderr.push(b)).unwrap_or(true) {
                    child_err = None;
                }
            }
        }
        if ready[3] || (pidfd.is_none() && !exited) {
            // WNOWAIT: learn of the exit without reaping it.
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            match waitid(Id::Pid(pid), flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                Ok(_) => exited = true,
                Err(e) => return Err(Failed::Io(format!("waiting for it failed: {e}"))),
            }
        }
    }
    Ok(Talk {
        stdout,
        stderr: stderr.finish(),
    })
}

/// Reads what `f` has now into `sink`, at most [`READS_PER_ROUND`] reads (a plugin writing
/// endlessly must not keep us from the deadline); true at the end of the stream.
fn drain(f: &mut impl Read, buf: &mut [u8], mut sink: impl FnMut(&[u8])) -> std::io::Result<bool> {
    for _ in 0..READS_PER_ROUND {
        match f.read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => sink(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// A plugin's stderr: each line logged as it completes (up to [`STDERR_LOG_MAX`] bytes, lines cut
/// at [`STDERR_LINE_MAX`]), the last [`STDERR_KEEP`] bytes kept.
struct StderrLog<'a> {
    plugin: &'a str,
    partial: Vec<u8>,
    kept: String,
    logged: usize,
    unlogged: usize,
}

impl<'a> StderrLog<'a> {
    fn new(plugin: &'a str) -> Self {
        Self {
            plugin,
            partial: Vec::new(),
            kept: String::new(),
            logged: 0,
            unlogged: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.line(&line[..i]);
        }
        while self.partial.len() > STDERR_LINE_MAX {
            let piece: Vec<u8> = self.partial.drain(..STDERR_LINE_MAX).collect();
            self.line(&piece);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        if self.logged < STDERR_LOG_MAX {
            tracing::info!(plugin = %self.plugin, "stderr: {line}");
            self.logged += line.len() + 1;
        } else {
            self.unlogged += line.len() + 1;
        }
        self.kept.push_str(&line);
        self.kept.push('\n');
        if self.kept.len() > 2 * STDERR_KEEP {
            let mut cut = self.kept.len() - STDERR_KEEP;
            while !self.kept.is_char_boundary(cut) {
                cut += 1;
            }
            self.kept.drain(..cut);
        }
    }

    fn finish(mut self) -> String {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(&rest);
        }
        if self.unlogged > 0 {
            tracing::info!(plugin = %self.plugin, bytes = self.unlogged, limit = STDERR_LOG_MAX, "stderr beyond the log limit was not logged");
        }
        if self.kept.len() > STDERR_KEEP {
            let mut cut = self.kept.len() - STDERR_KEEP;
            while !self.kept.is_char_boundary(cut) {
                cut += 1;
            }
            self.kept.drain(..cut);
        }
        self.kept
    }
}

/// Kills the plugin's process group and reaps the plugin.
fn kill_and_reap(child: &mut Child, pid: Pid) {
    // The unreaped leader keeps the group id ours; ESRCH means the group is already empty.
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn inv(dir: &Path, command: CniCommand) -> Invocation {
        Invocation {
            command,
            container_id: "c1".into(),
            netns: "/var/run/netns/none".into(),
            ifname: "eth7".into(),
            args: "K8S_POD_NAME=p".into(),
            path: vec![PathBuf::from("/nonexistent"), dir.to_path_buf()],
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn finds_plugins_and_refuses_traversal() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "okplug", "true");
        let path = vec![PathBuf::from("/nonexistent"), d.path().to_path_buf()];
        assert_eq!(
            find_plugin("okplug", &path).unwrap(),
            d.path().join("okplug")
        );
        let e = find_plugin("nope", &path).unwrap_err();
        assert!(
            e.to_string().contains("\"nope\"") && e.to_string().contains("/nonexistent:"),
            "{e}"
        );
        assert_eq!(e.to_cni_error().code, 7);
        for t in ["../okplug", "/bin/sh", "..", "."] {
            let e = find_plugin(t, &path).unwrap_err();
            assert!(matches!(e, ExecError::InvalidType(_)), "{t}");
        }
        // A directory is not a plugin.
        std::fs::create_dir(d.path().join("adir")).unwrap();
        assert!(matches!(
            find_plugin("adir", &path).unwrap_err(),
            ExecError::NotFound { .. }
        ));
    }

    #[test]
    fn passes_env_and_stdin_and_reads_the_result() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "echoer",
            r#"conf=$(cat)
echo "log line on stderr" >&2
printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"dns":{"domain":"%s|%s|%s|%s|%s"}}' "$CNI_IFNAME" "$CNI_NETNS" "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_ARGS" "$CNI_PATH" "$conf""#,
        );
        let i = inv(d.path(), CniCommand::Add);
        let r = exec_add("echoer", &i, b"{cfg}", CniVersion::V1_0_0).unwrap();
        assert_eq!(r.interfaces[0].name, "eth7");
        assert_eq!(r.interfaces[0].sandbox, "/var/run/netns/none");
        assert_eq!(
            r.dns.domain,
            format!(
                "ADD|c1|K8S_POD_NAME=p|/nonexistent:{}|{{cfg}}",
                d.path().display()
            )
        );
    }

    #[test]
    fn plugin_errors_garbage_and_bad_results() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "fails",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":117,"msg":"no luck","details":"really"}'; exit 1"#,
        );
        script(
            d.path(),
            "garbage",
            "echo 'segfault or so'; echo oops >&2; exit 2",
        );
        script(
            d.path(),
            "badresult",
            "echo '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"x\"}]}'",
        );
        script(d.path(), "silent", "exit 0");
        let i = inv(d.path(), CniCommand::Add);
        match exec_add("fails", &i, b"{}", CniVersion::V1_0_0).unwrap_err() {
            ExecError::Plugin { plugin, error, .. } => {
                assert_eq!(plugin, "fails");
                assert_eq!(error, CniError::new(117, "no luck").with_details("really"));
            }
            other => panic!("{other}"),
        }
        let g = exec_add("garbage", &i, b"{}", CniVersion::V1_0_0).unwrap_err();
        let ge = g.to_cni_error();
        assert_eq!(ge.code, 6);
        assert!(
            ge.msg.contains("garbage") && ge.msg.contains("segfault") && ge.msg.contains("oops"),
            "{ge}"
        );
        let b = exec_add("badresult", &i, b"{}", CniVersion::V1_0_0).unwrap_err();
        assert_eq!(b.to_cni_error().code, 6);
        assert!(b.to_string().contains("badresult"), "{b}");
        exec_no_result("silent", &i.with_command(CniCommand::Del), b"{}").unwrap();
    }

    #[test]
    fn a_hung_plugin_is_killed_at_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        // The sleep is a grandchild holding stdout: the whole group must go.
        script(d.path(), "hangs", "sleep 30; echo '{}'");
        let mut i = inv(d.path(), CniCommand::Add);
        i.timeout = Duration::from_millis(300);
        let t0 = Instant::now();
        let e = exec_raw("hangs", &i, b"{}").unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("hangs"), "{e}");
        assert_eq!(e.to_cni_error().code, 5);
    }

    #[test]
    fn a_plugin_that_ignores_stdin_is_fine() {
        let d = tempfile::tempdir().unwrap();
        script(
            d.path(),
            "noread",
            r#"echo '{"cniVersion":"0.4.0","supportedVersions":["0.4.0"]}'"#,
        );
        let big = vec![b' '; 1 << 20];
        exec_raw("noread", &inv(d.path(), CniCommand::Add), &big).unwrap();
        let v = exec_version("noread", &[d.path().to_path_buf()], Duration::from_secs(5)).unwrap();
        assert!(v.supports(CniVersion::V0_4_0));
        assert!(!v.supports(CniVersion::V1_0_0));
    }

    #[test]
    fn large_configs_and_answers_pass_whole_and_stderr_is_kept() {
        let d = tempfile::tempdir().unwrap();
        // Both far larger than a pipe's buffer: the config goes in while the answer comes out.
        script(
            d.path(),
            "echoes",
            "printf 'first line\\nno newline at the end' >&2; cat; exit 3",
        );
        let big: Vec<u8> = (0..3 << 20).map(|i| b'a' + (i % 26) as u8).collect();
        match exec_raw("echoes", &inv(d.path(), CniCommand::Add), &big).unwrap_err() {
            ExecError::Garbage { stdout, stderr, .. } => {
                assert!(stdout.starts_with("abcdefghij") && stdout.ends_with("..."));
                assert_eq!(stderr, "first line\nno newline at the end");
            }
            other => panic!("{other:?}"),
        }
        script(d.path(), "cats", "cat");
        let out = exec_raw("cats", &inv(d.path(), CniCommand::Add), &big).unwrap();
        assert!(out == big, "{} bytes back of {}", out.len(), big.len());
    }

    #[test]
    fn a_leftover_child_holding_stdout_is_bounded_too() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "forks", "sleep 30 & echo '{}'; exit 0");
        let mut i = inv(d.path(), CniCommand::Add);
        i.timeout = Duration::from_millis(500);
        let t0 = Instant::now();
        let e = exec_raw("forks", &i, b"{}").unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("stdout open"), "{e}");
    }

    #[test]
    fn a_plugin_printing_endlessly_is_killed_at_the_stdout_limit() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "chatty", "exec yes '{\"cniVersion\":\"1.0.0\"}'");
        let t0 = Instant::now();
        let e = exec_raw("chatty", &inv(d.path(), CniCommand::Add), b"{}").unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
        assert!(matches!(e, ExecError::OutputTooLarge { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("\"chatty\"") && msg.contains(&STDOUT_MAX.to_string()),
            "{msg}"
        );
    }

    #[test]
    fn endless_stderr_keeps_only_a_bounded_tail() {
        let d = tempfile::tempdir().unwrap();
        // 8 MB of stderr without a newline, then a last line, then a failure.
        script(
            d.path(),
            "noisy",
            "head -c 8000000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the last words' >&2; echo garbage; exit 1",
        );
        match exec_raw("noisy", &inv(d.path(), CniCommand::Add), b"{}").unwrap_err() {
            ExecError::Garbage { stderr, .. } => {
                assert!(stderr.len() <= QUOTE_MAX + 3, "{}", stderr.len());
            }
            other => panic!("{other:?}"),
        }
        let mut log = StderrLog::new("noisy");
        for _ in 0..1000 {
            log.push(&[b'x'; 8192]);
        }
        log.push(b"\nthe last words\n");
        let kept = log.finish();
        assert!(kept.len() <= STDERR_KEEP, "{}", kept.len());
        assert!(kept.ends_with("the last words\n"), "{kept:?}");
    }

    #[test]
    fn a_path_entry_with_a_colon_is_refused() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "okplug", "true");
        let mut i = inv(d.path(), CniCommand::Add);
        i.path.push(PathBuf::from("/a:b"));
        let e = exec_raw("okplug", &i, b"{}").unwrap_err();
        assert!(e.to_string().contains("CNI_PATH"), "{e}");
    }
}
