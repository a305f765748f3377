//! WATCH: a chunked stream of newline-delimited `{"type": ..., "object": ...}` events. It first
//! replays the log after the asked resourceVersion (or, asked for none or "0", the current
//! objects as ADDED), then follows new revisions live; bookmarks when allowed, an ERROR event with
//! a 410 Expired Status for a revision before the compaction mark, and the end of the stream at
//! `timeoutSeconds`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::query::{Query, Selectors};
use super::store::{Event, EventType, Resource, StoreError};
use super::{lock, State};

/// What one watch request asked for.
pub(super) struct WatchSpec {
    pub res: &'static Resource,
    pub version: String,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    pub query: Query,
}

/// A response body fed by a channel, sent chunked.
pub(super) struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn frame(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The Status of a 410 (or any other failure) as a watch ERROR event carries it.
pub(super) fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
}

impl WatchSpec {
    fn in_scope(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// What this watch sees of one change: selectors turn a modification moving an object in or
    /// out of them into an addition or a deletion, as the API server does.
    fn translate(&self, e: &Event) -> Option<Bytes> {
        if e.key.0 != self.res.plural || !self.in_scope(&e.key.1) {
            return None;
        }
        let now = self.selectors.matches(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.selectors.matches(p));
        let kind = match (e.kind, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            (EventType::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some(frame(kind, &self.res.present(&self.version, &e.object)))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut object = json!({
            "kind": self.res.kind,
            "apiVersion": self.res.api_version(&self.version),
            "metadata": {"resourceVersion": rv.to_string()}
        });
        if initial_end {
            object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        frame("BOOKMARK", &object)
    }
}

/// Starts the stream of one watch; it ends when the client goes away, at its timeout, after an
/// ERROR event, or when the server stops serving (which drops the body).
pub(super) fn start(state: Arc<Mutex<State>>, spec: WatchSpec) -> ChannelBody {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        lock(&state).open_watches += 1;
        run(&state, &spec, &tx).await;
        lock(&state).open_watches -= 1;
    });
    ChannelBody(rx)
}

/// The first frames: the current objects (asked for no revision, "0", or initial events) or
/// nothing; and the revision the stream continues after. `Err`: the revision is compacted.
fn begin(st: &State, spec: &WatchSpec) -> Result<(u64, Vec<Bytes>), StoreError> {
    let asked = spec.query.resource_version.as_deref().unwrap_or("");
    if asked.is_empty() || asked == "0" || spec.query.send_initial_events {
        let now = st.store.revision();
        let objects = st
            .store
            .snapshot(spec.res.plural, spec.namespace.as_deref(), now)?;
        let frames = objects
            .values()
            .filter(|o| spec.selectors.matches(o))
            .map(|o| frame("ADDED", &spec.res.present(&spec.version, o)))
            .collect();
        return Ok((now, frames));
    }
    let rv = asked.parse::<u64>().unwrap_or(0);
    st.store.check(rv)?;
    Ok((rv, Vec::new()))
}

async fn run(state: &Mutex<State>, spec: &WatchSpec, tx: &mpsc::Sender<Bytes>) {
    let (mut changes, interval, first) = {
        let st = lock(state);
        (st.store.subscribe(), st.bookmark_interval, begin(&st, spec))
    };
    let timeout = async {
        match spec.query.timeout_seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timeout);
    let (mut cursor, frames) = match first {
        Ok(f) => f,
        Err(e) => {
            let status = status_object(410, "Expired", &e.to_string());
            let _ = tx.send(frame("ERROR", &status)).await;
            return;
        }
    };
    for f in frames {
        if tx.send(f).await.is_err() {
            return;
        }
    }
    if spec.query.send_initial_events && tx.send(spec.bookmark(cursor, true)).await.is_err() {
        return;
    }
    let mut next_bookmark = Instant::now() + interval;
    loop {
        changes.mark_unchanged();
        let frames: Vec<Bytes> = {
            let st = lock(state);
            let frames = st
                .store
                .after(cursor)
                .iter()
                .filter_map(|e| spec.translate(e))
                .collect();
            cursor = st.store.revision();
            frames
        };
        for f in frames {
            if tx.send(f).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next_bookmark), if spec.query.bookmarks => {
                if tx.send(spec.bookmark(cursor, false)).await.is_err() {
                    return;
                }
                lock(state).bookmarks_sent += 1;
                next_bookmark = Instant::now() + interval;
            }
            _ = &mut timeout => return,
            _ = tx.closed() => return,
        }
    }
}
