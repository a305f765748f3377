//! What is wrong with a network config, a conflist or the config built for a delegate.

use crate::spec::result::ResultError;
use crate::spec::version::VersionError;

/// What is wrong with a config. Not JSON, or not an object, is CNI code 6; a version we do not
/// speak is 1, a capability nobody declares 2; anything else the config says is 7.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{what} is not JSON")]
    NotJson {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} is not a JSON object but {kind}")]
    NotObject {
        what: &'static str,
        kind: &'static str,
    },
    #[error("{what}: {key:?} must be a string, not {kind}")]
    NotAString {
        what: &'static str,
        key: &'static str,
        kind: &'static str,
    },
    #[error("the network config has no \"type\"")]
    NoType,
    #[error("plugin type {plugin_type:?} is refused: {reason}; it must be a plain file name in CNI_PATH")]
    PluginType {
        plugin_type: String,
        reason: &'static str,
    },
    #[error("the network name is missing")]
    NoNetworkName,
    #[error("network name {0:?} is invalid: it must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")]
    NetworkName(String),
    #[error("plugin {plugin_type:?}: capability {capability:?} must be true or false, not {kind}")]
    Capability {
        plugin_type: String,
        capability: String,
        kind: &'static str,
    },
    #[error("plugin {plugin_type:?}: \"capabilities\" must be an object, not {kind}")]
    Capabilities {
        plugin_type: String,
        kind: &'static str,
    },
    #[error("plugin {plugin_type:?}: ipam.type must be a string, not {kind}")]
    IpamType {
        plugin_type: String,
        kind: &'static str,
    },
    #[error("prevResult")]
    PrevResult(#[source] ResultError),
    #[error("{key:?} must be a list of {{\"containerID\", \"ifname\"}}")]
    ValidAttachments {
        key: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the network config list has no \"name\"")]
    NoListName,
    #[error("the network config of type {plugin_type:?} has no \"name\"")]
    NoConfName { plugin_type: String },
    #[error("network {network:?}: \"cniVersions\" entries must be strings, not {kind}")]
    CniVersionsEntry { network: String, kind: &'static str },
    #[error("network {network:?}: \"cniVersions\" must be a list, not {kind}")]
    CniVersions { network: String, kind: &'static str },
    #[error("network {network:?}: {key:?} must be a boolean, not {kind}")]
    Flag {
        network: String,
        key: &'static str,
        kind: &'static str,
    },
    #[error("network {network:?}: \"plugins\" must be a non-empty list")]
    NoPlugins { network: String },
    /// A plugin of the list is refused (the plugin's error says why).
    #[error("network {network:?}")]
    InList {
        network: String,
        #[source]
        error: Box<ConfError>,
    },
    /// The list speaks no version we do.
    #[error("network {network:?}")]
    Negotiation {
        network: String,
        #[source]
        error: VersionError,
    },
    #[error("network {network:?}: no plugin declares the requested capabilities {missing:?}")]
    UndeclaredCapabilities {
        network: String,
        missing: Vec<String>,
    },
    #[error("plugin {plugin_type:?}: {key:?} must be an object to take cni-args, not {kind}")]
    ArgsNotObject {
        plugin_type: String,
        key: &'static str,
        kind: &'static str,
    },
    /// The command does not exist in the version (GC before 1.1.0).
    #[error(transparent)]
    Version(#[from] VersionError),
    /// Building a delegate's config failed (`what` did).
    #[error("{what} failed")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}
