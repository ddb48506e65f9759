//! The per-device privacy budget.
//!
//! The device, not the server, owns its [`PrivacyPolicy`]: a total (ε, δ) over
//! a rolling window, and the weakest single release it will ever make (max ρ
//! per release ⇔ min noise multiplier σ/(2C)). The server proposes a round
//! configuration; [`PrivacyPolicy::check_round`] refuses one with weaker noise,
//! so the server cannot lower the client's privacy.
//!
//! [`BudgetState`] is the spending record. Its invariants:
//! * **never over budget**: [`BudgetState::charge`] refuses a release unless
//!   the ρ spent inside the window plus the new ρ stays within the policy's
//!   total ρ (the largest ρ whose CKS conversion is ≤ ε at δ);
//! * **spent never decreases**: spends are only ever appended (never removed or
//!   lowered), so [`BudgetState::lifetime_rho`] is monotone;
//! * **merge never loses spending**: [`BudgetState::merge`] is the union by
//!   release id (max ρ and latest time on conflict) — commutative, associative,
//!   idempotent — so two tabs that both spent end up with both spends;
//! * **record before release**: `charge` returns a [`Charge`] holding the
//!   serialized new state; persist it *before* sending the payload. A crash
//!   after persisting over-counts (safe); the reverse order could under-count.
//!
//! Window semantics: a spend at time t counts at time `now` iff
//! `t > now − window` (spends from the "future", e.g. after a clock change,
//! always count).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::accounting::{max_rho_for_epsilon, zcdp_to_approx_dp};
use crate::error::{invalid, PrivacyError, Result};
use crate::privatizer::PrivatizerConfig;

/// What the device accepts. Validated on construction and deserialization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub struct PrivacyPolicy {
    epsilon: f64,
    delta: f64,
    window_ms: u64,
    max_rho_per_release: f64,
    total_rho: f64,
    metrics_share: f64,
    secure: SecurePolicy,
}

/// What a device accepts of a secure round (two aggregators): the helpers whose key fingerprints
/// the site's privacy team pinned, and the least batch the helper must hold before it releases.
/// No helper pinned (the default): the device takes part in no secure round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurePolicy {
    /// Fingerprints of the helpers' HPKE keys (`sha256:` and 64 lowercase hex digits).
    pub helpers: Vec<String>,
    /// The least `minReports` a secure round's helper may release a batch for.
    pub min_reports: u64,
}

impl Default for SecurePolicy {
    /// No helper pinned; a batch of at least 10 (the helper's default minimum).
    fn default() -> Self {
        Self {
            helpers: Vec::new(),
            min_reports: 10,
        }
    }
}

impl SecurePolicy {
    /// Checks the fingerprints' form (so a typo is an error, not a silent refusal of every round).
    pub fn new(helpers: Vec<String>, min_reports: u64) -> Result<Self> {
        for fp in &helpers {
            let hex = fp.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(
                    "helpers",
                    fp,
                    "a fingerprint is `sha256:` and 64 lowercase hex digits (the helper's GET /v1/helper `fingerprint`)",
                ));
            }
        }
        if min_reports == 0 {
            return Err(invalid("min_reports", min_reports, "must be at least 1"));
        }
        Ok(Self {
            helpers,
            min_reports,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct RawPolicy {
    epsilon: f64,
    delta: f64,
    window_ms: u64,
    max_rho_per_release: f64,
    /// Absent in states saved before metric shares existed: the whole budget.
    #[serde(default = "whole_budget")]
    metrics_share: f64,
    /// Absent in states saved before secure rounds existed: none accepted.
    #[serde(default)]
    secure: SecurePolicy,
}

fn whole_budget() -> f64 {
    1.0
}

impl TryFrom<RawPolicy> for PrivacyPolicy {
    type Error = PrivacyError;
    fn try_from(r: RawPolicy) -> Result<Self> {
        Ok(
            Self::new(r.epsilon, r.delta, r.window_ms, r.max_rho_per_release)?
                .with_metrics_share(r.metrics_share)?
                .with_secure(SecurePolicy::new(r.secure.helpers, r.secure.min_reports)?),
        )
    }
}

impl From<PrivacyPolicy> for RawPolicy {
    fn from(p: PrivacyPolicy) -> Self {
        RawPolicy {
            epsilon: p.epsilon,
            delta: p.delta,
            window_ms: p.window_ms,
            max_rho_per_release: p.max_rho_per_release,
            metrics_share: p.metrics_share,
            secure: p.secure,
        }
    }
}

/// Milliseconds per day, for window lengths.
pub const DAY_MS: u64 = 86_400_000;

impl Default for PrivacyPolicy {
    /// What a device accepts unless the site says otherwise: ε = 8 at δ = 10⁻⁶ over any 30 days,
    /// at most ρ = 0.5 per release (σ ≥ C, the noise multiplier floor that follows).
    fn default() -> Self {
        Self::new(8.0, 1e-6, 30 * DAY_MS, 0.5).expect("the default policy is valid")
    }
}

impl PrivacyPolicy {
    /// Total `epsilon` at `delta` over any window of `window_ms`; no single
    /// release may cost more than `max_rho_per_release`.
    pub fn new(epsilon: f64, delta: f64, window_ms: u64, max_rho_per_release: f64) -> Result<Self> {
        let total_rho = max_rho_for_epsilon(epsilon, delta)?;
        if window_ms == 0 {
            return Err(invalid("window_ms", window_ms, "must be > 0"));
        }
        if !(max_rho_per_release > 0.0 && max_rho_per_release.is_finite()) {
            return Err(invalid(
                "max_rho_per_release",
                max_rho_per_release,
                "must be finite and > 0",
            ));
        }
        Ok(Self {
            epsilon,
            delta,
            window_ms,
            max_rho_per_release,
            total_rho,
            metrics_share: 1.0,
            secure: SecurePolicy::default(),
        })
    }

    /// The policy accepting secure rounds of these helpers ([`SecurePolicy`]).
    pub fn with_secure(mut self, secure: SecurePolicy) -> Self {
        self.secure = secure;
        self
    }

    /// What secure rounds this device accepts.
    pub fn secure(&self) -> &SecurePolicy {
        &self.secure
    }

    /// The policy with at most `share` (0 < share ≤ 1) of the window's total ρ for metric reports
    /// (the rest stays for model updates); 1, the whole budget, by default.
    pub fn with_metrics_share(mut self, share: f64) -> Result<Self> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(invalid("metrics_share", share, "must be > 0 and <= 1"));
        }
        self.metrics_share = share;
        Ok(self)
    }

    /// The share of the window's total ρ that metric reports may use.
    pub fn metrics_share(&self) -> f64 {
        self.metrics_share
    }

    /// Total ε over the window.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// δ of the total guarantee.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Window length in ms.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Largest ρ of one release.
    pub fn max_rho_per_release(&self) -> f64 {
        self.max_rho_per_release
    }

    /// Largest ρ that may be spent inside one window (from ε, δ by CKS).
    pub fn total_rho(&self) -> f64 {
        self.total_rho
    }

    /// The smallest noise multiplier σ/(2C) a Gaussian round may use: `√(1/(2ρ_max))`.
    pub fn min_noise_multiplier(&self) -> f64 {
        (1.0 / (2.0 * self.max_rho_per_release)).sqrt()
    }

    /// Refuses a server-proposed round whose noise is weaker than the policy allows.
    pub fn check_round(&self, config: &PrivatizerConfig) -> Result<()> {
        if config.rho() > self.max_rho_per_release {
            return Err(PrivacyError::BudgetRefused(format!(
                "round noise multiplier σ/(2C) = {} is below this device's minimum {} (ρ {} > {})",
                config.noise_multiplier(),
                self.min_noise_multiplier(),
                config.rho(),
                self.max_rho_per_release
            )));
        }
        Ok(())
    }
}

/// One recorded spend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// Time of the release (unix ms, from the caller).
    pub time_ms: u64,
    /// ρ charged.
    pub rho: f64,
}

/// The device's spending record (persist it; merge copies with [`BudgetState::merge`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawState", into = "RawState")]
pub struct BudgetState {
    /// Release id → spend. Ids are unique per release (e.g. the payload's SHA-256).
    spends: BTreeMap<String, Spend>,
}

#[derive(Serialize, Deserialize)]
struct RawState {
    version: u32,
    spends: BTreeMap<String, Spend>,
}

impl TryFrom<RawState> for BudgetState {
    type Error = PrivacyError;
    fn try_from(r: RawState) -> Result<Self> {
        if r.version != 1 {
            return Err(PrivacyError::InvalidState(format!(
                "budget state version {} (expected 1)",
                r.version
            )));
        }
        if let Some((id, s)) = r
            .spends
            .iter()
            .find(|(_, s)| !(s.rho >= 0.0 && s.rho.is_finite()))
        {
            return Err(PrivacyError::InvalidState(format!(
                "spend {id} has invalid rho {}",
                s.rho
            )));
        }
        Ok(Self { spends: r.spends })
    }
}

impl From<BudgetState> for RawState {
    fn from(s: BudgetState) -> Self {
        RawState {
            version: 1,
            spends: s.spends,
        }
    }
}

/// Proof that a release was charged, with the state to persist before sending.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The release id charged.
    pub release_id: String,
    /// ρ charged.
    pub rho: f64,
    /// ρ spent in the window including this release.
    pub window_rho: f64,
    /// The new state, serialized: persist this before the payload leaves.
    pub state_json: String,
}

impl BudgetState {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// ρ spent in the window ending at `now_ms`.
    pub fn window_rho(&self, policy: &PrivacyPolicy, now_ms: u64) -> f64 {
        let start = now_ms.saturating_sub(policy.window_ms);
        self.spends
            .values()
            .filter(|s| s.time_ms > start || now_ms < policy.window_ms)
            .map(|s| s.rho)
            .sum()
    }

    /// ρ spent in the window ending at `now_ms` by the releases whose id `counts`.
    pub fn window_rho_of(
        &self,
        policy: &PrivacyPolicy,
        now_ms: u64,
        counts: impl Fn(&str) -> bool,
    ) -> f64 {
        let start = now_ms.saturating_sub(policy.window_ms);
        self.spends
            .iter()
            .filter(|(id, s)| counts(id) && (s.time_ms > start || now_ms < policy.window_ms))
            .map(|(_, s)| s.rho)
            .sum()
    }

    /// ρ spent over the device's lifetime (monotone).
    pub fn lifetime_rho(&self) -> f64 {
        self.spends.values().map(|s| s.rho).sum()
    }

    /// ρ still available in the window ending at `now_ms`.
    pub fn remaining_rho(&self, policy: &PrivacyPolicy, now_ms: u64) -> f64 {
        (policy.total_rho - self.window_rho(policy, now_ms)).max(0.0)
    }

    /// ε (at the policy's δ) of the spending in the current window.
    pub fn window_epsilon(&self, policy: &PrivacyPolicy, now_ms: u64) -> Result<f64> {
        zcdp_to_approx_dp(self.window_rho(policy, now_ms), policy.delta)
    }

    /// Number of recorded releases.
    pub fn len(&self) -> usize {
        self.spends.len()
    }

    /// True when nothing was ever spent.
    pub fn is_empty(&self) -> bool {
        self.spends.is_empty()
    }

    /// Charges a release of cost `rho` at `now_ms`, or refuses it (state unchanged).
    pub fn charge(
        &mut self,
        policy: &PrivacyPolicy,
        release_id: &str,
        rho: f64,
        now_ms: u64,
    ) -> Result<Charge> {
        if !(rho >= 0.0 && rho.is_finite()) {
            return Err(invalid("rho", rho, "must be finite and >= 0"));
        }
        if release_id.is_empty() || self.spends.contains_key(release_id) {
            return Err(PrivacyError::BudgetRefused(format!(
                "release id {release_id:?} is empty or already charged"
            )));
        }
        if rho > policy.max_rho_per_release {
            return Err(PrivacyError::BudgetRefused(format!(
                "one release costs ρ = {rho}, the policy allows at most {} per release",
                policy.max_rho_per_release
            )));
        }
        let window_rho = self.window_rho(policy, now_ms) + rho;
        if window_rho > policy.total_rho {
            return Err(PrivacyError::BudgetRefused(format!(
                "would spend ρ = {window_rho} in the window, above the total {} (ε = {} at δ = {})",
                policy.total_rho, policy.epsilon, policy.delta
            )));
        }
        self.spends.insert(
            release_id.to_owned(),
            Spend {
                time_ms: now_ms,
                rho,
            },
        );
        Ok(Charge {
            release_id: release_id.to_owned(),
            rho,
            window_rho,
            state_json: self.to_json(),
        })
    }

    /// Union with another copy of the state (e.g. another tab): no spend is lost.
    pub fn merge(&mut self, other: &BudgetState) {
        for (id, theirs) in &other.spends {
            self.spends
                .entry(id.clone())
                .and_modify(|mine| {
                    mine.rho = mine.rho.max(theirs.rho);
                    mine.time_ms = mine.time_ms.max(theirs.time_ms);
                })
                .or_insert_with(|| theirs.clone());
        }
    }

    /// The recorded spends by release id.
    pub fn spends(&self) -> impl Iterator<Item = (&str, &Spend)> {
        self.spends.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Serialized state (JSON) for persistence.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("budget state always serializes")
    }

    /// Reads a persisted state.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| PrivacyError::InvalidState(e.to_string()))
    }
}
