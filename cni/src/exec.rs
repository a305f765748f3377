//! Running delegate plugins: find the binary by type in CNI_PATH, exec it with the CNI environment
//! and the config on stdin, bounded by a timeout, and read its result or error.
//!
//! The plugin runs in its own process group so that a timeout kills it and anything it started.
//! Its stderr goes to our log (tracing), never to our stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::spec::conf::validate_plugin_type;
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::CniError;
use crate::spec::result::CniResult;
use crate::spec::version::{CniVersion, VersionInfo};

/// How much of a plugin's output an error message quotes.
const QUOTE_MAX: usize = 512;
/// How much of a plugin's stderr is kept for error messages (all of it is logged).
const STDERR_KEEP: usize = 4096;

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
            ExecError::Spawn { .. } | ExecError::Timeout { .. } | ExecError::Io { .. } => {
                CniError::io(self.to_string())
            }
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

enum Done {
    Exited,
    WaitFailed(Errno),
}

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
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    tracing::debug!(plugin, command = %inv.command, container_id = %inv.container_id, ifname = %inv.ifname, "running delegate");

    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
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

    let (Some(mut child_in), Some(mut child_out), Some(child_err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill_and_reap(&mut child, pid);
        return Err(io_err("its pipes were not set up".to_string()));
    };

    let input = stdin.to_vec();
    let (in_tx, in_rx) = mpsc::channel();
    thread::spawn(move || {
        let r = match child_in.write_all(&input) {
            // A plugin may exit without reading its config.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        };
        drop(child_in);
        let _ = in_tx.send(r);
    });
    let (out_tx, out_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let r = child_out.read_to_end(&mut buf).map(|_| buf);
        let _ = out_tx.send(r);
    });
    let (err_tx, err_rx) = mpsc::channel();
    let log_plugin = plugin.to_string();
    thread::spawn(move || {
        let mut kept = String::new();
        for line in BufReader::new(child_err).lines() {
            let Ok(line) = line else { break };
            tracing::info!(plugin = %log_plugin, "stderr: {line}");
            if kept.len() < STDERR_KEEP {
                kept.push_str(&line);
                kept.push('\n');
            }
        }
        let _ = err_tx.send(kept);
    });
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        // WNOWAIT: learn of the exit without reaping, so the pid and process group stay ours
        // until we reap them below (no kill can hit a recycled pid).
        let r = loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(Errno::EINTR) => continue,
                Ok(_) => break Done::Exited,
                Err(e) => break Done::WaitFailed(e),
            }
        };
        let _ = done_tx.send(r);
    });

    let remaining = || deadline.saturating_duration_since(Instant::now());
    match done_rx.recv_timeout(remaining()) {
        Ok(Done::Exited) => {}
        Ok(Done::WaitFailed(e)) => {
            kill_and_reap(&mut child, pid);
            return Err(io_err(format!("waiting for it failed: {e}")));
        }
        Err(_) => {
            kill_and_reap(&mut child, pid);
            return Err(ExecError::Timeout {
                plugin: plugin.to_string(),
                command: inv.command,
                timeout: inv.timeout,
            });
        }
    }
    let status = child
        .wait()
        .map_err(|e| io_err(format!("reaping it failed: {e}")))?;
    match in_rx.recv_timeout(remaining()) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(io_err(format!("writing its config failed: {e}"))),
        Err(_) => {
            let _ = killpg(pid, Signal::SIGKILL);
            return Err(io_err(
                "it exited but a process it started kept its stdin open unread".to_string(),
            ));
        }
    }
    let stdout = match out_rx.recv_timeout(remaining()) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(io_err(format!("reading its stdout failed: {e}"))),
        Err(_) => {
            // Something it started still holds the pipe: end the group.
            let _ = killpg(pid, Signal::SIGKILL);
            return Err(io_err(
                "it exited but a process it started kept its stdout open".to_string(),
            ));
        }
    };
    let stderr = err_rx
        .recv_timeout(remaining().max(Duration::from_millis(100)))
        .unwrap_or_default();
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
    fn a_path_entry_with_a_colon_is_refused() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "okplug", "true");
        let mut i = inv(d.path(), CniCommand::Add);
        i.path.push(PathBuf::from("/a:b"));
        let e = exec_raw("okplug", &i, b"{}").unwrap_err();
        assert!(e.to_string().contains("CNI_PATH"), "{e}");
    }
}
