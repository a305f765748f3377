//! The reflector stores and the tasks that keep them: one kube-runtime watcher per kind (default
//! backoff; relists after a failure or a 410), each waking the settle task on every change of its
//! store.
//!
//! MultiNetworkPolicy is another project's CRD, often not installed: while the API server answers
//! 404 for it, its store counts as synced (and empty), and its watcher keeps retrying, so the
//! policies show up once the CRD is installed.

use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use vfkube::objects::{LogicalNetwork, NetworkAttachmentDefinition};

use super::objects::{self, Cached, RawMultiPolicy};

pub(super) type MetaStore<K> = Store<PartialObjectMeta<K>>;

#[derive(Clone)]
pub(super) struct Stores {
    pub namespaces: MetaStore<Namespace>,
    pub nads: Store<Cached<NetworkAttachmentDefinition>>,
    pub lns: Store<Cached<LogicalNetwork>>,
    pub network_policies: MetaStore<NetworkPolicy>,
    pub multi_policies: Store<Cached<RawMultiPolicy>>,
    pub pods: MetaStore<Pod>,
    pub local_pods: MetaStore<Pod>,
    /// `true` while the API server says it does not serve MultiNetworkPolicies.
    multi_missing: watch::Receiver<bool>,
}

fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

/// Runs a reflector until aborted: wakes `dirty` on each change of its store; a watch error is
/// logged and the watcher (with its backoff) carries on. With `missing`, a 404 (the kind is not
/// served) is said there instead of logged as a failure, and a listing that works clears it.
fn keep<K, S>(
    what: &'static str,
    stream: S,
    dirty: Arc<Notify>,
    missing: Option<watch::Sender<bool>>,
) -> JoinHandle<()>
where
    K: Send + 'static,
    S: futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(event) = s.next().await {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => dirty.notify_one(),
                Ok(watcher::Event::InitDone) => {
                    if let Some(m) = &missing {
                        m.send_replace(false);
                    }
                    dirty.notify_one();
                }
                Ok(_) => {}
                Err(e) => match &missing {
                    Some(m) if not_served(&e) => {
                        if !m.send_replace(true) {
                            tracing::info!(
                                kind = what,
                                "the API server does not serve this kind; none until it does"
                            );
                        }
                    }
                    _ => tracing::warn!(watch = what, error = %e, "watch failed; retrying"),
                },
            }
        }
    })
}

struct Reflect<'a> {
    dirty: &'a Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Reflect<'_> {
    fn start<K>(
        &mut self,
        what: &'static str,
        api: Api<K>,
        config: watcher::Config,
        trim: impl FnMut(&mut K) + Send + 'static,
        missing: Option<watch::Sender<bool>>,
    ) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let writer: Writer<K> = Writer::default();
        let store = writer.as_reader();
        let stream =
            reflector::reflector(writer, watcher(api, config).modify(trim).default_backoff());
        self.tasks
            .push(keep(what, stream, Arc::clone(self.dirty), missing));
        store
    }
}

impl Stores {
    /// Starts every watch on `client`; this node's pods are selected by `spec.nodeName=<node>`.
    pub fn start(client: &Client, node: &str, dirty: &Arc<Notify>) -> (Self, Vec<JoinHandle<()>>) {
        let all = watcher::Config::default;
        let local = all().fields(&format!("spec.nodeName={node}"));
        let (missing_tx, multi_missing) = watch::channel(false);
        let mut r = Reflect {
            dirty,
            tasks: Vec::new(),
        };
        let c = || client.clone();
        let stores = Self {
            namespaces: r.start(
                "Namespace",
                Api::all(c()),
                all(),
                objects::trim_namespace,
                None,
            ),
            nads: r.start(
                "NetworkAttachmentDefinition",
                Api::all(c()),
                all(),
                |_| {},
                None,
            ),
            lns: r.start("LogicalNetwork", Api::all(c()), all(), |_| {}, None),
            network_policies: r.start(
                "NetworkPolicy",
                Api::all(c()),
                all(),
                objects::trim_network_policy,
                None,
            ),
            multi_policies: r.start(
                "MultiNetworkPolicy",
                Api::all(c()),
                all(),
                objects::trim_multi,
                Some(missing_tx),
            ),
            pods: r.start("Pod", Api::all(c()), all(), objects::trim_pod, None),
            local_pods: r.start(
                "Pod (this node)",
                Api::all(c()),
                local,
                objects::trim_pod,
                None,
            ),
            multi_missing,
        };
        (stores, r.tasks)
    }

    /// Waits until every store has its first complete listing (MultiNetworkPolicies: or are not
    /// served); `false` if a watch is gone.
    pub async fn ready(&self) -> bool {
        let required = self.namespaces.wait_until_ready().await.is_ok()
            && self.nads.wait_until_ready().await.is_ok()
            && self.lns.wait_until_ready().await.is_ok()
            && self.network_policies.wait_until_ready().await.is_ok()
            && self.pods.wait_until_ready().await.is_ok()
            && self.local_pods.wait_until_ready().await.is_ok();
        if !required {
            return false;
        }
        let mut missing = self.multi_missing.clone();
        tokio::select! {
            r = self.multi_policies.wait_until_ready() => r.is_ok(),
            r = missing.wait_for(|m| *m) => r.is_ok(),
        }
    }
}
