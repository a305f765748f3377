//! Accepting connections (plain or TLS), stopping and resuming as an API server restarting does,
//! and handing each request to the routes or to a watch stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::routes::{self, Answer, Body, Call};
use super::{lock, State};

/// What the test side asks of the serving loop.
pub(super) enum Control {
    /// Close the listener and every open connection (and with them every watch stream); the
    /// answer comes once they are all gone (or after 5 s).
    Stop(std::sync::mpsc::Sender<()>),
    /// Listen again on the same address.
    Resume(std::sync::mpsc::Sender<std::io::Result<()>>),
    Shutdown,
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Counts a connection task while it lives.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::SeqCst);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) async fn serve(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    mut control: mpsc::UnboundedReceiver<Control>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut listener = match TcpListener::from_std(listener) {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("apiserver stand-in: {e}");
            return;
        }
    };
    // Moved on by every stop: each connection ends when it does.
    let (epoch, _) = watch::channel(0u64);
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            cmd = control.recv() => match cmd {
                None | Some(Control::Shutdown) => return,
                Some(Control::Stop(done)) => {
                    listener = None;
                    epoch.send_modify(|e| *e += 1);
                    let t0 = Instant::now();
                    let open = || {
                        live.load(Ordering::SeqCst) > 0 || lock(&state).open_watches > 0
                    };
                    while open() && t0.elapsed() < Duration::from_secs(5) {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let _ = done.send(());
                }
                Some(Control::Resume(done)) => {
                    let result = match listener {
                        Some(_) => Ok(()),
                        None => TcpListener::bind(addr).await.map(|l| listener = Some(l)),
                    };
                    let _ = done.send(result);
                }
            },
            accepted = accept(listener.as_ref()) => {
                let Ok(stream) = accepted else { continue };
                // As a real API server does: small writes go out at once, none waits for an ACK.
                let _ = stream.set_nodelay(true);
                let available = {
                    let mut st = lock(&state);
                    st.connections += 1;
                    st.available
                };
                if !available {
                    drop(stream);
                    continue;
                }
                let st = state.clone();
                let acceptor = acceptor.clone();
                let mut stopped = epoch.subscribe();
                let live = Live::new(&live);
                tokio::spawn(async move {
                    let _live = live;
                    let service = hyper::service::service_fn(move |req| handle(st.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    let conn = async {
                        match acceptor {
                            None => {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                            Some(acceptor) => {
                                // A failed handshake (an untrusted client) just ends the connection.
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    let _ = http.serve_connection(TokioIo::new(tls), service).await;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        }
    }
}

/// An answer not given: the connection is dropped ([`super::ApiServer::inject_resets`]).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the test")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let auth = header(hyper::header::AUTHORIZATION);
    let content_type = header(hyper::header::CONTENT_TYPE)
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    let (delay, keep_alive) = {
        let mut st = lock(&state);
        st.requests.push(format!("{method} {path}"));
        let uri = match &query {
            Some(q) => format!("{method} {path}?{q}"),
            None => format!("{method} {path}"),
        };
        st.request_uris.push(uri);
        (st.delay, st.keep_alive)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let call = Call {
        method: &method,
        path: &path,
        query: query.as_deref(),
        auth: auth.as_deref(),
        content_type: content_type.as_deref(),
        body: &body,
    };
    let answer = routes::answer(&mut lock(&state), &call);
    {
        let mut st = lock(&state);
        if st.resets > 0 {
            st.resets -= 1;
            return Err(Dropped);
        }
    }
    let mut resp = match answer {
        Answer::Done(resp) => resp,
        Answer::Watch(spec) => {
            let body = super::watch::start(state.clone(), spec);
            let mut resp = Response::new(body.boxed());
            *resp.status_mut() = StatusCode::OK;
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            resp
        }
    };
    if !keep_alive {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}
