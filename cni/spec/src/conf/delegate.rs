//! Building the config a delegate receives.

use serde_json::{Map, Value};

use super::{kind, ConfError, GcAttachment, NetConf, LEGACY_ATTACHMENTS, VALID_ATTACHMENTS};
use crate::spec::env::CniCommand;
use crate::spec::result::CniResult;
use crate::spec::version::CniVersion;

/// What the caller adds to a plugin's config when delegating.
#[derive(Debug, Clone, Copy)]
pub struct DelegateContext<'a> {
    /// The network name (a conflist's name).
    pub name: &'a str,
    /// The version negotiated for the list.
    pub cni_version: CniVersion,
    /// The previous plugin's result in a chain, or the cached result for DEL and CHECK.
    pub prev_result: Option<&'a CniResult>,
    /// Capability args requested for this attachment (`portMappings`, `mac`, `ips`, ...).
    pub runtime_config: &'a Map<String, Value>,
    /// NPWG `cni-args`, merged into `args.cni`.
    pub cni_args: Option<&'a Map<String, Value>>,
}

impl NetConf {
    /// The config to send this plugin as a delegate: the raw config with `name`, `cniVersion`,
    /// `prevResult` (converted to that version), `runtimeConfig` holding only the capability args
    /// this plugin declares (merged over what the config already has), and `cni_args` merged into
    /// `args.cni`.
    pub fn delegate_config(&self, ctx: &DelegateContext<'_>) -> Result<Vec<u8>, ConfError> {
        let mut out = self.raw.clone();
        out.insert("name".into(), Value::String(ctx.name.to_string()));
        out.insert(
            "cniVersion".into(),
            Value::String(ctx.cni_version.as_str().to_string()),
        );
        match ctx.prev_result {
            Some(prev) => {
                out.insert(
                    "prevResult".into(),
                    prev.to_version(ctx.cni_version).to_value(),
                );
            }
            None => {
                out.remove("prevResult");
            }
        }

        let granted: Map<String, Value> = ctx
            .runtime_config
            .iter()
            .filter(|(k, _)| self.declares(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !granted.is_empty() {
            let mut rc = match out.remove("runtimeConfig") {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            rc.extend(granted);
            out.insert("runtimeConfig".into(), Value::Object(rc));
        }

        if let Some(cni_args) = ctx.cni_args.filter(|m| !m.is_empty()) {
            let mut args = match out.remove("args") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(other) => return Err(self.args_not_object("args", &other)),
            };
            let mut cni = match args.remove("cni") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => m,
                Some(other) => return Err(self.args_not_object("args.cni", &other)),
            };
            cni.extend(cni_args.iter().map(|(k, v)| (k.clone(), v.clone())));
            args.insert("cni".into(), Value::Object(cni));
            out.insert("args".into(), Value::Object(args));
        }

        encode(&out, "encoding the delegate config")
    }

    fn args_not_object(&self, key: &'static str, v: &Value) -> ConfError {
        ConfError::ArgsNotObject {
            plugin_type: self.plugin_type.clone(),
            key,
            kind: kind(v),
        }
    }

    /// The config to send this plugin for GC: as [`NetConf::delegate_config`] without prevResult
    /// or capability args, with the attachments to keep under both keys (as libcni sends them).
    /// GC exists from 1.1.0 only (code 1 otherwise).
    pub fn gc_config(
        &self,
        name: &str,
        cni_version: CniVersion,
        valid: &[GcAttachment],
    ) -> Result<Vec<u8>, ConfError> {
        cni_version.require(CniCommand::Gc)?;
        let ctx = DelegateContext {
            name,
            cni_version,
            prev_result: None,
            runtime_config: &Map::new(),
            cni_args: None,
        };
        let mut v: Map<String, Value> = serde_json::from_slice(&self.delegate_config(&ctx)?)
            .map_err(|source| ConfError::Encode {
                what: "re-reading the GC config",
                source,
            })?;
        let list = serde_json::to_value(valid).map_err(|source| ConfError::Encode {
            what: "encoding the valid attachments",
            source,
        })?;
        v.insert(VALID_ATTACHMENTS.into(), list.clone());
        v.insert(LEGACY_ATTACHMENTS.into(), list);
        encode(&v, "encoding the GC config")
    }
}

fn encode(m: &Map<String, Value>, what: &'static str) -> Result<Vec<u8>, ConfError> {
    serde_json::to_vec(m).map_err(|source| ConfError::Encode { what, source })
}
