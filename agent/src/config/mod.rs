//! The agent's one config file: the SR-IOV network device plugin's `resourceList` (an existing
//! `/etc/pcidp/config.json` works unchanged) plus a `provisioning` section that says how many VFs
//! each PF gets and which driver each VF range uses.
//!
//! Every problem is reported with the field it concerns (`resourceList[1].selectors.vendors[0]`)
//! and all problems of a file are reported together.

mod keys;
mod provision;
mod resource;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

pub use provision::{PfMatch, PfProvision, VfDriver, VfGroup};
pub use resource::{PfRef, ResourceConfig, Selector, DEFAULT_PREFIX};

/// The validated config.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Config {
    pub resource_list: Vec<ResourceConfig>,
    pub provisioning: Vec<PfProvision>,
}

/// One problem in a config, with the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The problems found in one config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

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

const TOP_KEYS: &[&str] = &["resourceList", "provisioning"];

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
        let Value::Object(raw) = value else {
            errs.push("(top level)", "must be an object");
            return Err(errs);
        };
        let mut top = raw.clone();
        for key in keys::canonicalize(&mut top, TOP_KEYS) {
            tracing::warn!(field = %key, "unknown config key ignored");
        }
        let mut cfg = Config::default();
        // Original list positions of the entries kept, so later checks name the right field.
        let mut resource_at = Vec::new();
        for (i, item) in list(&top, "resourceList", &mut errs).iter().enumerate() {
            let at = format!("resourceList[{i}]");
            let Value::Object(o) = item else {
                errs.push(at, "must be an object");
                continue;
            };
            let mut o = o.clone();
            for key in keys::canonicalize(&mut o, resource::RESOURCE_KEYS) {
                tracing::warn!(field = %format!("{at}.{key}"), "unknown key ignored");
            }
            if let Some(r) = resource::parse_resource(&at, &o, &mut errs) {
                for (j, s) in r.selectors.iter().enumerate() {
                    resource::check_overlaps(&format!("{at}.selectors[{j}]"), s, &mut errs);
                }
                cfg.resource_list.push(r);
                resource_at.push(i);
            }
        }
        let mut names = BTreeSet::new();
        for (r, i) in cfg.resource_list.iter().zip(&resource_at) {
            if !names.insert(r.full_name()) {
                errs.push(
                    format!("resourceList[{i}].resourceName"),
                    format!("{} is defined twice", r.full_name()),
                );
            }
        }
        let mut provision_at = Vec::new();
        for (i, item) in list(&top, "provisioning", &mut errs).iter().enumerate() {
            let at = format!("provisioning[{i}]");
            match item {
                Value::Object(o) => {
                    if let Some(p) = provision::parse_provision(&at, o, &mut errs) {
                        cfg.provisioning.push(p);
                        provision_at.push(i);
                    }
                }
                _ => errs.push(at, "must be an object"),
            }
        }
        for (k, (p, i)) in cfg.provisioning.iter().zip(&provision_at).enumerate() {
            if let Some(j) = cfg.provisioning[..k]
                .iter()
                .position(|q| q.pf == p.pf)
                .map(|j| provision_at[j])
            {
                errs.push(
                    format!("provisioning[{i}]"),
                    format!("names the same PF as provisioning[{j}]"),
                );
            }
        }
        if errs.0.is_empty() {
            Ok(cfg)
        } else {
            Err(errs)
        }
    }
}

fn list<'a>(
    top: &'a serde_json::Map<String, Value>,
    key: &str,
    errs: &mut FieldErrors,
) -> &'a [Value] {
    match top.get(key) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(a)) => a,
        Some(_) => {
            errs.push(key, "must be a list");
            &[]
        }
    }
}

/// A set of VF indexes written as `0-3,8` (the device plugin's `#` suffix and our ranges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct VfRange(Vec<(u32, u32)>);

impl VfRange {
    pub fn contains(&self, vf: u32) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&vf))
    }

    pub fn indexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().flat_map(|(a, b)| *a..=*b)
    }

    pub fn max(&self) -> Option<u32> {
        self.0.iter().map(|(_, b)| *b).max()
    }
}

impl FromStr for VfRange {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let num = |t: &str| -> Result<u32, &'static str> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err("VF ranges are indexes like 0-3,8");
            }
            t.parse::<u32>()
                .ok()
                .filter(|n| *n < 65535)
                .ok_or("VF index out of range")
        };
        let mut parts = Vec::new();
        for part in s.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            if a > b {
                return Err("a VF range must run from low to high");
            }
            parts.push((a, b));
        }
        Ok(Self(parts))
    }
}

impl fmt::Display for VfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl From<VfRange> for String {
    fn from(r: VfRange) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests;
