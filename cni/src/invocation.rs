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

/// Runs `dispatch` for `plugin`; an error becomes the CNI error JSON in the conf's `cniVersion`
/// (the newest one when the conf does not say or cannot be read).
pub fn invoke(
    plugin: &'static str,
    env: &HashMap<String, String>,
    stdin: &[u8],
    dispatch: impl FnOnce() -> Result<String, CniError>,
) -> Outcome {
    let started = std::time::Instant::now();
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .and_then(|s| CniVersion::parse(&s).ok())
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
            tracing::warn!(plugin, code = e.code, error = %e.msg, "failed");
            Outcome {
                stdout: e.to_json(version),
                success: false,
            }
        }
    }
}
