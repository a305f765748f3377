//! What an invocation of genie fails with, and the one place where a failure gets its CNI code.
//!
//! Every module reports a typed error of its own ([`PlanError`], [`DelegateError`],
//! [`DeviceError`], [`RouteError`], [`CacheError`], [`ConfError`], [`QuarantineError`], the API
//! client's [`crate::k8s::Error`]); [`GenieError`] gathers them with the failures of the
//! invocation itself, and `impl From<GenieError> for CniError` below is the single `match` that
//! picks every code, at the boundary ([`super::run`]). A CNI error that comes from the protocol
//! (the environment, the netconf, a result) or from a delegate is passed through as it is, with
//! its code and details.
//!
//! The message of a typed error is its chain ([`chain`]): its text, then its sources'.

use std::path::PathBuf;

use crate::annotations::{AnnotationError, PodRef};
use crate::cache::CacheError;
use crate::devices::DeviceError;
use crate::genieconf::ConfError;
use crate::spec::error::{chain, code, CniError};

pub use super::delegate::DelegateError;
pub use super::plan::PlanError;
pub use super::policy::PolicyError;
pub use super::quarantine::QuarantineError;
pub use super::routes::RouteError;

/// The protocol's own errors (the environment, the netconf, versions, recorded results) reach
/// genie's caller with the codes spec picks for them ([`CniError`]'s `From`s, in spec).
macro_rules! through_cni {
    ($($t:ty),*) => {$(
        impl From<$t> for GenieError {
            fn from(e: $t) -> Self {
                GenieError::Cni(e.into())
            }
        }
    )*};
}
through_cni!(
    crate::spec::env::EnvError,
    crate::spec::conf::ConfError,
    crate::spec::version::VersionError,
    crate::spec::result::ResultError
);

/// Why an invocation of genie failed.
#[derive(Debug, thiserror::Error)]
pub enum GenieError {
    /// The CNI protocol refused the call or what it read (the environment, the netconf, a
    /// recorded result): its own code.
    #[error(transparent)]
    Cni(#[from] CniError),
    /// A delegate cut off mid-way (see [`GenieError::cut_off_mid_way`]), as the runtime sees it.
    #[error(transparent)]
    CutOff(CniError),
    /// The genie conf is invalid.
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Delegate(#[from] DelegateError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Routes(#[from] RouteError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
    /// The node agent did not install the pod's policy table (`policySocket`).
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("Kubernetes API configuration")]
    ApiConfig(#[source] crate::k8s::ConfigError),
    #[error("Kubernetes API client")]
    ApiClient(#[source] Box<crate::k8s::Error>),
    #[error("reading pod {pod}")]
    ReadPod {
        pod: PodRef,
        #[source]
        source: Box<crate::k8s::Error>,
    },
    /// The pod's network annotations are invalid.
    #[error(transparent)]
    Annotations(#[from] AnnotationError),
    #[error(
        "pod {pod} asks for {count} networks, more than the limit of {max} (maxNetworksPerPod)"
    )]
    TooManyNetworks {
        /// `ns/name`, or `of container <id>` without a pod.
        pod: String,
        count: usize,
        max: usize,
    },
    /// The ADD ran out of `addTimeoutSeconds`; `source` is what failed when time ran out.
    #[error("the ADD of container {container_id} did not finish within its limit of {limit_secs} s (addTimeoutSeconds); what it attached is undone")]
    AddTimedOut {
        container_id: String,
        limit_secs: u64,
        #[source]
        source: Box<GenieError>,
    },
    #[error("network-status cannot be encoded")]
    StatusEncode(#[source] serde_json::Error),
    #[error("writing the network-status of pod {pod}")]
    StatusWrite {
        pod: PodRef,
        #[source]
        source: Box<crate::k8s::Error>,
    },
    /// A thread of the ADD's last steps panicked.
    #[error("{what} failed unexpectedly")]
    Panicked { what: String },
    /// UPDATE without a pod in CNI_ARGS, or of a pod the API does not have.
    #[error(
        "UPDATE of container {container_id} needs its pod (K8S_POD_NAMESPACE and K8S_POD_NAME)"
    )]
    UpdateWithoutPod { container_id: String },
    /// UPDATE naming another pod than the one genie attached the container for.
    #[error("container {container_id} was attached for pod {recorded}, not {asked}")]
    UpdateOtherPod {
        container_id: String,
        recorded: String,
        asked: String,
    },
    /// CHECK of a container without a record.
    #[error("no attachments are recorded for container {container_id}")]
    NothingRecorded { container_id: String },
    /// STATUS: the readiness indicator file is missing.
    #[error("the default network is not ready: {} does not exist", .file.display())]
    NotReady { file: PathBuf },
    /// DEL without a readable record: the API's pod of that name is not the runtime's.
    #[error("container {container_id} belongs to pod UID {asked}, the API's pod of that name is {api}: its networks cannot be planned again")]
    PodReplaced {
        container_id: String,
        asked: String,
        api: String,
    },
    /// Several steps failed (DEL and GC go on past failures): the first one's code.
    #[error("{} failures: {}", .0.len(), join(.0))]
    Several(Vec<GenieError>),
}

impl GenieError {
    /// A delegate was cut off in the middle of its work (killed at the deadline, died of a signal
    /// or crashed, or its answer was lost or unreadable): it may have left things behind that only
    /// its DEL removes. A plugin that answered with a CNI error, or one that never ran, did not.
    pub fn cut_off_mid_way(&self) -> bool {
        match self {
            GenieError::CutOff(_) => true,
            GenieError::Delegate(d) => delegate_cut_off(d),
            GenieError::AddTimedOut { source, .. } => source.cut_off_mid_way(),
            GenieError::Several(v) => v.iter().any(GenieError::cut_off_mid_way),
            _ => false,
        }
    }
}

fn delegate_cut_off(d: &DelegateError) -> bool {
    use crate::exec::ExecError as X;
    match d {
        DelegateError::Exec { source, .. } => matches!(
            **source,
            X::Timeout { .. }
                | X::Garbage { .. }
                | X::Io { .. }
                | X::BadOutput { .. }
                | X::OutputTooLarge { .. }
        ),
        DelegateError::Several(v) => v.iter().any(delegate_cut_off),
        _ => false,
    }
}

/// The chains of `errors`, `; ` between them.
pub(super) fn join<E: std::error::Error>(errors: &[E]) -> String {
    errors
        .iter()
        .map(|e| chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `Ok` without errors, the error itself when there is one, else [`GenieError::Several`].
pub fn several(mut errors: Vec<GenieError>) -> Result<(), GenieError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(GenieError::Several(errors)),
    }
}

/// The message the runtime would see for `e` (for logs and quarantine reasons).
pub fn cni_msg(e: impl Into<GenieError>) -> String {
    CniError::from(e.into()).msg
}

/// The CNI code `e` is reported with.
pub fn cni_code(e: impl Into<GenieError>) -> u32 {
    CniError::from(e.into()).code
}

impl From<GenieError> for CniError {
    fn from(e: GenieError) -> Self {
        use GenieError as G;
        let code = match e {
            // What carries a CNI error (the protocol's, a delegate's) keeps its code and details.
            G::Cni(c) | G::CutOff(c) => return c,
            G::Delegate(d) => return delegate(d),
            G::Quarantine(QuarantineError::MissingPlugin {
                network,
                ifname,
                source,
            }) => return in_network(&network, &ifname, CniError::from(*source)),
            G::AddTimedOut { .. } => {
                let head = e.to_string();
                let G::AddTimedOut { source, .. } = e else {
                    return CniError::io(head);
                };
                let inner = CniError::from(*source);
                return CniError {
                    msg: format!("{head}: {}", inner.msg),
                    ..inner
                };
            }
            G::Several(v) => return combine(v.into_iter().map(CniError::from).collect()),
            G::Quarantine(QuarantineError::UnreadableRecord { ref error, .. }) => cache_code(error),
            G::Cache(ref c) => cache_code(c),
            G::Plan(ref p) => plan_code(p),
            G::Devices(ref d) => device_code(d),
            G::Conf(_)
            | G::ApiConfig(_)
            | G::ApiClient(_)
            | G::Annotations(_)
            | G::TooManyNetworks { .. } => code::INVALID_NETWORK_CONFIG,
            G::ReadPod { ref source, .. } => api_code(source),
            G::Routes(_) | G::StatusEncode(_) | G::Panicked { .. } => code::IO,
            // The pod must not come up without its rules; the agent may be restarting.
            G::StatusWrite { .. } | G::Policy(_) => code::TRY_AGAIN_LATER,
            G::NothingRecorded { .. } => code::UNKNOWN_CONTAINER,
            G::UpdateWithoutPod { .. } | G::UpdateOtherPod { .. } | G::PodReplaced { .. } => {
                code::INVALID_ENV
            }
            G::NotReady { .. } => code::PLUGIN_NOT_AVAILABLE,
        };
        CniError::new(code, chain(&e))
    }
}

/// An unreachable or overloaded API server is worth a retry (11); any other refusal is the
/// configuration's (7).
fn api_code(e: &crate::k8s::Error) -> u32 {
    match e.is_unavailable() {
        true => code::TRY_AGAIN_LATER,
        false => code::INVALID_NETWORK_CONFIG,
    }
}

/// A refused key came from the environment (4), a corrupt record is 6, I/O 5, a busy
/// attachment 11 (try again later).
fn cache_code(e: &CacheError) -> u32 {
    match e {
        CacheError::InvalidName { .. } => code::INVALID_ENV,
        CacheError::Corrupt { .. } => code::DECODE,
        CacheError::Io { .. } | CacheError::Encode { .. } => code::IO,
        CacheError::Busy { .. } => code::TRY_AGAIN_LATER,
    }
}

/// Planning fails on the configuration (7), or on an API server worth retrying (11).
fn plan_code(e: &PlanError) -> u32 {
    match e {
        PlanError::Api { source, .. } => api_code(source),
        _ => code::INVALID_NETWORK_CONFIG,
    }
}

/// A kubelet that cannot say which devices the pod holds is worth a retry (11), an unreadable
/// checkpoint is I/O (5), and so is writing the device-info file; what the pod asks is 7.
fn device_code(e: &DeviceError) -> u32 {
    match e {
        DeviceError::PodResources { .. } | DeviceError::NoUid { .. } => code::TRY_AGAIN_LATER,
        DeviceError::Checkpoint { checkpoint, .. } => match checkpoint.is_missing() {
            true => code::TRY_AGAIN_LATER,
            false => code::IO,
        },
        DeviceError::InfoWrite(_) => code::IO,
        DeviceError::BadDeviceId { .. }
        | DeviceError::NotHeld(_)
        | DeviceError::Shortfall(_)
        | DeviceError::InfoPath(_)
        | DeviceError::WishWithoutResource { .. }
        | DeviceError::NoPod { .. } => code::INVALID_NETWORK_CONFIG,
    }
}

/// A delegate's failure: a plugin's own error keeps its code and details, and says which network
/// and interface it was for.
fn delegate(e: DelegateError) -> CniError {
    match e {
        DelegateError::Spec(c) => c,
        DelegateError::Exec {
            network,
            ifname,
            source,
        } => in_network(&network, &ifname, CniError::from(*source)),
        DelegateError::Refused {
            network,
            ifname,
            source,
        } => in_network(&network, &ifname, source),
        DelegateError::Several(v) => combine(v.into_iter().map(delegate).collect()),
        DelegateError::Encode(_) => CniError::invalid_config(chain(&e)),
        DelegateError::NoTimeLeft { .. } => CniError::io(chain(&e)),
    }
}

fn in_network(network: &str, ifname: &str, e: CniError) -> CniError {
    CniError {
        msg: format!("network {network} ({ifname}): {}", e.msg),
        ..e
    }
}

/// One error from several: the first one's code and details, every message.
fn combine(mut errors: Vec<CniError>) -> CniError {
    match errors.len() {
        0 => CniError::io("no error"),
        1 => errors.remove(0),
        n => {
            let msg = errors
                .iter()
                .map(|e| e.msg.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let first = errors.remove(0);
            CniError {
                msg: format!("{n} failures: {msg}"),
                ..first
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::exec::ExecError;
    use crate::spec::env::CniCommand;

    fn plugin_failed(network: &str, code: u32, msg: &str, details: &str) -> GenieError {
        DelegateError::Exec {
            network: network.into(),
            ifname: "net1".into(),
            source: Box::new(ExecError::Plugin {
                plugin: "bridge".into(),
                command: CniCommand::Add,
                error: CniError::new(code, msg).with_details(details),
            }),
        }
        .into()
    }

    #[test]
    fn a_delegates_error_keeps_its_code_and_details_and_names_the_network() {
        let e = CniError::from(plugin_failed("default/blue", 107, "no IPs", "range full"));
        assert_eq!(e.code, 107);
        assert_eq!(
            e.msg,
            "network default/blue (net1): plugin \"bridge\": no IPs"
        );
        assert_eq!(e.details, "range full");
    }

    #[test]
    fn a_timed_out_add_says_so_in_front_of_what_failed() {
        let e = CniError::from(GenieError::AddTimedOut {
            container_id: "c1".into(),
            limit_secs: 5,
            source: Box::new(plugin_failed("n", 5, "killed", "")),
        });
        assert_eq!(e.code, 5);
        assert_eq!(
            e.msg,
            "the ADD of container c1 did not finish within its limit of 5 s (addTimeoutSeconds); what it attached is undone: network n (net1): plugin \"bridge\": killed"
        );
    }

    #[test]
    fn several_failures_take_the_first_code_and_every_message() {
        let inner = GenieError::Delegate(DelegateError::Several(vec![
            DelegateError::NoTimeLeft {
                network: "a".into(),
                ifname: "net1".into(),
                plugin: "x".into(),
            },
            DelegateError::Spec(CniError::decode("bad result")),
        ]));
        let e = CniError::from(GenieError::Several(vec![
            inner,
            GenieError::NothingRecorded {
                container_id: "c".into(),
            },
        ]));
        assert_eq!(e.code, code::IO);
        assert_eq!(
            e.msg,
            "2 failures: 2 failures: network a (net1): no time was left to run plugin \"x\"; bad result; no attachments are recorded for container c"
        );
        assert_eq!(several(Vec::new()).ok(), Some(()));
    }

    #[test]
    fn typed_errors_read_as_their_chain_with_the_code_of_their_kind() {
        let e = CniError::from(GenieError::TooManyNetworks {
            pod: "default/web".into(),
            count: 3,
            max: 2,
        });
        assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
        assert_eq!(
            e.msg,
            "pod default/web asks for 3 networks, more than the limit of 2 (maxNetworksPerPod)"
        );
        let busy = CacheError::Busy {
            container_id: "c".into(),
            ifname: "eth0".into(),
            waited: std::time::Duration::from_secs(1),
        };
        assert_eq!(cni_code(busy), code::TRY_AGAIN_LATER);
        let refused = PolicyError::Refused {
            socket: "/run/vfgenie/policy.sock".into(),
            reason: "pod a/b: no".into(),
        };
        let e = CniError::from(GenieError::from(refused));
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert_eq!(
            e.msg,
            "the policy agent at /run/vfgenie/policy.sock refused: pod a/b: no"
        );
        let e = CniError::from(GenieError::NotReady {
            file: "/run/ready".into(),
        });
        assert_eq!(e.code, code::PLUGIN_NOT_AVAILABLE);
        assert_eq!(e.details, "");
    }
}
