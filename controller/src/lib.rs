//! vfgenie-controller: the cluster side of vfgenie.
//!
//! - [`validate`]: the admission rules, pure functions over a [`lookup::Lookup`].
//! - [`review`]: AdmissionReview `admission.k8s.io/v1` in and out.
//! - [`server`]: the HTTPS server (`/validate`, `/healthz`, `/readyz`, `/metrics`).
//! - [`tls`]: the serving certificate, reloaded when its files change.
//! - [`certs`]: `certs`, a CA and a serving certificate for clusters without cert-manager.
//! - [`caches`]: the reflector caches that are the real [`lookup::Lookup`].
//! - [`metrics`]: Prometheus text.
//! - [`status`], [`status_loop`]: LogicalNetwork status (`Ready`, `attachedPods`), kept written.

pub mod caches;
pub mod certs;
pub mod lookup;
pub mod metrics;
pub mod overlap_index;
pub mod review;
pub mod server;
pub mod status;
pub mod status_loop;
pub mod tls;
pub mod validate;
