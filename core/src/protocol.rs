//! The HTTP protocol between a device and `feedloop serve`: every request and response body and
//! every header name, in one place. The server serializes these types, the browser layer
//! deserializes them, the dashboard reads the same field names, and the server's OpenAPI document
//! is generated from them (feature `openapi`). Units live in the types ([`UnixMillis`]), so a
//! timestamp cannot be read in the wrong unit.
//!
//! Ids and versions travel as decimal strings (JavaScript numbers lose integers above 2^53).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::contribution::RoundConfig;

/// Header naming the site's deployment key on first contact (`POST /v1/clients/register`).
pub const DEPLOYMENT_KEY_HEADER: &str = "x-feedloop-deployment-key";
/// Header naming the model version an update was computed against.
pub const MODEL_VERSION_HEADER: &str = "x-feedloop-model-version";
/// Content type of a privatized update (the `FLDP` wire format of `feedloop-privacy`).
pub const UPDATE_CONTENT_TYPE: &str = "application/octet-stream";

/// A point in time as unix milliseconds: the only time unit on the wire.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(ToSchema), schema(value_type = i64, format = Int64))]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub const fn new(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + ms`, saturating.
    pub const fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn millis_since(self, earlier: Self) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A client token (`201` from register, `200` from refresh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenGrant {
    pub client_id: String,
    /// (Defaults, as `issuedAt`, for tokens devices stored before the field was sent.)
    #[serde(default)]
    pub deployment: String,
    /// The bearer token (`Authorization: Bearer …`).
    pub token: String,
    #[serde(default)]
    pub issued_at: UnixMillis,
    pub expires_at: UnixMillis,
}

impl TokenGrant {
    /// A token is refreshed within a day of its expiry, or past half of its lifetime when that is
    /// shorter (deployments with short-lived tokens).
    pub const REFRESH_MARGIN_MS: i64 = 24 * 3600 * 1000;

    /// Whether the token should be refreshed at `now`.
    pub fn needs_refresh(&self, now: UnixMillis) -> bool {
        let lifetime = self.expires_at.millis_since(self.issued_at);
        let margin = if lifetime > 0 {
            Self::REFRESH_MARGIN_MS.min(lifetime / 2)
        } else {
            Self::REFRESH_MARGIN_MS
        };
        self.expires_at.millis_since(now) <= margin
    }

    /// Whether the token is still valid at `now`.
    pub fn valid_at(&self, now: UnixMillis) -> bool {
        self.expires_at > now
    }
}

/// Where a round is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum RoundStatus {
    /// Taking updates.
    Open,
    /// Being aggregated (a transient state inside the close transaction).
    Closing,
    /// Closed with at least the minimum cohort: a new version was published.
    Published,
    /// Closed below the minimum cohort: nothing was published.
    Insufficient,
    /// Abandoned by a rollback.
    Aborted,
}

impl RoundStatus {
    pub const ALL: [RoundStatus; 5] = [
        Self::Open,
        Self::Closing,
        Self::Published,
        Self::Insufficient,
        Self::Aborted,
    ];

    /// The name on the wire and in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Published => "published",
            Self::Insufficient => "insufficient",
            Self::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A round status name that is not one of [`RoundStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRoundStatus(pub String);

impl std::fmt::Display for UnknownRoundStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown round status `{}`", self.0)
    }
}

impl std::error::Error for UnknownRoundStatus {}

impl TryFrom<String> for RoundStatus {
    type Error = UnknownRoundStatus;
    fn try_from(s: String) -> Result<Self, UnknownRoundStatus> {
        Self::parse(&s).ok_or(UnknownRoundStatus(s))
    }
}

impl std::fmt::Display for RoundStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The privacy a round gives each participant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RoundPrivacy {
    /// zCDP ρ of one participant's update.
    pub rho: f64,
    /// ε at `delta` for one participant.
    pub epsilon_per_participant: f64,
    pub delta: f64,
}

/// A round. Its first five fields are the device's [`RoundConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Round {
    pub round_id: String,
    /// The model version updates must be computed against.
    pub model_version: String,
    /// C: updates are clipped to this L2 norm.
    pub clip_norm: f64,
    /// γ: the lattice granularity.
    pub granularity: f64,
    /// σ: the discrete Gaussian noise, in the update's units: what each device adds (`local`),
    /// or what the helper adds once to the sum (`secure`).
    pub noise_stddev: f64,
    /// Parameters in an update (the head's).
    pub dimension: i64,
    pub min_cohort: i64,
    pub target_count: Option<i64>,
    pub deadline: Option<UnixMillis>,
    pub status: RoundStatus,
    /// `local` (each device noises its update) or `secure` (two aggregators; see `secure`).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// The aggregators of a `secure` round, which the device checks against its own policy.
    #[serde(default)]
    pub secure: Option<SecureAggregators>,
    /// Updates (or sealed reports) stored so far.
    pub received: i64,
    pub created_at: UnixMillis,
    pub closed_at: Option<UnixMillis>,
    /// `target_count`, `deadline`, `admin` or `rollback`.
    pub close_reason: Option<String>,
    pub cohort_size: Option<i64>,
    pub published_version: Option<String>,
    pub privacy: RoundPrivacy,
}

impl Round {
    /// What a device needs to privatize an update for this round.
    pub fn config(&self) -> RoundConfig {
        RoundConfig {
            round_id: self.round_id.clone(),
            model_version: self.model_version.clone(),
            clip_norm: self.clip_norm,
            granularity: self.granularity,
            noise_stddev: self.noise_stddev,
            secure: match self.aggregation {
                Aggregation::Local => None,
                Aggregation::Secure => self.secure.clone(),
            },
        }
    }
}

/// How a round aggregates its updates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum Aggregation {
    /// Each device adds discrete Gaussian noise to its own update; the server sees noised updates.
    #[default]
    Local,
    /// Prio3 reports sealed to two non-colluding aggregators; the helper adds the noise once, to
    /// the sum, and neither aggregator sees one device's update.
    Secure,
}

impl Aggregation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Secure => "secure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Local, Self::Secure]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// A secure round's two aggregators as the device sees them. The device seals one share to each
/// key, and contributes only if `helperKey`'s fingerprint is one its privacy policy pins, and
/// `minReports` and the round's σ meet its policy. The terms (C, γ, σ, `minReports`) are bound into
/// every share, so a leader that misstates the helper's terms gets reports the helper cannot open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecureAggregators {
    /// The leader's HPKE public key (X25519, 64 hex digits).
    pub leader_key: String,
    /// The helper's HPKE public key (X25519, 64 hex digits).
    pub helper_key: String,
    /// `sha256:` and the hex SHA-256 of the helper's key: what a privacy team pins (devices
    /// recompute it from `helperKey`).
    pub helper_fingerprint: String,
    /// The helper releases nothing for fewer valid reports.
    pub min_reports: i64,
    /// R: every lattice coordinate of an update is in [-R, R] (the validity proof checks it).
    pub value_radius: i64,
}

/// `GET /v1/helper` on a helper: who it is and the least it applies to any round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperInfo {
    /// Its HPKE public key (hex).
    pub helper_key: String,
    /// `sha256:` and the hex SHA-256 of the key: what a privacy team pins.
    pub fingerprint: String,
    /// σ on each round's sum is at least this times the round's clip norm C.
    pub noise_multiplier: f64,
    /// It releases no batch of fewer valid reports.
    pub min_reports: i64,
}

/// `PUT /v1/helper/tasks/{roundId}` (leader → helper): a secure round to aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperTask {
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub dimension: i64,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub clip_norm: f64,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub granularity: f64,
    /// The least σ the leader asks for; the helper applies at least its own policy's.
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub noise_stddev: f64,
    /// The least batch the leader asks for; the helper applies at least its own.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub min_reports: i64,
    /// The round's Prio3 verification key (64 hex digits), drawn by the leader.
    pub verify_key: String,
}

/// The helper's answer to a task: the terms it applies, which the leader publishes to devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperTerms {
    pub helper_key: String,
    pub noise_stddev: f64,
    pub min_reports: i64,
    pub value_radius: i64,
}

/// What a leader that aggregates metric reports securely announces (`GET /v1/stats`
/// `secureMetrics`): the two aggregators' keys and the helper's terms for every metric task. A
/// device whose policy pins the helper and accepts the terms seals its thumbs, agreement and
/// star reports ([`SealedMetricReport`]) instead of randomizing them; any other device sends
/// randomized responses as in a local deployment. The terms are bound into every share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecureMetricTerms {
    /// The leader's HPKE public key (hex).
    pub leader_key: String,
    /// The helper's HPKE public key (hex).
    pub helper_key: String,
    /// `sha256:` and the hex SHA-256 of the helper's key (devices recompute it).
    pub helper_fingerprint: String,
    /// σ of the helper's discrete Gaussian noise on every bucket of a released batch (counts).
    pub noise_stddev: f64,
    /// The helper releases no batch of fewer valid reports.
    pub min_reports: i64,
}

/// `POST /v1/feedback/sealed`: one secure metric report — one bucket of the metric's histogram
/// (thumbs: 0 down, 1 up; agreement: 0 no, 1 yes; stars: rating − 1), Prio3Histogram-sharded and
/// sealed to the leader and the helper. Neither can read it; only noisy batch sums are released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SealedMetricReport {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[1-9][0-9]{0,17}$"))]
    pub model_version: String,
    /// "thumbs", "agreement" or "stars".
    #[cfg_attr(feature = "openapi", schema(pattern = "^(thumbs|agreement|stars)$"))]
    pub metric: String,
    /// The report (base64 of the secagg encoding: id, public share, two HPKE ciphertexts).
    pub report: String,
}

/// `PUT /v1/helper/metrics/{task}` (leader → helper): a metric task to aggregate in batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperMetricTask {
    #[cfg_attr(feature = "openapi", schema(minimum = 2, maximum = 64))]
    pub buckets: i64,
    /// σ the leader announced; the helper refuses a task below its own policy's.
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub noise_stddev: f64,
    /// The batch size the leader announced; the helper refuses one below its own minimum.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub min_reports: i64,
    /// The task's Prio3 verification key (64 hex digits), drawn by the leader.
    pub verify_key: String,
}

/// The noisy sum of one released batch of a secure metric (what the helper's collect answers
/// is its share of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SealedMetricStats {
    /// Reports in released batches (what the estimates use).
    pub reports: u64,
    /// Valid reports waiting for their batch to fill.
    pub pending: u64,
    pub batches: u64,
    /// Per bucket, the released batches' noisy counts summed.
    pub noisy_counts: Vec<i64>,
    /// σ of the helper's noise on each bucket of each batch.
    pub noise_stddev: f64,
}

/// `POST /v1/helper/tasks/{roundId}/reports` (leader → helper): one report to verify together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperAggregate {
    /// The client the leader authenticated; the helper also keeps one report per client.
    pub client_id: String,
    /// The leader's `HelperRequest` (base64): the report's public share, the helper's sealed
    /// share and the leader's verifier share.
    pub request: String,
}

/// The helper's verifier message for a valid report (base64 `HelperResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperVerdict {
    pub response: String,
}

/// `POST /v1/helper/tasks/{roundId}/collect` (leader → helper): the batch to release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperCollect {
    /// The report ids (32 hex digits each) the leader aggregated.
    pub report_ids: Vec<String>,
}

/// The helper's noisy aggregate share of the batch (base64), released once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HelperRelease {
    pub count: i64,
    pub aggregate_share: String,
}

/// `GET /v1/rounds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RoundList {
    /// Newest first.
    pub rounds: Vec<Round>,
}

/// `202` for a stored update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UploadAck {
    pub accepted: bool,
    pub round_id: String,
    /// Updates the round holds now.
    pub received: i64,
    /// The round, when this update was its target and closed it.
    pub round_closed: Option<Round>,
}

/// The aggregation that made a version (all `null` for the base version).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VersionNoise {
    pub clip_norm: Option<f64>,
    pub granularity: Option<f64>,
    pub noise_stddev: Option<f64>,
}

/// The privacy of a version's round (all `null` for the base version).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VersionPrivacy {
    pub rho: Option<f64>,
    pub epsilon_per_participant: Option<f64>,
    pub delta: Option<f64>,
}

/// A published model version; `head` is present on single-version endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ModelVersion {
    pub version: String,
    pub parent_version: Option<String>,
    /// The round whose cohort made it (`null` for the base version).
    pub round_id: Option<String>,
    /// Whether devices are served this version now.
    pub current: bool,
    pub cohort_size: i64,
    /// `base`, `fedavg`, `fedavgm` or `fedadam`.
    pub optimizer: String,
    pub noise: VersionNoise,
    pub privacy: VersionPrivacy,
    pub onnx_sha256: String,
    pub onnx_url: String,
    pub created_at: UnixMillis,
    /// Flagged by the drift test.
    pub flagged: bool,
    pub flag_reason: Option<String>,
    pub flagged_at: Option<UnixMillis>,
    /// The reward head's parameters (`RewardHead::to_vector` layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Vec<f32>>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ModelList {
    /// The version devices are served.
    pub current: String,
    /// Oldest first, without heads.
    pub versions: Vec<ModelVersion>,
}

/// `POST /v1/feedback`: one randomized-response bit ("the top-ranked answer got a thumbs-up"),
/// already randomized on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FeedbackReport {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[1-9][0-9]{0,17}$"))]
    pub model_version: String,
    pub bit: bool,
}

/// `POST /v1/feedback/stars`: one star rating (1 to 5) per client per version, already randomized
/// on the device with 5-ary randomized response at [`Stats::rr_epsilon`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StarsReport {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[1-9][0-9]{0,17}$"))]
    pub model_version: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 5))]
    #[serde(deserialize_with = "whole_u8")]
    pub stars: u8,
}

/// `POST /v1/feedback/kinds`: feedback volume. The device draws one kind of feedback uniformly at
/// random (independently of what the user did) and sends whether the user gave that kind under
/// the version, as an ε-randomized-response bit at [`Stats::rr_epsilon`]: one report per client per
/// version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KindsReport {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[1-9][0-9]{0,17}$"))]
    pub model_version: String,
    /// One of `KINDS`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^(thumbs|stars|pairwise|correction|flag|click|dwell|copy|regenerate|skip)$"
        )
    )]
    pub kind: String,
    pub bit: bool,
}

/// `POST /v1/feedback/segments`: the thumbs-up rate per segment. One report per client per
/// version: the pair (segment, thumbs verdict) as one cell `2 · segment + up` of the
/// `2 · segments` cells, randomized on the device with `2 · segments`-ary randomized response at
/// [`Stats::rr_epsilon`]. The segment exists only inside that randomized cell: no report carries
/// a clear-text segment label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SegmentReport {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[1-9][0-9]{0,17}$"))]
    pub model_version: String,
    /// How many segments the device randomized over ([`Stats::segments`]' length, public).
    #[cfg_attr(feature = "openapi", schema(minimum = 2, maximum = 16))]
    pub segments: u32,
    /// The randomized cell, `0 ≤ cell < 2 · segments`.
    pub cell: u32,
}

/// One declared segment's de-biased numbers on one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SegmentRate {
    pub segment: String,
    /// The de-biased share of the reporting devices in this segment (unbiased; may fall outside
    /// [0, 1] by noise).
    pub share: f64,
    /// The de-biased thumbs-up rate within the segment (delta method), with its standard error
    /// and normal-approximation 95 % interval; `null` while the segment's share is not
    /// distinguishable from 0 (a ratio over noise).
    pub thumbs_up_rate: Option<f64>,
    pub std_error: Option<f64>,
    pub ci95: Option<[f64; 2]>,
}

/// The largest gap in thumbs-up rate between two segments, tested with Bonferroni-corrected
/// intervals over every pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SegmentDisparity {
    pub higher: String,
    pub lower: String,
    /// `rate(higher) − rate(lower)` and its simultaneous interval at `confidence`.
    pub difference: f64,
    pub interval: [f64; 2],
    pub confidence: f64,
    /// Gaps up to this much are tolerated.
    pub margin: f64,
    /// The interval lies wholly above `margin`: a disparity larger than tolerated.
    pub flagged: bool,
}

/// A version's thumbs-up rate per segment (`null` on [`VersionStats`] without segment reports).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SegmentStats {
    pub reports: u64,
    /// In [`Stats::segments`] order.
    pub segments: Vec<SegmentRate>,
    /// `null` with fewer than two segments whose rate is known.
    pub disparity: Option<SegmentDisparity>,
}

/// The de-biased share of a version's reporting devices that gave one kind of feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KindShare {
    pub kind: String,
    /// Reports that drew this kind, and how many of their (randomized) bits were 1.
    pub reports: u64,
    pub reported_ones: u64,
    /// Unbiased; may fall outside [0, 1] by noise.
    pub share: f64,
    /// Normal-approximation 95 % interval.
    pub ci95: [f64; 2],
}

/// Feedback volume on one day (UTC, by when the reports arrived): the estimated number of
/// devices that gave one kind of feedback — `share × devices reporting that day`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KindVolume {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub kind: String,
    /// Kinds reports received that day that drew this kind.
    pub reports: u64,
    /// Unbiased (may be negative by noise), with its normal-approximation 95 % interval.
    pub devices: f64,
    pub ci95: [f64; 2],
}

/// A whole number from 0 to 255: JSON Schema's `integer` (what the OpenAPI document says) also
/// admits `5.0`, so that is read as 5; `4.5` or `300` is refused.
fn whole_u8<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u8, D::Error> {
    let value = f64::deserialize(deserializer)?;
    if value.fract() == 0.0 && (0.0..=255.0).contains(&value) {
        Ok(value as u8)
    } else {
        Err(serde::de::Error::custom(format!(
            "expected a whole number from 0 to 255, got {value}"
        )))
    }
}

/// The de-biased star-rating distribution (CSAT) of one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StarsStats {
    pub reports: u64,
    /// Reports of each rating as received (randomized), 1 star first.
    pub reported: Vec<u64>,
    /// The de-biased share of each rating, 1 star first (unbiased: each may fall outside [0, 1]).
    pub distribution: Vec<f64>,
    /// The de-biased mean rating, its standard error and normal-approximation 95 % interval.
    pub mean: f64,
    pub std_error: f64,
    pub ci95: [f64; 2],
}

/// `202` for a stored report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReportAck {
    pub accepted: bool,
}

/// The de-biased thumbs-up rate of one version, with what made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VersionStats {
    pub version: String,
    /// Randomized-response thumbs reports (sealed ones are in `sealed`).
    pub reports: u64,
    /// Reports whose (randomized) bit was 1.
    pub reported_ones: u64,
    /// The de-biased estimate from randomized and sealed reports together (`null` without
    /// reports).
    pub thumbs_up_rate: Option<f64>,
    pub std_error: Option<f64>,
    /// Normal-approximation 95 % interval.
    pub ci95: Option<[f64; 2]>,
    pub cohort_size: i64,
    pub epsilon_per_participant: Option<f64>,
    pub flagged: bool,
    pub flag_reason: Option<String>,
    /// The star ratings reported on this version (`null` without reports).
    pub stars: Option<StarsStats>,
    /// Federated evaluation: how often this version's global head agreed with its users' "A or
    /// B" choices (`null` without reports).
    pub agreement: Option<RateStats>,
    /// Feedback volume: the share of this version's reporting devices that gave each kind
    /// (kinds with reports only).
    pub kinds: Vec<KindShare>,
    /// The thumbs-up rate per declared segment (`null` without segment reports).
    pub segments: Option<SegmentStats>,
    /// Secure metric reports of this version, per metric ("thumbs", "agreement", "stars"; only
    /// those with reports). The estimates above already include their released batches.
    #[serde(default)]
    pub sealed: BTreeMap<String, SealedMetricStats>,
}

/// A de-biased rate from randomized-response bits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RateStats {
    pub reports: u64,
    pub reported_ones: u64,
    /// Unbiased; may fall outside [0, 1] by noise.
    pub rate: f64,
    pub std_error: f64,
    /// Normal-approximation 95 % interval.
    pub ci95: [f64; 2],
}

/// Where a staged rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum RolloutStatus {
    /// Served to the canary fraction of devices; reports are being compared.
    Canary,
    /// The test found no regression; waiting for an admin to promote it (still a canary).
    AwaitingApproval,
    /// Served to everyone: the current version.
    Promoted,
    /// Withdrawn: its devices went back to the control version.
    RolledBack,
}

impl RolloutStatus {
    pub const ALL: [RolloutStatus; 4] = [
        Self::Canary,
        Self::AwaitingApproval,
        Self::Promoted,
        Self::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Canary => "canary",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Still served to the canary fraction.
    pub fn running(self) -> bool {
        matches!(self, Self::Canary | Self::AwaitingApproval)
    }
}

impl std::str::FromStr for RolloutStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown rollout status `{s}`"))
    }
}

/// What the sequential test says (`feedloop_core::rollout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub enum RolloutVerdict {
    /// Not enough evidence either way yet.
    Continue,
    /// Worse than the control by more than the margin, at confidence 1 − α at every look.
    Regression,
    /// Not worse than the control by the margin, at confidence 1 − α.
    NonInferior,
    /// The planned number of canary reports arrived without a regression.
    PlannedReached,
}

/// One arm of a rollout: its version's de-biased thumbs-up rate and always-valid interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ArmEstimate {
    pub version: String,
    pub reports: u64,
    pub reported_ones: u64,
    pub thumbs_up_rate: Option<f64>,
    /// Level 1 − α/2, valid at every number of reports at once (`null` without reports).
    pub confidence_sequence: Option<[f64; 2]>,
}

/// The evidence behind a rollout decision: both arms and the interval of
/// `p_canary − p_control` (level 1 − α at every look).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RolloutEvidence {
    pub control: ArmEstimate,
    pub canary: ArmEstimate,
    pub difference: Option<[f64; 2]>,
    pub margin: f64,
    pub alpha: f64,
    pub planned_reports: u64,
    pub verdict: RolloutVerdict,
}

/// A staged rollout of one version (`GET /v1/stats`, the admin rollout endpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Rollout {
    /// The canary version.
    pub version: String,
    /// The version everyone else keeps.
    pub control_version: String,
    /// The share of devices served the canary.
    pub fraction: f64,
    pub status: RolloutStatus,
    pub started_at: UnixMillis,
    pub decided_at: Option<UnixMillis>,
    /// `"auto"` for the server's own decision, else the admin key's fingerprint.
    pub decided_by: Option<String>,
    /// Why it was decided, in words.
    pub reason: Option<String>,
    /// The test as of now (running) or at the decision.
    pub evidence: Option<RolloutEvidence>,
    /// The test replayed over time, from the start to now or to the decision (at most 48
    /// evenly spaced points): what the dashboard's canary-vs-control chart draws.
    pub history: Vec<RolloutPoint>,
}

/// The sequential test at one moment of a rollout, on the reports received by then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RolloutPoint {
    pub at: UnixMillis,
    pub canary_reports: u64,
    pub control_reports: u64,
    pub canary_rate: Option<f64>,
    pub control_rate: Option<f64>,
    /// The interval of `p_canary − p_control` valid at every look (`null` until both arms
    /// have reports); the canary is rolled back once its upper end is below −margin.
    pub difference: Option<[f64; 2]>,
}

/// One round in the statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RoundStats {
    pub round_id: String,
    pub status: RoundStatus,
    pub cohort_size: Option<i64>,
    pub received: i64,
    pub epsilon_per_participant: f64,
    pub delta: f64,
    pub published_version: Option<String>,
}

/// `GET /v1/stats`: what the dashboard charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Stats {
    pub current_version: String,
    /// ε of the devices' randomized-response reports.
    pub rr_epsilon: f64,
    pub versions: Vec<VersionStats>,
    pub rounds: Vec<RoundStats>,
    /// Staged rollouts, oldest first.
    pub rollouts: Vec<Rollout>,
    /// Feedback volume per day by kind, for the last 60 days with reports, oldest first.
    pub feedback_volume: Vec<KindVolume>,
    /// The segments the site declared (e.g. locales), in cell order; empty when none are.
    /// Devices randomize their segment over exactly this list ([`SegmentReport`]).
    pub segments: Vec<String>,
    /// The package's default device budget, to show what share of it each round costs a
    /// participant (a site that sets its own policy shows its users theirs in the privacy panel).
    pub device_budget: DeviceBudget,
    /// Present when this leader aggregates metric reports with its helper (`feedloop serve
    /// --secure-metrics`): the terms devices seal their reports under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_metrics: Option<SecureMetricTerms>,
}

/// A device's privacy budget: ε at δ over any window, and the total zCDP ρ that allows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceBudget {
    pub epsilon: f64,
    pub delta: f64,
    pub window_days: f64,
    pub total_rho: f64,
}

impl DeviceBudget {
    /// What a device accepts unless its site says otherwise
    /// ([`feedloop_privacy::budget::PrivacyPolicy::default`]).
    pub fn default_policy() -> Self {
        let policy = feedloop_privacy::budget::PrivacyPolicy::default();
        Self {
            epsilon: policy.epsilon(),
            delta: policy.delta(),
            window_days: policy.window_ms() as f64 / 86_400_000.0,
            total_rho: policy.total_rho(),
        }
    }
}

/// `POST /v1/admin/rounds`: a new round on the current version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct NewRound {
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub clip_norm: f64,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub granularity: f64,
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub noise_stddev: f64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub min_cohort: i64,
    /// At least `minCohort`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub target_count: Option<i64>,
    /// In the future.
    #[serde(default)]
    pub deadline: Option<UnixMillis>,
    /// Alternative to `deadline`: seconds from now.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0))]
    pub duration_seconds: Option<f64>,
    /// Must equal the model's parameter count when given.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub dimension: Option<i64>,
    /// `secure` needs a helper configured (`feedloop serve --helper-url`); then `noiseStddev` is
    /// the least σ the helper must add to the sum, and `minCohort` the least batch.
    #[serde(default)]
    pub aggregation: Aggregation,
}

/// `PATCH /v1/admin/rounds/{roundId}`: C, γ, σ and the dimension cannot change once open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RoundChange {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub min_cohort: Option<i64>,
    /// At least the (new) `minCohort`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub target_count: Option<i64>,
    #[serde(default)]
    pub deadline: Option<UnixMillis>,
}

/// `POST /v1/admin/rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Rollback {
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[1-9][0-9]{0,17}$"))]
    pub version: String,
}

/// `POST /v1/admin/clients/{clientId}/revoke`: the client's tokens are refused from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClientRevocation {
    pub client_id: String,
    /// When it was first revoked (revoking again changes nothing).
    pub revoked_at: UnixMillis,
}

/// One admin action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    /// Random hex.
    pub id: String,
    pub at: UnixMillis,
    /// The first 16 hex digits of the admin key's SHA-256, or `auto-rollout` for the server's
    /// own rollout decisions.
    pub admin_fingerprint: String,
    /// `round.open`, `round.update`, `round.close`, `model.rollback`, `rollout.promote`,
    /// `rollout.rollback`, `rollout.awaiting_approval`.
    pub action: String,
    /// What the action changed (its shape depends on `action`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

/// `GET /v1/admin/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditLog {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    pub status: String,
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// e.g. `duplicate_update`, `round_closed`, `unauthorized`.
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Query of `POST /v1/rounds/{roundId}/updates` for `navigator.sendBeacon`, which cannot set
/// headers: the token and model version travel in the query (RFC 6750 §2.3). Headers win.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct BeaconQuery {
    #[serde(rename = "access_token")]
    pub access_token: Option<String>,
    pub model_version: Option<String>,
}

/// Paths, so the client and the server cannot disagree on them.
pub mod paths {
    pub const REGISTER: &str = "/v1/clients/register";
    pub const REFRESH: &str = "/v1/clients/refresh";
    pub const ROUNDS: &str = "/v1/rounds";
    pub const CURRENT_ROUND: &str = "/v1/rounds/current";
    pub const MODELS: &str = "/v1/models";
    pub const CURRENT_MODEL: &str = "/v1/models/current";
    pub const FEEDBACK: &str = "/v1/feedback";
    pub const FEEDBACK_STARS: &str = "/v1/feedback/stars";
    pub const FEEDBACK_AGREEMENT: &str = "/v1/feedback/agreement";
    pub const FEEDBACK_KINDS: &str = "/v1/feedback/kinds";
    pub const FEEDBACK_SEGMENTS: &str = "/v1/feedback/segments";
    pub const FEEDBACK_SEALED: &str = "/v1/feedback/sealed";
    pub const STATS: &str = "/v1/stats";

    /// Where the update for `round_id` is posted (a sealed report, in a secure round).
    pub fn updates(round_id: &str) -> String {
        format!("/v1/rounds/{round_id}/updates")
    }

    /// A helper's identity and policy.
    pub const HELPER: &str = "/v1/helper";

    /// A secure round as the helper holds it.
    pub fn helper_task(round_id: &str) -> String {
        format!("/v1/helper/tasks/{round_id}")
    }

    pub fn helper_reports(round_id: &str) -> String {
        format!("/v1/helper/tasks/{round_id}/reports")
    }

    pub fn helper_collect(round_id: &str) -> String {
        format!("/v1/helper/tasks/{round_id}/collect")
    }

    /// A secure metric task (`thumbs@3`) as the helper holds it.
    pub fn helper_metric(task: &str) -> String {
        format!("/v1/helper/metrics/{task}")
    }

    pub fn helper_metric_reports(task: &str) -> String {
        format!("/v1/helper/metrics/{task}/reports")
    }

    pub fn helper_metric_collect(task: &str) -> String {
        format!("/v1/helper/metrics/{task}/collect")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(issued: i64, expires: i64) -> TokenGrant {
        TokenGrant {
            client_id: "c".into(),
            deployment: "d".into(),
            token: "t".into(),
            issued_at: UnixMillis(issued),
            expires_at: UnixMillis(expires),
        }
    }

    #[test]
    fn unix_millis_is_a_plain_number_on_the_wire() {
        let g = grant(1_700_000_000_000, 1_700_604_800_000);
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["expiresAt"], serde_json::json!(1_700_604_800_000_i64));
        assert_eq!(json["issuedAt"], serde_json::json!(1_700_000_000_000_i64));
        let back: TokenGrant = serde_json::from_value(json).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn a_token_stored_by_an_earlier_client_still_reads() {
        let expires = 1_700_000_000_000_i64;
        let stored = serde_json::json!({ "clientId": "c", "token": "t", "expiresAt": expires });
        let g: TokenGrant = serde_json::from_value(stored).unwrap();
        assert_eq!(g.issued_at, UnixMillis(0));
        assert_eq!(g.deployment, "");
        // Without `issuedAt` the lifetime is unknown: refreshed in its last day.
        assert!(g.needs_refresh(UnixMillis(expires - TokenGrant::REFRESH_MARGIN_MS)));
        assert!(!g.needs_refresh(UnixMillis(expires - TokenGrant::REFRESH_MARGIN_MS - 1)));
    }

    #[test]
    fn a_week_long_token_is_refreshed_in_its_last_day() {
        let day = 24 * 3600 * 1000;
        let g = grant(0, 7 * day);
        assert!(g.valid_at(UnixMillis(0)));
        assert!(!g.needs_refresh(UnixMillis(5 * day)));
        assert!(g.needs_refresh(UnixMillis(6 * day)));
        assert!(g.needs_refresh(UnixMillis(7 * day - 1)));
        assert!(!g.valid_at(UnixMillis(7 * day)));
    }

    #[test]
    fn a_short_token_is_refreshed_past_half_its_lifetime() {
        let g = grant(1_000, 9_000);
        assert!(!g.needs_refresh(UnixMillis(4_999)));
        assert!(g.needs_refresh(UnixMillis(5_000)));
    }

    #[test]
    fn a_token_read_in_the_wrong_unit_would_be_refreshed_at_once() {
        // The bug this type prevents: an expiry in ms compared with a clock in seconds looks
        // decades away. Here both are ms; a now in ms after the expiry is invalid.
        let now = UnixMillis(1_700_000_000_000);
        let g = grant(now.0 - 10_000, now.0 - 1);
        assert!(!g.valid_at(now));
        assert!(g.needs_refresh(now));
    }

    #[test]
    fn round_status_names_round_trip() {
        for s in RoundStatus::ALL {
            assert_eq!(RoundStatus::parse(s.as_str()), Some(s));
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, serde_json::json!(s.as_str()));
        }
        assert_eq!(RoundStatus::parse("done"), None);
    }
}
