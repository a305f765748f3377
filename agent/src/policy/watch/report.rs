//! Reporting a policy problem where its author can see it: a log line naming the object
//! (`NetworkPolicy ns/name: genieNetworkpolicy: <problem>`), a counter, and a Warning Event on
//! the object (core v1 events). Events are rate-limited per object, so a flapping object does
//! not flood the API server; they are sent by one task from a small queue, so reporting never
//! waits on the API server (a report finding the queue full is counted and dropped).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The Event reason of a policy the agent cannot enforce as written.
pub const POLICY_INVALID: &str = "PolicyInvalid";
/// The component named in the Events.
pub const COMPONENT: &str = "vfgenie-agent";
/// The default shortest time between two Events on one object.
pub const DEFAULT_EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// The longest Event message (the API server refuses longer ones).
pub const MAX_MESSAGE: usize = 1024;
/// Objects whose last Event time is remembered; older entries are forgotten beyond this.
const MAX_REMEMBERED: usize = 4096;
const QUEUE: usize = 64;

/// The object a problem is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// `networking.k8s.io/v1`, `k8s.cni.cncf.io/v1beta1`, ...
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl Subject {
    pub fn new(
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.filter(|u| !u.is_empty()).map(str::to_string),
        }
    }
}

/// `Kind ns/name: what: problem`.
pub fn message(subject: &Subject, what: &str, problem: &str) -> String {
    format!(
        "{} {}/{}: {what}: {problem}",
        subject.kind, subject.namespace, subject.name
    )
}

/// Per object, the last time an Event was sent; a new one only after `interval`.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: HashMap<(String, String, String), Instant>,
}

impl RateLimit {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: HashMap::new(),
        }
    }

    /// Whether an Event on `subject` may go out at `now` (and if so, remembers it).
    pub fn allow(&mut self, subject: &Subject, now: Instant) -> bool {
        let key = (
            subject.kind.clone(),
            subject.namespace.clone(),
            subject.name.clone(),
        );
        if let Some(t) = self.last.get(&key) {
            if now.saturating_duration_since(*t) < self.interval {
                return false;
            }
        }
        if self.last.len() >= MAX_REMEMBERED {
            let interval = self.interval;
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < interval);
            if self.last.len() >= MAX_REMEMBERED {
                // Every remembered object reported within the interval: a storm; send nothing
                // more until it calms down.
                return false;
            }
        }
        self.last.insert(key, now);
        true
    }
}

struct Pending {
    subject: Subject,
    reason: String,
    message: String,
}

struct Inner {
    queue: mpsc::Sender<Pending>,
    limit: Mutex<RateLimit>,
    reported: AtomicU64,
    events_limited: AtomicU64,
    events_dropped: AtomicU64,
    events_failed: Arc<AtomicU64>,
}

/// Reports problems (see the module). Cheap to clone; callable from sync code.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

impl Reporter {
    /// A reporter posting Events with `client` as `COMPONENT` on `node`, at most one per object
    /// per `interval`; the returned task sends them (abort it to stop).
    pub fn start(client: Client, node: &str, interval: Duration) -> (Self, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let events_failed = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(send_events(
            client,
            node.to_string(),
            rx,
            Arc::clone(&events_failed),
        ));
        let reporter = Self {
            inner: Arc::new(Inner {
                queue,
                limit: Mutex::new(RateLimit::new(interval)),
                reported: AtomicU64::new(0),
                events_limited: AtomicU64::new(0),
                events_dropped: AtomicU64::new(0),
                events_failed,
            }),
        };
        (reporter, task)
    }

    /// Reports that `subject` cannot be enforced as written: `what` names the part (an
    /// annotation, `spec`, a rule), `problem` says what is wrong. Reason [`POLICY_INVALID`].
    pub fn report(&self, subject: &Subject, what: &str, problem: &str) {
        self.report_reason(subject, POLICY_INVALID, what, problem);
    }

    /// [`Reporter::report`] with another Event reason (e.g. for the compiler's problems).
    pub fn report_reason(&self, subject: &Subject, reason: &str, what: &str, problem: &str) {
        let message = message(subject, what, problem);
        self.inner.reported.fetch_add(1, Ordering::Relaxed);
        let allowed = self
            .inner
            .limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(subject, Instant::now());
        if !allowed {
            self.inner.events_limited.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason, "{message} (Event rate-limited)");
            return;
        }
        tracing::warn!(reason, "{message}");
        let pending = Pending {
            subject: subject.clone(),
            reason: reason.to_string(),
            message,
        };
        if self.inner.queue.try_send(pending).is_err() {
            self.inner.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Problems reported so far (every report, rate-limited or not).
    pub fn reported(&self) -> u64 {
        self.inner.reported.load(Ordering::Relaxed)
    }

    /// Events not sent: (rate-limited, queue full, refused by the API server).
    pub fn events_not_sent(&self) -> (u64, u64, u64) {
        (
            self.inner.events_limited.load(Ordering::Relaxed),
            self.inner.events_dropped.load(Ordering::Relaxed),
            self.inner.events_failed.load(Ordering::Relaxed),
        )
    }
}

/// The core v1 Event for a report.
pub fn event(subject: &Subject, reason: &str, message: &str, node: &str, now: Time) -> Event {
    let mut message = message.to_string();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", subject.name)),
            namespace: Some(subject.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(subject.api_version.clone()),
            kind: Some(subject.kind.clone()),
            namespace: Some(subject.namespace.clone()),
            name: Some(subject.name.clone()),
            uid: subject.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.to_string()),
        ..Event::default()
    }
}

async fn send_events(
    client: Client,
    node: String,
    mut rx: mpsc::Receiver<Pending>,
    failed: Arc<AtomicU64>,
) {
    while let Some(p) = rx.recv().await {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let ev = event(&p.subject, &p.reason, &p.message, &node, now);
        let api: Api<Event> = Api::namespaced(client.clone(), &p.subject.namespace);
        if let Err(e) = api.create(&PostParams::default(), &ev).await {
            failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                kind = %p.subject.kind,
                namespace = %p.subject.namespace,
                name = %p.subject.name,
                error = %e,
                "cannot post the Event"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(name: &str) -> Subject {
        Subject::new(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "a",
            name,
            Some("u1"),
        )
    }

    #[test]
    fn one_event_per_object_per_interval() {
        let mut l = RateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(l.allow(&subject("p"), t0));
        assert!(!l.allow(&subject("p"), t0 + Duration::from_secs(30)));
        assert!(l.allow(&subject("q"), t0 + Duration::from_secs(30)));
        assert!(l.allow(&subject("p"), t0 + Duration::from_secs(61)));
    }

    #[test]
    fn the_event_names_the_object_and_is_bounded() {
        let s = subject("p");
        let m = message(&s, "genieNetworkpolicy", "it is empty");
        assert_eq!(m, "NetworkPolicy a/p: genieNetworkpolicy: it is empty");
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let e = event(&s, POLICY_INVALID, &"é".repeat(MAX_MESSAGE), "node-1", now);
        assert!(e.message.as_ref().unwrap().len() <= MAX_MESSAGE);
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("NetworkPolicy"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some(POLICY_INVALID));
        assert_eq!(e.metadata.generate_name.as_deref(), Some("p."));
    }
}
