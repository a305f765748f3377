//! The CNI protocol (spec 0.1.0 to 1.1.0) as our own types, and running plugins as a runtime
//! does.
//!
//! - [`version`], [`conf`], [`result`], [`env`], [`error`]: the protocol, pure: nothing there
//!   touches the host.
//! - [`exec`]: finding and running delegate plugins, bounded in time and output.
//! - [`invocation`]: one run of a plugin of ours: the reply or the error JSON, and its timing.
//! - [`nesting`]: who exec'd this process; delegates never run genie again.
//! - [`bounded`]: reading files named by configs, bounded in size and to regular files.
//! - [`timing`]: step timings, logged at debug level.

pub mod bounded;
pub mod exec;
pub mod invocation;
pub mod nesting;
pub mod timing;

/// The protocol types under the name the plugins have always used for them (`spec::CniError`).
pub use crate as spec;

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
