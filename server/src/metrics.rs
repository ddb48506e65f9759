//! Prometheus counters (text exposition format, hand-written: no registry needed for a handful).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub clients_registered: AtomicU64,
    pub updates_accepted: AtomicU64,
    pub updates_rejected: Mutex<BTreeMap<&'static str, u64>>,
    pub rounds_published: AtomicU64,
    pub rounds_insufficient: AtomicU64,
    pub rr_reports: AtomicU64,
    pub star_reports: AtomicU64,
    pub agreement_reports: AtomicU64,
    pub kinds_reports: AtomicU64,
    pub segment_reports: AtomicU64,
    pub sealed_reports: AtomicU64,
    pub sealed_batches: AtomicU64,
    pub versions_flagged: AtomicU64,
    pub rollbacks: AtomicU64,
    /// Staged rollouts the sequential test rolled back, and rollouts promoted (either way).
    pub canaries_rolled_back: AtomicU64,
    pub canaries_promoted: AtomicU64,
    /// Group commits of the ingest writer, and the registrations and updates they carried.
    pub ingest_batches: AtomicU64,
    pub ingest_writes: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reject(&self, code: &'static str) {
        *self
            .updates_rejected
            .lock()
            .expect("metrics lock")
            .entry(code)
            .or_default() += 1;
    }

    /// The exposition text; `gauges` are (name, help, value) read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "feedloop_clients_registered_total",
            "Client tokens issued on first contact.",
            &self.clients_registered,
        );
        counter(
            &mut out,
            "feedloop_ingest_batches_total",
            "Group commits of registrations and updates (one transaction each).",
            &self.ingest_batches,
        );
        counter(
            &mut out,
            "feedloop_ingest_writes_total",
            "Registrations and updates handed to the group commit.",
            &self.ingest_writes,
        );
        counter(
            &mut out,
            "feedloop_updates_accepted_total",
            "Privatized updates durably stored.",
            &self.updates_accepted,
        );
        let _ = writeln!(
            out,
            "# HELP feedloop_updates_rejected_total Update submissions rejected, by error code.\n# TYPE feedloop_updates_rejected_total counter"
        );
        for (code, n) in self.updates_rejected.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "feedloop_updates_rejected_total{{code=\"{code}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "feedloop_rounds_published_total",
            "Rounds that closed with at least the minimum cohort and published a version.",
            &self.rounds_published,
        );
        counter(
            &mut out,
            "feedloop_rounds_insufficient_total",
            "Rounds that closed below the minimum cohort (nothing published).",
            &self.rounds_insufficient,
        );
        counter(
            &mut out,
            "feedloop_rr_reports_total",
            "Randomized-response reports stored.",
            &self.rr_reports,
        );
        counter(
            &mut out,
            "feedloop_star_reports_total",
            "Star-rating (5-ary randomized-response) reports stored.",
            &self.star_reports,
        );
        counter(
            &mut out,
            "feedloop_agreement_reports_total",
            "Federated-evaluation (did the model agree) randomized-response reports stored.",
            &self.agreement_reports,
        );
        counter(
            &mut out,
            "feedloop_kinds_reports_total",
            "Feedback-volume (one sampled kind, randomized-response bit) reports stored.",
            &self.kinds_reports,
        );
        counter(
            &mut out,
            "feedloop_segment_reports_total",
            "Thumbs-per-segment ((segment, thumbs) randomized together) reports stored.",
            &self.segment_reports,
        );
        counter(
            &mut out,
            "feedloop_sealed_metric_reports_total",
            "Secure metric reports (Prio3Histogram, verified with the helper) stored.",
            &self.sealed_reports,
        );
        counter(
            &mut out,
            "feedloop_sealed_metric_batches_total",
            "Secure metric batches released by the helper (noisy counts).",
            &self.sealed_batches,
        );
        counter(
            &mut out,
            "feedloop_versions_flagged_total",
            "Model versions flagged by the drift test.",
            &self.versions_flagged,
        );
        counter(
            &mut out,
            "feedloop_rollbacks_total",
            "Admin rollbacks.",
            &self.rollbacks,
        );
        counter(
            &mut out,
            "feedloop_canaries_rolled_back_total",
            "Canary versions rolled back by the sequential test.",
            &self.canaries_rolled_back,
        );
        counter(
            &mut out,
            "feedloop_canaries_promoted_total",
            "Canary versions promoted to everyone (automatically or by an admin).",
            &self.canaries_promoted,
        );
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
