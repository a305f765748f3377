//! The SR-IOV network device plugin's `resourceList` schema, the one definition the agent serves
//! pools from and genie reads pool names from: an existing `/etc/pcidp/config.json` works
//! unchanged.
//!
//! Decoding is serde's, in three steps: [`keys`] brings every object to our key spelling as Go's
//! decoder matches keys (case-insensitively, unknown keys ignored with a warning); serde derives
//! decode raw structs whose fields are [`Loose`], so a wrong type is kept rather than ending the
//! decode; validation then turns the raw structs into typed ones and reports every problem of a
//! file together, each with the field it concerns (`resourceList[1].selectors.vendors[0]`).

pub mod keys;
mod resource;
mod vfrange;

use std::fmt;

pub use resource::{
    boolean, parse_pci_id, PfRef, RawResource, ResourceConfig, Selector, DEFAULT_PREFIX, RESOURCE,
    RESOURCE_KEYS,
};
pub use vfcore::gojson::{Loose, Obj};
pub use vfrange::VfRange;

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
    pub fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

/// A list of objects at `at`: each item with its position, the non-objects reported.
pub fn objects<'a, T>(
    at: &str,
    list: &'a Loose<Vec<Loose<Obj<T>>>>,
    errs: &mut FieldErrors,
) -> Vec<(usize, &'a T)> {
    let items = match list {
        Loose::Absent => return Vec::new(),
        Loose::Ok(items) => items,
        Loose::Wrong(_) => {
            errs.push(at, "must be a list");
            return Vec::new();
        }
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item {
            Loose::Ok(Obj(o)) => Some((i, o)),
            _ => {
                errs.push(format!("{at}[{i}]"), "must be an object");
                None
            }
        })
        .collect()
}

/// The validated pools of a `resourceList`, with the position of each in the list, and the
/// check that no `<prefix>/<name>` is defined twice.
pub fn resource_list(
    list: &Loose<Vec<Loose<Obj<RawResource>>>>,
    errs: &mut FieldErrors,
) -> Vec<ResourceConfig> {
    let mut out: Vec<(usize, ResourceConfig)> = Vec::new();
    for (i, raw) in objects("resourceList", list, errs) {
        let at = format!("resourceList[{i}]");
        if let Some(r) = resource::validate(&at, raw, errs) {
            for (j, s) in r.selectors.iter().enumerate() {
                resource::check_overlaps(&format!("{at}.selectors[{j}]"), s, errs);
            }
            out.push((i, r));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, r) in &out {
        if !names.insert(r.full_name()) {
            errs.push(
                format!("resourceList[{i}].resourceName"),
                format!("{} is defined twice", r.full_name()),
            );
        }
    }
    out.into_iter().map(|(_, r)| r).collect()
}

/// The extended resource names (`<prefix>/<name>`) of the pools a device-plugin config file
/// defines, in file order: what genie reads to know which resources are SR-IOV pools. The file is
/// validated as the agent validates it; every other top-level key is ignored.
pub fn pool_names(bytes: &[u8]) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Top {
        resource_list: Loose<Vec<Loose<Obj<RawResource>>>>,
    }
    let mut v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    keys::canonicalize_tree(&mut v, &keys::POOLS_FILE, "");
    let top: Top = serde_json::from_value(v).map_err(|e| e.to_string())?;
    if matches!(top.resource_list, Loose::Absent) {
        return Err("resourceList is missing or not a list".into());
    }
    let mut errs = FieldErrors::default();
    let pools = resource_list(&top.resource_list, &mut errs);
    if errs.is_empty() {
        Ok(pools.iter().map(ResourceConfig::full_name).collect())
    } else {
        Err(errs.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_read_case_insensitively_with_the_default_prefix() {
        let doc = br#"{"ResourceList":[{"resourceName":"vf_a"},{"RESOURCENAME":"vf_b","resourceprefix":"example.com","selectors":{}}],"provisioning":[]}"#;
        assert_eq!(
            pool_names(doc).unwrap(),
            vec!["intel.com/vf_a", "example.com/vf_b"]
        );
        for bad in [
            &br#"{"resourceList":[{"resourceName":"../x"}]}"#[..],
            br#"{"resourceList":[{"resourcePrefix":"x.com"}]}"#,
            br#"{"resourceList":{}}"#,
            br#"{"other":1}"#,
            b"[]",
            b"{",
        ] {
            assert!(pool_names(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
