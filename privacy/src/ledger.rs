//! The release ledger: an append-only, hash-chained record of everything that
//! left the device and what it cost.
//!
//! Each [`LedgerEntry`] holds the time (unix ms, from the caller), purpose,
//! round id, model version, mechanism and its parameters, the ρ of the release
//! and its ε at the ledger's δ, the cumulative ρ and ε, the SHA-256 of the exact
//! payload bytes, the hash of the previous entry and its own hash. The entry
//! hash is SHA-256 over the entry's canonical JSON with `entry_hash` left out,
//! so any edit, reordering, insertion or deletion breaks the chain.
//!
//! [`Ledger::verify`] recomputes everything and returns *every* inconsistency.
//! [`Ledger::to_json`] adds a dp-accounting `DpEvent` description per release
//! and for the whole ledger, for replay in Python (see docs/PRIVACY.md).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::accounting::{zcdp_rho_gaussian, zcdp_to_approx_dp};
use crate::error::{invalid, PrivacyError, Result};
use crate::privatizer::{Mechanism, PrivatizedUpdate};
use crate::randomized_response::RandomizedResponse;

/// Hash of "no previous entry".
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Mechanism parameters of a release, enough to recompute its ρ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mechanism", rename_all = "snake_case")]
pub enum ReleaseParams {
    /// A privatized update.
    DiscreteGaussian {
        /// C (model units).
        clip_norm: f64,
        /// γ (model units).
        granularity: f64,
        /// σ (model units).
        noise_stddev: f64,
        /// d.
        dimension: u64,
    },
    /// One randomized-response bit.
    RandomizedResponse {
        /// Exact ε of the probability table.
        epsilon: f64,
        /// Keep probability numerator over 2^53.
        keep_numerator: u64,
    },
    /// One k-ary randomized-response value (a rating, a kind).
    CategoricalResponse {
        /// Exact ε of the probability table.
        epsilon: f64,
        /// k.
        categories: u32,
        /// P(report = one given other category) numerator over 2^53 rounded down to a multiple
        /// of k.
        other_numerator: u64,
    },
    /// A secure-aggregation report: the clipped, lattice-rounded update, Prio3-sharded and sealed
    /// to two aggregators; the helper adds discrete Gaussian noise σ once, to the batch's sum.
    SecureAggregation {
        /// C (model units).
        clip_norm: f64,
        /// γ (model units).
        granularity: f64,
        /// σ the helper adds to the sum (model units).
        noise_stddev: f64,
        /// d.
        dimension: u64,
        /// The helper releases no batch of fewer valid reports.
        min_reports: u64,
        /// SHA-256 of the helper's HPKE key (pinned by the device's policy).
        helper_fingerprint: String,
        /// SHA-256 of the leader's HPKE key.
        leader_fingerprint: String,
        /// Under what the guarantee holds, in words.
        trust: String,
    },
    /// A secure metric report: one bucket of a metric's histogram, Prio3Histogram-sharded and
    /// sealed to two aggregators; the helper adds discrete Gaussian noise σ (counts) to every
    /// bucket of each released batch. Replacing one device's report moves one count between two
    /// buckets (Δ₂ = √2), so ρ = 1/σ².
    SecureHistogram {
        /// The metric's buckets.
        buckets: u32,
        /// σ the helper adds to every bucket of a batch (counts).
        noise_stddev: f64,
        /// The helper releases no batch of fewer valid reports.
        min_reports: u64,
        /// SHA-256 of the helper's HPKE key (pinned by the device's policy).
        helper_fingerprint: String,
        /// SHA-256 of the leader's HPKE key.
        leader_fingerprint: String,
        /// Under what the guarantee holds, in words.
        trust: String,
    },
    /// Not a release: the user granted (`true`) or withdrew (`false`) consent to contributing.
    /// Nothing leaves the device with it (ρ = 0). It is in the chain so that an audit sees when
    /// consent was given and that every release came after it.
    Consent {
        /// Whether contributing is allowed from this entry on.
        granted: bool,
    },
}

impl ReleaseParams {
    /// The mechanism; `None` for a consent change (not a release).
    pub fn mechanism(&self) -> Option<Mechanism> {
        match self {
            Self::DiscreteGaussian { .. } => Some(Mechanism::DiscreteGaussian),
            Self::RandomizedResponse { .. } => Some(Mechanism::RandomizedResponse),
            Self::CategoricalResponse { .. } => Some(Mechanism::CategoricalResponse),
            Self::SecureAggregation { .. } | Self::SecureHistogram { .. } => {
                Some(Mechanism::SecureAggregation)
            }
            Self::Consent { .. } => None,
        }
    }

    /// Whether this entry is a release (something left the device), not a consent change.
    pub fn is_release(&self) -> bool {
        self.mechanism().is_some()
    }

    /// ρ of this release (zCDP): `(2C)²/(2σ²)` (σ on the update, or on the secure sum) or
    /// `ε²/2`; 0 for a consent change.
    pub fn rho(&self) -> f64 {
        match self {
            Self::DiscreteGaussian {
                clip_norm,
                noise_stddev,
                ..
            }
            | Self::SecureAggregation {
                clip_norm,
                noise_stddev,
                ..
            } => zcdp_rho_gaussian(2.0 * clip_norm, *noise_stddev),
            Self::SecureHistogram { noise_stddev, .. } => {
                zcdp_rho_gaussian(std::f64::consts::SQRT_2, *noise_stddev)
            }
            Self::RandomizedResponse { epsilon, .. }
            | Self::CategoricalResponse { epsilon, .. } => epsilon * epsilon / 2.0,
            Self::Consent { .. } => 0.0,
        }
    }

    /// The equivalent dp-accounting `DpEvent`, as JSON.
    pub fn dp_event(&self) -> Value {
        match self {
            Self::DiscreteGaussian {
                clip_norm,
                noise_stddev,
                ..
            }
            | Self::SecureAggregation {
                clip_norm,
                noise_stddev,
                ..
            } => {
                json!({"dp_event": "GaussianDpEvent", "noise_multiplier": noise_stddev / (2.0 * clip_norm)})
            }
            Self::SecureHistogram { noise_stddev, .. } => {
                json!({"dp_event": "GaussianDpEvent", "noise_multiplier": noise_stddev / std::f64::consts::SQRT_2})
            }
            Self::RandomizedResponse { keep_numerator, .. } => {
                let rr_noise = 2.0
                    * (crate::randomized_response::KEEP_DENOMINATOR - keep_numerator) as f64
                    / crate::randomized_response::KEEP_DENOMINATOR as f64;
                json!({"dp_event": "RandomizedResponseDpEvent", "noise_parameter": rr_noise, "num_buckets": 2})
            }
            Self::CategoricalResponse {
                categories,
                other_numerator,
                ..
            } => {
                // With probability k·q the value is replaced by a uniform one (of k).
                let k = u64::from(*categories);
                let denominator = crate::randomized_response::KEEP_DENOMINATOR
                    - crate::randomized_response::KEEP_DENOMINATOR % k.max(1);
                let noise = k as f64 * *other_numerator as f64 / denominator as f64;
                json!({"dp_event": "RandomizedResponseDpEvent", "noise_parameter": noise, "num_buckets": categories})
            }
            Self::Consent { .. } => json!({"dp_event": "NoOpDpEvent"}),
        }
    }
}

/// What the caller tells the ledger about a release.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseRecord {
    /// Unix ms (the caller's clock).
    pub time_ms: u64,
    /// Why the data left (e.g. "reward-head update").
    pub purpose: String,
    /// Server round id.
    pub round_id: String,
    /// Model version the update was computed against.
    pub model_version: String,
    /// Mechanism parameters.
    pub params: ReleaseParams,
    /// SHA-256 of the exact bytes sent.
    pub payload_sha256: String,
}

impl ReleaseRecord {
    /// A record for a privatized update; hashes `update.to_bytes()`.
    pub fn for_update(
        update: &PrivatizedUpdate,
        time_ms: u64,
        purpose: &str,
        round_id: &str,
        model_version: &str,
    ) -> Self {
        let p = update.params();
        Self {
            time_ms,
            purpose: purpose.to_owned(),
            round_id: round_id.to_owned(),
            model_version: model_version.to_owned(),
            params: ReleaseParams::DiscreteGaussian {
                clip_norm: p.clip_norm,
                granularity: p.granularity,
                noise_stddev: p.noise_stddev,
                dimension: p.dimension as u64,
            },
            payload_sha256: sha256_hex(&update.to_bytes()),
        }
    }

    /// A record for one randomized-response bit (payload: the single byte 0 or 1).
    pub fn for_randomized_response(
        rr: &RandomizedResponse,
        reported_bit: bool,
        time_ms: u64,
        purpose: &str,
        round_id: &str,
        model_version: &str,
    ) -> Self {
        Self {
            time_ms,
            purpose: purpose.to_owned(),
            round_id: round_id.to_owned(),
            model_version: model_version.to_owned(),
            params: ReleaseParams::RandomizedResponse {
                epsilon: rr.epsilon(),
                keep_numerator: rr.keep_probability().0,
            },
            payload_sha256: sha256_hex(&[u8::from(reported_bit)]),
        }
    }
}

impl ReleaseRecord {
    /// A record for one randomized-response bit about one of several questions drawn uniformly
    /// at random, independently of the data (payload: the question's index, then the bit). The
    /// draw leaks nothing, so the release is ε-DP with the ε of the bit: its params are the bit's.
    pub fn for_sampled_randomized_response(
        rr: &RandomizedResponse,
        question: u8,
        reported_bit: bool,
        time_ms: u64,
        purpose: &str,
        round_id: &str,
        model_version: &str,
    ) -> Self {
        Self {
            payload_sha256: sha256_hex(&[question, u8::from(reported_bit)]),
            ..Self::for_randomized_response(
                rr,
                reported_bit,
                time_ms,
                purpose,
                round_id,
                model_version,
            )
        }
    }
}

impl ReleaseRecord {
    /// A record for one k-ary randomized-response value (payload: the reported category as 4
    /// little-endian bytes).
    pub fn for_categorical_response(
        mechanism: &crate::categorical_response::CategoricalResponse,
        reported: u32,
        time_ms: u64,
        purpose: &str,
        round_id: &str,
        model_version: &str,
    ) -> Self {
        let (_, other_numerator, _) = mechanism.probabilities();
        Self {
            time_ms,
            purpose: purpose.to_owned(),
            round_id: round_id.to_owned(),
            model_version: model_version.to_owned(),
            params: ReleaseParams::CategoricalResponse {
                epsilon: mechanism.epsilon(),
                categories: mechanism.categories(),
                other_numerator,
            },
            payload_sha256: sha256_hex(&reported.to_le_bytes()),
        }
    }
}

impl ReleaseRecord {
    /// A record for a sealed secure-aggregation report (`report` its exact bytes).
    pub fn for_secure_report(
        report: &[u8],
        params: ReleaseParams,
        time_ms: u64,
        purpose: &str,
        round_id: &str,
        model_version: &str,
    ) -> Self {
        Self {
            time_ms,
            purpose: purpose.to_owned(),
            round_id: round_id.to_owned(),
            model_version: model_version.to_owned(),
            params,
            payload_sha256: sha256_hex(report),
        }
    }
}

/// The round id of consent entries (no server round has it: those are numbers).
pub const CONSENT_ROUND_ID: &str = "consent";

impl ReleaseRecord {
    /// A consent change: `granted` or withdrawn at `time_ms`, while the device uses
    /// `model_version`. Nothing is sent; the payload hash is that of the words recorded with
    /// their time (so each change has its own, as two tabs' merge needs).
    pub fn for_consent(granted: bool, time_ms: u64, model_version: &str) -> Self {
        let purpose = if granted {
            "consent granted"
        } else {
            "consent withdrawn"
        };
        Self {
            time_ms,
            purpose: purpose.to_owned(),
            round_id: CONSENT_ROUND_ID.to_owned(),
            model_version: model_version.to_owned(),
            params: ReleaseParams::Consent { granted },
            payload_sha256: sha256_hex(format!("{purpose} at {time_ms}").as_bytes()),
        }
    }
}

/// One ledger line. Field order is the canonical hashing order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Position in the ledger, from 0.
    pub index: u64,
    /// Unix ms.
    pub time_ms: u64,
    /// Why.
    pub purpose: String,
    /// Round id.
    pub round_id: String,
    /// Model version.
    pub model_version: String,
    /// Mechanism and parameters.
    pub params: ReleaseParams,
    /// ρ of this release.
    pub rho: f64,
    /// ε of this release alone at `delta`.
    pub epsilon: f64,
    /// δ used for the ε columns.
    pub delta: f64,
    /// Σ ρ of entries 0..=index.
    pub cumulative_rho: f64,
    /// ε of `cumulative_rho` at `delta` (CKS conversion).
    pub cumulative_epsilon: f64,
    /// SHA-256 (hex) of the payload bytes.
    pub payload_sha256: String,
    /// `entry_hash` of the previous entry ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) of this entry's canonical JSON without `entry_hash`.
    pub entry_hash: String,
}

impl LedgerEntry {
    fn compute_hash(&self) -> String {
        let mut unhashed = serde_json::to_value(self).expect("entries serialize");
        if let Value::Object(map) = &mut unhashed {
            map.remove("entry_hash");
        }
        sha256_hex(unhashed.to_string().as_bytes())
    }
}

/// An inconsistency found by [`Ledger::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerIssue {
    /// The entry where it was found.
    pub index: usize,
    /// What is wrong.
    pub kind: LedgerIssueKind,
}

/// Kinds of [`LedgerIssue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerIssueKind {
    /// `index` field differs from the position.
    WrongIndex,
    /// `prev_hash` does not match the previous entry's hash.
    BrokenChain,
    /// `entry_hash` does not match the content.
    WrongEntryHash,
    /// Time went backwards.
    TimeOrder,
    /// `rho` differs from the value recomputed from the parameters.
    WrongRho,
    /// `epsilon` differs from the recomputed value.
    WrongEpsilon,
    /// `cumulative_rho` differs from the running sum.
    WrongCumulativeRho,
    /// `cumulative_epsilon` differs from the recomputed value.
    WrongCumulativeEpsilon,
    /// `payload_sha256` is not 64 lowercase hex digits.
    MalformedPayloadHash,
}

/// Relative tolerance for recomputed f64 columns (they are recomputed by the
/// same code, so only JSON round-trips could differ; serde_json round-trips f64 exactly).
const RECOMPUTE_TOLERANCE: f64 = 1e-12;

fn differs(a: f64, b: f64) -> bool {
    // NaN never matches; equal infinities do.
    let close = a == b || (a - b).abs() <= RECOMPUTE_TOLERANCE * a.abs().max(b.abs());
    !close
}

/// The ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    delta: f64,
    entries: Vec<LedgerEntry>,
}

impl Ledger {
    /// An empty ledger that reports ε at `delta`.
    pub fn new(delta: f64) -> Result<Self> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(invalid("delta", delta, "must be in (0, 1)"));
        }
        Ok(Self {
            delta,
            entries: Vec::new(),
        })
    }

    /// The entries in order.
    pub fn entries(&self) -> &[LedgerEntry] {
        &self.entries
    }

    /// δ of the ε columns.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Σ ρ so far.
    pub fn total_rho(&self) -> f64 {
        self.entries.last().map_or(0.0, |e| e.cumulative_rho)
    }

    /// Appends a release and returns its entry.
    pub fn append(&mut self, record: ReleaseRecord) -> Result<&LedgerEntry> {
        let rho = record.params.rho();
        let cumulative_rho = self.total_rho() + rho;
        let mut entry = LedgerEntry {
            index: self.entries.len() as u64,
            time_ms: record.time_ms,
            purpose: record.purpose,
            round_id: record.round_id,
            model_version: record.model_version,
            params: record.params,
            rho,
            epsilon: zcdp_to_approx_dp(rho, self.delta)?,
            delta: self.delta,
            cumulative_rho,
            cumulative_epsilon: zcdp_to_approx_dp(cumulative_rho, self.delta)?,
            payload_sha256: record.payload_sha256,
            prev_hash: self
                .entries
                .last()
                .map_or_else(|| GENESIS_HASH.to_owned(), |e| e.entry_hash.clone()),
            entry_hash: String::new(),
        };
        entry.entry_hash = entry.compute_hash();
        self.entries.push(entry);
        Ok(self.entries.last().expect("just pushed"))
    }

    /// Recomputes indices, hashes, order, ρ/ε and totals; returns every issue (empty = consistent).
    pub fn verify(&self) -> Vec<LedgerIssue> {
        let mut issues = Vec::new();
        let mut running_rho = 0.0;
        let mut prev_hash = GENESIS_HASH.to_owned();
        let mut prev_time = 0u64;
        for (index, e) in self.entries.iter().enumerate() {
            let mut flag = |cond: bool, kind| {
                if cond {
                    issues.push(LedgerIssue { index, kind });
                }
            };
            flag(e.index != index as u64, LedgerIssueKind::WrongIndex);
            flag(e.prev_hash != prev_hash, LedgerIssueKind::BrokenChain);
            flag(
                e.entry_hash != e.compute_hash(),
                LedgerIssueKind::WrongEntryHash,
            );
            flag(
                index > 0 && e.time_ms < prev_time,
                LedgerIssueKind::TimeOrder,
            );
            let rho = e.params.rho();
            flag(differs(e.rho, rho), LedgerIssueKind::WrongRho);
            let delta_ok = e.delta > 0.0 && e.delta < 1.0;
            let eps = if delta_ok {
                zcdp_to_approx_dp(rho, e.delta).unwrap_or(f64::NAN)
            } else {
                f64::NAN
            };
            flag(differs(e.epsilon, eps), LedgerIssueKind::WrongEpsilon);
            running_rho += rho;
            flag(
                differs(e.cumulative_rho, running_rho),
                LedgerIssueKind::WrongCumulativeRho,
            );
            let cum_eps = if delta_ok {
                zcdp_to_approx_dp(running_rho, e.delta).unwrap_or(f64::NAN)
            } else {
                f64::NAN
            };
            flag(
                differs(e.cumulative_epsilon, cum_eps),
                LedgerIssueKind::WrongCumulativeEpsilon,
            );
            let hash_ok = e.payload_sha256.len() == 64
                && e.payload_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            flag(!hash_ok, LedgerIssueKind::MalformedPayloadHash);
            prev_hash = e.entry_hash.clone();
            prev_time = e.time_ms;
        }
        issues
    }

    /// The last consent change: whether consent stands, and the index of its entry; `None` if
    /// consent was never recorded (no consent).
    pub fn consent(&self) -> Option<(bool, usize)> {
        self.entries
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, e)| match e.params {
                ReleaseParams::Consent { granted } => Some((granted, i)),
                _ => None,
            })
    }

    /// The dp-accounting event of the whole ledger: a `ComposedDpEvent` of the
    /// releases (consent changes are not), runs of identical events folded into
    /// `SelfComposedDpEvent`.
    pub fn dp_event(&self) -> Value {
        let mut events: Vec<(Value, u64)> = Vec::new();
        for e in self.entries.iter().filter(|e| e.params.is_release()) {
            let ev = e.params.dp_event();
            match events.last_mut() {
                Some((last, count)) if *last == ev => *count += 1,
                _ => events.push((ev, 1)),
            }
        }
        let events: Vec<Value> = events
            .into_iter()
            .map(|(ev, count)| {
                if count == 1 {
                    ev
                } else {
                    json!({"dp_event": "SelfComposedDpEvent", "event": ev, "count": count})
                }
            })
            .collect();
        json!({"dp_event": "ComposedDpEvent", "events": events})
    }

    /// JSON export: `{format, version, delta, total_rho, total_epsilon, dp_event, entries}`,
    /// each entry carrying its own `dp_event`.
    pub fn to_json(&self) -> String {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(e).expect("entries serialize");
                v["dp_event"] = e.params.dp_event();
                v
            })
            .collect();
        let total_rho = self.total_rho();
        let total_epsilon = zcdp_to_approx_dp(total_rho, self.delta).unwrap_or(f64::NAN);
        serde_json::to_string_pretty(&json!({
            "format": "feedloop-ledger",
            "version": 1,
            "delta": self.delta,
            "total_rho": total_rho,
            "total_epsilon": total_epsilon,
            "dp_event": self.dp_event(),
            "entries": entries,
        }))
        .expect("ledger serializes")
    }

    /// Reads a [`Ledger::to_json`] export (the `dp_event` fields are derived and ignored).
    /// Call [`Ledger::verify`] on the result before trusting it.
    pub fn from_json(json: &str) -> Result<Self> {
        let mut v: Value =
            serde_json::from_str(json).map_err(|e| PrivacyError::InvalidState(e.to_string()))?;
        if v["format"] != "feedloop-ledger" || v["version"] != 1 {
            return Err(PrivacyError::InvalidState(
                "not a feedloop-ledger v1 export".into(),
            ));
        }
        let delta = v["delta"]
            .as_f64()
            .ok_or_else(|| PrivacyError::InvalidState("missing delta".into()))?;
        let entries = match v.get_mut("entries").map(Value::take) {
            Some(Value::Array(list)) => list
                .into_iter()
                .map(|mut e| {
                    if let Value::Object(m) = &mut e {
                        m.remove("dp_event");
                    }
                    serde_json::from_value::<LedgerEntry>(e)
                        .map_err(|err| PrivacyError::InvalidState(err.to_string()))
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(PrivacyError::InvalidState("missing entries".into())),
        };
        Ok(Self { delta, entries })
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
