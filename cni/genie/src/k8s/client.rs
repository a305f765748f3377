//! The API client: HTTP/1.1 with the connection of one request kept for the next (a CNI call
//! makes a few, milliseconds apart), a timeout on every attempt, a bounded number of retries with
//! short backoff on connection errors, timeouts, 429 and 5xx (never on other 4xx), and the bearer
//! token read afresh for every request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use super::error::Error;
use super::kubeconfig::{Auth, ClusterConfig, Secret};
use super::objects::{
    is_object_name, Kind, LogicalNetwork, NetworkAttachmentDefinition, ObjectRef, Pod,
};
use super::tls;

/// Timeouts and retry bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// For one attempt: connect, TLS, request and the whole answer.
    pub timeout: Duration,
    /// Further attempts after a retryable failure.
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
    /// Further read-modify-write rounds after a 409 Conflict.
    pub conflict_retries: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_millis(100),
            conflict_retries: 5,
        }
    }
}

impl ClientOptions {
    /// An upper bound on the time one call can take (every attempt and every backoff), not counting
    /// conflict rounds.
    pub fn worst_case(&self) -> Duration {
        let mut total = self.timeout * (self.retries + 1);
        let mut wait = self.backoff;
        for _ in 0..self.retries {
            total += wait;
            wait *= 2;
        }
        total
    }
}

/// The async client. Use it from async code; [`Client`](super::Client) wraps it for blocking callers.
#[derive(Clone)]
pub struct AsyncClient {
    cluster: Arc<ClusterConfig>,
    options: ClientOptions,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    host: String,
    port: u16,
    authority: String,
    /// The connection of the last answered request, kept for the next one (a CNI call makes a
    /// few, milliseconds apart: one TCP and TLS handshake instead of one each).
    idle: Arc<Mutex<Option<Sender>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("server", &self.cluster.server.to_string())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

enum Attempt {
    Done(StatusCode, Bytes),
    Retry(String),
    /// The server's certificate was refused: retrying cannot help.
    Untrusted(String),
    /// The answer's body passed [`MAX_BODY`]: retrying cannot help.
    TooLarge,
}

/// The largest answer body read from the API server (a pod, a NAD, a LogicalNetwork: far less).
pub const MAX_BODY: usize = 16 << 20;

impl AsyncClient {
    pub fn new(cluster: ClusterConfig, options: ClientOptions) -> Result<Self, Error> {
        let server = &cluster.server;
        let https = server.scheme_str() == Some("https");
        let host = server.host().unwrap_or_default().to_string();
        let port = server.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = server
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.clone());
        let tls = if https {
            let config = tls::client_config(&cluster.tls)?;
            let name = tls::server_name(&cluster.tls, &host)?;
            Some((tokio_rustls::TlsConnector::from(config), name))
        } else {
            None
        };
        Ok(Self {
            cluster: Arc::new(cluster),
            options,
            tls,
            host,
            port,
            authority,
            idle: Arc::new(Mutex::new(None)),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub async fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, Error> {
        self.get(ObjectRef::new(Kind::Pod, namespace, name)).await
    }

    /// The pod, and the whole object as the API server sent it (to hand to
    /// [`Self::set_pod_annotations_from`] later).
    pub async fn get_pod_object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Pod, serde_json::Value), Error> {
        let object = ObjectRef::new(Kind::Pod, namespace, name);
        check_names(&object)?;
        let raw = self
            .call(&object, Method::GET, &object.path(), None)
            .await?;
        let whole: serde_json::Value = decode(&object, &raw)?;
        let pod = serde_json::from_value(whole.clone()).map_err(|e| Error::Decode {
            object,
            reason: e.to_string(),
        })?;
        Ok((pod, whole))
    }

    pub async fn get_network_attachment_definition(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<NetworkAttachmentDefinition, Error> {
        self.get(ObjectRef::new(
            Kind::NetworkAttachmentDefinition,
            namespace,
            name,
        ))
        .await
    }

    pub async fn get_logical_network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<LogicalNetwork, Error> {
        self.get(ObjectRef::new(Kind::LogicalNetwork, namespace, name))
            .await
    }

    /// Sets (`Some`) or removes (`None`) pod annotations through the status subresource
    /// (`PUT .../pods/{name}/status`), as a read-modify-write guarded by resourceVersion: on 409
    /// Conflict it reads the pod again and re-applies, at most `conflict_retries` more times.
    /// Returns the pod as written.
    pub async fn set_pod_annotations(
        &self,
        namespace: &str,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<Pod, Error> {
        self.set_pod_annotations_from(namespace, name, None, changes)
            .await
    }

    /// [`Self::set_pod_annotations`], with the first round starting from `current`, a pod object
    /// read earlier (from [`Self::get_pod_object`]) instead of reading it again. Its
    /// resourceVersion still guards the write: if the pod changed since, the answer is 409 Conflict
    /// and the next round reads it afresh.
    pub async fn set_pod_annotations_from(
        &self,
        namespace: &str,
        name: &str,
        mut current: Option<serde_json::Value>,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<Pod, Error> {
        let object = ObjectRef::new(Kind::Pod, namespace, name);
        check_names(&object)?;
        let status_path = format!("{}/status", object.path());
        let rounds = self.options.conflict_retries + 1;
        for _ in 0..rounds {
            let mut pod = match current.take() {
                Some(pod) => pod,
                None => {
                    let raw = self
                        .call(&object, Method::GET, &object.path(), None)
                        .await?;
                    decode(&object, &raw)?
                }
            };
            apply_annotations(&object, &mut pod, changes)?;
            let body = serde_json::to_vec(&pod).map_err(|e| Error::Decode {
                object: object.clone(),
                reason: e.to_string(),
            })?;
            match self
                .call(&object, Method::PUT, &status_path, Some(Bytes::from(body)))
                .await
            {
                Ok(raw) => return decode(&object, &raw),
                Err(Error::Conflict { .. }) => {
                    tracing::debug!(pod = %object, "conflict on the status write; reading again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            object,
            attempts: rounds,
        })
    }

    async fn get<T: DeserializeOwned>(&self, object: ObjectRef) -> Result<T, Error> {
        check_names(&object)?;
        let raw = self
            .call(&object, Method::GET, &object.path(), None)
            .await?;
        decode(&object, &raw)
    }

    /// One call with its retries. A 409 comes back as [`Error::Conflict`] with `attempts: 1`.
    async fn call(
        &self,
        object: &ObjectRef,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, Error> {
        let attempts = self.options.retries + 1;
        let mut wait = self.options.backoff;
        let mut reason = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            let token = self.token()?;
            let once = self.send_once(method.clone(), path, body.clone(), token.as_ref());
            let outcome = match tokio::time::timeout(self.options.timeout, once).await {
                Err(_) => Attempt::Retry(format!("no answer within {:?}", self.options.timeout)),
                Ok(outcome) => outcome,
            };
            let (status, raw) = match outcome {
                Attempt::Untrusted(reason) => {
                    return Err(Error::Untrusted {
                        object: object.clone(),
                        server: self.authority.clone(),
                        reason,
                    })
                }
                Attempt::Retry(why) => {
                    tracing::debug!(object = %object, attempt, reason = %why, "API request failed");
                    reason = why;
                    continue;
                }
                Attempt::TooLarge => {
                    return Err(Error::TooLarge {
                        object: object.clone(),
                        limit: MAX_BODY,
                    })
                }
                Attempt::Done(status, raw) => (status, raw),
            };
            if status.is_success() {
                return Ok(raw);
            }
            let message = status_message(&raw);
            let object = object.clone();
            match status.as_u16() {
                404 => return Err(Error::NotFound { object }),
                401 => return Err(Error::Unauthorized { object }),
                403 => return Err(Error::Forbidden { object, message }),
                409 => {
                    return Err(Error::Conflict {
                        object,
                        attempts: 1,
                    })
                }
                429 | 500..=599 => {
                    tracing::debug!(object = %object, attempt, status = status.as_u16(), "API server busy or failing");
                    if attempt + 1 == attempts {
                        return Err(Error::Status {
                            object,
                            status: status.as_u16(),
                            message,
                        });
                    }
                    reason = format!("status {}", status.as_u16());
                }
                other => {
                    return Err(Error::Status {
                        object,
                        status: other,
                        message,
                    })
                }
            }
        }
        Err(Error::Unreachable {
            object: object.clone(),
            server: self.authority.clone(),
            attempts,
            reason,
        })
    }

    /// A request on a new connection over `io`.
    async fn exchange<IO>(&self, io: IO, req: Request<Full<Bytes>>) -> Attempt
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = match hyper::client::conn::http1::handshake(io).await {
            Ok(pair) => pair,
            Err(e) => return Attempt::Retry(format!("HTTP handshake failed: {e}")),
        };
        // The connection is driven by its own task; it ends when its sender is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.request_on(sender, req).await
    }

    /// A request on `sender`'s connection, which is kept for the next request once the whole
    /// answer is in.
    async fn request_on(&self, mut sender: Sender, req: Request<Full<Bytes>>) -> Attempt {
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("the request failed: {e}")),
        };
        let status = resp.status();
        match http_body_util::Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
        {
            Ok(body) => {
                if let Ok(mut idle) = self.idle.lock() {
                    *idle = Some(sender);
                }
                Attempt::Done(status, body.to_bytes())
            }
            // The connection is dropped with the rest of the answer unread.
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Attempt::TooLarge,
            Err(e) => Attempt::Retry(format!("the answer was cut short: {e}")),
        }
    }

    fn token(&self) -> Result<Option<Secret>, Error> {
        match &self.cluster.auth {
            Auth::None => Ok(None),
            Auth::Token(t) => Ok(Some(t.clone())),
            Auth::TokenFile(path) => {
                crate::bounded::read_to_string(path, crate::bounded::CONFIG_MAX)
                    .map(|t| Some(Secret::new(t.trim())))
                    .map_err(|source| Error::Token {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        token: Option<&Secret>,
    ) -> Attempt {
        let build = || {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, &self.authority)
                .header(header::ACCEPT, "application/json")
                .header(header::USER_AGENT, "vfgenie-cni");
            if body.is_some() {
                req = req.header(header::CONTENT_TYPE, "application/json");
            }
            if let Some(token) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {}", token.expose()));
            }
            req.body(Full::new(body.clone().unwrap_or_default()))
        };
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.take());
        if let Some(mut sender) = kept {
            // A connection the server has closed since is not ready: a new one below.
            if sender.ready().await.is_ok() {
                let req = match build() {
                    Ok(r) => r,
                    Err(e) => return Attempt::Retry(format!("cannot build the request: {e}")),
                };
                match self.request_on(sender, req).await {
                    Attempt::Retry(why) => {
                        tracing::debug!(reason = %why, "the kept API connection failed; connecting again");
                    }
                    done => return done,
                }
            }
        }
        let req = match build() {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("cannot build the request: {e}")),
        };
        let tcp = match TcpStream::connect((
            self.host.trim_start_matches('[').trim_end_matches(']'),
            self.port,
        ))
        .await
        {
            Ok(s) => s,
            Err(e) => return Attempt::Retry(format!("cannot connect: {e}")),
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => self.exchange(TokioIo::new(tcp), req).await,
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(stream) => self.exchange(TokioIo::new(stream), req).await,
                Err(e) => {
                    let refused = e
                        .get_ref()
                        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                    if refused {
                        Attempt::Untrusted(format!("TLS handshake failed: {e}"))
                    } else {
                        Attempt::Retry(format!("TLS handshake failed: {e}"))
                    }
                }
            },
        }
    }
}

fn check_names(object: &ObjectRef) -> Result<(), Error> {
    if !is_object_name(&object.namespace) {
        return Err(Error::InvalidName {
            what: "namespace",
            name: object.namespace.clone(),
        });
    }
    if !is_object_name(&object.name) {
        return Err(Error::InvalidName {
            what: "object name",
            name: object.name.clone(),
        });
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(object: &ObjectRef, raw: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(raw).map_err(|e| Error::Decode {
        object: object.clone(),
        reason: e.to_string(),
    })
}

/// The `message` of a Kubernetes Status answer, or a short generic text.
fn status_message(raw: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "no Status message".to_string())
}

fn apply_annotations(
    object: &ObjectRef,
    pod: &mut serde_json::Value,
    changes: &BTreeMap<String, Option<String>>,
) -> Result<(), Error> {
    let bad = |reason: &str| Error::Decode {
        object: object.clone(),
        reason: reason.to_string(),
    };
    let meta = pod
        .as_object_mut()
        .ok_or_else(|| bad("the pod is not a JSON object"))?
        .entry("metadata")
        .or_insert_with(|| serde_json::json!({}));
    let meta = meta
        .as_object_mut()
        .ok_or_else(|| bad("metadata is not a JSON object"))?;
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    if annotations.is_null() {
        *annotations = serde_json::json!({});
    }
    let annotations = annotations
        .as_object_mut()
        .ok_or_else(|| bad("metadata.annotations is not a JSON object"))?;
    for (k, v) in changes {
        match v {
            Some(v) => {
                annotations.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
            None => {
                annotations.remove(k);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_set_and_removed_in_place() {
        let object = ObjectRef::new(Kind::Pod, "ns", "p");
        let mut pod = serde_json::json!({"metadata":{"name":"p","annotations":{"a":"1","b":"2"}},"spec":{"x":1}});
        let changes = BTreeMap::from([
            ("a".to_string(), None),
            ("c".to_string(), Some("3".to_string())),
        ]);
        apply_annotations(&object, &mut pod, &changes).unwrap();
        assert_eq!(
            pod,
            serde_json::json!({"metadata":{"name":"p","annotations":{"b":"2","c":"3"}},"spec":{"x":1}})
        );
        let mut bare = serde_json::json!({"metadata":{"annotations":null}});
        apply_annotations(&object, &mut bare, &changes).unwrap();
        assert_eq!(
            bare["metadata"]["annotations"],
            serde_json::json!({"c":"3"})
        );
    }

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        for (ns, name) in [("..", "p"), ("ns", "../x"), ("ns", "a/b"), ("ns", "")] {
            assert!(matches!(
                check_names(&ObjectRef::new(Kind::Pod, ns, name)),
                Err(Error::InvalidName { .. })
            ));
        }
    }

    #[test]
    fn worst_case_adds_timeouts_and_backoff() {
        let o = ClientOptions {
            timeout: Duration::from_millis(100),
            retries: 2,
            backoff: Duration::from_millis(10),
            conflict_retries: 0,
        };
        assert_eq!(o.worst_case(), Duration::from_millis(330));
    }
}
