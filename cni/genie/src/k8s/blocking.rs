//! The blocking client the CNI binary uses: an [`AsyncClient`] on a runtime of its own.

use std::collections::BTreeMap;

use super::client::{AsyncClient, ClientOptions};
use super::error::Error;
use super::kubeconfig::ClusterConfig;
use super::objects::{LogicalNetwork, NetworkAttachmentDefinition, Pod};

/// A blocking client: an [`AsyncClient`] on its own current-thread runtime. Do not use it from
/// inside an async runtime; use [`AsyncClient`] there.
#[derive(Debug)]
pub struct Client {
    inner: AsyncClient,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // Never blocks, so dropping the client inside an async context is safe too.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Client {
    pub fn new(cluster: ClusterConfig, options: ClientOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Self {
            inner: AsyncClient::new(cluster, options)?,
            runtime: Some(runtime),
        })
    }

    pub fn inner(&self) -> &AsyncClient {
        &self.inner
    }

    /// Runs a call on the client's runtime; refuses (instead of panicking) inside another runtime.
    fn block_on<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        match &self.runtime {
            Some(rt) if tokio::runtime::Handle::try_current().is_err() => rt.block_on(call),
            _ => Err(Error::InsideRuntime),
        }
    }

    pub fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, Error> {
        self.block_on(self.inner.get_pod(namespace, name))
    }

    pub fn get_pod_object(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Pod, serde_json::Value), Error> {
        self.block_on(self.inner.get_pod_object(namespace, name))
    }

    pub fn get_network_attachment_definition(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<NetworkAttachmentDefinition, Error> {
        self.block_on(
            self.inner
                .get_network_attachment_definition(namespace, name),
        )
    }

    pub fn get_logical_network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<LogicalNetwork, Error> {
        self.block_on(self.inner.get_logical_network(namespace, name))
    }

    pub fn set_pod_annotations(
        &self,
        namespace: &str,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<Pod, Error> {
        self.block_on(self.inner.set_pod_annotations(namespace, name, changes))
    }

    pub fn set_pod_annotations_from(
        &self,
        namespace: &str,
        name: &str,
        current: Option<serde_json::Value>,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<Pod, Error> {
        self.block_on(
            self.inner
                .set_pod_annotations_from(namespace, name, current, changes),
        )
    }
}
