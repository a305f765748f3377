//! The CNI protocol (spec 0.1.0 to 1.1.0) as our own types. Pure: nothing here touches the host.

pub mod conf;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use conf::{DelegateContext, NetConf, NetConfList};
pub use env::{CniArgs, CniCommand, CniEnv};
pub use error::CniError;
pub use result::CniResult;
pub use version::CniVersion;

/// Whether `s` is a valid network or container-ID style name: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub(crate) fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}
