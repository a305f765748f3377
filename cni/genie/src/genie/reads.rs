//! The Kubernetes reads planning needs, behind a trait: the API client in production, an
//! in-memory fake in the planner's tests.

use crate::k8s::objects::{LogicalNetwork, NetworkAttachmentDefinition};
use crate::k8s::{Client, Error};

/// The objects [`super::plan`] reads from the Kubernetes API.
pub trait KubeReads {
    /// A NetworkAttachmentDefinition.
    fn nad(&self, namespace: &str, name: &str) -> Result<NetworkAttachmentDefinition, Error>;
    /// A CNI-Genie LogicalNetwork.
    fn logical_network(&self, namespace: &str, name: &str) -> Result<LogicalNetwork, Error>;
}

impl KubeReads for Client {
    fn nad(&self, namespace: &str, name: &str) -> Result<NetworkAttachmentDefinition, Error> {
        self.get_network_attachment_definition(namespace, name)
    }

    fn logical_network(&self, namespace: &str, name: &str) -> Result<LogicalNetwork, Error> {
        self.get_logical_network(namespace, name)
    }
}
