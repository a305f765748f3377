//! The controller's Prometheus metrics (the webhook's and the status loop's writes), in the text exposition format. Label values come from fixed
//! sets (handled kinds or `other`, the four operations or `other`, [`Reason`]), so no request can
//! grow the series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::validate::{Handled, Reason};

/// Upper bounds of `vfgenie_admission_review_seconds`, in seconds.
pub const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug, Default)]
struct Inner {
    reviews: BTreeMap<(&'static str, &'static str), u64>,
    denials: BTreeMap<(&'static str, &'static str), u64>,
    /// Per bucket (not cumulative), plus one for +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
    /// LogicalNetwork status writes: succeeded, failed.
    status_writes: [u64; 2],
}

/// The counters and the histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The `kind` label of a request.
pub fn kind_label(kind: Option<Handled>) -> &'static str {
    kind.map_or("other", Handled::label)
}

/// The `operation` label of a request.
pub fn operation_label(op: &str) -> &'static str {
    match op {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

impl Metrics {
    /// Records one answered review.
    pub fn review(
        &self,
        kind: &'static str,
        operation: &'static str,
        denied: Option<Reason>,
        took: Duration,
    ) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *m.reviews.entry((kind, operation)).or_default() += 1;
        if let Some(r) = denied {
            *m.denials.entry((kind, r.label())).or_default() += 1;
        }
        let secs = took.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        if let Some(b) = m.buckets.get_mut(i) {
            *b += 1;
        }
        m.sum += secs;
        m.count += 1;
    }

    /// Records one LogicalNetwork status write.
    pub fn status_write(&self, ok: bool) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let i = usize::from(!ok);
        if let Some(n) = m.status_writes.get_mut(i) {
            *n += 1;
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let _ = writeln!(out, "# HELP vfgenie_admission_reviews_total AdmissionReviews answered, by kind and operation.");
        let _ = writeln!(out, "# TYPE vfgenie_admission_reviews_total counter");
        for ((kind, op), n) in &m.reviews {
            let _ = writeln!(
                out,
                "vfgenie_admission_reviews_total{{kind=\"{kind}\",operation=\"{op}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP vfgenie_admission_denials_total AdmissionReviews denied, by kind and reason."
        );
        let _ = writeln!(out, "# TYPE vfgenie_admission_denials_total counter");
        for ((kind, reason), n) in &m.denials {
            let _ = writeln!(
                out,
                "vfgenie_admission_denials_total{{kind=\"{kind}\",reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP vfgenie_admission_review_seconds Time to answer an AdmissionReview, from the body read to the answer.");
        let _ = writeln!(out, "# TYPE vfgenie_admission_review_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += m.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "vfgenie_admission_review_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "vfgenie_admission_review_seconds_bucket{{le=\"+Inf\"}} {}",
            m.count
        );
        let _ = writeln!(out, "vfgenie_admission_review_seconds_sum {}", m.sum);
        let _ = writeln!(out, "vfgenie_admission_review_seconds_count {}", m.count);
        let _ = writeln!(out, "# HELP vfgenie_logicalnetwork_status_writes_total LogicalNetwork status writes, by result (only changed statuses are written).");
        let _ = writeln!(
            out,
            "# TYPE vfgenie_logicalnetwork_status_writes_total counter"
        );
        for (result, n) in ["ok", "error"].iter().zip(m.status_writes) {
            let _ = writeln!(
                out,
                "vfgenie_logicalnetwork_status_writes_total{{result=\"{result}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_cumulative_buckets_render() {
        let m = Metrics::default();
        m.review("Pod", "CREATE", None, Duration::from_micros(200));
        m.review(
            "Pod",
            "CREATE",
            Some(Reason::NotFound),
            Duration::from_millis(3),
        );
        m.review(
            "other",
            "other",
            Some(Reason::UnhandledKind),
            Duration::from_secs(2),
        );
        let t = m.render();
        assert!(
            t.contains("vfgenie_admission_reviews_total{kind=\"Pod\",operation=\"CREATE\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("vfgenie_admission_denials_total{kind=\"Pod\",reason=\"not_found\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("vfgenie_admission_review_seconds_bucket{le=\"0.0005\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("vfgenie_admission_review_seconds_bucket{le=\"0.005\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("vfgenie_admission_review_seconds_bucket{le=\"1\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("vfgenie_admission_review_seconds_bucket{le=\"+Inf\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("vfgenie_admission_review_seconds_count 3"),
            "{t}"
        );
        assert_eq!(operation_label("PATCH"), "other");
        m.status_write(true);
        m.status_write(false);
        m.status_write(false);
        let t = m.render();
        assert!(
            t.contains("vfgenie_logicalnetwork_status_writes_total{result=\"ok\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("vfgenie_logicalnetwork_status_writes_total{result=\"error\"} 2"),
            "{t}"
        );
    }
}
