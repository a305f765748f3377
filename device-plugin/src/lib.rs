//! The kubelet's device-plugin API (v1beta1) and PodResources API (v1), generated from protos written
//! from the documented API, with the unix-socket plumbing both sides need: serving on a socket path,
//! connecting to one, and registering a plugin with the kubelet.

pub mod config;
pub mod devinfo;
pub mod paths;
pub mod podres;
pub mod unix;

/// Generated types and services of the device-plugin API, package `v1beta1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// Generated types and services of the PodResources API, package `v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
pub mod podresources {
    tonic::include_proto!("v1");
}

/// The API version a plugin states when it registers.
pub const API_VERSION: &str = "v1beta1";
/// `Device.health` of a usable device.
pub const HEALTHY: &str = "Healthy";
/// `Device.health` of a device the kubelet must not hand out.
pub const UNHEALTHY: &str = "Unhealthy";

pub use unix::{connect, serve_on, Error};
