//! The agent's small HTTP/1.1 server: `GET /metrics` (Prometheus text) and `GET /healthz`
//! (200 once the first reconcile has completed, 503 with the reason before). Both read the latest
//! published [`Snapshot`]; nothing here changes the node.

use std::convert::Infallible;
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::errno::Errno;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics;
use crate::state::Snapshot;

/// Where the Prometheus text is served.
pub const METRICS_PATH: &str = "/metrics";
/// Where the health probe is served.
pub const HEALTHZ_PATH: &str = "/healthz";
/// The port the agent listens on unless told otherwise (the DaemonSet exposes it on the host).
pub const DEFAULT_PORT: u16 = 9808;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
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
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` turns true (or its sender is
/// dropped), then lets open connections finish for a short grace period.
pub async fn serve(
    listener: TcpListener,
    state: watch::Receiver<Snapshot>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut connections = JoinSet::new();
    let result = loop {
        let accepted = tokio::select! {
            _ = stopped(&mut shutdown) => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow with every scrape.
        while connections.try_join_next().is_some() {}
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
        let state = state.clone();
        let mut stop = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = respond(req.method(), req.uri().path(), &state.borrow());
                async move { Ok::<_, Infallible>(response) }
            });
            let mut conn = pin!(http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
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
    };
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!("HTTP connections did not finish in time; closing them");
        connections.shutdown().await;
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

/// The response to one request. `HEAD` is answered like `GET` (hyper drops the body).
pub fn respond(method: &Method, path: &str, s: &Snapshot) -> Response<Full<Bytes>> {
    if path != METRICS_PATH && path != HEALTHZ_PATH {
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
    match not_ready_reason(s) {
        None => text(StatusCode::OK, "ok\n".into()),
        Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// Why `/healthz` fails, on one line; `None` when the agent is ready.
pub fn not_ready_reason(s: &Snapshot) -> Option<String> {
    if s.ready {
        return None;
    }
    let mut reason = String::from("not ready: the first reconcile has not completed");
    if let Some(c) = s.conditions.first() {
        reason.push_str(&format!("; {}: {}: {}", c.object, c.reason, c.message));
    }
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
