//! One invocation of a plugin of this binary (genie or sriov): the reply in the version the
//! runtime asked for, the error JSON on failure, and the run's timing line.

use std::collections::HashMap;

use serde_json::Value;

use crate::spec::{CniError, CniVersion};

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub success: bool,
}

/// The `cniVersion` a config (a conf, a conflist, an IPAM conf) declares, when it declares one we
/// implement.
pub fn declared_version(conf: &Value) -> Option<CniVersion> {
    conf.get("cniVersion")
        .and_then(Value::as_str)
        .and_then(|s| CniVersion::parse(s).ok())
}

/// Runs `dispatch` for `plugin`; an error becomes the CNI error (the plugin's one mapping,
/// `Into<CniError>`) printed as JSON in the conf's `cniVersion` (the newest one when the conf
/// does not say or cannot be read).
pub fn invoke<E: Into<CniError>>(
    plugin: &'static str,
    env: &HashMap<String, String>,
    stdin: &[u8],
    dispatch: impl FnOnce() -> Result<String, E>,
) -> Outcome {
    let started = std::time::Instant::now();
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| declared_version(&v))
        .unwrap_or(CniVersion::LATEST);
    let outcome = dispatch();
    let command = env.get("CNI_COMMAND").map(String::as_str).unwrap_or("");
    crate::timing::report(plugin, command, started);
    match outcome {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => {
            let e: CniError = e.into();
            tracing::warn!(plugin, code = e.code, error = %e.msg, "failed");
            Outcome {
                stdout: e.to_json(version),
                success: false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn declared_version_is_the_confs_when_we_implement_it() {
        let v = |c: Value| declared_version(&c);
        assert_eq!(v(json!({"cniVersion": "0.4.0"})), Some(CniVersion::V0_4_0));
        assert_eq!(v(json!({"cniVersion": "9.9.9"})), None);
        assert_eq!(v(json!({"cniVersion": 1})), None);
        assert_eq!(v(json!({"type": "sriov"})), None);
    }

    #[test]
    fn an_error_answers_in_the_confs_version_or_the_latest() {
        let env = HashMap::new();
        let fail = || Err::<String, _>(CniError::io("no"));
        let out = invoke("t", &env, br#"{"cniVersion":"0.4.0"}"#, fail);
        assert!(!out.success);
        assert!(
            out.stdout.contains(r#""cniVersion":"0.4.0""#),
            "{}",
            out.stdout
        );
        let out = invoke("t", &env, b"not json", fail);
        let latest = format!(r#""cniVersion":"{}""#, CniVersion::LATEST);
        assert!(out.stdout.contains(&latest), "{}", out.stdout);
    }
}
