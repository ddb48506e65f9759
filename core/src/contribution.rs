//! Contributions: turning what the device learned into the only thing that may leave it.
//!
//! The privacy boundary, as types:
//! - the learning delta (`LocalLearningState`) never leaves: [`DevicePrivacy::prepare`] privatizes the
//!   part learned since the last contribution into a `PrivatizedUpdate`, which only the privatizer can
//!   construct (clipped, on the lattice, discrete Gaussian noise — see docs/PRIVACY.md);
//! - a [`PreparedUpload`] can be inspected (its exact bytes and decoded form) but carries no way to
//!   send it;
//! - nothing is released without the user's consent ([`DevicePrivacy::set_consent`], recorded in the
//!   ledger; none until the page grants it);
//! - the bytes for the network come only from [`DevicePrivacy::release`], which first charges the
//!   budget and appends the ledger entry; the caller persists the new [`DevicePrivacyState`] (and
//!   queues the upload, `crate::outbox`) before sending [`Release::bytes`] (spending recorded first
//!   can only over-count, never under-count).
//!
//! Whether to contribute at all ([`DevicePrivacy::eligibility`]) and what is new since the last
//! contribution ([`unreleased_delta`]) are decided here, once, for the browser, the CLI's
//! simulation and the tests.
//!
//! A network layer that accepts only `Release` (or `PrivatizedUpdate`) cannot be handed anything
//! unprivatized.

use feedloop_privacy::budget::{BudgetState, PrivacyPolicy};
use feedloop_privacy::ledger::{Ledger, LedgerEntry, ReleaseParams, ReleaseRecord};
use feedloop_privacy::{
    clip_to_lattice, privatize, PrivacyError, PrivatizedUpdate, PrivatizerConfig,
};
use feedloop_secagg::{seal_report, HpkePublicKey, SecureRound};
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::learning::LocalLearningState;
use crate::protocol::SecureAggregators;

/// Why a contribution leaves the device, as written in the ledger.
pub const PURPOSE: &str = "reward-head update";

/// A federated round as the server announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoundConfig {
    pub round_id: String,
    /// The global head version updates must be computed against.
    pub model_version: String,
    /// C: the update is clipped to this L2 norm.
    pub clip_norm: f64,
    /// γ: the lattice granularity.
    pub granularity: f64,
    /// σ: the discrete Gaussian noise, in the update's units (on the sum, in a secure round).
    pub noise_stddev: f64,
    /// A secure round's aggregators (`None`: local DP, the device adds σ itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<SecureAggregators>,
}

/// Everything the device keeps about its privacy: policy, spent budget, ledger, and the learning
/// delta at the last contribution (so each release carries only what was learned since).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DevicePrivacyState {
    pub policy: PrivacyPolicy,
    pub budget: BudgetState,
    pub ledger: Ledger,
    pub contributed_delta: Vec<f32>,
    pub contributed_base: String,
    /// Metric verdicts noted but not reported yet ([`crate::metric_reports`]).
    #[serde(default)]
    pub pending_metrics: crate::metric_reports::PendingMetrics,
    /// Metric reports released (randomized, charged, in the ledger) whose delivery is not
    /// confirmed yet: resent at the next sync ([`crate::metric_reports::UndeliveredMetric`]).
    #[serde(default)]
    pub undelivered_metrics: Vec<crate::metric_reports::UndeliveredMetric>,
}

impl DevicePrivacyState {
    /// Merges what another tab stored with this tab's state, losing no spending and no release:
    /// budgets are a union of spends; ledgers keep the longer when one extends the other, and
    /// otherwise re-append this tab's extra releases onto the stored chain (in time order). The
    /// contributed delta follows the most recent release. The policy is this tab's.
    pub fn merge(stored: &Self, mine: &Self) -> Result<Self> {
        let mut budget = stored.budget.clone();
        budget.merge(&mine.budget);
        let (s, m) = (stored.ledger.entries(), mine.ledger.entries());
        let extends = |long: &[LedgerEntry], short: &[LedgerEntry]| {
            long.len() >= short.len()
                && long
                    .iter()
                    .zip(short)
                    .all(|(a, b)| a.entry_hash == b.entry_hash)
        };
        let ledger = if extends(m, s) {
            mine.ledger.clone()
        } else if extends(s, m) {
            stored.ledger.clone()
        } else {
            let mut ledger = stored.ledger.clone();
            let known: std::collections::HashSet<&str> =
                s.iter().map(|e| e.payload_sha256.as_str()).collect();
            let mut extra: Vec<&LedgerEntry> = m
                .iter()
                .filter(|e| !known.contains(e.payload_sha256.as_str()))
                .collect();
            extra.sort_by_key(|e| e.time_ms);
            let last_time = s.last().map_or(0, |e| e.time_ms);
            // A consent change of this tab older than the stored ledger's last one was overtaken
            // by it (the user's latest choice stands, e.g. a withdrawal in another tab).
            let stored_consent_time = stored.ledger.consent().map_or(0, |(_, i)| s[i].time_ms);
            extra.retain(|e| e.params.is_release() || e.time_ms > stored_consent_time);
            for e in extra {
                ledger
                    .append(ReleaseRecord {
                        // The chain needs time order; a release from the other tab's past is
                        // recorded at the merge point (its own time stays in the other tab's log).
                        time_ms: e.time_ms.max(last_time),
                        purpose: e.purpose.clone(),
                        round_id: e.round_id.clone(),
                        model_version: e.model_version.clone(),
                        params: e.params.clone(),
                        payload_sha256: e.payload_sha256.clone(),
                    })
                    .map_err(privacy)?;
            }
            ledger
        };
        let latest = |st: &Self| st.ledger.entries().last().map_or(0, |e| e.time_ms);
        let newer = if latest(mine) >= latest(stored) {
            mine
        } else {
            stored
        };
        // Notes of both tabs, less what either already reported.
        let mut pending_metrics = crate::metric_reports::PendingMetrics::merge(
            &stored.pending_metrics,
            &mine.pending_metrics,
        );
        pending_metrics.retain_unreported(&ledger);
        let mut undelivered_metrics = crate::metric_reports::UndeliveredMetric::merge(
            &stored.undelivered_metrics,
            &mine.undelivered_metrics,
            &ledger,
        );
        if !consented(&ledger) {
            pending_metrics = Default::default(); // notes wait for nothing once consent is gone
            undelivered_metrics.clear();
        }
        Ok(Self {
            policy: mine.policy.clone(),
            budget,
            ledger,
            contributed_delta: newer.contributed_delta.clone(),
            contributed_base: newer.contributed_base.clone(),
            pending_metrics,
            undelivered_metrics,
        })
    }
}

/// Whether the user's consent to contributing stands (the ledger's last consent change is a
/// grant). Without it nothing is released: no update, no metric report.
pub fn consented(ledger: &Ledger) -> bool {
    matches!(ledger.consent(), Some((true, _)))
}

/// A privatized update ready to be released, not yet charged: inspect it, then release or drop it.
#[derive(Debug)]
pub struct PreparedUpload {
    round: RoundConfig,
    payload: Payload,
    rho: f64,
    /// The learning delta this upload accounts for (becomes `contributed_delta` on release).
    delta: Vec<f32>,
}

/// What an upload carries: a local-DP update, or a secure round's sealed report.
#[derive(Debug)]
enum Payload {
    Local(PrivatizedUpdate),
    Secure {
        /// The sealed report's bytes (Prio3 public share, two HPKE ciphertexts).
        report: Vec<u8>,
        /// The clipped, rounded values that were sharded (kept for the device's own inspector
        /// only: no other copy of them exists, and they are never sent).
        values: Vec<i64>,
        params: ReleaseParams,
    },
}

/// The trust a secure metric report's guarantee rests on, as written in the ledger.
pub const SECURE_METRIC_TRUST: &str =
    "the report stays hidden and ε holds as long as the leader and \
    the helper do not collude and the helper adds its noise to each batch's counts";

/// The trust assumption of a secure round, as the ledger records it.
pub const SECURE_TRUST: &str = "the update stays hidden and ε holds as long as the leader and the \
    helper do not collude and the helper adds its noise; each sees only its share";

impl PreparedUpload {
    pub fn round(&self) -> &RoundConfig {
        &self.round
    }

    /// The integers the upload is made of: the noised lattice values of a local update, or the
    /// clipped lattice values a secure report shards (which leave only as shares).
    pub fn values(&self) -> Vec<i64> {
        match &self.payload {
            Payload::Local(update) => update.values().to_vec(),
            Payload::Secure { values, .. } => values.clone(),
        }
    }

    /// Whether this is a secure round's sealed report.
    pub fn is_secure(&self) -> bool {
        matches!(self.payload, Payload::Secure { .. })
    }

    /// The dimension of the update.
    pub fn dimension(&self) -> usize {
        match &self.payload {
            Payload::Local(update) => update.params().dimension,
            Payload::Secure { values, .. } => values.len(),
        }
    }

    /// The exact bytes that `release` will hand out.
    pub fn bytes(&self) -> Vec<u8> {
        match &self.payload {
            Payload::Local(update) => update.to_bytes(),
            Payload::Secure { report, .. } => report.clone(),
        }
    }

    /// ρ (zCDP) this release costs.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// Whether this upload was prepared from exactly this learning delta.
    pub fn accounts_for(&self, delta: &[f32]) -> bool {
        self.delta == delta
    }
}

/// A charged release: persist the device's privacy state first, then send [`Release::bytes`].
///
/// Only [`DevicePrivacy::release`] constructs one (the fields are private), so holding a `Release`
/// proves the bytes are a privatized update that the budget paid for and the ledger recorded.
#[derive(Debug)]
pub struct Release {
    round: RoundConfig,
    bytes: Vec<u8>,
    ledger_entry: LedgerEntry,
}

impl Release {
    /// The round it was released for.
    pub fn round(&self) -> &RoundConfig {
        &self.round
    }

    /// The wire bytes (`FLDP`), exactly what `PreparedUpload::bytes` showed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The ledger entry recording this release.
    pub fn ledger_entry(&self) -> &LedgerEntry {
        &self.ledger_entry
    }
}

/// What in `delta` has not been contributed yet: `delta − contributed`, both against the same
/// base version.
pub fn unreleased_delta(delta: &[f32], contributed: &[f32]) -> Result<Vec<f32>> {
    if delta.len() != contributed.len() {
        return Err(Error::InvalidInput(format!(
            "the learning state has {} parameters, the last contribution {}",
            delta.len(),
            contributed.len()
        )));
    }
    Ok(delta.iter().zip(contributed).map(|(d, c)| d - c).collect())
}

impl DevicePrivacyState {
    /// What `learning` holds beyond the last contribution. After a new base model was adopted
    /// ([`DevicePrivacy::rebase`] keeps the mark), only what was learned since counts.
    pub fn unreleased(&self, learning: &LocalLearningState) -> Result<Vec<f32>> {
        if self.contributed_base == learning.base_version {
            unreleased_delta(&learning.delta, &self.contributed_delta)
        } else {
            // A new base model: everything in the (rebased) delta is new.
            Ok(learning.delta.clone())
        }
    }
}

/// Why a device does not contribute to a round (not an error: the sync reports it and goes on).
#[derive(Debug, Clone, PartialEq)]
pub enum Ineligible {
    /// The round aggregates updates to another model version than the one this device uses.
    OtherModel { round: String, device: String },
    /// The round's update has another dimension than this model's head.
    OtherDimension { round: usize, model: usize },
    /// Nothing was learned since the last contribution.
    NothingNew,
    /// This device's ledger already has a release for the round.
    AlreadyContributed(String),
    /// The user has not consented to contributing (or withdrew consent).
    NoConsent,
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherModel { round, device } => {
                write!(
                    f,
                    "the round is for model {round} but this device uses {device}"
                )
            }
            Self::OtherDimension { round, model } => {
                write!(f, "the round has {round} parameters, this model {model}")
            }
            Self::NothingNew => f.write_str("nothing new was learned since the last contribution"),
            Self::AlreadyContributed(round) => write!(f, "already contributed to round {round}"),
            Self::NoConsent => f.write_str(
                "the user has not consented to contributing (the page calls setConsent(true) once they do)",
            ),
        }
    }
}

/// The device's privacy state and the only way to produce bytes for the network.
#[derive(Debug, Clone)]
pub struct DevicePrivacy {
    state: DevicePrivacyState,
}

fn privacy(err: PrivacyError) -> Error {
    Error::InvalidInput(format!("privacy: {err}"))
}

impl DevicePrivacy {
    pub fn new(policy: PrivacyPolicy, parameter_count: usize, base_version: &str) -> Result<Self> {
        let ledger = Ledger::new(policy.delta()).map_err(privacy)?;
        Ok(Self {
            state: DevicePrivacyState {
                policy,
                budget: BudgetState::new(),
                ledger,
                contributed_delta: vec![0.0; parameter_count],
                contributed_base: base_version.to_string(),
                pending_metrics: Default::default(),
                undelivered_metrics: Vec::new(),
            },
        })
    }

    /// Restores a saved state (checked: a tampered or foreign ledger is refused).
    pub fn from_json(json: &str) -> Result<Self> {
        let state: DevicePrivacyState = serde_json::from_str(json)
            .map_err(|e| Error::InvalidInput(format!("saved privacy state is corrupt: {e}")))?;
        if let Some(issue) = state.ledger.verify().first() {
            return Err(Error::InvalidInput(format!(
                "saved privacy ledger is inconsistent at entry {}: {:?}",
                issue.index, issue.kind
            )));
        }
        Ok(Self { state })
    }

    pub fn state(&self) -> &DevicePrivacyState {
        &self.state
    }

    pub(crate) fn state_mut(&mut self) -> &mut DevicePrivacyState {
        &mut self.state
    }

    /// Wraps a state (e.g. a merge of two tabs' states).
    pub fn from_state(state: DevicePrivacyState) -> Self {
        Self { state }
    }

    /// What a save writes: `self` merged with the state another tab stored (`stored_json`), so no
    /// spend or release is lost. A stored state that does not verify is an error, never
    /// overwritten: it records spending.
    pub fn reconcile(&self, stored_json: Option<&str>) -> Result<Self> {
        let Some(json) = stored_json else {
            return Ok(self.clone());
        };
        let stored = Self::from_json(json).map_err(|e| {
            Error::InvalidInput(format!(
                "the stored privacy state does not verify, not overwriting it: {e}"
            ))
        })?;
        let merged = DevicePrivacyState::merge(stored.state(), self.state())?;
        Ok(Self::from_state(merged))
    }

    /// Whether the user's consent to contributing stands ([`consented`]).
    pub fn consented(&self) -> bool {
        consented(&self.state.ledger)
    }

    /// Refuses (an error naming the fix) unless the user's consent stands: what [`Self::release`]
    /// checks first, for callers that want to know before they hand over a prepared upload.
    pub fn check_consent(&self) -> Result<()> {
        if self.consented() {
            Ok(())
        } else {
            Err(Error::InvalidInput(
                "the user has not consented to contributing: nothing is released until setConsent(true)".into(),
            ))
        }
    }

    /// Records the user's consent (`true`) or its withdrawal (`false`) in the ledger, if it
    /// changes; returns whether it did. A withdrawal drops the metric notes not yet reported and
    /// the metric reports not yet delivered;
    /// queued uploads from before it are dropped when the queue is read
    /// ([`crate::outbox::Outbox::from_json`]). Spent budget stays spent.
    pub fn set_consent(&mut self, granted: bool, now_ms: u64, model_version: &str) -> Result<bool> {
        if self.consented() == granted {
            return Ok(false);
        }
        // The chain is in time order: a clock that went back records at the last entry's time.
        let last = self.state.ledger.entries().last().map_or(0, |e| e.time_ms);
        let record = ReleaseRecord::for_consent(granted, now_ms.max(last), model_version);
        self.state.ledger.append(record).map_err(privacy)?;
        if !granted {
            self.state.pending_metrics = Default::default();
            self.state.undelivered_metrics.clear();
        }
        Ok(true)
    }

    /// Replaces the policy (the developer's configuration); spending and the ledger stay.
    pub fn set_policy(&mut self, policy: PrivacyPolicy) {
        self.state.policy = policy;
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.state).expect("the privacy state always serializes")
    }

    /// Whether this device should contribute `learning` to `round` at all (the policy and the
    /// budget are [`DevicePrivacy::prepare`]'s to check): same model version, same dimension,
    /// something new learned, no earlier release for the round. `model_version` is the global
    /// version the device uses and `dimension` the round's announced update size.
    pub fn eligibility(
        &self,
        learning: &LocalLearningState,
        round: &RoundConfig,
        model_version: &str,
        dimension: usize,
    ) -> std::result::Result<(), Ineligible> {
        if !self.consented() {
            return Err(Ineligible::NoConsent);
        }
        if round.model_version != model_version {
            return Err(Ineligible::OtherModel {
                round: round.model_version.clone(),
                device: model_version.to_string(),
            });
        }
        if dimension != learning.delta.len() {
            return Err(Ineligible::OtherDimension {
                round: dimension,
                model: learning.delta.len(),
            });
        }
        match self.state.unreleased(learning) {
            Ok(update) if update.iter().all(|d| *d == 0.0) => return Err(Ineligible::NothingNew),
            _ => {}
        }
        if self
            .state
            .ledger
            .entries()
            .iter()
            .any(|e| e.round_id == round.round_id)
        {
            return Err(Ineligible::AlreadyContributed(round.round_id.clone()));
        }
        Ok(())
    }

    /// Checks the round against the policy and the budget, and privatizes the delta learned since the
    /// last contribution. Refuses a round asking for weaker noise than the policy allows (the server
    /// cannot lower the device's privacy), one the budget cannot pay for, a round already contributed
    /// to, and a delta computed against another model version.
    pub fn prepare<R: CryptoRng + ?Sized>(
        &self,
        learning: &LocalLearningState,
        round: &RoundConfig,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<PreparedUpload> {
        if learning.base_version != round.model_version {
            return Err(Error::InvalidInput(format!(
                "the round is for model {:?} but this device learned against {:?}; update the model first",
                round.model_version, learning.base_version
            )));
        }
        let config = PrivatizerConfig::new(round.clip_norm, round.granularity, round.noise_stddev)
            .map_err(privacy)?;
        self.state.policy.check_round(&config).map_err(privacy)?;
        // Dry run: the same charge `release` will make must be allowed now.
        let mut budget = self.state.budget.clone();
        budget
            .charge(&self.state.policy, &round.round_id, config.rho(), now_ms)
            .map_err(privacy)?;
        let update = self.state.unreleased(learning)?;
        let payload = match &round.secure {
            None => Payload::Local(privatize(&update, &config, rng).map_err(privacy)?),
            Some(secure) => self.seal(&update, round, secure, &config, rng)?,
        };
        Ok(PreparedUpload {
            round: round.clone(),
            payload,
            rho: config.rho(),
            delta: learning.delta.clone(),
        })
    }

    /// A secure round's report, if this device's policy accepts the round: its helper's key is
    /// pinned (by fingerprint, recomputed here from the key) and its minimum batch is at least
    /// the policy's (σ was checked like any round's). The update is clipped and rounded without
    /// noise, sharded and sealed; only the report remains.
    fn seal<R: CryptoRng + ?Sized>(
        &self,
        update: &[f32],
        round: &RoundConfig,
        secure: &SecureAggregators,
        config: &PrivatizerConfig,
        rng: &mut R,
    ) -> Result<Payload> {
        let refuse = |why: String| Error::InvalidInput(format!("privacy: {why}"));
        let policy = self.state.policy.secure();
        let key = |hex: &str, whose: &str| {
            HpkePublicKey::from_hex(hex).map_err(|e| refuse(format!("the {whose}'s key: {e}")))
        };
        let helper = key(&secure.helper_key, "helper")?;
        let leader = key(&secure.leader_key, "leader")?;
        let fingerprint = helper.fingerprint();
        if !policy.helpers.contains(&fingerprint) {
            return Err(refuse(format!(
                "the round's helper {fingerprint} is not one this device's policy pins \
                 (privacy.helpers); it takes part in no secure round of another helper"
            )));
        }
        let min_reports = u64::try_from(secure.min_reports).unwrap_or(0);
        if min_reports < policy.min_reports.max(1) {
            return Err(refuse(format!(
                "the round's helper releases batches of {min_reports} reports; this device's policy \
                 needs at least {}",
                policy.min_reports
            )));
        }
        let round_id = round.round_id.parse::<u64>().map_err(|_| {
            refuse(format!(
                "secure round id {:?} is not a number",
                round.round_id
            ))
        })?;
        let terms = SecureRound::for_privatizer(round_id, update.len(), config, min_reports)
            .map_err(|e| refuse(e.to_string()))?;
        if i64::try_from(terms.value_radius()).ok() != Some(secure.value_radius) {
            return Err(refuse(format!(
                "the round's value radius {} is not the one its clip norm and granularity give ({})",
                secure.value_radius,
                terms.value_radius()
            )));
        }
        // A sized handle on the caller's generator (`seal_report` takes a sized one).
        let mut rng = rng;
        let lattice = clip_to_lattice(update, config, &mut rng).map_err(privacy)?;
        let values = lattice.values().to_vec();
        let report = seal_report(lattice, &terms, &leader, &helper, &mut rng)
            .map_err(|e| refuse(e.to_string()))?;
        Ok(Payload::Secure {
            report: report.to_bytes(),
            values,
            params: ReleaseParams::SecureAggregation {
                clip_norm: config.clip_norm(),
                granularity: config.granularity(),
                noise_stddev: config.noise_stddev(),
                dimension: update.len() as u64,
                min_reports,
                helper_fingerprint: fingerprint,
                leader_fingerprint: leader.fingerprint(),
                trust: SECURE_TRUST.into(),
            },
        })
    }

    /// Charges the budget, appends the ledger entry and marks the delta contributed; returns the
    /// bytes (persist [`DevicePrivacy::state`] before sending them). Refused (nothing changes) if the budget
    /// no longer allows it.
    pub fn release(&mut self, prepared: PreparedUpload, now_ms: u64) -> Result<Release> {
        self.check_consent()?;
        let mut state = self.state.clone();
        state
            .budget
            .charge(
                &state.policy,
                &prepared.round.round_id,
                prepared.rho,
                now_ms,
            )
            .map_err(privacy)?;
        let record = match &prepared.payload {
            Payload::Local(update) => ReleaseRecord::for_update(
                update,
                now_ms,
                PURPOSE,
                &prepared.round.round_id,
                &prepared.round.model_version,
            ),
            Payload::Secure { report, params, .. } => ReleaseRecord::for_secure_report(
                report,
                params.clone(),
                now_ms,
                PURPOSE,
                &prepared.round.round_id,
                &prepared.round.model_version,
            ),
        };
        let ledger_entry = state.ledger.append(record).map_err(privacy)?.clone();
        let bytes = prepared.bytes();
        state.contributed_delta = prepared.delta;
        state.contributed_base = prepared.round.model_version.clone();
        self.state = state;
        Ok(Release {
            bytes,
            ledger_entry,
            round: prepared.round,
        })
    }

    /// A new global model was adopted: what was contributed stays contributed (the next upload
    /// carries only what is learned from now on, not the whole personal delta again).
    pub fn rebase(&mut self, model_version: &str) {
        self.state.contributed_base = model_version.to_string();
    }
}

/// For benchmark pages: clips, rounds, shards and seals one arbitrary deterministic update of
/// `dimension` values (C = 1, γ = 0.001, σ = 4) to two fixed keys, as [`DevicePrivacy::prepare`]
/// does for a secure round; returns the report's size in bytes.
pub fn seal_benchmark_report<R: CryptoRng + ?Sized>(
    dimension: usize,
    rng: &mut R,
) -> Result<usize> {
    let update: Vec<f32> = (0..dimension)
        .map(|i| ((i % 17) as f32 - 8.0) * 1e-3)
        .collect();
    let config = PrivatizerConfig::new(1.0, 0.001, 4.0).map_err(privacy)?;
    let bench = |e: feedloop_secagg::SecAggError| Error::InvalidInput(e.to_string());
    let round = SecureRound::for_privatizer(1, dimension, &config, 1).map_err(bench)?;
    // Two fixed public keys (X25519 u-coordinates 9 and 10: valid points, nobody's real keys).
    let key = |u: u8| {
        let mut bytes = [0u8; 32];
        bytes[0] = u;
        HpkePublicKey::from_bytes(&bytes).map_err(bench)
    };
    let mut rng = rng;
    let lattice = clip_to_lattice(&update, &config, &mut rng).map_err(privacy)?;
    let report = seal_report(lattice, &round, &key(9)?, &key(10)?, &mut rng).map_err(bench)?;
    Ok(report.to_bytes().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::rand_core::SeedableRng;
    use feedloop_privacy::budget::DAY_MS;
    use feedloop_privacy::ledger::sha256_hex;
    use feedloop_privacy::{decode_update, ExpectedRound};

    const NOW: u64 = 1_800_000_000_000;

    fn round(id: &str, sigma: f64) -> RoundConfig {
        RoundConfig {
            round_id: id.into(),
            model_version: "v1".into(),
            clip_norm: 1.0,
            granularity: 0.01,
            noise_stddev: sigma,
            secure: None,
        }
    }

    fn learning(delta: Vec<f32>) -> LocalLearningState {
        LocalLearningState {
            base_version: "v1".into(),
            delta,
            example_count: 3,
        }
    }

    fn device() -> DevicePrivacy {
        // ε = 8 at δ = 1e-6 over 30 days (ρ ≈ 1.08); at most ρ = 0.5 per release (σ ≥ 2C).
        let policy = PrivacyPolicy::new(8.0, 1e-6, 30 * DAY_MS, 0.5).unwrap();
        let mut device = DevicePrivacy::new(policy, 3, "v1").unwrap();
        device.set_consent(true, 1, "v1").unwrap(); // the user agreed, long before
        device
    }

    #[test]
    fn a_release_is_privatized_charged_and_ledgered() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(1);
        let mut device = device();
        let prepared = device
            .prepare(
                &learning(vec![0.5, -0.25, 3.0]),
                &round("r1", 4.0),
                NOW,
                &mut rng,
            )
            .unwrap();
        let inspected = prepared.bytes();
        let release = device.release(prepared, NOW).unwrap();
        assert_eq!(
            release.bytes(),
            inspected,
            "what was inspected is what is sent"
        );
        assert_eq!(
            release.ledger_entry().payload_sha256,
            sha256_hex(release.bytes())
        );
        let config = PrivatizerConfig::new(1.0, 0.01, 4.0).unwrap();
        let decoded = decode_update(
            release.bytes(),
            &ExpectedRound {
                config,
                dimension: 3,
            },
        )
        .unwrap();
        assert_eq!(decoded.values().len(), 3);
        let restored = DevicePrivacy::from_json(&device.to_json()).unwrap();
        assert_eq!(restored.state(), device.state());
        assert!(restored.state().ledger.verify().is_empty());
        assert_eq!(restored.state().contributed_delta, vec![0.5, -0.25, 3.0]);
    }

    #[test]
    fn weak_rounds_repeated_rounds_stale_models_and_exhausted_budgets_are_refused() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(2);
        let mut device = device();
        let state = learning(vec![0.1, 0.2, 0.3]);
        // σ = 1 < 2C: ρ = 2 > 0.5 per release.
        assert!(device
            .prepare(&state, &round("weak", 1.0), NOW, &mut rng)
            .is_err());
        let stale = LocalLearningState {
            base_version: "v0".into(),
            ..state.clone()
        };
        let err = device
            .prepare(&stale, &round("r1", 4.0), NOW, &mut rng)
            .unwrap_err();
        assert!(err.to_string().contains("update the model first"), "{err}");

        let mut released = 0;
        for i in 0..100 {
            match device.prepare(&state, &round(&format!("r{i}"), 4.0), NOW, &mut rng) {
                Ok(prepared) => {
                    device.release(prepared, NOW).unwrap();
                    released += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("would spend"), "{e}");
                    break;
                }
            }
        }
        let total = device.state().policy.total_rho();
        // σ = 4C: ρ = (2C)²/(2σ²) = 0.125 per release.
        assert!(
            released >= 1 && f64::from(released) * 0.125 <= total,
            "{released} releases"
        );
        assert!(device.state().budget.lifetime_rho() <= total);
        // The same round twice is refused.
        let again = device.prepare(&state, &round("r0", 4.0), NOW + 1, &mut rng);
        assert!(again.is_err());
        // A tampered ledger does not load.
        let mut json: serde_json::Value = serde_json::from_str(&device.to_json()).unwrap();
        json["ledger"]["entries"][0]["rho"] = serde_json::json!(0.01);
        assert!(DevicePrivacy::from_json(&json.to_string()).is_err());
    }

    #[test]
    fn two_tabs_merge_without_losing_spending_or_releases() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(4);
        let base = device();
        let (mut tab_a, mut tab_b) = (base.clone(), base.clone());
        let state = learning(vec![0.2, 0.1, 0.0]);
        let a = tab_a
            .prepare(&state, &round("a1", 4.0), NOW, &mut rng)
            .unwrap();
        tab_a.release(a, NOW).unwrap();
        let b = tab_b
            .prepare(&state, &round("b1", 4.0), NOW + 5, &mut rng)
            .unwrap();
        tab_b.release(b, NOW + 5).unwrap();
        let merged = DevicePrivacyState::merge(tab_a.state(), tab_b.state()).unwrap();
        assert_eq!(
            merged.ledger.entries().len(),
            3,
            "the consent and both releases"
        );
        assert!(merged.ledger.verify().is_empty());
        assert!((merged.budget.lifetime_rho() - 0.25).abs() < 1e-12);
        // Merging again (or the other way round) changes nothing.
        let again = DevicePrivacyState::merge(&merged, tab_b.state()).unwrap();
        assert_eq!(again.ledger.entries().len(), 3);
        assert!((again.budget.lifetime_rho() - 0.25).abs() < 1e-12);
        // One tab simply ahead of the other: its ledger wins as it is.
        let ahead = DevicePrivacyState::merge(base.state(), tab_a.state()).unwrap();
        assert_eq!(ahead.ledger, tab_a.state().ledger);
    }

    #[test]
    fn each_release_carries_only_what_was_learned_since_the_last() {
        let mut device = device();
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(3);
        let first = device
            .prepare(
                &learning(vec![1.0, 0.0, 0.0]),
                &round("r1", 4.0),
                NOW,
                &mut rng,
            )
            .unwrap();
        device.release(first, NOW).unwrap();
        assert_eq!(device.state().contributed_delta, vec![1.0, 0.0, 0.0]);
        // Nothing new learned since: the second release privatizes a zero update, i.e. it is exactly
        // what privatizing zeros with the same randomness gives.
        let second = device
            .prepare(
                &learning(vec![1.0, 0.0, 0.0]),
                &round("r2", 4.0),
                NOW,
                &mut chacha20::ChaCha20Rng::seed_from_u64(9),
            )
            .unwrap();
        let config = PrivatizerConfig::new(1.0, 0.01, 4.0).unwrap();
        let zeros = privatize(
            &[0.0f32; 3],
            &config,
            &mut chacha20::ChaCha20Rng::seed_from_u64(9),
        )
        .unwrap();
        assert_eq!(second.values(), zeros.values());
    }

    #[test]
    fn eligibility_names_why_a_device_does_not_contribute() {
        let mut device = device();
        let r = round("r1", 4.0);
        let mut learning = LocalLearningState::new("v1", 3);
        assert_eq!(
            device.eligibility(&learning, &r, "v1", 3),
            Err(Ineligible::NothingNew)
        );
        learning.delta = vec![0.5, 0.0, 0.0];
        assert_eq!(device.eligibility(&learning, &r, "v1", 3), Ok(()));
        assert!(matches!(
            device.eligibility(&learning, &r, "v2", 3),
            Err(Ineligible::OtherModel { .. })
        ));
        assert_eq!(
            device.eligibility(&learning, &r, "v1", 4),
            Err(Ineligible::OtherDimension { round: 4, model: 3 })
        );
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(7);
        let prepared = device.prepare(&learning, &r, NOW, &mut rng).unwrap();
        device.release(prepared, NOW).unwrap();
        // Released: the ledger names the round, and nothing is new until more is learned.
        assert_eq!(
            device.eligibility(&learning, &r, "v1", 3),
            Err(Ineligible::NothingNew)
        );
        learning.delta[1] = 0.25;
        assert_eq!(
            device.eligibility(&learning, &r, "v1", 3),
            Err(Ineligible::AlreadyContributed("r1".into()))
        );
        assert_eq!(
            device.state().unreleased(&learning).unwrap(),
            vec![0.0, 0.25, 0.0]
        );
        assert_eq!(
            Ineligible::NothingNew.to_string(),
            "nothing new was learned since the last contribution"
        );
    }

    #[test]
    fn nothing_is_released_without_consent_and_each_change_is_in_the_ledger() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(7);
        let policy = PrivacyPolicy::new(8.0, 1e-6, 30 * DAY_MS, 0.5).unwrap();
        let mut device = DevicePrivacy::new(policy, 3, "v1").unwrap();
        let state = learning(vec![0.3, 0.0, -0.1]);
        assert!(!device.consented(), "no consent until the page grants it");
        assert_eq!(
            device.eligibility(&state, &round("r1", 4.0), "v1", 3),
            Err(Ineligible::NoConsent)
        );
        // What would be sent can still be inspected (a consent dialog can show it) ...
        let prepared = device
            .prepare(&state, &round("r1", 4.0), NOW, &mut rng)
            .unwrap();
        // ... but not released: nothing charged, nothing recorded.
        let before = device.state().clone();
        let refused = device.release(prepared, NOW).unwrap_err().to_string();
        assert!(refused.contains("not consented"), "{refused}");
        assert_eq!(device.state(), &before);

        assert!(device.set_consent(true, NOW, "v1").unwrap());
        assert!(
            !device.set_consent(true, NOW + 1, "v1").unwrap(),
            "no change, no entry"
        );
        let prepared = device
            .prepare(&state, &round("r1", 4.0), NOW + 2, &mut rng)
            .unwrap();
        device.release(prepared, NOW + 2).unwrap();
        assert!(device.set_consent(false, NOW + 3, "v1").unwrap());
        assert_eq!(
            device.eligibility(&learning(vec![0.9, 0.0, 0.0]), &round("r2", 4.0), "v1", 3),
            Err(Ineligible::NoConsent)
        );
        let ledger = &device.state().ledger;
        let purposes: Vec<&str> = ledger
            .entries()
            .iter()
            .map(|e| e.purpose.as_str())
            .collect();
        assert_eq!(purposes, ["consent granted", PURPOSE, "consent withdrawn"]);
        assert!(ledger.verify().is_empty());
        assert_eq!(ledger.consent(), Some((false, 2)));
        // Consent changes cost nothing and are not releases in the dp-accounting composition.
        assert!((ledger.total_rho() - config_rho(4.0)).abs() < 1e-12);
        let composed = ledger.dp_event();
        assert_eq!(
            composed["events"].as_array().unwrap().len(),
            1,
            "{composed}"
        );
        assert_eq!(
            ledger.entries()[0].params.dp_event()["dp_event"],
            "NoOpDpEvent"
        );
        // Restored from storage, the withdrawal stands.
        assert!(!DevicePrivacy::from_json(&device.to_json())
            .unwrap()
            .consented());
    }

    fn config_rho(sigma: f64) -> f64 {
        PrivatizerConfig::new(1.0, 0.01, sigma).unwrap().rho()
    }

    #[test]
    fn in_a_merge_of_two_tabs_the_users_latest_consent_choice_stands() {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(8);
        let base = device(); // consented at t = 1
        let (mut tab_a, mut tab_b) = (base.clone(), base.clone());
        // Tab B withdraws and grants again early; tab A withdraws later.
        tab_b.set_consent(false, NOW, "v1").unwrap();
        tab_b.set_consent(true, NOW + 1, "v1").unwrap();
        let b = tab_b
            .prepare(
                &learning(vec![0.2, 0.0, 0.0]),
                &round("b1", 4.0),
                NOW + 2,
                &mut rng,
            )
            .unwrap();
        tab_b.release(b, NOW + 2).unwrap();
        tab_a.set_consent(false, NOW + 10, "v1").unwrap();
        // Tab B saves over what tab A stored.
        let merged = DevicePrivacyState::merge(tab_a.state(), tab_b.state()).unwrap();
        assert!(
            !consented(&merged.ledger),
            "tab A's later withdrawal stands"
        );
        assert!(merged.ledger.verify().is_empty());
        assert!(
            merged.ledger.entries().iter().any(|e| e.round_id == "b1"),
            "tab B's release stays recorded (spent is spent)"
        );
        // A grant made after the other tab's withdrawal stands too.
        tab_b.set_consent(false, NOW + 11, "v1").unwrap();
        tab_b.set_consent(true, NOW + 20, "v1").unwrap();
        let merged = DevicePrivacyState::merge(&merged, tab_b.state()).unwrap();
        assert!(consented(&merged.ledger));
    }
}
