//! ADD's policy step: before any delegate runs, the node agent installs the pod's policy table
//! in the pod's network namespace, so the interfaces the delegates create are covered by rules
//! from their first packet.
//!
//! With `policySocket` in the genie conf, ADD sends the agent one request on that unix socket
//! (the pod, its labels, its network namespace, and the interface name and network of each
//! planned attachment on a namespaced network: a NetworkAttachmentDefinition or a
//! LogicalNetwork, which are what policies name) and waits for the reply, which comes after
//! `nft` returned. A pod without such an attachment needs no table and sends nothing. If the
//! agent cannot be reached, does not answer in time or refuses, ADD fails with code 11 ("try
//! again later") before anything was created. The protocol is the agent's
//! (`vfagent::policy::protocol`): one JSON line each way, version 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::Planned;

/// How long the agent may take to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the agent may take to reply once the request is sent.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The protocol version genie speaks.
pub const VERSION: u64 = 1;
/// The longest reply read.
const MAX_REPLY: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy agent at {} cannot be reached to set up pod {pod}", .socket.display())]
    Unreachable {
        socket: PathBuf,
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy agent at {} did not accept a connection for pod {pod} within {timeout:?}", .socket.display())]
    ConnectTimeout {
        socket: PathBuf,
        pod: String,
        timeout: Duration,
    },
    #[error("the policy agent at {} did not answer for pod {pod} within {timeout:?}", .socket.display())]
    NoReply {
        socket: PathBuf,
        pod: String,
        timeout: Duration,
    },
    #[error("talking to the policy agent at {} for pod {pod} failed", .socket.display())]
    Io {
        socket: PathBuf,
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the policy agent at {} refused: {reason}", .socket.display())]
    Refused { socket: PathBuf, reason: String },
    #[error("the policy agent at {} answered pod {pod} with something that is not a reply: {reason}", .socket.display())]
    BadReply {
        socket: PathBuf,
        pod: String,
        reason: String,
    },
    #[error("the policy request of pod {pod} cannot be made")]
    Local {
        pod: String,
        #[source]
        source: std::io::Error,
    },
}

/// One interface of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyInterface {
    pub ifname: String,
    /// `namespace/name`.
    pub network: String,
}

/// The request, as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupRequest<'a> {
    pub version: u64,
    pub op: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub netns: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub interfaces: Vec<PolicyInterface>,
}

#[derive(Debug, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    applied: Option<bool>,
    #[serde(default)]
    error: Option<String>,
}

/// The attachments a policy can name: those on a namespaced network.
pub fn interfaces(planned: &[Planned]) -> Vec<PolicyInterface> {
    planned
        .iter()
        .filter(|p| p.network.contains('/'))
        .map(|p| PolicyInterface {
            ifname: p.ifname.clone(),
            network: p.network.clone(),
        })
        .collect()
}

/// The policy step of ADD: nothing without interfaces to cover, else the agent's table in
/// place before this returns (`Some(applied)`), within [`CONNECT_TIMEOUT`] and
/// [`REPLY_TIMEOUT`] (and never past `deadline`).
pub fn setup(
    socket: &Path,
    request: &SetupRequest<'_>,
    deadline: Instant,
) -> Result<Option<bool>, PolicyError> {
    if request.interfaces.is_empty() {
        return Ok(None);
    }
    let pod = format!("{}/{}", request.namespace, request.name);
    let local = |source| PolicyError::Local {
        pod: pod.clone(),
        source,
    };
    let mut line = serde_json::to_vec(request).map_err(|e| local(e.into()))?;
    line.push(b'\n');
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(local)?;
    let left = || deadline.saturating_duration_since(Instant::now());
    rt.block_on(exchange(socket, &pod, &line, left)).map(Some)
}

async fn exchange(
    socket: &Path,
    pod: &str,
    line: &[u8],
    left: impl Fn() -> Duration,
) -> Result<bool, PolicyError> {
    let sock = || socket.to_path_buf();
    let connect_timeout = CONNECT_TIMEOUT.min(left());
    let mut stream = match tokio::time::timeout(
        connect_timeout,
        tokio::net::UnixStream::connect(socket),
    )
    .await
    {
        Err(_) => {
            return Err(PolicyError::ConnectTimeout {
                socket: sock(),
                pod: pod.to_string(),
                timeout: connect_timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(PolicyError::Unreachable {
                socket: sock(),
                pod: pod.to_string(),
                source,
            })
        }
        Ok(Ok(s)) => s,
    };
    let reply_timeout = REPLY_TIMEOUT.min(left());
    let talk = async {
        stream.write_all(line).await?;
        let mut buf = Vec::new();
        (&mut stream).take(MAX_REPLY).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = match tokio::time::timeout(reply_timeout, talk).await {
        Err(_) => {
            return Err(PolicyError::NoReply {
                socket: sock(),
                pod: pod.to_string(),
                timeout: reply_timeout,
            })
        }
        Ok(Err(source)) => {
            return Err(PolicyError::Io {
                socket: sock(),
                pod: pod.to_string(),
                source,
            })
        }
        Ok(Ok(buf)) => buf,
    };
    let bad = |reason: String| PolicyError::BadReply {
        socket: sock(),
        pod: pod.to_string(),
        reason,
    };
    let text = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    if text.is_empty() {
        return Err(bad("the connection closed without one".into()));
    }
    let reply: Reply = serde_json::from_slice(text).map_err(|e| bad(e.to_string()))?;
    match (reply.ok, reply.applied, reply.error) {
        (true, applied, _) => Ok(applied.unwrap_or(false)),
        (false, _, Some(reason)) => Err(PolicyError::Refused {
            socket: sock(),
            reason,
        }),
        (false, _, None) => Err(PolicyError::Refused {
            socket: sock(),
            reason: format!("pod {pod}: no reason given"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    fn request<'a>(labels: &'a BTreeMap<String, String>) -> SetupRequest<'a> {
        SetupRequest {
            version: VERSION,
            op: "setup",
            namespace: "team",
            name: "web",
            uid: "u1",
            netns: "/run/netns/x",
            labels,
            interfaces: vec![PolicyInterface {
                ifname: "net1".into(),
                network: "team/blue".into(),
            }],
        }
    }

    /// An agent stand-in answering one connection with `reply` (after reading the request).
    fn agent(reply: &'static str) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.sock");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            (&s).write_all(reply.as_bytes()).unwrap();
            line
        });
        (dir, path, h)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[test]
    fn the_request_is_one_json_line_and_the_reply_is_read() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let (_d, path, h) = agent("{\"ok\":true,\"applied\":true}\n");
        assert_eq!(setup(&path, &request(&labels), soon()).unwrap(), Some(true));
        let sent: serde_json::Value = serde_json::from_str(&h.join().unwrap()).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"version": 1, "op": "setup", "namespace": "team", "name": "web",
                "uid": "u1", "netns": "/run/netns/x", "labels": {"app": "web"},
                "interfaces": [{"ifname": "net1", "network": "team/blue"}]})
        );
    }

    #[test]
    fn refusals_and_silence_are_errors_naming_the_socket() {
        let labels = BTreeMap::new();
        let (_d, path, _h) = agent("{\"ok\":false,\"error\":\"pod team/web: no\"}\n");
        let e = setup(&path, &request(&labels), soon()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the policy agent at {} refused: pod team/web: no",
                path.display()
            )
        );

        let (_d, path, _h) = agent("garbage\n");
        let e = setup(&path, &request(&labels), soon()).unwrap_err();
        assert!(
            e.to_string().contains("with something that is not a reply"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        let e = setup(&missing, &request(&labels), soon()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the policy agent at {} cannot be reached to set up pod team/web",
                missing.display()
            )
        );

        // Accepts but never answers: bounded by the deadline.
        let silent = dir.path().join("silent.sock");
        let _l = UnixListener::bind(&silent).unwrap();
        let started = Instant::now();
        let e = setup(
            &silent,
            &request(&labels),
            Instant::now() + Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, PolicyError::NoReply { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_pod_without_namespaced_networks_sends_nothing() {
        let labels = BTreeMap::new();
        let mut r = request(&labels);
        r.interfaces.clear();
        assert_eq!(
            setup(Path::new("/nonexistent/policy.sock"), &r, soon()).unwrap(),
            None
        );
    }
}
