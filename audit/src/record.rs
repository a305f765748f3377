//! One line of the audit log. Keys are camelCase; empty fields are left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who wrote the line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// genie, the CNI meta-plugin.
    #[default]
    Cni,
    /// The node agent.
    Agent,
}

/// What the line is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One CNI call genie handled (ADD, DEL, CHECK, GC, STATUS).
    #[default]
    Call,
    /// One network's plugins run by genie for a call.
    Delegate,
    /// An event of the node agent.
    Event,
}

/// The agent's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Event {
    VfsProvisioned,
    Allocate,
    HealthChanged,
    PolicyApplied,
    PolicyProblem,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// What a successful ADD handed out, or what a DEL released (from genie's cache record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultInfo {
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// A failure as the runtime saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// The CNI error code.
    pub code: u32,
    pub msg: String,
}

/// A smart selection of a network, as genie made it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// The selectable group the choice was made for (`namespace/name`); none for a pod's default
    /// network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub strategy: String,
    pub chosen: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
}

/// One network considered by a selection, with the KPI values behind it (`null`: unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub network: String,
    #[serde(default)]
    pub kpis: BTreeMap<String, Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
}

/// One line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// RFC 3339 UTC with milliseconds ([`crate::time`]).
    pub time: String,
    pub source: Source,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The PCI address of the attachment's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Record {
    /// A record of `source` and `kind`, stamped now.
    pub fn new(source: Source, kind: Kind) -> Self {
        Record {
            time: crate::time::now(),
            source,
            kind,
            ..Default::default()
        }
    }

    /// An agent event, stamped now.
    pub fn event(event: Event) -> Self {
        Record {
            event: Some(event),
            ..Record::new(Source::Agent, Kind::Event)
        }
    }

    /// The line, with its newline.
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut v = serde_json::to_vec(self)?;
        v.push(b'\n');
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_left_out_and_keys_are_camel_case() {
        let mut r = Record::new(Source::Cni, Kind::Delegate);
        r.container_id = Some("c1".into());
        r.duration_us = Some(12);
        r.error = Some(ErrorInfo {
            code: 11,
            msg: "busy".into(),
        });
        let line = String::from_utf8(r.to_line().unwrap_or_default()).unwrap_or_default();
        assert!(line.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        let keys: Vec<&str> = v
            .as_object()
            .map_or(vec![], |o| o.keys().map(|k| k.as_str()).collect());
        assert_eq!(
            keys,
            [
                "containerId",
                "durationUs",
                "error",
                "kind",
                "source",
                "time"
            ]
        );
        assert_eq!(v["kind"], "delegate");
        assert_eq!(v["error"]["code"], 11);
        let back: Record = serde_json::from_str(&line).unwrap_or_default();
        assert_eq!(back, r);
    }
}
