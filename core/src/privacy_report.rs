//! What the page shows a user or a privacy team about the device's privacy: the policy, what was
//! spent and what remains ([`PrivacyReport`]), and the next upload before it is sent
//! ([`InspectedUpload`]). Plain serializable views, built from the state the decisions use.

use feedloop_privacy::accounting::zcdp_to_approx_dp;
use feedloop_privacy::budget::{PrivacyPolicy, SecurePolicy, DAY_MS};
use serde::{Deserialize, Serialize};

use crate::contribution::{DevicePrivacy, PreparedUpload, RoundConfig};
use crate::error::{Error, Result};
use crate::protocol::Aggregation;

/// The privacy options a site gives the ranker (`options.privacy`), as JSON names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyOptions {
    /// Total ε over any window.
    pub epsilon: f64,
    pub delta: f64,
    pub window_days: f64,
    pub max_rho_per_release: f64,
    /// The share of the window's budget metric reports may use (0 < share ≤ 1), so that model
    /// updates keep the rest.
    pub metrics_share: f64,
    /// Fingerprints of the helper aggregators whose secure rounds this device joins (none: no
    /// secure round), as the helper's `GET /v1/helper` shows them.
    pub helpers: Vec<String>,
    /// The least batch a secure round's helper may release.
    pub min_secure_reports: u64,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        let policy = PrivacyPolicy::default();
        Self {
            epsilon: policy.epsilon(),
            delta: policy.delta(),
            window_days: policy.window_ms() as f64 / DAY_MS as f64,
            max_rho_per_release: policy.max_rho_per_release(),
            metrics_share: policy.metrics_share(),
            helpers: policy.secure().helpers.clone(),
            min_secure_reports: policy.secure().min_reports,
        }
    }
}

impl PolicyOptions {
    /// The validated policy.
    pub fn policy(&self) -> Result<PrivacyPolicy> {
        if !(self.window_days.is_finite() && self.window_days > 0.0) {
            return Err(Error::InvalidInput(format!(
                "privacy.windowDays must be a positive number, got {}",
                self.window_days
            )));
        }
        PrivacyPolicy::new(
            self.epsilon,
            self.delta,
            (self.window_days * DAY_MS as f64) as u64,
            self.max_rho_per_release,
        )
        .and_then(|policy| policy.with_metrics_share(self.metrics_share))
        .and_then(|policy| {
            let helpers = self
                .helpers
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect();
            Ok(policy.with_secure(SecurePolicy::new(helpers, self.min_secure_reports)?))
        })
        .map_err(|e| Error::InvalidInput(format!("invalid privacy policy: {e}")))
    }
}

/// The policy as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub epsilon: f64,
    pub delta: f64,
    pub window_days: f64,
    pub max_rho_per_release: f64,
    pub total_rho: f64,
    pub min_noise_multiplier: f64,
    pub metrics_share: f64,
    /// The helpers pinned for secure rounds, and the least batch they may release.
    pub helpers: Vec<String>,
    pub min_secure_reports: u64,
}

/// What was spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spent {
    pub window_rho: f64,
    /// ε at the policy's δ of the window's spending (`NaN` if it cannot be computed).
    pub window_epsilon: f64,
    pub lifetime_rho: f64,
    pub releases: usize,
}

/// The user's consent to contributing, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentView {
    /// Whether the device may contribute (updates and metric reports).
    pub granted: bool,
    /// Unix ms of the last change; `None` if consent was never given.
    pub changed_at_ms: Option<u64>,
}

/// What remains in the current window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remaining {
    pub rho: f64,
}

/// `privacyReport()`: the policy, what has been spent and what remains, and the ledger of every
/// release (each entry also a dp-accounting `DpEvent`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacyReport {
    pub consent: ConsentView,
    pub policy: PolicyView,
    pub spent: Spent,
    pub remaining: Remaining,
    /// The ledger as `exportLedger` writes it.
    pub ledger: serde_json::Value,
}

/// ε at `delta`, or `NaN` where the conversion fails (shown, never used for a decision).
fn epsilon(rho: f64, delta: f64) -> f64 {
    zcdp_to_approx_dp(rho, delta).unwrap_or(f64::NAN)
}

impl DevicePrivacy {
    /// The report at `now_ms`.
    pub fn report(&self, now_ms: u64) -> PrivacyReport {
        let state = self.state();
        let policy = &state.policy;
        let window_rho = state.budget.window_rho(policy, now_ms);
        let consent = state.ledger.consent();
        PrivacyReport {
            consent: ConsentView {
                granted: matches!(consent, Some((true, _))),
                changed_at_ms: consent.map(|(_, i)| state.ledger.entries()[i].time_ms),
            },
            policy: PolicyView {
                epsilon: policy.epsilon(),
                delta: policy.delta(),
                window_days: policy.window_ms() as f64 / DAY_MS as f64,
                max_rho_per_release: policy.max_rho_per_release(),
                total_rho: policy.total_rho(),
                min_noise_multiplier: policy.min_noise_multiplier(),
                metrics_share: policy.metrics_share(),
                helpers: policy.secure().helpers.clone(),
                min_secure_reports: policy.secure().min_reports,
            },
            spent: Spent {
                window_rho,
                window_epsilon: epsilon(window_rho, policy.delta()),
                lifetime_rho: state.budget.lifetime_rho(),
                releases: state
                    .ledger
                    .entries()
                    .iter()
                    .filter(|e| e.params.is_release())
                    .count(),
            },
            remaining: Remaining {
                rho: state.budget.remaining_rho(policy, now_ms),
            },
            ledger: serde_json::from_str(&state.ledger.to_json())
                .unwrap_or(serde_json::Value::Null),
        }
    }

    /// The view of `prepared` before it is released at `now_ms`.
    pub fn inspect(&self, prepared: &PreparedUpload, now_ms: u64) -> InspectedUpload {
        let policy = &self.state().policy;
        let round = prepared.round();
        let bytes = prepared.bytes();
        let window_after = self.state().budget.window_rho(policy, now_ms) + prepared.rho();
        InspectedUpload {
            round: round.clone(),
            sha256: feedloop_privacy::ledger::sha256_hex(&bytes),
            decoded: DecodedUpload {
                aggregation: match prepared.is_secure() {
                    true => Aggregation::Secure,
                    false => Aggregation::Local,
                },
                dimension: prepared.dimension(),
                values: prepared.values().iter().map(|v| *v as f64).collect(),
                clip_norm: round.clip_norm,
                granularity: round.granularity,
                noise_stddev: round.noise_stddev,
            },
            rho: prepared.rho(),
            epsilon: epsilon(prepared.rho(), policy.delta()),
            window_epsilon_after: epsilon(window_after, policy.delta()),
            bytes,
        }
    }
}

/// The integers an upload carries and the parameters they were made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecodedUpload {
    /// `local`: the bytes are these values with the device's noise. `secure`: the bytes are a
    /// sealed report — two HPKE ciphertexts of Prio3 shares of these values (clipped and rounded,
    /// no noise: the helper adds σ to the sum); no aggregator sees them.
    pub aggregation: Aggregation,
    pub dimension: usize,
    /// The lattice values (integers, as f64 for JS).
    pub values: Vec<f64>,
    pub clip_norm: f64,
    pub granularity: f64,
    pub noise_stddev: f64,
}

/// `inspectNextUpload(round)`: the exact bytes that would leave the device, decoded, and what
/// they would cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedUpload {
    pub round: RoundConfig,
    pub sha256: String,
    pub decoded: DecodedUpload,
    pub rho: f64,
    pub epsilon: f64,
    pub window_epsilon_after: f64,
    /// The bytes (the browser layer hands them over as a `Uint8Array`).
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::LocalLearningState;
    use chacha20::rand_core::SeedableRng;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn default_options_are_the_default_policy() {
        assert_eq!(
            PolicyOptions::default().policy().unwrap(),
            PrivacyPolicy::default()
        );
        let bad = PolicyOptions {
            window_days: 0.0,
            ..Default::default()
        };
        assert!(bad.policy().unwrap_err().to_string().contains("windowDays"));
    }

    #[test]
    fn the_report_and_the_inspected_upload_agree_with_the_state() {
        let mut device = DevicePrivacy::new(PrivacyPolicy::default(), 3, "v1").unwrap();
        let fresh = device.report(NOW);
        assert_eq!(fresh.spent.releases, 0);
        assert_eq!(
            fresh.consent,
            ConsentView {
                granted: false,
                changed_at_ms: None
            }
        );
        assert!(device.set_consent(true, NOW - 5, "v1").unwrap());
        let consented = device.report(NOW);
        assert_eq!(consented.consent.changed_at_ms, Some(NOW - 5));
        assert!(consented.consent.granted);
        assert_eq!(
            consented.spent.releases, 0,
            "a consent change is not a release"
        );
        assert_eq!(fresh.remaining.rho, PrivacyPolicy::default().total_rho());
        let round = RoundConfig {
            round_id: "r1".into(),
            model_version: "v1".into(),
            clip_norm: 1.0,
            granularity: 0.01,
            noise_stddev: 4.0,
            secure: None,
        };
        let learning = LocalLearningState {
            base_version: "v1".into(),
            delta: vec![0.5, -0.25, 0.0],
            example_count: 2,
        };
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(3);
        let prepared = device.prepare(&learning, &round, NOW, &mut rng).unwrap();
        let inspected = device.inspect(&prepared, NOW);
        assert_eq!(inspected.bytes, prepared.bytes());
        assert_eq!(inspected.decoded.values.len(), 3);
        assert!(inspected.window_epsilon_after >= inspected.epsilon);
        let json = serde_json::to_value(&inspected).unwrap();
        assert!(json.get("bytes").is_none() && json["windowEpsilonAfter"].is_number());
        let release = device.release(prepared, NOW).unwrap();
        let report = device.report(NOW);
        assert_eq!(report.spent.releases, 1);
        assert_eq!(
            report.ledger["entries"][1]["payload_sha256"],
            inspected.sha256
        );
        assert_eq!(release.ledger_entry().payload_sha256, inspected.sha256);
        assert!(report.remaining.rho < fresh.remaining.rho);
    }
}
