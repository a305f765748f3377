//! The HTTPS server: `POST /validate` (AdmissionReview v1), `/healthz`, `/readyz`, `/metrics`.
//!
//! Bodies are read bounded ([`MAX_BODY`], 413 beyond it, never buffered further), within a time
//! bound; invalid JSON or a body that is not an AdmissionReview v1 is a 400 with the reason;
//! another method is a 405. JSON nesting is bounded by serde_json's recursion limit (128).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::lookup::{Lookup, Settings};
use crate::metrics::{kind_label, operation_label, Metrics};
use crate::review::{self, AdmissionReviewOut};
use crate::tls::{CertStore, TlsError};
use crate::validate::{self, Handled};

/// The largest AdmissionReview body read (the API server's objects are at most ~1.5 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Where the API server posts AdmissionReviews.
pub const VALIDATE_PATH: &str = "/validate";
/// 200 while the server serves (liveness).
pub const HEALTHZ_PATH: &str = "/healthz";
/// 200 once the caches are synced (readiness).
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";
/// The address `serve` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Where `serve` reads `tls.crt` and `tls.key` unless told otherwise.
pub const DEFAULT_TLS_DIR: &str = "/etc/vfgenie/tls";
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
/// Bounds on a TLS handshake, on reading the request headers, and on reading a body.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the serving certificate does not load")]
    Tls(#[from] TlsError),
    #[error("cannot accept connections")]
    Accept(#[source] std::io::Error),
}

/// The admission logic with its caches, settings and metrics; independent of HTTP.
pub struct Webhook<L> {
    lookup: Arc<L>,
    settings: Settings,
    metrics: Arc<Metrics>,
    serving: AtomicBool,
}

impl<L: Lookup> Webhook<L> {
    pub fn new(lookup: Arc<L>, settings: Settings) -> Self {
        Self {
            lookup,
            settings,
            metrics: Arc::new(Metrics::default()),
            serving: AtomicBool::new(false),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, for the other parts of the controller that count into them (the status loop).
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Answers one posted body: the AdmissionReview response, or why the body is not one.
    pub fn answer(&self, body: &[u8]) -> Result<AdmissionReviewOut, review::BadReview> {
        let start = Instant::now();
        let req = review::parse(body)?;
        let kind = Handled::of(&req.kind);
        let outcome = validate::review(&req, self.lookup.as_ref(), &self.settings);
        let (out, denied) = match outcome {
            Ok(warnings) => (AdmissionReviewOut::allow(&req.uid, warnings), None),
            Err(d) => {
                tracing::info!(
                    uid = %req.uid,
                    kind = %req.kind,
                    object = %req.display_name(),
                    reason = d.reason.label(),
                    "denied"
                );
                (
                    AdmissionReviewOut::deny(&req.uid, d.message),
                    Some(d.reason),
                )
            }
        };
        self.metrics.review(
            kind_label(kind),
            operation_label(&req.operation),
            denied,
            start.elapsed(),
        );
        Ok(out)
    }
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The directory of `tls.crt` and `tls.key`.
    pub tls_dir: PathBuf,
    /// How often the certificate files are compared with the pair in service.
    pub reload_every: Duration,
}

/// A bound server, not yet accepting.
pub struct Server<L> {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    certs: Arc<CertStore>,
    reload_every: Duration,
    webhook: Arc<Webhook<L>>,
}

impl<L: Lookup> Server<L> {
    /// Loads the certificate and binds the listener.
    pub async fn bind(config: &ServerConfig, webhook: Arc<Webhook<L>>) -> Result<Self, ServeError> {
        let certs = Arc::new(CertStore::load(&config.tls_dir)?);
        let acceptor = TlsAcceptor::from(Arc::new(certs.server_config()?));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.listen,
                    source,
                })?;
        Ok(Self {
            listener,
            acceptor,
            certs,
            reload_every: config.reload_every,
            webhook,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(ServeError::Accept)
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let reload = tokio::spawn(Arc::clone(&self.certs).watch(self.reload_every));
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        self.webhook.serving.store(true, Ordering::SeqCst);
        tokio::pin!(shutdown);
        let result = loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                break Ok(());
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break Ok(()),
                a = self.listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                // Per-connection failures (the peer reset before accept, fd exhaustion) must not
                // stop the server; back off briefly.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = self.acceptor.clone();
            let webhook = Arc::clone(&self.webhook);
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| {
                    let webhook = Arc::clone(&webhook);
                    async move { Ok::<_, Infallible>(route(req, &webhook).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        };
        self.webhook.serving.store(false, Ordering::SeqCst);
        reload.abort();
        result
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}\n"));
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

async fn route<L: Lookup>(req: Request<Incoming>, webhook: &Webhook<L>) -> Response<Full<Bytes>> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match req.uri().path() {
        VALIDATE_PATH if *req.method() == Method::POST => validate(req, webhook).await,
        VALIDATE_PATH => method_not_allowed("POST"),
        HEALTHZ_PATH | READYZ_PATH | METRICS_PATH if !get => method_not_allowed("GET"),
        HEALTHZ_PATH => match webhook.serving.load(Ordering::SeqCst) {
            true => text(StatusCode::OK, "ok\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "not serving\n"),
        },
        READYZ_PATH => match webhook.lookup.synced() {
            true => text(StatusCode::OK, "ok\n"),
            false => text(StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n"),
        },
        METRICS_PATH => {
            let mut r = text(StatusCode::OK, webhook.metrics.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn validate<L: Lookup>(
    req: Request<Incoming>,
    webhook: &Webhook<L>,
) -> Response<Full<Bytes>> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(e)) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}\n"),
            )
        }
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n",
            )
        }
    };
    match webhook.answer(&bytes) {
        Ok(out) => match serde_json::to_vec(&out) {
            Ok(json) => {
                let mut r = Response::new(Full::new(Bytes::from(json)));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the answer: {e}\n"),
            ),
        },
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn too_large() -> Response<Full<Bytes>> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {MAX_BODY} bytes\n"),
    )
}
