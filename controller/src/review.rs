//! AdmissionReview `admission.k8s.io/v1`: the request the API server posts, the response we
//! answer (`uid` echoed, `allowed`, `status: {code, message}` on denial, `warnings`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// The longest message or warning we send back (the rest is cut, marked with `...`).
pub const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

impl fmt::Display for GroupVersionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "kind {group}/{}/{}", self.version, self.kind)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

impl fmt::Display for GroupVersionResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{group}/{}/{}", self.version, self.resource)
    }
}

/// The request of an AdmissionReview. Fields we do not use are kept only as JSON.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub request_sub_resource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub user_info: Option<Value>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub options: Option<Value>,
}

impl AdmissionRequest {
    /// `namespace/name` of the request, as far as it says.
    pub fn display_name(&self) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or_default(),
            self.name.as_deref().unwrap_or_default()
        )
    }
}

/// An AdmissionReview as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewIn {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The AdmissionReview we answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewOut {
    pub api_version: String,
    pub kind: String,
    pub response: AdmissionResponse,
}

/// Cuts a message to [`MAX_MESSAGE`] bytes at a character boundary.
pub fn bounded(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

impl AdmissionReviewOut {
    pub fn allow(uid: &str, warnings: Vec<String>) -> Self {
        Self::new(AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            warnings: warnings.into_iter().map(bounded).collect(),
        })
    }

    pub fn deny(uid: &str, message: String) -> Self {
        Self::new(AdmissionResponse {
            uid: uid.to_string(),
            allowed: false,
            status: Some(Status {
                code: 403,
                message: bounded(message),
            }),
            warnings: Vec::new(),
        })
    }

    fn new(response: AdmissionResponse) -> Self {
        Self {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            response,
        }
    }
}

/// Why a body is not an AdmissionReview we can answer (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReview {
    #[error("the body is not a JSON AdmissionReview: {0}")]
    Json(String),
    #[error("the body is {api_version:?} {kind:?}; only {API_VERSION} {KIND} is served")]
    Version { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// Parses a posted body (serde_json's recursion limit bounds nesting).
pub fn parse(body: &[u8]) -> Result<AdmissionRequest, BadReview> {
    let review: AdmissionReviewIn =
        serde_json::from_slice(body).map_err(|e| BadReview::Json(e.to_string()))?;
    if review.api_version != API_VERSION || review.kind != KIND {
        return Err(BadReview::Version {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    review.request.ok_or(BadReview::NoRequest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_v1_reviews_with_a_request_parse_and_nesting_is_bounded() {
        let ok = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#;
        assert_eq!(parse(ok).unwrap().uid, "u");
        let v1beta1 = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","kind":{},"operation":"CREATE"}}"#;
        assert!(matches!(parse(v1beta1), Err(BadReview::Version { .. })));
        let none = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(parse(none), Err(BadReview::NoRequest)));
        let deep = "[".repeat(100_000);
        assert!(matches!(parse(deep.as_bytes()), Err(BadReview::Json(_))));
        let mut deep_object = String::from(
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{},"operation":"CREATE","object":"#,
        );
        deep_object.push_str(&"[".repeat(100_000));
        assert!(matches!(
            parse(deep_object.as_bytes()),
            Err(BadReview::Json(_))
        ));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let s = bounded("é".repeat(5000));
        assert!(s.len() <= MAX_MESSAGE + 3 && s.ends_with("..."));
        let out = AdmissionReviewOut::deny("u", "no".into());
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["response"]["status"]["code"], 403);
        assert_eq!(v["apiVersion"], API_VERSION);
    }
}
