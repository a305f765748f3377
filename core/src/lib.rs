//! The SR-IOV hardware library: the device model read from sysfs, VF provisioning and driver
//! binding, netlink operations on links and VFs, and network namespaces.
//!
//! Nothing here knows about Kubernetes or gRPC. Every kernel path is resolved through
//! [`paths::SysRoot`], so the whole library runs against fixture trees in tests.

pub mod bind;
pub mod error;
pub mod events;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod gojson;
pub mod inuse;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod provision;
pub mod sysfs;
pub mod tempfiles;
pub mod types;

pub use paths::SysRoot;
pub use types::{IfIndex, IfName, MacAddr, ParseError, PciAddress, VfIndex};
