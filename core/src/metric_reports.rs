//! Metric reports: what the device tells the server about how good a model version is, privatized.
//!
//! Two metrics. **The thumbs-up rate on the answers a version ranked first.** When the user
//! gives a thumbs up or down to the candidate the model ranked first, the device notes the verdict
//! for the global model version it was using ([`DevicePrivacy::observe_thumbs`]; the last verdict
//! per version counts). At the next sync it reports each noted version once, as one ε-randomized
//! response bit ([`DevicePrivacy::release_thumbs`]): the budget pays ρ = ε²/2, the ledger records
//! the release with its purpose, and only then does the bit exist for the network — as a
//! [`MetricRelease`], which only that method builds. The server de-biases the bits per version
//! (`GET /v1/stats`); it announces the ε it de-biases for, and a device whose policy allows less
//! per release refuses (the server cannot weaken a device's privacy).
//!
//! **Federated evaluation: did the model agree with the user.** When the user makes an "A or B"
//! choice, the device checks, before learning from it, whether the global head of the version in
//! use already ranked the chosen candidate higher ([`crate::FeedbackOutcome::global_agreed`]), notes
//! the last such verdict per version ([`DevicePrivacy::observe_agreement`]) and reports it once per
//! version as one ε-randomized bit ([`DevicePrivacy::release_agreement`], `POST
//! /v1/feedback/agreement`), charged and recorded like a thumbs report. The server de-biases the
//! agreement rate per version: a model version that agrees with its users more often ranks better
//! for them, measured without any device's choices leaving it.
//!
//! The raw verdict never leaves the device; what leaves is `{modelVersion, bit}` with the bit
//! flipped with probability 1 − p (p = e^ε/(1+e^ε) on the 2^53 grid).
//!
//! **The star rating (CSAT) per version.** The last rating (1 to 5) the user gave under a version
//! is noted ([`DevicePrivacy::observe_stars`]) and reported once per version with 5-ary
//! randomized response at the same ε ([`DevicePrivacy::release_stars`]): `{modelVersion, stars}`
//! where the rating is kept with probability e^ε/(e^ε + 4) and otherwise replaced by one of the
//! four others. The server de-biases the histogram and the mean rating per version.
//!
//! **Feedback volume: which kinds of feedback the user gives.** Every recorded event notes its kind
//! under the version in use ([`DevicePrivacy::observe_kind`]: a set of kinds per version). Once
//! per version the device draws one of the ten kinds uniformly at random — independently of what
//! the user did — and reports whether the set holds it, as one ε-randomized bit
//! ([`DevicePrivacy::release_kinds`], `POST /v1/feedback/kinds`: `{modelVersion, kind, bit}`).
//! The draw tells nothing, so the report is ε-DP like a thumbs bit; the server de-biases, per kind,
//! the share of devices that gave it (each kind is asked of a tenth of the devices).
//!
//! **The thumbs-up rate per segment**, when the site declares segments and the page says which
//! one its user is in: the thumbs verdict is also noted with the segment
//! ([`DevicePrivacy::observe_segment_thumbs`]) and reported once per version as one cell of
//! `2·S`-ary randomized response over (segment, verdict) ([`DevicePrivacy::release_segments`],
//! `POST /v1/feedback/segments`: `{modelVersion, segments, cell}`); see [`crate::segments`].

use std::collections::BTreeMap;

use feedloop_privacy::categorical_response::CategoricalResponse;
use feedloop_privacy::ledger::{Ledger, LedgerEntry, ReleaseParams, ReleaseRecord};
use feedloop_privacy::randomized_response::RandomizedResponse;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::contribution::DevicePrivacy;
use crate::error::{Error, Result};
use crate::feedback::KINDS;
use crate::protocol::{
    paths, FeedbackReport, KindsReport, SealedMetricReport, SecureMetricTerms, SegmentReport,
    StarsReport,
};
use crate::secure_metrics::{MetricTerms, SecureMetric};

/// Why a thumbs report leaves the device, as written in the ledger.
pub const THUMBS_PURPOSE: &str = "thumbs-up rate of the top-ranked answer";

/// Why a star-rating report leaves the device, as written in the ledger.
pub const STARS_PURPOSE: &str = "star rating (CSAT)";

/// Why a federated-evaluation report leaves the device, as written in the ledger.
pub const AGREEMENT_PURPOSE: &str =
    "federated evaluation: did the model agree with the user's choice";

/// Why a feedback-kinds report leaves the device, as written in the ledger.
pub const KINDS_PURPOSE: &str = "feedback volume: did the user give one sampled kind of feedback";

/// Why a segment report leaves the device, as written in the ledger.
pub const SEGMENTS_PURPOSE: &str =
    "thumbs-up rate per segment: (segment, thumbs) randomized together";

/// The two metrics reported as one randomized bit per version.
#[derive(Debug, Clone, Copy)]
enum BitMetric {
    Thumbs,
    Agreement,
}

impl BitMetric {
    fn purpose(self) -> &'static str {
        match self {
            Self::Thumbs => THUMBS_PURPOSE,
            Self::Agreement => AGREEMENT_PURPOSE,
        }
    }

    fn release_id(self, model_version: &str) -> String {
        match self {
            Self::Thumbs => release_id(model_version),
            Self::Agreement => agreement_release_id(model_version),
        }
    }

    fn notes(self, pending: &PendingMetrics) -> &BTreeMap<String, bool> {
        match self {
            Self::Thumbs => &pending.thumbs,
            Self::Agreement => &pending.agreement,
        }
    }

    fn notes_mut(self, pending: &mut PendingMetrics) -> &mut BTreeMap<String, bool> {
        match self {
            Self::Thumbs => &mut pending.thumbs,
            Self::Agreement => &mut pending.agreement,
        }
    }

    fn report(self, report: FeedbackReport) -> MetricReport {
        match self {
            Self::Thumbs => MetricReport::Thumbs(report),
            Self::Agreement => MetricReport::Agreement(report),
        }
    }
}

/// The ratings: 1 to 5 stars.
const STAR_CATEGORIES: u32 = 5;

/// The global model version a device uses before its first sync: no server knows it.
pub const BUNDLED_VERSION: &str = "bundled";

/// Verdicts noted but not reported yet: per global model version, whether the last thumbs on an
/// answer that version ranked first was up.
/// Star ratings likewise: per version, the last rating given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingMetrics {
    #[serde(default)]
    pub thumbs: BTreeMap<String, bool>,
    #[serde(default)]
    pub stars: BTreeMap<String, u8>,
    /// Per version, whether the global head agreed with the user's last "A or B" choice.
    #[serde(default)]
    pub agreement: BTreeMap<String, bool>,
    /// Per version, the kinds of feedback given under it: bit i for `KINDS[i]`.
    #[serde(default)]
    pub kinds: BTreeMap<String, u16>,
    /// Per version, the user's segment and their last thumbs verdict on the top answer.
    #[serde(default)]
    pub segments: BTreeMap<String, (String, bool)>,
}

impl PendingMetrics {
    /// Another tab's notes and this tab's: both, this tab's where both noted one.
    pub fn merge(stored: &Self, mine: &Self) -> Self {
        let mut thumbs = stored.thumbs.clone();
        thumbs.extend(mine.thumbs.iter().map(|(k, v)| (k.clone(), *v)));
        let mut stars = stored.stars.clone();
        stars.extend(mine.stars.iter().map(|(k, v)| (k.clone(), *v)));
        let mut agreement = stored.agreement.clone();
        agreement.extend(mine.agreement.iter().map(|(k, v)| (k.clone(), *v)));
        // Kinds given in either tab were given.
        let mut kinds = stored.kinds.clone();
        for (version, mask) in &mine.kinds {
            *kinds.entry(version.clone()).or_default() |= mask;
        }
        let mut segments = stored.segments.clone();
        segments.extend(mine.segments.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self {
            thumbs,
            stars,
            agreement,
            kinds,
            segments,
        }
    }

    /// Nothing noted.
    pub fn is_empty(&self) -> bool {
        self.thumbs.is_empty()
            && self.stars.is_empty()
            && self.agreement.is_empty()
            && self.kinds.is_empty()
            && self.segments.is_empty()
    }

    /// Drops the notes of versions `ledger` already has a report of.
    pub(crate) fn retain_unreported(&mut self, ledger: &Ledger) {
        self.thumbs
            .retain(|version, _| !thumbs_reported_in(ledger, version));
        self.stars
            .retain(|version, _| !stars_reported_in(ledger, version));
        self.agreement
            .retain(|version, _| !agreement_reported_in(ledger, version));
        self.kinds
            .retain(|version, _| !kinds_reported_in(ledger, version));
        self.segments
            .retain(|version, _| !segments_reported_in(ledger, version));
    }
}

/// What a metric report says: the body of its `POST`.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricReport {
    /// `POST /v1/feedback`: the randomized thumbs bit.
    Thumbs(FeedbackReport),
    /// `POST /v1/feedback/stars`: the randomized rating.
    Stars(StarsReport),
    /// `POST /v1/feedback/agreement`: the randomized "the model agreed" bit.
    Agreement(FeedbackReport),
    /// `POST /v1/feedback/kinds`: the sampled kind and its randomized "given" bit.
    Kinds(KindsReport),
    /// `POST /v1/feedback/segments`: the randomized (segment, thumbs) cell.
    Segments(SegmentReport),
    /// `POST /v1/feedback/sealed`: a thumbs, agreement or star report sealed to the two
    /// aggregators ([`crate::secure_metrics`]).
    Sealed(SealedMetricReport),
}

/// A randomized, charged and recorded metric report: persist the device's privacy state, then
/// send [`MetricRelease::report`].
#[derive(Debug)]
pub struct MetricRelease {
    report: MetricReport,
    ledger_entry: LedgerEntry,
}

impl MetricRelease {
    /// What is sent: the version and the randomized value.
    pub fn report(&self) -> &MetricReport {
        &self.report
    }

    /// "thumbs", "stars", "agreement", "kinds" or "segments".
    pub fn kind(&self) -> &'static str {
        match self.report {
            MetricReport::Thumbs(_) => "thumbs",
            MetricReport::Stars(_) => "stars",
            MetricReport::Agreement(_) => "agreement",
            MetricReport::Kinds(_) => "kinds",
            MetricReport::Segments(_) => "segments",
            MetricReport::Sealed(ref r) => SecureMetric::parse(&r.metric)
                .map(SecureMetric::name)
                .unwrap_or("thumbs"),
        }
    }

    /// The model version the report is about.
    pub fn model_version(&self) -> &str {
        match &self.report {
            MetricReport::Thumbs(r) | MetricReport::Agreement(r) => &r.model_version,
            MetricReport::Stars(r) => &r.model_version,
            MetricReport::Kinds(r) => &r.model_version,
            MetricReport::Segments(r) => &r.model_version,
            MetricReport::Sealed(r) => &r.model_version,
        }
    }

    /// Where it is posted (a [`paths`] constant).
    pub fn path(&self) -> &'static str {
        match self.report {
            MetricReport::Thumbs(_) => paths::FEEDBACK,
            MetricReport::Stars(_) => paths::FEEDBACK_STARS,
            MetricReport::Agreement(_) => paths::FEEDBACK_AGREEMENT,
            MetricReport::Kinds(_) => paths::FEEDBACK_KINDS,
            MetricReport::Segments(_) => paths::FEEDBACK_SEGMENTS,
            MetricReport::Sealed(_) => paths::FEEDBACK_SEALED,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        match &self.report {
            MetricReport::Thumbs(r) | MetricReport::Agreement(r) => serde_json::to_vec(r),
            MetricReport::Stars(r) => serde_json::to_vec(r),
            MetricReport::Kinds(r) => serde_json::to_vec(r),
            MetricReport::Segments(r) => serde_json::to_vec(r),
            MetricReport::Sealed(r) => serde_json::to_vec(r),
        }
        .expect("a report serializes")
    }

    /// The ledger entry recording this release.
    pub fn ledger_entry(&self) -> &LedgerEntry {
        &self.ledger_entry
    }
}

/// One metric report as the payload inspector shows it (`ranker.pendingMetricReports()`): noted
/// (not randomized yet: what will leave and how it will be randomized; the verdict itself stays
/// on the device and is not shown here) or released (randomized, charged and in the ledger: the
/// exact body that is sent, and its ledger entry).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricPreview {
    /// "thumbs", "stars", "agreement", "kinds" or "segments".
    pub kind: &'static str,
    pub model_version: String,
    /// "noted" or "released".
    pub state: &'static str,
    /// Where it is posted.
    pub path: &'static str,
    /// The fields of the body: nothing else leaves.
    pub fields: &'static [&'static str],
    /// How the value is randomized, in words.
    pub mechanism: &'static str,
    /// Released: the exact JSON body, its ledger entry's index and payload hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
}

impl MetricPreview {
    fn noted(kind: &'static str, model_version: &str) -> Self {
        let (path, fields, mechanism) = match kind {
            "thumbs" => (
                paths::FEEDBACK,
                &["modelVersion", "bit"][..],
                "ε-randomized response: the thumbs-up bit is kept with probability e^ε/(1+e^ε), else flipped",
            ),
            "stars" => (
                paths::FEEDBACK_STARS,
                &["modelVersion", "stars"][..],
                "5-ary randomized response: the rating is kept with probability e^ε/(e^ε+4), else one of the other four",
            ),
            "agreement" => (
                paths::FEEDBACK_AGREEMENT,
                &["modelVersion", "bit"][..],
                "ε-randomized response: the \"model agreed\" bit is kept with probability e^ε/(1+e^ε), else flipped",
            ),
            "kinds" => (
                paths::FEEDBACK_KINDS,
                &["modelVersion", "kind", "bit"][..],
                "one kind of feedback drawn at random (whatever the user did), and an ε-randomized bit: did the user give it",
            ),
            _ => (
                paths::FEEDBACK_SEGMENTS,
                &["modelVersion", "segments", "cell"][..],
                "(segment, thumbs-up) randomized together with 2S-ary randomized response: no segment label leaves",
            ),
        };
        Self {
            kind,
            model_version: model_version.to_string(),
            state: "noted",
            path,
            fields,
            mechanism,
            body: None,
            ledger_index: None,
            payload_sha256: None,
        }
    }

    fn released(release: &MetricRelease) -> Self {
        let mut preview = Self::noted(release.kind(), release.model_version());
        if let MetricReport::Sealed(_) = release.report() {
            preview.path = paths::FEEDBACK_SEALED;
            preview.fields = &["modelVersion", "metric", "report"];
            preview.mechanism = "sealed to the two aggregators (Prio3Histogram, HPKE): neither can read it; the helper adds discrete Gaussian noise to each batch's counts";
        }
        preview.state = "released";
        preview.body = Some(String::from_utf8_lossy(&release.body()).into_owned());
        preview.ledger_index = Some(release.ledger_entry().index);
        preview.payload_sha256 = Some(release.ledger_entry().payload_sha256.clone());
        preview
    }
}

impl DevicePrivacy {
    /// The payload inspector's metric reports: the released ones waiting for delivery (exact
    /// bodies), then the noted ones in release order (what will leave at the next sync, once
    /// randomized).
    pub fn metric_previews(&self) -> Vec<MetricPreview> {
        let mut out: Vec<MetricPreview> = self
            .undelivered_metrics()
            .iter()
            .map(MetricPreview::released)
            .collect();
        let notes = &self.state().pending_metrics;
        let noted = notes
            .thumbs
            .keys()
            .map(|v| ("thumbs", v))
            .chain(notes.stars.keys().map(|v| ("stars", v)))
            .chain(notes.agreement.keys().map(|v| ("agreement", v)))
            .chain(notes.kinds.keys().map(|v| ("kinds", v)))
            .chain(notes.segments.keys().map(|v| ("segments", v)));
        out.extend(noted.map(|(kind, v)| MetricPreview::noted(kind, v)));
        out
    }
}

/// At most this many released metric reports wait for delivery; the oldest goes first.
pub const UNDELIVERED_CAPACITY: usize = 32;

/// A released metric report whose delivery is not confirmed: what was sent (a bit, or a rating),
/// not a raw verdict. Resent as a [`MetricRelease`] rebuilt by
/// [`DevicePrivacy::undelivered_metrics`], only when its bytes are exactly the payload its ledger
/// entry records, so an edited store cannot send anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UndeliveredMetric {
    /// "thumbs", "stars", "agreement" or "kinds".
    kind: String,
    model_version: String,
    /// The randomized bit (0 or 1) or rating (1 to 5) as released; for "kinds", 2 × the sampled
    /// kind's index + the bit; for "segments", the cell.
    value: u32,
    payload_sha256: String,
    /// A sealed report's bytes (base64), as sent; `value` is then 0 (the bucket is never kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
    /// Confirmed: kept (as a tombstone) so that merging with another tab's older copy of the
    /// state does not bring it back.
    #[serde(default)]
    delivered: bool,
}

impl UndeliveredMetric {
    fn of(release: &MetricRelease) -> Self {
        let value = match release.report() {
            MetricReport::Thumbs(r) | MetricReport::Agreement(r) => u32::from(r.bit),
            MetricReport::Stars(r) => u32::from(r.stars),
            MetricReport::Kinds(r) => {
                2 * kind_index(&r.kind).unwrap_or(0) as u32 + u32::from(r.bit)
            }
            MetricReport::Segments(r) => r.cell,
            MetricReport::Sealed(_) => 0,
        };
        let sealed = match release.report() {
            MetricReport::Sealed(r) => Some(r.report.clone()),
            _ => None,
        };
        Self {
            kind: release.kind().to_string(),
            model_version: release.model_version().to_string(),
            value,
            payload_sha256: release.ledger_entry().payload_sha256.clone(),
            sealed,
            delivered: false,
        }
    }

    /// The release again, if `ledger` records exactly this payload for it.
    fn rebuild(&self, ledger: &Ledger) -> Option<MetricRelease> {
        if let Some(sealed) = &self.sealed {
            return self.rebuild_sealed(sealed, ledger);
        }
        if self.kind == "segments" {
            return self.rebuild_segments(ledger);
        }
        let (purpose, id, payload, report) = match self.kind.as_str() {
            "thumbs" | "agreement" if self.value <= 1 => {
                let metric = match self.kind.as_str() {
                    "thumbs" => BitMetric::Thumbs,
                    _ => BitMetric::Agreement,
                };
                let bit = self.value == 1;
                (
                    metric.purpose(),
                    metric.release_id(&self.model_version),
                    vec![u8::from(bit)],
                    metric.report(FeedbackReport {
                        model_version: self.model_version.clone(),
                        bit,
                    }),
                )
            }
            "stars" if (1..=5).contains(&self.value) => (
                STARS_PURPOSE,
                stars_release_id(&self.model_version),
                (self.value - 1).to_le_bytes().to_vec(),
                MetricReport::Stars(StarsReport {
                    model_version: self.model_version.clone(),
                    stars: self.value as u8,
                }),
            ),
            "kinds" if self.value < 2 * KINDS.len() as u32 => {
                let (index, bit) = ((self.value / 2) as u8, self.value % 2 == 1);
                (
                    KINDS_PURPOSE,
                    kinds_release_id(&self.model_version),
                    vec![index, u8::from(bit)],
                    MetricReport::Kinds(KindsReport {
                        model_version: self.model_version.clone(),
                        kind: KINDS[index as usize].to_string(),
                        bit,
                    }),
                )
            }
            _ => return None,
        };
        let sha = feedloop_privacy::ledger::sha256_hex(&payload);
        if sha != self.payload_sha256 {
            return None;
        }
        let entry = ledger
            .entries()
            .iter()
            .find(|e| e.purpose == purpose && e.round_id == id && e.payload_sha256 == sha)?;
        Some(MetricRelease {
            report,
            ledger_entry: entry.clone(),
        })
    }

    /// A sealed report again: its bytes are the recorded payload of a secure-histogram release.
    fn rebuild_sealed(&self, sealed: &str, ledger: &Ledger) -> Option<MetricRelease> {
        use base64::Engine;
        let metric = SecureMetric::parse(&self.kind)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        let sha = feedloop_privacy::ledger::sha256_hex(&bytes);
        if sha != self.payload_sha256 {
            return None;
        }
        let id = metric.task_name(&self.model_version);
        let entry = ledger.entries().iter().find(|e| {
            e.round_id == id
                && e.payload_sha256 == sha
                && matches!(e.params, ReleaseParams::SecureHistogram { .. })
        })?;
        Some(MetricRelease {
            report: MetricReport::Sealed(SealedMetricReport {
                model_version: self.model_version.clone(),
                metric: metric.name().to_string(),
                report: sealed.to_string(),
            }),
            ledger_entry: entry.clone(),
        })
    }

    /// A segment report again: the cell count is the recorded mechanism's.
    fn rebuild_segments(&self, ledger: &Ledger) -> Option<MetricRelease> {
        let sha = feedloop_privacy::ledger::sha256_hex(&self.value.to_le_bytes());
        let id = segments_release_id(&self.model_version);
        let entry = ledger.entries().iter().find(|e| {
            e.purpose == SEGMENTS_PURPOSE && e.round_id == id && e.payload_sha256 == sha
        })?;
        let ReleaseParams::CategoricalResponse { categories, .. } = entry.params else {
            return None;
        };
        if sha != self.payload_sha256 || self.value >= categories || categories % 2 != 0 {
            return None;
        }
        Some(MetricRelease {
            report: MetricReport::Segments(SegmentReport {
                model_version: self.model_version.clone(),
                segments: categories / 2,
                cell: self.value,
            }),
            ledger_entry: entry.clone(),
        })
    }

    /// Both tabs' reports (once each; delivered if either tab saw it delivered), less any the
    /// merged ledger does not record. (Should a tombstone have been dropped for capacity, an old
    /// copy is sent once more: the server answers "duplicate", which counts as delivered.)
    pub(crate) fn merge(stored: &[Self], mine: &[Self], ledger: &Ledger) -> Vec<Self> {
        let mut out: Vec<Self> = stored.to_vec();
        for m in mine {
            match out
                .iter_mut()
                .find(|o| o.kind == m.kind && o.model_version == m.model_version)
            {
                Some(o) => o.delivered |= m.delivered,
                None => out.push(m.clone()),
            }
        }
        out.retain(|u| u.rebuild(ledger).is_some());
        cap(&mut out);
        out
    }
}

/// Keeps at most [`UNDELIVERED_CAPACITY`] entries: delivered ones (the oldest first) go before
/// any waiting one does.
fn cap(list: &mut Vec<UndeliveredMetric>) {
    while list.len() > UNDELIVERED_CAPACITY {
        let i = list.iter().position(|u| u.delivered).unwrap_or(0);
        list.remove(i);
    }
}

/// The budget key (and ledger round id) of a version's thumbs report: one per version.
fn release_id(model_version: &str) -> String {
    format!("thumbs@{model_version}")
}

/// The first noted version (in the map's order) and its value.
fn first_note<T: Copy>(notes: &BTreeMap<String, T>) -> Option<(String, T)> {
    notes.iter().next().map(|(v, value)| (v.clone(), *value))
}

fn privacy(e: feedloop_privacy::PrivacyError) -> Error {
    Error::InvalidInput(format!("privacy: {e}"))
}

/// Whether a budget key is a metric report's (not a round's: those are numbers).
fn is_metric_release(id: &str) -> bool {
    ["thumbs@", "stars@", "agreement@", "kinds@", "segments@"]
        .iter()
        .any(|prefix| id.starts_with(prefix))
}

fn segments_release_id(model_version: &str) -> String {
    format!("segments@{model_version}")
}

/// Whether `ledger` has the segment report of `model_version`.
pub(crate) fn segments_reported_in(ledger: &Ledger, model_version: &str) -> bool {
    reported_in(
        ledger,
        SEGMENTS_PURPOSE,
        &segments_release_id(model_version),
    )
}

fn kinds_release_id(model_version: &str) -> String {
    format!("kinds@{model_version}")
}

/// The position of a feedback kind in `KINDS`.
fn kind_index(kind: &str) -> Option<usize> {
    KINDS.iter().position(|k| *k == kind)
}

/// Whether `ledger` has the feedback-kinds report of `model_version`.
pub(crate) fn kinds_reported_in(ledger: &Ledger, model_version: &str) -> bool {
    reported_in(ledger, KINDS_PURPOSE, &kinds_release_id(model_version))
}

fn agreement_release_id(model_version: &str) -> String {
    format!("agreement@{model_version}")
}

/// Whether `ledger` has the federated-evaluation report of `model_version`.
pub(crate) fn agreement_reported_in(ledger: &Ledger, model_version: &str) -> bool {
    reported_in(
        ledger,
        AGREEMENT_PURPOSE,
        &agreement_release_id(model_version),
    )
}

fn stars_release_id(model_version: &str) -> String {
    format!("stars@{model_version}")
}

/// Whether `ledger` has a report with this purpose and release id.
fn reported_in(ledger: &Ledger, purpose: &str, id: &str) -> bool {
    ledger
        .entries()
        .iter()
        .any(|e| e.purpose == purpose && e.round_id == id)
}

/// Whether `ledger` has the star-rating report of `model_version`.
pub(crate) fn stars_reported_in(ledger: &Ledger, model_version: &str) -> bool {
    reported_in(ledger, STARS_PURPOSE, &stars_release_id(model_version))
}

/// Whether `ledger` has the thumbs report of `model_version`.
pub(crate) fn thumbs_reported_in(ledger: &Ledger, model_version: &str) -> bool {
    reported_in(ledger, THUMBS_PURPOSE, &release_id(model_version))
}

impl DevicePrivacy {
    /// Notes a thumbs verdict on the answer ranked first under `model_version`; reported at the
    /// next sync unless that version was already reported (one report per version) or is the
    /// bundled model (no server knows it). Without the user's consent nothing is noted.
    pub fn observe_thumbs(&mut self, model_version: &str, up: bool) {
        if !self.consented()
            || model_version == BUNDLED_VERSION
            || self.thumbs_reported(model_version)
        {
            return;
        }
        self.state_mut()
            .pending_metrics
            .thumbs
            .insert(model_version.to_string(), up);
    }

    /// Whether this device's ledger already has the thumbs report of `model_version`.
    pub fn thumbs_reported(&self, model_version: &str) -> bool {
        thumbs_reported_in(&self.state().ledger, model_version)
    }

    /// Randomizes the verdict of one noted version with ε-randomized response (`epsilon`: what the
    /// server de-biases for), charges the budget, appends the ledger entry and forgets the note.
    /// `None` when nothing is noted. Refused, with nothing changed, when the policy or the budget
    /// does not allow ρ = ε²/2 (the note stays for a later sync).
    pub fn release_thumbs<R: CryptoRng + ?Sized>(
        &mut self,
        epsilon: f64,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        self.release_bit(BitMetric::Thumbs, epsilon, None, now_ms, rng)
    }

    /// What [`Self::release_thumbs`] and [`Self::release_agreement`] share: the first noted
    /// version's verdict, ε-randomized, charged and recorded, its note forgotten.
    fn release_bit<R: CryptoRng + ?Sized>(
        &mut self,
        metric: BitMetric,
        epsilon: f64,
        secure: Option<&SecureMetricTerms>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        self.check_consent()?;
        let Some((version, verdict)) = first_note(metric.notes(&self.state().pending_metrics))
        else {
            return Ok(None);
        };
        if let Some(terms) = secure.filter(|t| self.accepts_secure_metrics(t)) {
            let sealed = match metric {
                BitMetric::Thumbs => SecureMetric::Thumbs,
                BitMetric::Agreement => SecureMetric::Agreement,
            };
            return self
                .release_sealed(
                    sealed,
                    &version,
                    usize::from(verdict),
                    terms,
                    now_ms,
                    rng,
                    |n| {
                        metric.notes_mut(n).remove(&version);
                    },
                )
                .map(Some);
        }
        let rr = RandomizedResponse::new(epsilon).map_err(privacy)?;
        let id = metric.release_id(&version);
        let bit = rr.respond(verdict, rng);
        let record = ReleaseRecord::for_randomized_response(
            &rr,
            bit,
            now_ms,
            metric.purpose(),
            &id,
            &version,
        );
        let ledger_entry = self.record_metric(&id, rr.rho(), now_ms, record, |notes| {
            metric.notes_mut(notes).remove(&version);
        })?;
        let report = FeedbackReport {
            model_version: version,
            bit,
        };
        Ok(Some(self.awaiting_delivery(MetricRelease {
            report: metric.report(report),
            ledger_entry,
        })))
    }

    /// Keeps a just-released report until its delivery is confirmed ([`Self::metric_delivered`]):
    /// saved with the charge and the ledger entry, so a failed send or a closed page loses no
    /// report that was paid for.
    fn awaiting_delivery(&mut self, release: MetricRelease) -> MetricRelease {
        let list = &mut self.state_mut().undelivered_metrics;
        list.push(UndeliveredMetric::of(&release));
        cap(list);
        release
    }

    /// The released reports not confirmed delivered, to send again (each rebuilt from the ledger
    /// entry that records it; anything else in the store is ignored).
    pub fn undelivered_metrics(&self) -> Vec<MetricRelease> {
        let ledger = &self.state().ledger;
        self.state()
            .undelivered_metrics
            .iter()
            .filter(|u| !u.delivered)
            .filter_map(|u| u.rebuild(ledger))
            .collect()
    }

    /// The server has `release` (or refused it for good): stop resending it. (One report per
    /// kind and version exists; payload hashes alone repeat: every 1-bit hashes alike.)
    pub fn metric_delivered(&mut self, release: &MetricRelease) {
        let (kind, version) = (release.kind(), release.model_version());
        for u in &mut self.state_mut().undelivered_metrics {
            if u.kind == kind && u.model_version == version {
                u.delivered = true;
            }
        }
    }

    /// Charges `rho` under budget id `id`, appends `record` to the ledger and drops the note
    /// (`forget`), all or nothing: refused (nothing changed) when the metrics share, the policy or
    /// the budget does not allow it. The randomized value in `record` leaves only if this succeeds.
    fn record_metric(
        &mut self,
        id: &str,
        rho: f64,
        now_ms: u64,
        record: ReleaseRecord,
        forget: impl FnOnce(&mut PendingMetrics),
    ) -> Result<LedgerEntry> {
        self.check_metrics_share(rho, now_ms)?;
        let mut state = self.state().clone();
        state
            .budget
            .charge(&state.policy, id, rho, now_ms)
            .map_err(privacy)?;
        let entry = state.ledger.append(record).map_err(privacy)?.clone();
        forget(&mut state.pending_metrics);
        *self.state_mut() = state;
        Ok(entry)
    }

    /// Refuses a metric report of `rho` that would take metric reports in the window past the
    /// policy's share of the budget (the rest is for model updates).
    fn check_metrics_share(&self, rho: f64, now_ms: u64) -> Result<()> {
        let state = self.state();
        let policy = &state.policy;
        let spent = state
            .budget
            .window_rho_of(policy, now_ms, is_metric_release);
        let cap = policy.metrics_share() * policy.total_rho();
        if spent + rho > cap * (1.0 + 1e-12) {
            return Err(Error::InvalidInput(format!(
                "privacy: metric reports may use {:.0} % of the budget (ρ = {cap:.4}); this one (ρ = {rho:.4}) \
                 would bring them to ρ = {:.4} in the window",
                100.0 * policy.metrics_share(),
                spent + rho
            )));
        }
        Ok(())
    }

    /// Notes a star rating (1 to 5) given under `model_version`; the last one per version is
    /// reported at the next sync unless that version was already reported or is the bundled model.
    /// Without the user's consent nothing is noted.
    pub fn observe_stars(&mut self, model_version: &str, stars: u8) {
        if !self.consented()
            || !(1..=5).contains(&stars)
            || model_version == BUNDLED_VERSION
            || stars_reported_in(&self.state().ledger, model_version)
        {
            return;
        }
        self.state_mut()
            .pending_metrics
            .stars
            .insert(model_version.to_string(), stars);
    }

    /// Notes whether the global head of `model_version` agreed with the user's "A or B" choice;
    /// the last verdict per version is reported at the next sync, once per version, as thumbs are.
    /// Without the user's consent nothing is noted.
    pub fn observe_agreement(&mut self, model_version: &str, agreed: bool) {
        if !self.consented()
            || model_version == BUNDLED_VERSION
            || agreement_reported_in(&self.state().ledger, model_version)
        {
            return;
        }
        self.state_mut()
            .pending_metrics
            .agreement
            .insert(model_version.to_string(), agreed);
    }

    /// Randomizes the agreement verdict of one noted version with ε-randomized response, charges
    /// ρ = ε²/2, appends the ledger entry and forgets the note, as [`Self::release_thumbs`] does.
    pub fn release_agreement<R: CryptoRng + ?Sized>(
        &mut self,
        epsilon: f64,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        self.release_bit(BitMetric::Agreement, epsilon, None, now_ms, rng)
    }

    /// Notes that the user gave feedback of `kind` (a [`Signal::kind`]) under `model_version`, for
    /// the feedback-volume metric. Without the user's consent nothing is noted.
    pub fn observe_kind(&mut self, model_version: &str, kind: &str) {
        let Some(index) = kind_index(kind) else {
            return;
        };
        if !self.consented()
            || model_version == BUNDLED_VERSION
            || kinds_reported_in(&self.state().ledger, model_version)
        {
            return;
        }
        *self
            .state_mut()
            .pending_metrics
            .kinds
            .entry(model_version.to_string())
            .or_default() |= 1 << index;
    }

    /// The feedback-volume report of one noted version: draws one kind uniformly (from `rng`,
    /// whatever the user did), sets the bit "the user gave that kind under the version",
    /// randomizes it with ε-randomized response, charges ρ = ε²/2, appends the ledger entry
    /// (payload: the kind's index, then the bit sent) and forgets the note — as
    /// [`Self::release_thumbs`] does.
    pub fn release_kinds<R: CryptoRng + ?Sized>(
        &mut self,
        epsilon: f64,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        self.check_consent()?;
        let Some((version, given)) = first_note(&self.state().pending_metrics.kinds) else {
            return Ok(None);
        };
        let rr = RandomizedResponse::new(epsilon).map_err(privacy)?;
        let id = kinds_release_id(&version);
        let index = feedloop_privacy::sampler::uniform_below(rng, KINDS.len() as u64) as u8;
        let bit = rr.respond((given >> index) & 1 == 1, rng);
        let record = ReleaseRecord::for_sampled_randomized_response(
            &rr,
            index,
            bit,
            now_ms,
            KINDS_PURPOSE,
            &id,
            &version,
        );
        let ledger_entry = self.record_metric(&id, rr.rho(), now_ms, record, |notes| {
            notes.kinds.remove(&version);
        })?;
        Ok(Some(self.awaiting_delivery(MetricRelease {
            report: MetricReport::Kinds(KindsReport {
                model_version: version,
                kind: KINDS[index as usize].to_string(),
                bit,
            }),
            ledger_entry,
        })))
    }

    /// The next metric report due, if any: thumbs reports first, then star ratings, federated
    /// evaluation, feedback volume and the thumbs per segment (over the server's declared
    /// `segments`; each of those methods says what it charges and records).
    ///
    /// With `terms.secure` (the site runs a helper) that this device's policy accepts (the helper
    /// pinned, its batches at least the policy's minimum), the thumbs, star and agreement reports
    /// are sealed to the two aggregators instead ([`Self::accepts_secure_metrics`]).
    pub fn release_next_metric<R: CryptoRng + ?Sized>(
        &mut self,
        terms: &MetricTerms,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        let (epsilon, segments, secure) = (terms.epsilon, &terms.segments, terms.secure.as_ref());
        if let Some(r) = self.release_bit(BitMetric::Thumbs, epsilon, secure, now_ms, rng)? {
            return Ok(Some(r));
        }
        if let Some(r) = self.release_stars_under(epsilon, secure, now_ms, rng)? {
            return Ok(Some(r));
        }
        if let Some(r) = self.release_bit(BitMetric::Agreement, epsilon, secure, now_ms, rng)? {
            return Ok(Some(r));
        }
        if let Some(r) = self.release_kinds(epsilon, now_ms, rng)? {
            return Ok(Some(r));
        }
        self.release_segments(epsilon, segments, now_ms, rng)
    }

    /// Whether this device seals its metric reports under `terms`: its policy pins the helper
    /// (the fingerprint recomputed from the key), the helper's batches are at least the policy's
    /// minimum, and both keys parse. Otherwise it sends randomized responses, as without a helper
    /// (the server cannot make a device seal to a helper it did not pin).
    pub fn accepts_secure_metrics(&self, terms: &SecureMetricTerms) -> bool {
        let policy = self.state().policy.secure();
        let keys = feedloop_secagg::HpkePublicKey::from_hex(&terms.helper_key)
            .and_then(|h| feedloop_secagg::HpkePublicKey::from_hex(&terms.leader_key).map(|_| h));
        let Ok(helper) = keys else {
            return false;
        };
        let min = u64::try_from(terms.min_reports).unwrap_or(0);
        policy.helpers.contains(&helper.fingerprint()) && min >= policy.min_reports.max(1)
    }

    /// Seals `bucket` of `metric` for `version` to the two aggregators (Prio3Histogram, HPKE),
    /// charges ρ = 1/σ² of the helper's noise to the metric share, records the release (payload:
    /// the report's bytes) and forgets the note (`forget`), all or nothing; the bucket itself is
    /// dropped here and kept nowhere.
    #[allow(clippy::too_many_arguments)]
    fn release_sealed<R: CryptoRng + ?Sized>(
        &mut self,
        metric: SecureMetric,
        version: &str,
        bucket: usize,
        terms: &SecureMetricTerms,
        now_ms: u64,
        rng: &mut R,
        forget: impl FnOnce(&mut PendingMetrics),
    ) -> Result<MetricRelease> {
        use base64::Engine;
        let refuse = |e: feedloop_secagg::SecAggError| Error::InvalidInput(format!("privacy: {e}"));
        let task = metric.task(version, terms)?;
        let leader = feedloop_secagg::HpkePublicKey::from_hex(&terms.leader_key).map_err(refuse)?;
        let helper = feedloop_secagg::HpkePublicKey::from_hex(&terms.helper_key).map_err(refuse)?;
        // A sized handle on the caller's generator (`seal_metric` takes a sized one).
        let mut rng = rng;
        let report = feedloop_secagg::seal_metric(bucket, &task, &leader, &helper, &mut rng)
            .map_err(refuse)?
            .to_bytes();
        let params = ReleaseParams::SecureHistogram {
            buckets: metric.buckets() as u32,
            noise_stddev: task.noise_stddev(),
            min_reports: task.min_reports(),
            helper_fingerprint: helper.fingerprint(),
            leader_fingerprint: leader.fingerprint(),
            trust: crate::contribution::SECURE_METRIC_TRUST.into(),
        };
        let id = task.name().to_string();
        let purpose = match metric {
            SecureMetric::Thumbs => THUMBS_PURPOSE,
            SecureMetric::Agreement => AGREEMENT_PURPOSE,
            SecureMetric::Stars => STARS_PURPOSE,
        };
        let record =
            ReleaseRecord::for_secure_report(&report, params, now_ms, purpose, &id, version);
        let ledger_entry = self.record_metric(&id, task.rho(), now_ms, record, forget)?;
        Ok(self.awaiting_delivery(MetricRelease {
            report: MetricReport::Sealed(SealedMetricReport {
                model_version: version.to_string(),
                metric: metric.name().to_string(),
                report: base64::engine::general_purpose::STANDARD.encode(&report),
            }),
            ledger_entry,
        }))
    }

    /// Notes the user's `segment` (what the page declared for them) with a thumbs verdict on the
    /// answer ranked first under `model_version`, for the thumbs-up rate per segment; the last
    /// verdict per version is reported once, as thumbs are. Without consent nothing is noted.
    pub fn observe_segment_thumbs(&mut self, model_version: &str, segment: &str, up: bool) {
        if !self.consented()
            || model_version == BUNDLED_VERSION
            || segments_reported_in(&self.state().ledger, model_version)
        {
            return;
        }
        self.state_mut()
            .pending_metrics
            .segments
            .insert(model_version.to_string(), (segment.to_string(), up));
    }

    /// The segment report of one noted version: the cell (segment's index in `declared`, the
    /// verdict) randomized with `2·S`-ary randomized response at `epsilon`, charged ρ = ε²/2,
    /// recorded (payload: the cell as 4 little-endian bytes) and its note forgotten — as
    /// [`Self::release_stars`] does. Notes whose segment `declared` does not list (or all of
    /// them, when the server declares none) are dropped unsent: no segment is ever guessed.
    pub fn release_segments<R: CryptoRng + ?Sized>(
        &mut self,
        epsilon: f64,
        declared: &[String],
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        self.check_consent()?;
        if crate::segments::validate(declared).is_err() || declared.is_empty() {
            self.state_mut().pending_metrics.segments.clear();
            return Ok(None);
        }
        self.state_mut()
            .pending_metrics
            .segments
            .retain(|_, (segment, _)| declared.contains(segment));
        let Some((version, (segment, up))) = self
            .state()
            .pending_metrics
            .segments
            .iter()
            .next()
            .map(|(v, note)| (v.clone(), note.clone()))
        else {
            return Ok(None);
        };
        let index = declared.iter().position(|s| *s == segment).unwrap_or(0);
        let mechanism = crate::segments::mechanism(epsilon, declared.len())?;
        let id = segments_release_id(&version);
        let cell = mechanism
            .respond(crate::segments::cell(index, up), rng)
            .map_err(privacy)?;
        let record = ReleaseRecord::for_categorical_response(
            &mechanism,
            cell,
            now_ms,
            SEGMENTS_PURPOSE,
            &id,
            &version,
        );
        let ledger_entry = self.record_metric(&id, mechanism.rho(), now_ms, record, |notes| {
            notes.segments.remove(&version);
        })?;
        Ok(Some(self.awaiting_delivery(MetricRelease {
            report: MetricReport::Segments(SegmentReport {
                model_version: version,
                segments: declared.len() as u32,
                cell,
            }),
            ledger_entry,
        })))
    }

    /// Randomizes the rating of one noted version with 5-ary randomized response at `epsilon`
    /// (what the server de-biases for), charges ρ = ε²/2, appends the ledger entry (payload: the
    /// reported category, 0 for 1 star, as 4 little-endian bytes) and forgets the note. `None`
    /// when nothing is noted; refused, with nothing changed, as [`Self::release_thumbs`] is.
    pub fn release_stars<R: CryptoRng + ?Sized>(
        &mut self,
        epsilon: f64,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        self.release_stars_under(epsilon, None, now_ms, rng)
    }

    fn release_stars_under<R: CryptoRng + ?Sized>(
        &mut self,
        epsilon: f64,
        secure: Option<&SecureMetricTerms>,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Option<MetricRelease>> {
        self.check_consent()?;
        let Some((version, stars)) = first_note(&self.state().pending_metrics.stars) else {
            return Ok(None);
        };
        if let Some(terms) = secure.filter(|t| self.accepts_secure_metrics(t)) {
            let bucket = usize::from(stars - 1);
            return self
                .release_sealed(
                    SecureMetric::Stars,
                    &version,
                    bucket,
                    terms,
                    now_ms,
                    rng,
                    |n| {
                        n.stars.remove(&version);
                    },
                )
                .map(Some);
        }
        let mechanism = CategoricalResponse::new(epsilon, STAR_CATEGORIES).map_err(privacy)?;
        let id = stars_release_id(&version);
        let reported = mechanism
            .respond(u32::from(stars - 1), rng)
            .map_err(privacy)?;
        let record = ReleaseRecord::for_categorical_response(
            &mechanism,
            reported,
            now_ms,
            STARS_PURPOSE,
            &id,
            &version,
        );
        let ledger_entry = self.record_metric(&id, mechanism.rho(), now_ms, record, |notes| {
            notes.stars.remove(&version);
        })?;
        Ok(Some(self.awaiting_delivery(MetricRelease {
            report: MetricReport::Stars(StarsReport {
                model_version: version,
                stars: reported as u8 + 1,
            }),
            ledger_entry,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::rand_core::SeedableRng;
    use feedloop_privacy::budget::{PrivacyPolicy, DAY_MS};
    use feedloop_privacy::ledger::sha256_hex;

    const NOW: u64 = 1_800_000_000_000;

    fn device(max_rho_per_release: f64) -> DevicePrivacy {
        let policy = PrivacyPolicy::new(8.0, 1e-6, 30 * DAY_MS, max_rho_per_release).unwrap();
        let mut device = DevicePrivacy::new(policy, 3, "1").unwrap();
        device.set_consent(true, 1, "1").unwrap(); // the user agreed, long before
        device
    }

    #[test]
    fn a_released_report_waits_until_delivered_and_only_as_released() {
        let mut d = device(0.5);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(11);
        d.observe_thumbs("2", true);
        d.observe_stars("2", 4);
        let thumbs = d.release_thumbs(1.0, NOW, &mut rng).unwrap().unwrap();
        let stars = d.release_stars(1.0, NOW, &mut rng).unwrap().unwrap();
        // Both wait (saved with the charge); rebuilt, they are exactly what was released.
        let waiting = d.undelivered_metrics();
        assert_eq!(waiting.len(), 2);
        assert_eq!(waiting[0].report(), thumbs.report());
        assert_eq!(waiting[0].ledger_entry(), thumbs.ledger_entry());
        assert_eq!(waiting[1].body(), stars.body());
        // They survive a save and a restore (another tab reads the same).
        let restored = DevicePrivacy::from_json(&d.to_json()).unwrap();
        assert_eq!(restored.undelivered_metrics().len(), 2);
        // An edited store cannot send anything else: a value the ledger does not record is dropped.
        let mut json: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        let flipped = 1 - json["undelivered_metrics"][0]["value"].as_u64().unwrap();
        json["undelivered_metrics"][0]["value"] = flipped.into();
        json["undelivered_metrics"][1]["value"] = 9.into();
        let edited = DevicePrivacy::from_json(&json.to_string()).unwrap();
        assert!(edited.undelivered_metrics().is_empty());
        // Delivered: no longer resent; the other still waits.
        d.metric_delivered(&thumbs);
        assert_eq!(d.undelivered_metrics().len(), 1);
        assert_eq!(d.undelivered_metrics()[0].kind(), "stars");
        // Two tabs: the union, once each; a copy stored before the delivery (this tab's own last
        // save, or another tab's) does not bring the delivered one back.
        let other = d.clone();
        let merged = d.reconcile(Some(&other.to_json())).unwrap();
        assert_eq!(merged.undelivered_metrics().len(), 1);
        let merged = d.reconcile(Some(&restored.to_json())).unwrap();
        assert_eq!(
            merged.undelivered_metrics().len(),
            1,
            "thumbs stays delivered"
        );
        assert_eq!(merged.undelivered_metrics()[0].kind(), "stars");
        let merged = restored.reconcile(Some(&d.to_json())).unwrap();
        assert_eq!(merged.undelivered_metrics().len(), 1, "either way round");
        d.set_consent(false, NOW + 1, "2").unwrap();
        assert!(d.undelivered_metrics().is_empty());
    }

    #[test]
    fn an_agreement_report_is_one_randomized_bit_per_version() {
        let mut d = device(0.5);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(7);
        d.observe_agreement("3", false);
        d.observe_agreement("3", true); // the last verdict counts
        d.observe_agreement(BUNDLED_VERSION, true); // ignored
        let release = d.release_agreement(1.0, NOW, &mut rng).unwrap().unwrap();
        assert_eq!(
            (release.kind(), release.path(), release.model_version()),
            ("agreement", paths::FEEDBACK_AGREEMENT, "3")
        );
        let MetricReport::Agreement(report) = release.report().clone() else {
            panic!("an agreement report");
        };
        let entry = release.ledger_entry();
        assert_eq!(entry.purpose, AGREEMENT_PURPOSE);
        assert_eq!(entry.round_id, "agreement@3");
        assert_eq!(entry.payload_sha256, sha256_hex(&[u8::from(report.bit)]));
        let body: serde_json::Value = serde_json::from_slice(&release.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"modelVersion": "3", "bit": report.bit})
        );
        // Charged like any metric report, and once per version.
        let rr = RandomizedResponse::new(1.0).unwrap();
        assert!((d.state().budget.lifetime_rho() - rr.rho()).abs() < 1e-15);
        d.observe_agreement("3", false);
        assert!(d.release_agreement(1.0, NOW, &mut rng).unwrap().is_none());
        assert!(d.state().pending_metrics.is_empty());
        // Without consent nothing is noted.
        d.set_consent(false, NOW, "3").unwrap();
        d.observe_agreement("4", true);
        assert!(d.state().pending_metrics.agreement.is_empty());
    }

    #[test]
    fn a_kinds_report_is_one_sampled_kind_and_a_randomized_bit() {
        let mut d = device(0.5);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(5);
        d.observe_kind("3", "thumbs");
        d.observe_kind("3", "click");
        d.observe_kind("3", "no such kind"); // ignored
        d.observe_kind(BUNDLED_VERSION, "copy"); // ignored
        assert_eq!(
            d.state().pending_metrics.kinds,
            BTreeMap::from([("3".to_string(), 0b10_0001)])
        );
        let release = d.release_kinds(1.0, NOW, &mut rng).unwrap().unwrap();
        assert_eq!(
            (release.kind(), release.path(), release.model_version()),
            ("kinds", paths::FEEDBACK_KINDS, "3")
        );
        let MetricReport::Kinds(report) = release.report().clone() else {
            panic!("a kinds report");
        };
        let index = kind_index(&report.kind).expect("a known kind") as u8;
        let entry = release.ledger_entry();
        assert_eq!(
            (entry.purpose.as_str(), entry.round_id.as_str()),
            (KINDS_PURPOSE, "kinds@3")
        );
        // The ledger hashes exactly what leaves: the kind's index and the bit.
        assert_eq!(
            entry.payload_sha256,
            sha256_hex(&[index, u8::from(report.bit)])
        );
        let body: serde_json::Value = serde_json::from_slice(&release.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"modelVersion": "3", "kind": report.kind, "bit": report.bit})
        );
        // Charged like any metric report, once per version; later kinds of v3 are not noted.
        let rr = RandomizedResponse::new(1.0).unwrap();
        assert!((d.state().budget.lifetime_rho() - rr.rho()).abs() < 1e-15);
        assert!(d.release_kinds(1.0, NOW, &mut rng).unwrap().is_none());
        d.observe_kind("3", "flag");
        assert!(d.state().pending_metrics.kinds.is_empty());
        // It waits for delivery and is rebuilt from the ledger exactly.
        assert_eq!(d.undelivered_metrics()[0].body(), release.body());
        // Without consent nothing is noted.
        d.set_consent(false, NOW, "3").unwrap();
        d.observe_kind("4", "thumbs");
        assert!(d.state().pending_metrics.kinds.is_empty());
    }

    #[test]
    fn the_kind_is_drawn_uniformly_whatever_was_given_and_only_the_bit_depends_on_it() {
        // 5,000 devices that gave thumbs only. The drawn kind must not depend on that (about
        // 500 each), and the bit is 1 with probability p = e/(1+e) for "thumbs", 1 − p otherwise.
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(21);
        let (mut drawn, mut ones) = ([0u32; 10], [0u32; 10]);
        let n = 5_000;
        for _ in 0..n {
            let mut d = device(0.5);
            d.observe_kind("2", "thumbs");
            let release = d.release_kinds(1.0, NOW, &mut rng).unwrap().unwrap();
            let MetricReport::Kinds(r) = release.report() else {
                panic!("a kinds report");
            };
            let i = kind_index(&r.kind).unwrap();
            drawn[i] += 1;
            ones[i] += u32::from(r.bit);
        }
        let p = std::f64::consts::E / (1.0 + std::f64::consts::E);
        for i in 0..10 {
            // Binomial(5000, 0.1): sd 21; 5 sd.
            assert!((drawn[i] as f64 - 500.0).abs() < 106.0, "{drawn:?}");
            let expected = if i == 0 { p } else { 1.0 - p };
            let rate = f64::from(ones[i]) / f64::from(drawn[i]);
            let sd = (expected * (1.0 - expected) / f64::from(drawn[i])).sqrt();
            assert!(
                (rate - expected).abs() < 5.0 * sd,
                "kind {i}: {rate} vs {expected}"
            );
        }
    }

    #[test]
    fn the_next_metric_goes_in_a_fixed_order_and_kinds_merge_across_tabs() {
        let mut d = device(0.5);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(3);
        d.observe_kind("2", "stars");
        d.observe_stars("2", 5);
        d.observe_thumbs("2", true);
        // ε = 0.5 each (ρ = 0.125), so the three fit the metric share of the budget.
        let kinds: Vec<_> = std::iter::from_fn(|| {
            d.release_next_metric(
                &MetricTerms {
                    epsilon: 0.5,
                    ..Default::default()
                },
                NOW,
                &mut rng,
            )
            .unwrap()
        })
        .map(|r| r.kind())
        .collect();
        assert_eq!(kinds, ["thumbs", "stars", "kinds"]);
        let (mut a, mut b) = (PendingMetrics::default(), PendingMetrics::default());
        a.kinds.insert("5".into(), 0b01);
        b.kinds.insert("5".into(), 0b10);
        assert_eq!(PendingMetrics::merge(&a, &b).kinds["5"], 0b11);
    }

    #[test]
    fn a_segment_report_randomizes_segment_and_verdict_together() {
        let declared: Vec<String> = ["en", "de", "fr"].iter().map(|s| s.to_string()).collect();
        let mut d = device(0.5);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(21);
        d.observe_segment_thumbs("2", "de", false);
        d.observe_segment_thumbs("2", "de", true); // the last verdict counts
        d.observe_segment_thumbs("3", "xx", true); // not declared: dropped unsent
        let release = d
            .release_segments(1.0, &declared, NOW, &mut rng)
            .unwrap()
            .unwrap();
        let MetricReport::Segments(report) = release.report().clone() else {
            panic!("a segment report");
        };
        assert_eq!((report.model_version.as_str(), report.segments), ("2", 3));
        assert!(report.cell < 6);
        // The body is the version, the cell count and the randomized cell: no segment name.
        let body: serde_json::Value = serde_json::from_slice(&release.body()).unwrap();
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["cell", "modelVersion", "segments"], "{body}");
        let entry = release.ledger_entry();
        assert_eq!(entry.purpose, SEGMENTS_PURPOSE);
        assert!((entry.rho - 0.5).abs() < 1e-9, "ε = 1 costs ρ = 1/2");
        assert!(matches!(
            entry.params,
            ReleaseParams::CategoricalResponse { categories: 6, .. }
        ));
        // Once per version; the undeclared note is gone; the release waits, rebuilt exactly.
        assert!(d
            .release_segments(1.0, &declared, NOW, &mut rng)
            .unwrap()
            .is_none());
        d.observe_segment_thumbs("2", "en", true);
        assert!(d.state().pending_metrics.segments.is_empty());
        let waiting = d.undelivered_metrics();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].body(), release.body());
        // A server that declares no segments: notes are dropped, nothing is charged.
        let mut e = device(0.5);
        e.observe_segment_thumbs("2", "de", true);
        assert!(e
            .release_segments(1.0, &[], NOW, &mut rng)
            .unwrap()
            .is_none());
        assert!(e.state().pending_metrics.is_empty());
        assert!(e
            .state()
            .ledger
            .entries()
            .iter()
            .all(|x| x.purpose != SEGMENTS_PURPOSE));
    }

    #[test]
    fn the_inspector_lists_noted_and_released_reports_without_verdicts() {
        let declared: Vec<String> = ["en", "de"].iter().map(|s| s.to_string()).collect();
        let mut d = device(0.5);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(8);
        d.observe_thumbs("2", true);
        d.observe_kind("2", "thumbs");
        d.observe_segment_thumbs("2", "de", true);
        let noted = d.metric_previews();
        let list: Vec<_> = noted.iter().map(|p| (p.kind, p.state)).collect();
        assert_eq!(
            list,
            [
                ("thumbs", "noted"),
                ("kinds", "noted"),
                ("segments", "noted")
            ]
        );
        // A noted report shows what will leave and how, never the verdict or the segment.
        let json = serde_json::to_string(&noted).unwrap();
        assert!(!json.contains("\"de\"") && !json.contains("true"), "{json}");
        let thumbs = d.release_thumbs(1.0, NOW, &mut rng).unwrap().unwrap();
        let segments = d
            .release_segments(1.0, &declared, NOW, &mut rng)
            .unwrap()
            .unwrap();
        let after = d.metric_previews();
        assert_eq!(after.len(), 3);
        assert_eq!((after[0].kind, after[0].state), ("thumbs", "released"));
        assert_eq!(
            after[0].body.as_deref().map(str::as_bytes),
            Some(&thumbs.body()[..])
        );
        assert_eq!(after[0].ledger_index, Some(thumbs.ledger_entry().index));
        assert_eq!(
            after[1].body.as_deref().map(str::as_bytes),
            Some(&segments.body()[..])
        );
        assert_eq!((after[2].kind, after[2].state), ("kinds", "noted"));
        d.metric_delivered(&thumbs);
        assert_eq!(d.metric_previews().len(), 2, "delivered: no longer listed");
    }

    #[test]
    fn segment_cells_follow_the_k_ary_table() {
        // 2,000 devices in "fr" with a thumbs up (cell 5 of 6) at ε = 1: each report is cell 5
        // with probability e/(e + 5) and each other cell with 1/(e + 5).
        let declared: Vec<String> = ["en", "de", "fr"].iter().map(|s| s.to_string()).collect();
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(4);
        let mut counts = [0u64; 6];
        let n = 2_000;
        for _ in 0..n {
            let mut d = device(0.5);
            d.observe_segment_thumbs("2", "fr", true);
            let r = d
                .release_segments(1.0, &declared, NOW, &mut rng)
                .unwrap()
                .unwrap();
            let MetricReport::Segments(report) = r.report() else {
                panic!("a segment report");
            };
            counts[report.cell as usize] += 1;
        }
        let e = 1f64.exp();
        for (cell, &c) in counts.iter().enumerate() {
            let p = if cell == 5 {
                e / (e + 5.0)
            } else {
                1.0 / (e + 5.0)
            };
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            let f = c as f64 / n as f64;
            assert!((f - p).abs() < 5.0 * sd, "cell {cell}: {f} vs {p}");
        }
    }

    #[test]
    fn one_report_per_version_charged_and_recorded() {
        let mut d = device(0.5);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(1);
        assert!(d.release_thumbs(1.0, NOW, &mut rng).unwrap().is_none());
        d.observe_thumbs("2", false);
        d.observe_thumbs("2", true); // the last verdict counts
        d.observe_thumbs(BUNDLED_VERSION, true); // ignored
        let release = d.release_thumbs(1.0, NOW, &mut rng).unwrap().unwrap();
        assert_eq!(release.model_version(), "2");
        assert_eq!(
            (release.kind(), release.path()),
            ("thumbs", paths::FEEDBACK)
        );
        let MetricReport::Thumbs(report) = release.report().clone() else {
            panic!("a thumbs report");
        };
        let entry = release.ledger_entry();
        assert_eq!(entry.purpose, THUMBS_PURPOSE);
        assert_eq!(entry.model_version, "2");
        // The ledger hashes exactly the bit that leaves.
        assert_eq!(entry.payload_sha256, sha256_hex(&[u8::from(report.bit)]));
        let body: serde_json::Value = serde_json::from_slice(&release.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"modelVersion": "2", "bit": report.bit})
        );
        let rr = RandomizedResponse::new(1.0).unwrap();
        assert!((d.state().budget.lifetime_rho() - rr.rho()).abs() < 1e-15);
        assert!(d.thumbs_reported("2"));
        // Nothing noted any more, and a new verdict for version 2 is not noted again.
        d.observe_thumbs("2", false);
        assert!(d.release_thumbs(1.0, NOW, &mut rng).unwrap().is_none());
        assert_eq!(
            d.state().ledger.entries().len(),
            2,
            "the consent and one report"
        );
        // A new version is reported on its own.
        d.observe_thumbs("3", true);
        assert!(d.release_thumbs(1.0, NOW + 1, &mut rng).unwrap().is_some());
        assert_eq!(d.state().ledger.entries().len(), 3);
        assert!(d.state().ledger.verify().is_empty());
    }

    #[test]
    fn the_server_cannot_ask_for_more_epsilon_than_the_policy_allows() {
        // At most ρ = 0.1 per release: ε = 1 (ρ = 0.5) is refused and nothing changes.
        let mut d = device(0.1);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(2);
        d.observe_thumbs("2", true);
        let before = d.state().clone();
        assert!(d.release_thumbs(1.0, NOW, &mut rng).is_err());
        assert_eq!(d.state(), &before);
        // ε = 0.4 (ρ = 0.08) is allowed.
        assert!(d.release_thumbs(0.4, NOW, &mut rng).unwrap().is_some());
    }

    #[test]
    fn the_bit_is_randomized_response() {
        // Over many devices whose verdict is "up", the reported ones come at rate p.
        let rr = RandomizedResponse::new(1.0).unwrap();
        let (n, d) = rr.keep_probability();
        let p = n as f64 / d as f64;
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(3);
        let devices = 4000;
        let mut ones = 0;
        for _ in 0..devices {
            let mut dev = device(0.5);
            dev.observe_thumbs("2", true);
            let release = dev.release_thumbs(1.0, NOW, &mut rng).unwrap().unwrap();
            let MetricReport::Thumbs(report) = release.report() else {
                panic!("a thumbs report");
            };
            ones += u32::from(report.bit);
        }
        let rate = f64::from(ones) / f64::from(devices);
        let se = (p * (1.0 - p) / f64::from(devices)).sqrt();
        assert!((rate - p).abs() < 5.0 * se, "{rate} vs {p}");
    }

    #[test]
    fn notes_of_two_tabs_merge() {
        let mut a = PendingMetrics::default();
        a.thumbs.insert("2".into(), true);
        let mut b = PendingMetrics::default();
        b.thumbs.insert("2".into(), false);
        b.thumbs.insert("3".into(), true);
        let merged = PendingMetrics::merge(&a, &b);
        assert_eq!(merged.thumbs.get("2"), Some(&false));
        assert_eq!(merged.thumbs.get("3"), Some(&true));
    }

    #[test]
    fn without_consent_nothing_is_noted_or_released_and_a_withdrawal_drops_the_notes() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(9);
        let policy = PrivacyPolicy::new(8.0, 1e-6, 30 * DAY_MS, 1.0).unwrap();
        let mut d = DevicePrivacy::new(policy, 3, "1").unwrap();
        d.observe_thumbs("2", true);
        assert!(d.state().pending_metrics.thumbs.is_empty(), "not noted");
        assert!(d.release_thumbs(1.0, NOW, &mut rng).is_err());
        d.set_consent(true, NOW, "2").unwrap();
        d.observe_thumbs("2", true);
        assert_eq!(d.state().pending_metrics.thumbs.len(), 1);
        d.set_consent(false, NOW + 1, "2").unwrap();
        assert!(
            d.state().pending_metrics.thumbs.is_empty(),
            "dropped with the withdrawal"
        );
        assert!(d.release_thumbs(1.0, NOW + 2, &mut rng).is_err());
        assert_eq!(d.state().budget.lifetime_rho(), 0.0);
    }

    #[test]
    fn the_last_star_rating_per_version_is_reported_once_as_5_ary_randomized_response() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(11);
        let mut d = device(1.0);
        d.observe_stars("2", 2);
        d.observe_stars("2", 5); // the last rating counts
        d.observe_stars("2", 0); // not a rating: ignored
        d.observe_stars(BUNDLED_VERSION, 4); // ignored
        assert_eq!(d.state().pending_metrics.stars.len(), 1);
        let release = d.release_stars(1.0, NOW, &mut rng).unwrap().unwrap();
        assert_eq!(
            (release.kind(), release.path()),
            ("stars", paths::FEEDBACK_STARS)
        );
        let MetricReport::Stars(report) = release.report().clone() else {
            panic!("a stars report");
        };
        assert!((1..=5).contains(&report.stars));
        let entry = release.ledger_entry();
        assert_eq!(entry.purpose, STARS_PURPOSE);
        assert_eq!(entry.round_id, "stars@2");
        // The ledger hashes exactly the category that leaves (0 = 1 star, 4 bytes LE).
        assert_eq!(
            entry.payload_sha256,
            sha256_hex(&(u32::from(report.stars) - 1).to_le_bytes())
        );
        let mechanism = CategoricalResponse::new(1.0, 5).unwrap();
        assert!((d.state().budget.lifetime_rho() - mechanism.rho()).abs() < 1e-15);
        let body: serde_json::Value = serde_json::from_slice(&release.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"modelVersion": "2", "stars": report.stars})
        );
        // Reported once: a later rating under version 2 is not noted again.
        d.observe_stars("2", 1);
        assert!(d.release_stars(1.0, NOW, &mut rng).unwrap().is_none());
        assert!(d.state().ledger.verify().is_empty());
    }

    #[test]
    fn star_reports_de_bias_to_the_true_mean_rating() {
        // 3,000 devices that all rate 4: the server's estimate of the mean is 4 within 5 SE.
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(12);
        let mut counts = [0u64; 5];
        for _ in 0..3000 {
            let mut dev = device(1.0);
            dev.observe_stars("7", 4);
            let release = dev.release_stars(1.0, NOW, &mut rng).unwrap().unwrap();
            let MetricReport::Stars(report) = release.report() else {
                panic!("a stars report");
            };
            counts[usize::from(report.stars) - 1] += 1;
        }
        let estimate = CategoricalResponse::new(1.0, 5)
            .unwrap()
            .estimate(&counts)
            .unwrap();
        let (mean, variance) = estimate.linear(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(
            (mean - 4.0).abs() < 5.0 * variance.sqrt(),
            "{mean} ± {}",
            variance.sqrt()
        );
        assert!(counts[3] < 3000, "some ratings were randomized: {counts:?}");
    }

    #[test]
    fn metric_reports_stay_within_the_policys_share_of_the_budget() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(13);
        // ε = 8 over 30 days (ρ ≈ 1.05); a quarter of it (ρ ≈ 0.26) for metric reports.
        let policy = PrivacyPolicy::new(8.0, 1e-6, 30 * DAY_MS, 1.0)
            .unwrap()
            .with_metrics_share(0.25)
            .unwrap();
        let mut d = DevicePrivacy::new(policy, 3, "1").unwrap();
        d.set_consent(true, 1, "1").unwrap();
        // At ε = 1 one report costs ρ = 0.5: more than the share, refused with nothing spent.
        d.observe_thumbs("2", true);
        let refused = d
            .release_thumbs(1.0, NOW, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("25 % of the budget"), "{refused}");
        assert_eq!(d.state().budget.lifetime_rho(), 0.0);
        assert_eq!(d.state().pending_metrics.thumbs.len(), 1, "the note waits");
        // At ε = 0.5 (ρ = 0.125) two fit, a third does not.
        assert!(d.release_thumbs(0.5, NOW, &mut rng).unwrap().is_some());
        d.observe_stars("2", 4);
        assert!(d.release_stars(0.5, NOW, &mut rng).unwrap().is_some());
        d.observe_thumbs("3", false);
        assert!(d.release_thumbs(0.5, NOW, &mut rng).is_err());
        // A month later the window has room again.
        assert!(d
            .release_thumbs(0.5, NOW + 31 * DAY_MS, &mut rng)
            .unwrap()
            .is_some());
        assert!(PrivacyPolicy::default().with_metrics_share(0.0).is_err());
        assert!(PrivacyPolicy::default().with_metrics_share(1.5).is_err());
    }

    /// Two aggregators' keys and the terms a leader with a helper announces.
    fn aggregators(
        noise_stddev: f64,
    ) -> (
        feedloop_secagg::HpkeKeyPair,
        feedloop_secagg::HpkeKeyPair,
        SecureMetricTerms,
    ) {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(77);
        let leader = feedloop_secagg::HpkeKeyPair::generate(&mut rng);
        let helper = feedloop_secagg::HpkeKeyPair::generate(&mut rng);
        let terms = SecureMetricTerms {
            leader_key: leader.public().to_hex(),
            helper_key: helper.public().to_hex(),
            helper_fingerprint: helper.public().fingerprint(),
            noise_stddev,
            min_reports: 10,
        };
        (leader, helper, terms)
    }

    fn pinning(helper: &str) -> DevicePrivacy {
        use feedloop_privacy::budget::SecurePolicy;
        let policy = PrivacyPolicy::default()
            .with_secure(SecurePolicy::new(vec![helper.to_string()], 10).unwrap());
        let mut device = DevicePrivacy::new(policy, 3, "1").unwrap();
        device.set_consent(true, 1, "1").unwrap();
        device
    }

    #[test]
    fn a_pinned_helper_gets_sealed_reports_that_only_both_aggregators_can_sum() {
        use base64::Engine;
        use feedloop_secagg::{helper_verify, leader_finish, leader_init, unshard, Batch};
        let (leader, helper, terms) = aggregators(2.0);
        let metric_terms = MetricTerms {
            epsilon: 1.0,
            segments: vec![],
            secure: Some(terms.clone()),
        };
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(3);
        let verify_key = feedloop_secagg::VerifyKey::generate(&mut rng);
        let task = SecureMetric::Thumbs.task("4", &terms).unwrap();
        let mut leader_batch = Batch::new(task.clone()).unwrap();
        let mut helper_batch = Batch::new(task.clone()).unwrap();
        let verdicts = [
            true, true, false, true, false, true, true, true, false, true, true,
        ];
        for (i, &up) in verdicts.iter().enumerate() {
            let mut d = pinning(&terms.helper_fingerprint);
            d.observe_thumbs("4", up);
            d.observe_stars("4", 5);
            let release = d
                .release_next_metric(&metric_terms, NOW + i as u64, &mut rng)
                .unwrap()
                .unwrap();
            let MetricReport::Sealed(report) = release.report() else {
                panic!("{:?}", release.report());
            };
            assert_eq!(
                (release.kind(), release.path()),
                ("thumbs", paths::FEEDBACK_SEALED)
            );
            // The body: version, metric name and the sealed bytes, nothing else.
            let body: serde_json::Value = serde_json::from_slice(&release.body()).unwrap();
            assert_eq!(body.as_object().unwrap().len(), 3);
            let entry = release.ledger_entry();
            assert!(matches!(
                entry.params,
                ReleaseParams::SecureHistogram { buckets: 2, .. }
            ));
            assert!((entry.rho - 0.25).abs() < 1e-12, "ρ = 1/σ²: {}", entry.rho);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&report.report)
                .unwrap();
            assert_eq!(entry.payload_sha256, sha256_hex(&bytes));
            assert!(d.thumbs_reported("4"));
            // Lost on the way: rebuilt from the ledger, byte for byte.
            let again = d.undelivered_metrics();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].body(), release.body());
            // The stars go sealed too, 5 buckets.
            let stars = d
                .release_next_metric(&metric_terms, NOW + i as u64, &mut rng)
                .unwrap()
                .unwrap();
            assert!(matches!(stars.report(), MetricReport::Sealed(r) if r.metric == "stars"));
            let sealed = feedloop_secagg::Report::from_bytes(&bytes).unwrap();
            let (pending, request) = leader_init(&task, &verify_key, &leader, &sealed).unwrap();
            let (h, response) = helper_verify(&task, &verify_key, &helper, &request).unwrap();
            leader_batch
                .add(leader_finish(&task, pending, &response).unwrap())
                .unwrap();
            helper_batch.add(h).unwrap();
        }
        let released = helper_batch.release(10, None, &mut rng).unwrap();
        let sum = unshard(&task, &leader_batch.aggregate_share(), &released).unwrap();
        assert_eq!(sum, vec![3, 8]);
    }

    #[test]
    fn without_a_pinned_helper_the_device_randomizes_as_before() {
        let (_, _, terms) = aggregators(2.0);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(4);
        let mut too_small = terms.clone();
        too_small.min_reports = 9;
        let mut bad_key = terms.clone();
        bad_key.leader_key = "zz".into();
        for (device, t) in [
            (device(1.0), terms.clone()),
            (pinning(&terms.helper_fingerprint), too_small),
            (pinning(&terms.helper_fingerprint), bad_key),
        ] {
            let mut d = device;
            assert!(!d.accepts_secure_metrics(&t));
            d.observe_thumbs("4", true);
            let release = d
                .release_next_metric(
                    &MetricTerms {
                        epsilon: 1.0,
                        segments: vec![],
                        secure: Some(t),
                    },
                    NOW,
                    &mut rng,
                )
                .unwrap()
                .unwrap();
            assert!(matches!(release.report(), MetricReport::Thumbs(_)));
        }
        // A helper whose noise is too small for the policy: the charge is refused, nothing sent.
        let (_, _, weak) = aggregators(0.1);
        let mut d = pinning(&weak.helper_fingerprint);
        d.observe_thumbs("4", true);
        let terms = MetricTerms {
            epsilon: 1.0,
            segments: vec![],
            secure: Some(weak),
        };
        assert!(d.release_next_metric(&terms, NOW, &mut rng).is_err());
        assert!(!d.thumbs_reported("4"));
        assert!(d.undelivered_metrics().is_empty());
    }
}
