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
//! - [`attach`]: ADD; [`restore`]: DEL, rollback, reclaim, GC; [`device`]: the VF and its netdev.
//!
//! Crash safety: ADD writes the attachment's record, with the VF's original state, before its
//! first change, so the DEL that follows any crash restores the VF. Built with the cargo feature
//! `crash-points` (the test crate and the lab's build turn it on; a release build does not), the
//! environment variable named by `CRASH_ENV` names a step after which the process aborts (tests
//! use it to prove this): `after-intent`, `after-pf-config`, `after-temp-netns`, `after-move`,
//! `after-ipam`. Without the feature the hook is inert and its variable is not even read.

pub mod attach;
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
use vfcore::netlink::LinkOps;
use vfcore::SysRoot;

use self::attach::{AddCtx, LOCK_TIMEOUT};
use self::device::kernel;
use self::host::{Host, RealHost};
use self::netconf::SriovConf;
use self::node::NodeDirs;
use self::restore::{restore, RestoreCtx};
use self::state::{Mode, Stage, StateDir};
use crate::invocation::Outcome;
use crate::spec::conf::NetConf;
use crate::spec::env::{CniCommand, CniEnv};
use crate::spec::error::CniError;
use crate::spec::version::{CniVersion, VersionInfo};
use crate::timing::timed;

/// The environment variable naming the crash point (only with the `crash-points` feature).
#[cfg(feature = "crash-points")]
pub const CRASH_ENV: &str = "VFGENIE_SRIOV_CRASH_AT";

/// The code of a failed CHECK.
pub const CODE_CHECK_FAILED: u32 = 102;

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
        let node = NodeDirs::from_process_env()?;
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
) -> Result<String, CniError> {
    dispatch_on(&RealHost::new(root), node, env_map, stdin, crash)
}

/// [`dispatch`] on any [`Host`] (unit tests use an in-memory one).
fn dispatch_on<H: Host>(
    host: &H,
    node: &NodeDirs,
    env_map: &HashMap<String, String>,
    stdin: &[u8],
    crash: &CrashAt,
) -> Result<String, CniError> {
    let env = CniEnv::from_map(env_map)?;
    if env.command == CniCommand::Version {
        return Ok(VersionInfo::ours().to_json());
    }
    let netconf = NetConf::from_bytes(stdin)?;
    let version = CniVersion::parse_or_default(netconf.cni_version.as_deref())?;
    version.require(env.command)?;
    let conf = SriovConf::parse(stdin, &env.args)?;
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
                stdin,
                version,
                state: &state,
                node,
                crash,
            };
            attach::add(&ctx).map(|r| r.to_json())
        }
        CniCommand::Del => del(host, node, &env, &state).map(|()| String::new()),
        CniCommand::Check => check(host, &env, &state).map(|()| String::new()),
        CniCommand::Gc => gc(host, node, &env, &netconf, &conf, &state).map(|()| String::new()),
        CniCommand::Status => Ok(String::new()),
        CniCommand::Version => Ok(VersionInfo::ours().to_json()),
    }
}

fn ifname_of(env: &CniEnv) -> Result<String, CniError> {
    env.ifname
        .as_ref()
        .map(|i| i.to_string())
        .ok_or_else(|| CniError::invalid_env("CNI_IFNAME is missing"))
}

/// DEL from the record alone; no record means nothing was attached (or DEL already ran).
fn del<H: Host>(host: &H, node: &NodeDirs, env: &CniEnv, state: &StateDir) -> Result<(), CniError> {
    let ifname = ifname_of(env)?;
    let Some(first) = timed("cache", || state.read(&env.container_id, &ifname))? else {
        tracing::info!("no record of this attachment: nothing to delete");
        return Ok(());
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
    timed("cache", || state.remove(&env.container_id, &ifname))
}

fn check_failed(msg: String) -> CniError {
    CniError::new(CODE_CHECK_FAILED, format!("sriov CHECK: {msg}"))
}

/// CHECK: the VF is in the pod as CNI_IFNAME with the MAC and MTU ADD set, and the PF still
/// holds the VF settings ADD applied.
fn check<H: Host>(host: &H, env: &CniEnv, state: &StateDir) -> Result<(), CniError> {
    let ifname = ifname_of(env)?;
    let record = state
        .read(&env.container_id, &ifname)?
        .ok_or_else(|| check_failed(format!("no attachment of this container as {ifname}")))?;
    if record.stage != Stage::Done {
        return Err(check_failed(
            "the ADD of this attachment did not finish".into(),
        ));
    }
    let _lock = state.lock(&record.pci, LOCK_TIMEOUT)?;
    if record.mode == Mode::Netdev {
        let netns = if env.netns.is_empty() {
            record.netns.clone()
        } else {
            env.netns.clone()
        };
        let ns = host.open_netns(&netns)?;
        let name = ifname.clone();
        let link = host
            .run_in(&ns, |nl| nl.link_by_name(&name).map_err(kernel))?
            .ok_or_else(|| check_failed(format!("{ifname} is not in {netns}")))?;
        if link.kind.is_some() {
            return Err(check_failed(format!("{ifname} in {netns} is not the VF")));
        }
        let want_mac = record.applied.mac.map(|m| m.to_string()).or_else(|| {
            record
                .result
                .as_ref()
                .and_then(|r| r.pointer("/interfaces/0/mac"))
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        });
        let have_mac = link.mac.map(|m| m.to_string());
        if let Some(want) = want_mac {
            if have_mac.as_deref() != Some(want.as_str()) {
                return Err(check_failed(format!(
                    "{ifname} has MAC {}, not {want}",
                    have_mac.unwrap_or_default()
                )));
            }
        }
        if let Some(mtu) = record.applied.mtu {
            if link.mtu != mtu {
                return Err(check_failed(format!(
                    "{ifname} has MTU {}, not {mtu}",
                    link.mtu
                )));
            }
        }
    }
    let mut nl = host.links()?;
    let pf = device::pf_link(host, &mut nl, &record.pf)?;
    let vf = nl
        .vf_configs(pf.index)
        .map_err(kernel)?
        .into_iter()
        .find(|c| c.vf == record.vf)
        .ok_or_else(|| check_failed(format!("PF {} reports no VF {}", pf.name, record.vf)))?;
    let want = record.applied.vf_settings();
    if let Some(vlan) = want.vlan {
        if vf.vlan != vlan || Some(vf.qos) != want.qos {
            return Err(check_failed(format!(
                "VF {} has VLAN {} QoS {}, not {vlan} QoS {}",
                record.pci,
                vf.vlan,
                vf.qos,
                want.qos.unwrap_or(0)
            )));
        }
    }
    if let Some(mac) = want.mac {
        if vf.mac != mac {
            return Err(check_failed(format!(
                "VF {} has PF-side MAC {}, not {mac}",
                record.pci, vf.mac
            )));
        }
    }
    Ok(())
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
) -> Result<(), CniError> {
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
        match restore(&ctx, &r).and_then(|()| state.remove(&r.container_id, &r.ifname)) {
            Ok(()) => {
                tracing::info!(container = %r.container_id, ifname = %r.ifname, "GC released a VF")
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::io(format!("sriov GC: {}", errors.join("; "))))
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
