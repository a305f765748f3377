//! The SR-IOV plugin (`"type": "sriov"`), a drop-in for sriov-cni under Multus or genie: the VF
//! named by `deviceID` goes into the pod as CNI_IFNAME with the PF-side settings of the config
//! (VLAN, MAC, spoof check, trust, link state, rates), or, bound to a userspace driver (DPDK),
//! gets its PF-side settings and is reported by PCI address.
//!
//! - [`netconf`]: the config, validated as sriov-cni validates it;
//! - [`node`]: the node's directories (state, device-info), from the environment, never from a
//!   config;
//! - [`logfile`]: the confined `logFile`;
//! - [`state`]: per-VF locks and per-attachment records ([`record`]) under the state dir;
//! - [`attach`]: ADD; [`restore`]: DEL, rollback, reclaim, GC; [`check`]: CHECK; [`device`]: the
//!   VF and its netdev.
//!
//! Errors: each module says what went wrong in its own type ([`netconf::NetconfError`],
//! [`device::DeviceError`], [`state::StateError`], [`ipam::IpamError`], [`check::CheckError`],
//! [`node::NodeError`]); [`SriovError`] gathers them, and the CNI error the runtime reads is made
//! in one place, `From<SriovError> for CniError`, at the invocation ([`run`]).
//!
//! Crash safety: ADD writes the attachment's record, with the VF's original state, before its
//! first change, so the DEL that follows any crash restores the VF. Built with the cargo feature
//! `crash-points` (the test crate and the lab's build turn it on; a release build does not), the
//! environment variable named by `CRASH_ENV` names a step after which the process aborts (tests
//! use it to prove this): `after-intent`, `after-pf-config`, `after-temp-netns`, `after-move`,
//! `after-ipam`. Without the feature the hook is inert and its variable is not even read.

pub mod attach;
pub mod check;
pub mod device;

// The CNI protocol and exec under the paths this plugin has always used.
pub(crate) use cnispec::{bounded, exec, invocation, spec, timing};
pub mod devinfo;
pub mod host;
pub mod ipam;
pub mod logfile;
pub mod netconf;
pub mod node;
pub mod record;
pub mod restore;
pub mod state;

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use vfcore::{PciAddress, SysRoot};

use self::attach::{AddCtx, CODE_VF_BUSY, LOCK_TIMEOUT};
use self::check::CheckError;
pub use self::check::CODE_CHECK_FAILED;
use self::device::DeviceError;
use self::devinfo::DevInfoError;
use self::host::{Host, RealHost};
use self::ipam::IpamError;
use self::netconf::{NetconfError, SriovConf};
use self::node::{NodeDirs, NodeError};
use self::restore::{restore, RestoreCtx};
use self::state::{StateDir, StateError};
use crate::invocation::Outcome;
use crate::spec::conf::{ConfError, NetConf};
use crate::spec::env::{CniCommand, CniEnv, EnvError};
use crate::spec::error::{chain, code, CniError};
use crate::spec::version::{VersionError, VersionInfo};
use crate::timing::timed;

/// The environment variable naming the crash point (only with the `crash-points` feature).
#[cfg(feature = "crash-points")]
pub const CRASH_ENV: &str = "VFGENIE_SRIOV_CRASH_AT";

/// Everything that can go wrong in one invocation of the plugin. The CNI error the runtime reads
/// (code, `msg`, `details`) is made of it in one place, `From<SriovError> for CniError`.
#[derive(Debug, thiserror::Error)]
pub enum SriovError {
    /// The protocol's own refusals: the environment, the version, a config that is not one.
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Netconf(#[from] NetconfError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    DeviceInfo(#[from] DevInfoError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("CNI_IFNAME is missing")]
    NoIfname,
    /// The VF belongs to another attachment whose pod lives.
    #[error("sriov: VF {pci} is attached to container {container_id} as {ifname} (netns {netns} exists)")]
    Busy {
        pci: PciAddress,
        container_id: String,
        ifname: String,
        netns: String,
    },
    /// ADD failed, and so did undoing it (its record stays for DEL).
    #[error("{error}; undoing the ADD also failed ({undo})")]
    AddUndone {
        error: Box<SriovError>,
        undo: Box<SriovError>,
    },
    /// Several steps of a restore failed (each went on regardless).
    #[error("{}", join(.0))]
    Restore(Vec<SriovError>),
    /// GC could not release some attachments.
    #[error("sriov GC: {}", join(.0))]
    Gc(Vec<SriovError>),
}

fn join(errors: &[SriovError]) -> String {
    errors
        .iter()
        .map(|e| chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The one mapping to the CNI error: the code for each failure, the message its chain. The
/// protocol's errors and a delegate's (IPAM's) are passed on as they are; a failed ADD whose
/// undoing failed too keeps the ADD's error and says the rest in `details`; several failed
/// restore steps take the first one's code.
impl From<SriovError> for CniError {
    fn from(e: SriovError) -> Self {
        let code = match e {
            SriovError::Env(e) => return e.into(),
            SriovError::Version(e) => return e.into(),
            SriovError::Conf(e) | SriovError::Netconf(NetconfError::Conf(e)) => return e.into(),
            SriovError::Ipam(IpamError::Exec(exec)) => return exec.to_cni_error(),
            SriovError::AddUndone { error, undo } => {
                return CniError::from(*error).with_details(format!(
                    "undoing the ADD also failed ({}); its record is kept for DEL",
                    CniError::from(*undo)
                ))
            }
            SriovError::Restore(errors) => {
                let errors: Vec<CniError> = errors.into_iter().map(CniError::from).collect();
                let msg = errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ");
                return CniError::new(errors.first().map_or(code::IO, |e| e.code), msg);
            }
            SriovError::Netconf(_) => code::INVALID_NETWORK_CONFIG,
            SriovError::Device(ref d) if d.is_config() => code::INVALID_NETWORK_CONFIG,
            SriovError::Device(_) => code::IO,
            SriovError::Node(NodeError::NotAbsolute { .. }) => code::INVALID_ENV,
            SriovError::State(StateError::LockTimeout { .. }) => code::TRY_AGAIN_LATER,
            SriovError::State(StateError::BadName { .. }) => code::INVALID_ENV,
            SriovError::State(
                StateError::Io { .. } | StateError::Corrupt { .. } | StateError::Encode(_),
            ) => code::IO,
            SriovError::Ipam(IpamError::NoCommonVersion { .. }) => code::INCOMPATIBLE_VERSION,
            SriovError::Ipam(IpamError::Encode(_)) => code::IO,
            SriovError::DeviceInfo(_) => code::IO,
            SriovError::Check(_) => CODE_CHECK_FAILED,
            SriovError::NoIfname => code::INVALID_ENV,
            SriovError::Busy { .. } => CODE_VF_BUSY,
            SriovError::Gc(_) => code::IO,
        };
        CniError::new(code, chain(&e))
    }
}

/// A fault-injection point: the process aborts right after the named step. Without the
/// `crash-points` feature it never holds a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CrashAt(Option<String>);

impl CrashAt {
    #[cfg(feature = "crash-points")]
    pub fn new(step: Option<String>) -> Self {
        Self(step.filter(|s| !s.is_empty()))
    }

    /// Inert: a build without the `crash-points` feature has no crash points.
    #[cfg(not(feature = "crash-points"))]
    pub fn new(_step: Option<String>) -> Self {
        Self(None)
    }

    /// The crash point `lookup` gives for the hook's environment variable.
    #[cfg(feature = "crash-points")]
    pub fn from_lookup(lookup: impl FnOnce(&str) -> Option<String>) -> Self {
        Self::new(lookup(CRASH_ENV))
    }

    /// Inert: nothing is looked up.
    #[cfg(not(feature = "crash-points"))]
    pub fn from_lookup(_lookup: impl FnOnce(&str) -> Option<String>) -> Self {
        Self(None)
    }

    pub fn from_process_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Aborts the process when `step` is the configured crash point.
    #[cfg(feature = "crash-points")]
    pub fn at(&self, step: &str) {
        if self.0.as_deref() == Some(step) {
            tracing::error!(step, "{CRASH_ENV}: aborting");
            std::process::abort();
        }
    }

    /// Inert.
    #[cfg(not(feature = "crash-points"))]
    pub fn at(&self, _step: &str) {}
}

/// Whether a config (stdin) is for this plugin.
pub fn is_sriov_conf(stdin: &[u8]) -> bool {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(|t| t == "sriov"))
        .unwrap_or(false)
}

/// One invocation: `env` holds the `CNI_*` variables, `stdin` the network config; the node's
/// directories come from the process environment ([`NodeDirs::from_process_env`]).
pub fn run(env: &HashMap<String, String>, stdin: &[u8], crash: &CrashAt) -> Outcome {
    crate::invocation::invoke("sriov", env, stdin, || {
        let node = NodeDirs::from_process_env().map_err(SriovError::from)?;
        dispatch(&SysRoot::host(), &node, env, stdin, crash)
    })
}

/// [`run`] with the node's directories given.
pub fn run_on(
    node: &NodeDirs,
    env: &HashMap<String, String>,
    stdin: &[u8],
    crash: &CrashAt,
) -> Outcome {
    crate::invocation::invoke("sriov", env, stdin, || {
        dispatch(&SysRoot::host(), node, env, stdin, crash)
    })
}

fn dispatch(
    root: &SysRoot,
    node: &NodeDirs,
    env_map: &HashMap<String, String>,
    stdin: &[u8],
    crash: &CrashAt,
) -> Result<String, SriovError> {
    dispatch_on(&RealHost::new(root), node, env_map, stdin, crash)
}

/// [`dispatch`] on any [`Host`] (unit tests use an in-memory one).
fn dispatch_on<H: Host>(
    host: &H,
    node: &NodeDirs,
    env_map: &HashMap<String, String>,
    stdin: &[u8],
    crash: &CrashAt,
) -> Result<String, SriovError> {
    let env = CniEnv::from_map(env_map)?;
    if env.command == CniCommand::Version {
        return Ok(VersionInfo::ours().to_json());
    }
    let netconf = NetConf::from_bytes(stdin)?;
    let version = netconf.version()?;
    version.require(env.command)?;
    let conf = SriovConf::from_netconf(&netconf, &env.args)?;
    let state = StateDir::new(&node.state_dir);
    let span = tracing::info_span!(
        "sriov",
        command = %env.command,
        container = %env.container_id,
        ifname = env.ifname.as_ref().map(|i| i.to_string()).unwrap_or_default(),
    );
    let _guard = span.enter();
    match env.command {
        CniCommand::Add => {
            let ctx = AddCtx {
                host,
                env: &env,
                conf: &conf,
                config: Value::Object(netconf.raw().clone()),
                version,
                state: &state,
                node,
                crash,
            };
            attach::add(&ctx).map(|r| r.to_json())
        }
        CniCommand::Del => del(host, node, &env, &state).map(|()| String::new()),
        CniCommand::Check => check::check(host, &env, &state).map(|()| String::new()),
        CniCommand::Gc => gc(host, node, &env, &netconf, &conf, &state).map(|()| String::new()),
        CniCommand::Status => Ok(String::new()),
        CniCommand::Version => Ok(VersionInfo::ours().to_json()),
    }
}

fn ifname_of(env: &CniEnv) -> Result<String, SriovError> {
    env.ifname
        .as_ref()
        .map(|i| i.to_string())
        .ok_or(SriovError::NoIfname)
}

/// DEL from the record alone; no record means nothing was attached (or DEL already ran).
fn del<H: Host>(
    host: &H,
    node: &NodeDirs,
    env: &CniEnv,
    state: &StateDir,
) -> Result<(), SriovError> {
    let ifname = ifname_of(env)?;
    let Some(first) = timed("cache", || state.read(&env.container_id, &ifname))? else {
        tracing::info!("no record of this attachment: nothing to delete");
        // An ADD killed while writing its first record leaves only the writer's temp file.
        return Ok(timed("cache", || state.remove(&env.container_id, &ifname))?);
    };
    let _lock = timed("lock", || state.lock(&first.pci, LOCK_TIMEOUT))?;
    // Read again under the lock: a concurrent DEL may have finished meanwhile.
    let Some(record) = timed("cache", || state.read(&env.container_id, &ifname))? else {
        return Ok(());
    };
    let ctx = RestoreCtx {
        host,
        node,
        cni_path: &env.path,
        ipam: true,
    };
    restore(&ctx, &record)?;
    Ok(timed("cache", || state.remove(&env.container_id, &ifname))?)
}

/// GC (1.1.0): restores and forgets the attachments of this network that the runtime no longer
/// lists as valid.
fn gc<H: Host>(
    host: &H,
    node: &NodeDirs,
    env: &CniEnv,
    netconf: &NetConf,
    conf: &SriovConf,
    state: &StateDir,
) -> Result<(), SriovError> {
    let Some(valid) = netconf.valid_attachments()? else {
        return Ok(());
    };
    let keep: BTreeSet<(String, String)> = valid
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect();
    let ctx = RestoreCtx {
        host,
        node,
        cni_path: &env.path,
        ipam: true,
    };
    let mut errors = Vec::new();
    for r in state.list()? {
        if r.network != conf.name || keep.contains(&(r.container_id.clone(), r.ifname.clone())) {
            continue;
        }
        let _lock = state.lock(&r.pci, LOCK_TIMEOUT)?;
        match restore(&ctx, &r).and_then(|()| Ok(state.remove(&r.container_id, &r.ifname)?)) {
            Ok(()) => {
                tracing::info!(container = %r.container_id, ifname = %r.ifname, "GC released a VF")
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SriovError::Gc(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(dir: &std::path::Path) -> NodeDirs {
        NodeDirs {
            state_dir: dir.join("state"),
            device_info_dir: dir.join("devinfo"),
        }
    }

    fn env(cmd: &str, dir: &std::path::Path) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "net1"),
            ("CNI_NETNS", "/nonexistent/ns"),
            ("CNI_PATH", dir.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[cfg(not(feature = "crash-points"))]
    #[test]
    fn without_the_crash_points_feature_the_hook_is_inert() {
        let mut asked = false;
        let crash = CrashAt::from_lookup(|_| {
            asked = true;
            Some("after-intent".into())
        });
        assert!(!asked, "the crash variable was looked up");
        assert_eq!(crash, CrashAt::default());
        // Even a crash point named directly does not abort (this test would not return).
        CrashAt::new(Some("after-intent".into())).at("after-intent");
    }

    #[cfg(feature = "crash-points")]
    #[test]
    fn with_the_crash_points_feature_the_hook_reads_its_variable() {
        let crash = CrashAt::from_lookup(|k| (k == CRASH_ENV).then(|| "after-move".into()));
        assert_eq!(crash, CrashAt::new(Some("after-move".into())));
        assert_ne!(crash, CrashAt::default());
        crash.at("after-intent");
    }

    #[test]
    fn an_unreadable_record_of_another_attachment_does_not_stop_an_add() {
        let dir = tempfile::tempdir().unwrap();
        let node = node(dir.path());
        let attachments = node.state_dir.join("attachments");
        std::fs::create_dir_all(&attachments).unwrap();
        std::fs::write(attachments.join("other-net1.json"), b"{\"kind\": \"vfgen").unwrap();
        // A fixture node where 0000:03:10.0 is a VF: ADD gets past the records to the pod's
        // netns, which does not exist.
        let root = SysRoot::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../core/fixtures/ixgbe-82599"
        ));
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "sriov",
            "deviceID": "0000:03:10.0"});
        let e = dispatch(
            &root,
            &node,
            &env("ADD", dir.path()),
            conf.to_string().as_bytes(),
            &CrashAt::default(),
        )
        .unwrap_err();
        let e = CniError::from(e);
        assert!(!e.msg.contains("corrupt"), "{}", e.msg);
        assert!(e.msg.contains("/nonexistent/ns"), "{}", e.msg);
        let moved: Vec<String> = std::fs::read_dir(node.state_dir.join("quarantine"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert!(moved[0].starts_with("other-net1.json."), "{moved:?}");
        assert!(!attachments.join("other-net1.json").exists());
    }

    #[test]
    fn recognises_its_configs() {
        assert!(is_sriov_conf(br#"{"type":"sriov","name":"a"}"#));
        assert!(!is_sriov_conf(br#"{"type":"genie"}"#));
        assert!(!is_sriov_conf(b"not json"));
    }

    #[test]
    fn del_without_a_record_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "sriov",
            "deviceID": "0000:01:10.1"});
        let out = run_on(
            &node(dir.path()),
            &env("DEL", dir.path()),
            conf.to_string().as_bytes(),
            &CrashAt::default(),
        );
        assert!(out.success, "{}", out.stdout);
        assert_eq!(out.stdout, "");
    }

    #[test]
    fn invalid_config_is_code_7_in_the_configs_version() {
        let dir = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({"cniVersion": "0.4.0", "name": "n", "type": "sriov",
            "deviceID": "0000:01:10.1", "vlan": 5000});
        let out = run_on(
            &node(dir.path()),
            &env("ADD", dir.path()),
            conf.to_string().as_bytes(),
            &CrashAt::default(),
        );
        assert!(!out.success);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], 7);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert!(v["msg"].as_str().unwrap().contains("\"vlan\""));
    }

    #[test]
    fn check_without_a_record_fails() {
        let dir = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "sriov",
            "deviceID": "0000:01:10.1"});
        let out = run_on(
            &node(dir.path()),
            &env("CHECK", dir.path()),
            conf.to_string().as_bytes(),
            &CrashAt::default(),
        );
        assert!(!out.success);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], CODE_CHECK_FAILED);
    }

    #[test]
    fn add_of_an_unknown_device_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "type": "sriov",
            "deviceID": "0000:ee:1f.7"});
        let out = run_on(
            &node(dir.path()),
            &env("ADD", dir.path()),
            conf.to_string().as_bytes(),
            &CrashAt::default(),
        );
        assert!(!out.success);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], 7);
        assert!(
            v["msg"].as_str().unwrap().contains("0000:ee:1f.7"),
            "{}",
            out.stdout
        );
    }
}

#[cfg(test)]
mod fake_host;
#[cfg(test)]
mod plugin_tests;
