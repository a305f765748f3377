//! A small hand-written Kubernetes API client: only the calls the CNI binary makes (read a pod, a
//! NetworkAttachmentDefinition, a LogicalNetwork; write pod annotations through pods/status). No
//! kube-rs: the binary is exec'd once per pod and must start fast.

mod blocking;
mod client;
mod error;
pub mod kubeconfig;
pub use vfkube::objects;
mod tls;

pub use blocking::Client;
pub use client::{AsyncClient, ClientOptions, MAX_BODY};
pub use error::Error;
pub use kubeconfig::{
    Auth, ClientIdentity, ClusterConfig, ConfigError, InClusterPaths, Secret, TlsConfig,
};
pub use objects::{
    Kind, LogicalNetwork, LogicalNetworkSpec, NadSpec, NetworkAttachmentDefinition, ObjectMeta,
    ObjectRef, Pod, PodStatus, RESOURCE_NAME_ANNOTATION,
};
