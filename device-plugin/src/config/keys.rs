//! The key trees of the device-plugin config for Go's key matching ([`vfcore::gojson::keys`]).

pub use vfcore::gojson::keys::{canonicalize, Keys};

/// A device-plugin config file as genie reads it (the agent's `provisioning` is known, unread).
pub const POOLS_FILE: Keys = Keys {
    known: &["resourceList", "provisioning"],
    nested: &[("resourceList", &super::resource::RESOURCE)],
};

/// [`vfcore::gojson::keys::canonicalize_tree`], each key dropped logged with its field.
pub fn canonicalize_tree(v: &mut serde_json::Value, keys: &Keys, at: &str) {
    for field in vfcore::gojson::keys::canonicalize_tree(v, keys, at) {
        tracing::warn!(%field, "unknown config key ignored");
    }
}
