//! Who exec'd this process: the guard that makes genie-in-genie impossible by construction.
//!
//! genie runs as root and execs whatever plugin a network config names. A tenant's
//! NetworkAttachmentDefinition could name genie itself (by `type`, by a conf file that is genie's
//! own, through another plugin's `ipam.type`, or under any other installed name), and a nested
//! genie would then delegate again (a fork bomb), or connect to an API server the NAD names with
//! the node's credentials. Checking names cannot close that: another spelling, a hard link or a
//! copy passes. So every delegate this binary execs carries [`ENV`] naming the role of the process
//! that exec'd it, and the binary, on start, refuses every role a delegate may not take:
//!
//! - started by the container runtime (no [`ENV`]): genie, or the sriov plugin for a sriov conf;
//! - started by genie: only the sriov plugin (a leaf: it execs nothing but its IPAM plugin);
//! - started by the sriov plugin, or anything else: nothing.
//!
//! The variable passes through other plugins unchanged (libcni hands its own environment to the
//! IPAM plugins it execs), so a chain genie → bridge → `ipam.type: genie` is refused as well. The
//! refused process has read nothing but its stdin: no conf, no log file, no credentials. Only
//! VERSION is answered whatever the caller (it has no effect, and delegates' versions are asked).

use std::sync::OnceLock;

use crate::spec::error::CniError;

/// The environment variable that names the role of the process that exec'd a delegate.
pub const ENV: &str = "VFGENIE_EXEC_BY";

/// What this process runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The meta-plugin, exec'd by the container runtime.
    Genie,
    /// The sriov plugin, exec'd by the runtime, by Multus, or by genie.
    Sriov,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Genie => "genie",
            Role::Sriov => "sriov",
        }
    }
}

static ROLE: OnceLock<Role> = OnceLock::new();

/// Records the role this process runs as; delegates it execs are told so.
pub fn enter(role: Role) {
    let _ = ROLE.set(role);
}

/// The value of [`ENV`] for a delegate of this process. A process that never said what it runs
/// as (a library caller, a test) passes a value that allows no role at all.
pub fn child_value() -> &'static str {
    ROLE.get().map_or("unknown", |r| r.as_str())
}

/// The role this process may take. `caller` is [`ENV`] as this process received it; `sriov` says
/// whether the binary was installed as `sriov` or handed a sriov conf.
pub fn role(caller: Option<&str>, sriov: bool) -> Result<Role, CniError> {
    let wanted = if sriov { Role::Sriov } else { Role::Genie };
    match (caller.filter(|c| !c.is_empty()), wanted) {
        (None, r) => Ok(r),
        (Some("genie"), Role::Sriov) => Ok(Role::Sriov),
        (Some(c), r) => Err(CniError::invalid_config(format!(
            "refusing to run as {}: this process was exec'd by a delegate ({ENV}={c:?}); genie runs only as the node's meta-plugin, exec'd by the container runtime, and a network config may not make a delegate run genie or the sriov plugin again",
            r.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::error::code;

    #[test]
    fn only_genie_may_run_the_sriov_plugin_and_nothing_runs_genie() {
        assert_eq!(role(None, false).ok(), Some(Role::Genie));
        assert_eq!(role(Some(""), false).ok(), Some(Role::Genie));
        assert_eq!(role(None, true).ok(), Some(Role::Sriov));
        assert_eq!(role(Some("genie"), true).ok(), Some(Role::Sriov));
        for (caller, sriov) in [
            ("genie", false),
            ("sriov", false),
            ("sriov", true),
            ("unknown", true),
            ("GENIE", true),
            ("anything", false),
        ] {
            let e = role(Some(caller), sriov).unwrap_err();
            assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
            assert!(e.msg.contains(ENV) && e.msg.contains(caller), "{e}");
        }
    }

    #[test]
    fn a_process_that_never_entered_a_role_lets_its_delegates_take_none() {
        // This test binary never calls enter().
        let v = child_value();
        assert!(role(Some(v), true).is_err());
        assert!(role(Some(v), false).is_err());
    }
}
