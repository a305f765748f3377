//! The agent's small HTTP/1.1 server: `GET /metrics` (Prometheus text) and `GET /healthz`
//! (200 once the first reconcile has completed, 503 with the reason before and while a pool's
//! device-plugin server is down). Both read the latest
//! published [`Snapshot`]; nothing here changes the node.
//!
//! Exposure: the agent runs with host networking, so whatever it binds is bound on the node. Both
//! endpoints are unauthenticated, so by default it listens on the node's loopback only
//! ([`DEFAULT_ADDRS`]: `127.0.0.1` and `::1`); probes reach it there (the kubelet runs in the host
//! namespace), and a scraper that must reach it from elsewhere is configured explicitly
//! (`--metrics-addr 0.0.0.0:9808`). Whatever the address, at most [`Limits::max_connections`]
//! connections are open at once: a new connection beyond that closes the oldest, so a flood of idle
//! connections cannot keep a probe out, and a client that sends no complete request within
//! [`Limits::header_timeout`] is dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::errno::Errno;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::metrics;
use crate::state::Snapshot;
use crate::supervise::POOL_SERVER_DOWN;

/// Where the Prometheus text is served.
pub const METRICS_PATH: &str = "/metrics";
/// Where the health probe is served.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Where the liveness probe is served: the agent is up and past its first reconcile. Unlike
/// `/healthz` it does not fail while one pool's server is being restarted (the supervisor does
/// that; restarting the whole agent would stop the healthy pools too).
pub const LIVEZ_PATH: &str = "/livez";
/// Where audit reports are served ([`crate::audit`]).
pub const REPORT_PATH: &str = "/report";
/// The port the agent listens on unless told otherwise (the DaemonSet exposes it on the host).
pub const DEFAULT_PORT: u16 = 9808;

/// Where the agent listens unless told otherwise: the node's loopback addresses only.
pub const DEFAULT_ADDRS: &str = "127.0.0.1:9808,[::1]:9808";
/// How many connections may be open at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request headers (on a new connection, and between
/// requests on a kept-alive one) unless told otherwise.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, at most, closing connections for room is logged as a warning.
const EVICTION_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How long open connections get to finish once shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after an accept error that may clear by itself (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the HTTP listener cannot accept connections")]
    Accept {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve /metrics and /healthz on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{spec:?} names no address to serve /metrics and /healthz on")]
    NoAddress { spec: String },
}

/// Bounds on the connections the server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; a new one beyond this closes the oldest.
    pub max_connections: usize,
    /// Time a client gets to send complete request headers; idle connections close after it.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// Binds every address of `spec`, a comma-separated list (`127.0.0.1:9808,[::1]:9808`, or one
/// address such as `0.0.0.0:9808`). An address of a family the node does not have (no IPv6) is
/// skipped with a warning; any other failure is an error, and so is binding nothing.
pub async fn bind(spec: &str) -> Result<Vec<TcpListener>, Error> {
    let mut listeners = Vec::new();
    for addr in spec.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                info!(%addr, "serving /metrics and /healthz");
                listeners.push(l);
            }
            Err(e) if family_unavailable(&e) => {
                warn!(%addr, error = %e, "address not available on this node; not serving there");
            }
            Err(source) => {
                return Err(Error::Bind {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
    if listeners.is_empty() {
        return Err(Error::NoAddress {
            spec: spec.to_string(),
        });
    }
    Ok(listeners)
}

/// Bind errors that say the node has no such address (IPv6 disabled, no loopback of that family).
fn family_unavailable(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| {
        [Errno::EADDRNOTAVAIL, Errno::EAFNOSUPPORT]
            .iter()
            .any(|errno| *errno as i32 == n)
    })
}

/// Serves `/metrics` and `/healthz` on `listener` with the default [`Limits`]; see [`serve_all`].
pub async fn serve(
    listener: TcpListener,
    state: watch::Receiver<Snapshot>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    serve_all(
        vec![listener],
        Limits::default(),
        state,
        shutdown,
        Vec::new(),
    )
    .await
}

/// The open connections, oldest first, and the tasks serving them.
struct Connections {
    tasks: JoinSet<()>,
    open: VecDeque<AbortHandle>,
    max: usize,
    closed_for_room: u64,
    last_warning: Option<Instant>,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            tasks: JoinSet::new(),
            open: VecDeque::new(),
            max: max.max(1),
            closed_for_room: 0,
            last_warning: None,
        }
    }

    /// Makes room for one more connection: forgets finished ones, then closes the oldest while
    /// the cap is reached.
    fn make_room(&mut self) {
        while self.tasks.try_join_next().is_some() {}
        self.open.retain(|h| !h.is_finished());
        while self.open.len() >= self.max {
            if let Some(oldest) = self.open.pop_front() {
                oldest.abort();
                self.closed_for_room += 1;
            }
        }
        let due = self
            .last_warning
            .is_none_or(|t| t.elapsed() >= EVICTION_WARN_INTERVAL);
        if self.closed_for_room > 0 && due {
            warn!(
                max = self.max,
                closed = self.closed_for_room,
                "too many HTTP connections; closed the oldest"
            );
            self.closed_for_room = 0;
            self.last_warning = Some(Instant::now());
        }
    }
}

/// Accepts on whichever listener has a connection first.
async fn accept_any(listeners: &[TcpListener]) -> std::io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let Poll::Ready(r) = l.poll_accept(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// Serves `/metrics` and `/healthz` on every listener until `shutdown` turns true (or its sender is
/// dropped), then lets open connections finish for a short grace period.
///
/// With `report_logs`, `GET /report` serves reports over them ([`report`]); without, it is not
/// found.
pub async fn serve_all(
    listeners: Vec<TcpListener>,
    limits: Limits,
    state: watch::Receiver<Snapshot>,
    mut shutdown: watch::Receiver<bool>,
    report_logs: Vec<PathBuf>,
) -> Result<(), Error> {
    let report_logs = Arc::new(report_logs);
    let mut connections = Connections::new(limits.max_connections);
    let result = loop {
        let accepted = tokio::select! {
            _ = stopped(&mut shutdown) => break Ok(()),
            accepted = accept_any(&listeners) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if listener_is_broken(&e) => break Err(Error::Accept { source: e }),
            Err(e) => {
                warn!(error = %e, "cannot accept an HTTP connection; retrying");
                tokio::select! {
                    _ = stopped(&mut shutdown) => break Ok(()),
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        connections.make_room();
        let state = state.clone();
        let logs = report_logs.clone();
        let mut stop = shutdown.clone();
        let handle = connections.tasks.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let reporting = req.uri().path() == REPORT_PATH && !logs.is_empty();
                let response =
                    (!reporting).then(|| respond(req.method(), req.uri().path(), &state.borrow()));
                let (method, query, logs) = (
                    req.method().clone(),
                    req.uri().query().unwrap_or_default().to_string(),
                    logs.clone(),
                );
                async move {
                    Ok::<_, Infallible>(match response {
                        Some(r) => r,
                        None => report(&method, query, logs).await,
                    })
                }
            });
            let mut conn = pin!(http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service));
            let done = tokio::select! {
                done = conn.as_mut() => done,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
        });
        connections.open.push_back(handle);
    };
    drop(listeners);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!("HTTP connections did not finish in time; closing them");
        connections.tasks.shutdown().await;
    }
    result
}

/// Resolves once shutdown is asked for or its sender is gone (holding no borrow of the value,
/// so the futures stay `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Accept errors that say the listening socket itself is unusable, as opposed to a connection
/// that went away or a transient shortage of descriptors or memory.
fn listener_is_broken(e: &std::io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| {
        [
            Errno::EBADF,
            Errno::ENOTSOCK,
            Errno::EINVAL,
            Errno::EOPNOTSUPP,
        ]
        .iter()
        .any(|errno| *errno as i32 == n)
    })
}

/// `GET /report?since=..&network=..&pod=NS/NAME&format=table|json|csv` (JSON by default): the
/// audit report, made on a blocking thread, one at a time (429 while another runs); 400 on a bad
/// query.
async fn report(method: &Method, query: String, logs: Arc<Vec<PathBuf>>) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let made =
        tokio::task::spawn_blocking(move || crate::audit::report_for_query(&query, &logs)).await;
    match made {
        Ok(Ok((body, format))) => {
            let mut r = text(StatusCode::OK, body);
            let kind = match format {
                vfaudit::Format::Json => "application/json",
                vfaudit::Format::Csv => "text/csv; charset=utf-8",
                vfaudit::Format::Table => "text/plain; charset=utf-8",
            };
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            r
        }
        Ok(Err(crate::audit::ReportRefusal::BadQuery(why))) => text(
            StatusCode::BAD_REQUEST,
            format!("{}\n", why.replace(['\r', '\n'], " ")),
        ),
        Ok(Err(crate::audit::ReportRefusal::Busy)) => text(
            StatusCode::TOO_MANY_REQUESTS,
            "another report is being made; try again\n".into(),
        ),
        Err(e) => {
            warn!(error = %e, "the report task failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "report failed\n".into())
        }
    }
}

/// The response to one request. `HEAD` is answered like `GET` (hyper drops the body).
pub fn respond(method: &Method, path: &str, s: &Snapshot) -> Response<Full<Bytes>> {
    if path != METRICS_PATH && path != HEALTHZ_PATH && path != LIVEZ_PATH {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == METRICS_PATH {
        let mut r = Response::new(Full::new(Bytes::from(metrics::render(s))));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        return r;
    }
    let reason = match path {
        LIVEZ_PATH if s.ready => None,
        LIVEZ_PATH => Some("not live yet: the first reconcile has not completed".to_string()),
        _ => not_ready_reason(s),
    };
    match reason {
        None => text(StatusCode::OK, "ok\n".into()),
        Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// Why `/healthz` fails, on one line; `None` when the agent is ready: the first reconcile has
/// completed and every pool's device-plugin server is serving.
pub fn not_ready_reason(s: &Snapshot) -> Option<String> {
    let reason = if s.ready {
        let down: Vec<String> = s
            .conditions
            .iter()
            .filter(|c| c.reason == POOL_SERVER_DOWN)
            .map(|c| format!("{}: {}: {}", c.object, c.reason, c.message))
            .collect();
        if down.is_empty() {
            return None;
        }
        format!("not ready: {}", down.join("; "))
    } else {
        let mut reason = String::from("not ready: the first reconcile has not completed");
        if let Some(c) = s.conditions.first() {
            reason.push_str(&format!("; {}: {}: {}", c.object, c.reason, c.message));
        }
        reason
    };
    // One line whatever the condition's text holds.
    Some(reason.replace(['\r', '\n'], " "))
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::state::Condition;

    async fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn routes_and_methods() {
        let ready = Snapshot {
            ready: true,
            ..Snapshot::default()
        };
        let r = respond(&Method::GET, HEALTHZ_PATH, &ready);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, "ok\n");
        let r = respond(&Method::GET, METRICS_PATH, &ready);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert!(body(r).await.contains("vfgenie_ready 1\n"));
        assert_eq!(
            respond(&Method::HEAD, METRICS_PATH, &ready).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::GET, "/", &ready).status(),
            StatusCode::NOT_FOUND
        );
        let r = respond(&Method::POST, METRICS_PATH, &ready);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn by_default_only_the_nodes_loopback_is_served() {
        let addrs: Vec<SocketAddr> = DEFAULT_ADDRS
            .split(',')
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(addrs.iter().any(SocketAddr::is_ipv4));
        assert!(addrs.iter().any(SocketAddr::is_ipv6));
        assert!(addrs.iter().all(|a| a.port() == DEFAULT_PORT));
    }

    #[tokio::test]
    async fn bind_takes_a_list_and_refuses_nothing_to_bind() {
        let ls = bind("127.0.0.1:0, [::1]:0").await.unwrap();
        assert!(!ls.is_empty());
        assert!(ls
            .iter()
            .all(|l| l.local_addr().unwrap().ip().is_loopback()));
        // The old single-address form still works.
        assert_eq!(bind("127.0.0.1:0").await.unwrap().len(), 1);
        assert!(matches!(bind(" , ").await, Err(Error::NoAddress { .. })));
        let taken = ls[0].local_addr().unwrap().to_string();
        assert!(matches!(bind(&taken).await, Err(Error::Bind { .. })));
    }

    /// Waits for the server to close `s` (EOF or reset).
    async fn closed_by_server(s: &mut TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn healthz(addr: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn the_oldest_connection_makes_room_and_idle_ones_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_state, state_rx) = watch::channel(Snapshot {
            ready: true,
            ..Snapshot::default()
        });
        let (stop, stop_rx) = watch::channel(false);
        let limits = Limits {
            max_connections: 2,
            header_timeout: Duration::from_secs(60),
        };
        let server = tokio::spawn(serve_all(
            vec![listener],
            limits,
            state_rx,
            stop_rx,
            Vec::new(),
        ));
        let mut first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        // A third connection (this probe) closes the oldest idle one and is answered.
        assert!(healthz(addr).await.starts_with("HTTP/1.1 200"));
        assert!(closed_by_server(&mut first).await);
        stop.send(true).unwrap();
        server.await.unwrap().unwrap();

        // A connection that sends nothing is dropped after the header timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_state, state_rx) = watch::channel(Snapshot::default());
        let (stop, stop_rx) = watch::channel(false);
        let limits = Limits {
            max_connections: 8,
            header_timeout: Duration::from_millis(200),
        };
        let server = tokio::spawn(serve_all(
            vec![listener],
            limits,
            state_rx,
            stop_rx,
            Vec::new(),
        ));
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut idle).await);
        stop.send(true).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_pool_server_down_fails_healthz_naming_the_pool() {
        let s = Snapshot {
            ready: true,
            conditions: vec![
                Condition {
                    object: "0000:01:00.0".into(),
                    reason: "VfsInUse".into(),
                    message: "VFs are in use".into(),
                },
                Condition {
                    object: "example.com/net".into(),
                    reason: POOL_SERVER_DOWN.into(),
                    message: "the pool's device-plugin server is down: boom".into(),
                },
            ],
            ..Snapshot::default()
        };
        let r = respond(&Method::GET, HEALTHZ_PATH, &s);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(r).await,
            "not ready: example.com/net: PoolServerDown: \
             the pool's device-plugin server is down: boom\n"
        );
        // Liveness holds: the supervisor restarts the pool, the agent need not restart.
        let r = respond(&Method::GET, LIVEZ_PATH, &s);
        assert_eq!(r.status(), StatusCode::OK);
        let starting = Snapshot::default();
        let r = respond(&Method::GET, LIVEZ_PATH, &starting);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn not_ready_says_why_on_one_line() {
        let s = Snapshot {
            conditions: vec![Condition {
                object: "config".into(),
                reason: "ConfigInvalid".into(),
                message: "resourceList[0].resourceName: must\nnot be empty".into(),
            }],
            ..Snapshot::default()
        };
        let r = respond(&Method::GET, HEALTHZ_PATH, &s);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = body(r).await;
        assert_eq!(
            text,
            "not ready: the first reconcile has not completed; config: ConfigInvalid: \
             resourceList[0].resourceName: must not be empty\n"
        );
        assert_eq!(text.lines().count(), 1);
    }
}
