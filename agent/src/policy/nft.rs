//! Applying nftables JSON documents with the `nft` binary, in the host network namespace or in a
//! pod's.
//!
//! The compiler renders one table per network namespace; `ruleset` turns it into one document:
//! the first install adds, deletes and re-adds the table and then fills it, later changes update
//! it in place (`Table::update_json`). Either way `nft -j -f -` applies it in one transaction:
//! packets see the old table or the new one, never none. This module only runs `nft`; it refuses a
//! document that names more than one table (or the whole ruleset), so it never touches tables
//! other than the one the document is about (kube-proxy's, the runtime's, an administrator's).
//!
//! Entering a pod's namespace: the workspace forbids `unsafe`, so there is no `pre_exec` with
//! `setns`. Instead `nft` is spawned from a short-lived thread that has entered the namespace
//! ([`NetNs::run`]); a child inherits the namespace of the thread that spawns it. The caller's
//! thread never changes namespace, and no `nsenter` is needed. Everything here blocks (at most
//! for the timeout): the agent calls it from `spawn_blocking`, never on a tokio worker.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vfcore::netns::{NetNs, NetNsError};

/// How long one `nft` run may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of nft's stderr an error carries.
const STDERR_LIMIT: usize = 2000;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft binary {} is not an executable file", .binary.display())]
    BinaryMissing { binary: PathBuf },

    #[error("nft is not installed: no executable nft in PATH ({path})")]
    NotInPath { path: String },

    #[error("{name:?} is not a valid nftables table name")]
    InvalidName { name: String },

    #[error("the nftables document was refused: {reason}")]
    Document { reason: String },

    #[error(transparent)]
    Netns(#[from] NetNsError),

    #[error("starting {} in {} failed", .binary.display(), where_(.netns))]
    Spawn {
        binary: PathBuf,
        netns: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },

    #[error("talking to nft in {} failed while {step}", where_(.netns))]
    Io {
        netns: Option<PathBuf>,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("nft did not finish within {timeout:?} in {} and was killed", where_(.netns))]
    Timeout {
        netns: Option<PathBuf>,
        timeout: Duration,
    },

    #[error("nft failed in {} ({status}): {stderr}", where_(.netns))]
    Failed {
        netns: Option<PathBuf>,
        status: String,
        stderr: String,
    },

    #[error("nft's output in {} is not the JSON expected: {reason}", where_(.netns))]
    Output {
        netns: Option<PathBuf>,
        reason: String,
    },
}

fn where_(netns: &Option<PathBuf>) -> String {
    match netns {
        Some(p) => format!("network namespace {}", p.display()),
        None => "the host network namespace".to_string(),
    }
}

/// The nftables address families a table can belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

/// The `nft` binary and how long a run of it may take.
#[derive(Debug, Clone)]
pub struct Nft {
    binary: PathBuf,
    timeout: Duration,
}

impl Nft {
    /// `nft` at `binary` when given (it must be an executable file), else the first executable
    /// `nft` in `PATH`.
    pub fn new(binary: Option<&Path>) -> Result<Self, NftError> {
        let binary = match binary {
            Some(b) if is_executable(b) => b.to_path_buf(),
            Some(b) => {
                return Err(NftError::BinaryMissing {
                    binary: b.to_path_buf(),
                })
            }
            None => find_in_path(std::env::var_os("PATH"))?,
        };
        Ok(Self {
            binary,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same binary with another bound on each run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Applies `doc` (`{"nftables": [...]}`) in one `nft -j -f -` transaction, in `netns` or
    /// in the host namespace. The document must be about one table only (see [`table_of`]).
    pub fn apply(&self, netns: Option<&Path>, doc: &Value) -> Result<(), NftError> {
        table_of(doc)?;
        let input = serde_json::to_vec(doc).map_err(|e| NftError::Document {
            reason: e.to_string(),
        })?;
        self.run(netns, &["-j", "-f", "-"], Some(&input)).map(drop)
    }

    /// The table as `nft -j list table` prints it (`{"nftables": [metainfo, table, sets,
    /// chains, rules...]}`, handles included), or `None` when there is no such table.
    pub fn list(
        &self,
        netns: Option<&Path>,
        family: Family,
        name: &str,
    ) -> Result<Option<Value>, NftError> {
        check_name(name)?;
        let out = match self.run(netns, &["-j", "list", "table", family.as_str(), name], None) {
            Ok(out) => out,
            // nft 1.0.6 says "Error: No such file or directory" (ENOENT from the kernel).
            Err(NftError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&out)
            .map(Some)
            .map_err(|e| NftError::Output {
                netns: netns.map(Path::to_path_buf),
                reason: e.to_string(),
            })
    }

    /// Deletes the table; one that is not there is fine. Adding the table first makes the delete
    /// succeed in both cases, in one transaction (nft 1.0.6 has no `destroy`).
    pub fn remove(&self, netns: Option<&Path>, family: Family, name: &str) -> Result<(), NftError> {
        check_name(name)?;
        let table = json!({"family": family.as_str(), "name": name});
        let doc = json!({"nftables": [
            {"add": {"table": table.clone()}},
            {"delete": {"table": table}},
        ]});
        self.apply(netns, &doc)
    }

    /// Runs nft with `args` and `input` on its stdin; its stdout when it exits with success.
    fn run(
        &self,
        netns: Option<&Path>,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<Vec<u8>, NftError> {
        let ns_path = || netns.map(Path::to_path_buf);
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = match netns {
            None => cmd.spawn(),
            // The child inherits the namespace of the thread that spawns it.
            Some(path) => NetNs::open(path)?.run(|| cmd.spawn())?,
        };
        let mut child = spawned.map_err(|source| NftError::Spawn {
            binary: self.binary.clone(),
            netns: ns_path(),
            source,
        })?;
        let io_err = |step: &'static str| {
            move |source: std::io::Error| NftError::Io {
                netns: ns_path(),
                step,
                source,
            }
        };

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (waited, written, out, err) = std::thread::scope(|s| {
            // nft 1.0.6 quietly does nothing (and exits 0) on JSON it cannot parse from stdin, so
            // a short write must never go unnoticed: the writer's result is checked below. The
            // pipe closes when the writer ends.
            let writer =
                std::thread::Builder::new().spawn_scoped(s, move || match (stdin, input) {
                    (Some(mut w), Some(data)) => w.write_all(data),
                    _ => Ok(()),
                });
            let out_reader = std::thread::Builder::new().spawn_scoped(s, move || read_all(stdout));
            let err_reader = std::thread::Builder::new().spawn_scoped(s, move || read_all(stderr));
            let waited = wait_until(&mut child, Instant::now() + self.timeout);
            if !matches!(waited, Ok(Some(_))) {
                // Timed out (or waiting failed): kill it so the pipes close and the threads end.
                let _ = child.kill();
                let _ = child.wait();
            }
            (waited, join(writer), join(out_reader), join(err_reader))
        });

        let status: ExitStatus = match waited.map_err(io_err("waiting for it"))? {
            Some(status) => status,
            None => {
                return Err(NftError::Timeout {
                    netns: ns_path(),
                    timeout: self.timeout,
                })
            }
        };
        let err = err.map_err(io_err("reading its stderr"))?;
        if !status.success() {
            return Err(NftError::Failed {
                netns: ns_path(),
                status: status.to_string(),
                stderr: trim_stderr(&err),
            });
        }
        written.map_err(io_err("writing the document to its stdin"))?;
        out.map_err(io_err("reading its stdout"))
    }
}

type PipeThread<'s, T> = std::io::Result<std::thread::ScopedJoinHandle<'s, std::io::Result<T>>>;

/// The result of a pipe thread: its own, or why it did not run or finish.
fn join<T>(h: PipeThread<'_, T>) -> std::io::Result<T> {
    h?.join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the pipe thread panicked")))
}

fn read_all<R: Read>(r: Option<R>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        r.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// Waits for the child until `deadline`: `Ok(None)` when it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_micros(500);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// nft's stderr as one readable string: whitespace trimmed, lines joined, bounded in length.
fn trim_stderr(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut s = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    if s.len() > STDERR_LIMIT {
        let mut cut = STDERR_LIMIT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" [...]");
    }
    if s.is_empty() {
        "(no message)".to_string()
    } else {
        s
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_in_path(path: Option<OsString>) -> Result<PathBuf, NftError> {
    let path = path.unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("nft"))
        .find(|cand| is_executable(cand))
        .ok_or_else(|| NftError::NotInPath {
            path: path.to_string_lossy().into_owned(),
        })
}

/// Table names as nft's parser takes them on the command line.
fn check_name(name: &str) -> Result<(), NftError> {
    let mut chars = name.chars();
    let ok = name.len() <= 255
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NftError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// The one table (family, name) a document is about. Each command must name it (a table by
/// `name`, everything else by `table`); a `ruleset` command, a table by handle only or a second
/// table is refused. `metainfo` entries are ignored.
pub fn table_of(doc: &Value) -> Result<(String, String), NftError> {
    let refuse = |reason: String| NftError::Document { reason };
    let cmds = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| refuse("it is not an object with an \"nftables\" array".to_string()))?;
    let mut found: Option<(String, String)> = None;
    for (i, cmd) in cmds.iter().enumerate() {
        let single = |v: &Value| -> Option<(String, Value)> {
            let obj = v.as_object().filter(|o| o.len() == 1)?;
            obj.iter().next().map(|(k, v)| (k.clone(), v.clone()))
        };
        let (verb, body) = single(cmd)
            .ok_or_else(|| refuse(format!("entry {i} is not an object with one key")))?;
        if verb == "metainfo" {
            continue;
        }
        // `{"add": {"chain": {...}}}`, or the short form `{"chain": {...}}` (an add).
        let (kind, obj) = match single(&body) {
            Some((kind, obj)) if obj.is_object() || obj.is_null() => (kind, obj),
            _ => (verb.clone(), body),
        };
        if kind == "ruleset" {
            return Err(refuse(format!(
                "entry {i} ({verb} ruleset) touches every table"
            )));
        }
        let field = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let key = if kind == "table" { "name" } else { "table" };
        let this = match (field("family"), field(key)) {
            (Some(f), Some(t)) => (f, t),
            _ => {
                return Err(refuse(format!(
                    "entry {i} ({verb} {kind}) does not name its table by family and name"
                )))
            }
        };
        match &found {
            Some(first) if *first != this => {
                return Err(refuse(format!(
                    "entry {i} is about table {} {}, the document about {} {}",
                    this.0, this.1, first.0, first.1
                )))
            }
            Some(_) => {}
            None => found = Some(this),
        }
    }
    found.ok_or_else(|| refuse("it names no table".to_string()))
}

/// [`Nft::apply`] with `nft` from `PATH` and the default timeout.
pub fn apply(netns: Option<&Path>, doc: &Value) -> Result<(), NftError> {
    Nft::new(None)?.apply(netns, doc)
}

/// [`Nft::list`] with `nft` from `PATH` and the default timeout.
pub fn list(netns: Option<&Path>, family: Family, name: &str) -> Result<Option<Value>, NftError> {
    Nft::new(None)?.list(netns, family, name)
}

/// [`Nft::remove`] with `nft` from `PATH` and the default timeout.
pub fn remove(netns: Option<&Path>, family: Family, name: &str) -> Result<(), NftError> {
    Nft::new(None)?.remove(netns, family, name)
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
