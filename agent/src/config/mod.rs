//! The agent's one config file: the SR-IOV network device plugin's `resourceList` (an existing
//! `/etc/pcidp/config.json` works unchanged) plus a `provisioning` section that says how many VFs
//! each PF gets and which driver each VF range uses.
//!
//! Every problem is reported with the field it concerns (`resourceList[1].selectors.vendors[0]`)
//! and all problems of a file are reported together.

mod provision;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vfdp::config::keys::{self, Keys};
use vfdp::config::{Loose, Obj, RawResource};

pub use provision::{PfMatch, PfProvision, VfDriver, VfGroup};
pub use vfdp::config::{
    FieldError, FieldErrors, PfRef, ResourceConfig, Selector, VfRange, DEFAULT_PREFIX,
};

/// The validated config.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    pub resource_list: Vec<ResourceConfig>,
    pub provisioning: Vec<PfProvision>,
}

/// The file as decoded, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawConfig {
    resource_list: Loose<Vec<Loose<Obj<RawResource>>>>,
    provisioning: Loose<Vec<Loose<Obj<provision::RawProvision>>>>,
}

const FILE: Keys = Keys {
    known: &["resourceList", "provisioning"],
    nested: &[
        ("resourceList", &vfdp::config::RESOURCE),
        ("provisioning", &provision::PROVISION),
    ],
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is not JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config {path} is invalid: {errors}")]
    Invalid { path: PathBuf, errors: FieldErrors },
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_value(&value).map_err(|errors| Error::Invalid {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Validates an already parsed document.
    pub fn from_value(value: &Value) -> Result<Self, FieldErrors> {
        let mut errs = FieldErrors::default();
        if !value.is_object() {
            errs.push("(top level)", "must be an object");
            return Err(errs);
        }
        let mut value = value.clone();
        keys::canonicalize_tree(&mut value, &FILE, "");
        let raw: RawConfig = match serde_json::from_value(value) {
            Ok(raw) => raw,
            Err(e) => {
                errs.push("(top level)", e.to_string());
                return Err(errs);
            }
        };
        let resource_list = vfdp::config::resource_list(&raw.resource_list, &mut errs);
        let provisioning = provision::provisioning(&raw.provisioning, &mut errs);
        if errs.is_empty() {
            Ok(Config {
                resource_list,
                provisioning,
            })
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests;
