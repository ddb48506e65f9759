//! Secure rounds on the leader (`feedloop-secagg`): opening a round at the helper, verifying each
//! device's sealed report together with the helper before acknowledging it, and, when the round
//! closes, collecting the helper's noisy aggregate share and unsharding the noisy sum.
//!
//! What the leader stores for a report is its own output share (uniformly random on its own) and
//! the report's digest: no update, plaintext or noised, ever exists on the leader. The helper is
//! called synchronously, so a report is acknowledged only once both aggregators verified and
//! stored it; a helper that cannot be reached is a 503 and the device resends the same bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_core::protocol::{
    paths, Aggregation, ErrorBody, HelperAggregate, HelperCollect, HelperRelease, HelperTask,
    HelperTerms, HelperVerdict, SecureAggregators,
};
use feedloop_privacy::PrivatizerConfig;
use feedloop_secagg::{
    leader_finish, leader_init, unshard, Batch, HelperResponse, HpkePublicKey, NoisyAggregateShare,
    OutputShare, Report, SecAggError, SecureRound, VerifyKey,
};
use serde::{Deserialize, Serialize};

use super::App;
use crate::db::RoundRow;
use crate::error::{Error, Result};

/// A secure round's terms as the leader stores them (`rounds.secure_terms`). All public but the
/// verification key, which only the two aggregators hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecureTerms {
    pub leader_key: String,
    pub helper_key: String,
    pub min_reports: i64,
    pub value_radius: i64,
    pub verify_key: String,
}

/// Hex → bytes, or a 500 naming what was stored wrong.
pub(crate) fn from_hex(text: &str, what: &str) -> Result<Vec<u8>> {
    feedloop_secagg::unhex(text).ok_or_else(|| Error::internal(format!("{what} is not hex")))
}

impl RoundRow {
    pub fn aggregation(&self) -> Aggregation {
        Aggregation::parse(&self.aggregation).unwrap_or_default()
    }

    pub fn terms(&self) -> Result<Option<SecureTerms>> {
        self.secure_terms
            .as_deref()
            .map(|t| {
                serde_json::from_str(t)
                    .map_err(|e| Error::internal(format!("stored secure terms: {e}")))
            })
            .transpose()
    }

    /// What devices see of the aggregators (no verification key).
    pub fn secure_aggregators(&self) -> Option<SecureAggregators> {
        let terms = self.terms().ok().flatten()?;
        let fingerprint = HpkePublicKey::from_hex(&terms.helper_key)
            .map(|k| k.fingerprint())
            .unwrap_or_default();
        Some(SecureAggregators {
            leader_key: terms.leader_key,
            helper_key: terms.helper_key,
            helper_fingerprint: fingerprint,
            min_reports: terms.min_reports,
            value_radius: terms.value_radius,
        })
    }

    /// The round's Prio3 parameters with its privacy terms bound in (as the device builds them).
    pub fn secure_round(&self, min_reports: i64) -> Result<SecureRound> {
        let cfg = PrivatizerConfig::new(self.clip_norm, self.granularity, self.noise_stddev)
            .map_err(|e| Error::internal(format!("stored round config: {e}")))?;
        SecureRound::for_privatizer(
            self.round_id as u64,
            self.dimension as usize,
            &cfg,
            min_reports as u64,
        )
        .map_err(|e| Error::internal(format!("stored secure round: {e}")))
    }
}

/// A refused report or request: 422 with the reason (nothing was stored).
fn refused(e: SecAggError) -> Error {
    match e {
        SecAggError::Internal(message) => Error::internal(message),
        SecAggError::DuplicateReport(_) => Error::conflict("duplicate_report", e.to_string()),
        other => Error::unprocessable("invalid_report", other.to_string()),
    }
}

impl App {
    /// The helper of this leader, or a 400 for a secure round without one.
    pub(super) fn helper_peer(&self) -> Result<&crate::config::HelperPeer> {
        self.config().helper.as_ref().ok_or_else(|| {
            Error::bad_request(
                "no_helper",
                "a secure round needs a helper: start the server with --helper-url and --helper-token",
            )
        })
    }

    /// One call to the helper. Its 4xx answers keep their status and message (prefixed), so the
    /// device learns why its report was refused; anything else is a 503 (retry later).
    pub(super) async fn call_helper<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let peer = self.helper_peer()?;
        let url = format!("{}{path}", peer.url.trim_end_matches('/'));
        let unavailable = |detail: String| {
            tracing::warn!(%url, %detail, "the helper did not answer");
            Error::unavailable(
                "helper_unavailable",
                "the helper aggregator cannot be reached; retry later",
            )
        };
        let response = self
            .http()
            .request(method, &url)
            .bearer_auth(&peer.token)
            .json(body)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|e| unavailable(format!("unreadable answer: {e}")));
        }
        let body = response.json::<ErrorBody>().await.ok();
        let message = body
            .as_ref()
            .map(|b| format!("the helper refused: {}", b.error.message))
            .unwrap_or_else(|| format!("the helper refused with {status}"));
        let code = body.as_ref().map(|b| b.error.code.as_str());
        match status.as_u16() {
            401 | 403 => Err(Error::internal(format!(
                "the helper does not accept this leader's token: {message}"
            ))),
            // A report that reached the helper after the round's batch was released: to the
            // device this is the round closing under it, which it already handles (409
            // `round_closed`: read the new round), not an error of its own.
            409 if code == Some("batch_released") => Err(Error::conflict(
                "round_closed",
                format!("the round closed before the report arrived ({message})"),
            )),
            409 => Err(Error::conflict("helper_conflict", message)),
            400 | 404 | 422 => Err(Error::unprocessable("invalid_report", message)),
            _ => Err(unavailable(message)),
        }
    }

    /// Opens `round_id` at the helper and returns the terms to store: the helper's σ and minimum
    /// (at least what the leader asked), the keys, a fresh verification key.
    pub(super) async fn open_at_helper(
        &self,
        round_id: i64,
        dimension: usize,
        clip_norm: f64,
        granularity: f64,
        noise_stddev: f64,
        min_cohort: i64,
    ) -> Result<(HelperTerms, SecureTerms)> {
        let verify_key = VerifyKey::from_bytes(&crate::auth::random_bytes::<32>()?)
            .map_err(|e| Error::internal(e.to_string()))?;
        let verify_hex = crate::onnx::hex(verify_key.as_bytes());
        let task = HelperTask {
            dimension: dimension as i64,
            clip_norm,
            granularity,
            noise_stddev,
            min_reports: min_cohort,
            verify_key: verify_hex.clone(),
        };
        let path = paths::helper_task(&round_id.to_string());
        let terms: HelperTerms = self
            .call_helper(reqwest::Method::PUT, &path, &task)
            .await
            .map_err(|e| match e {
                Error::Unprocessable { message, .. } => {
                    Error::bad_request("helper_refused", message)
                }
                other => other,
            })?;
        // The helper may raise σ and the minimum, never lower them.
        if !(terms.noise_stddev >= noise_stddev && terms.min_reports >= min_cohort) {
            return Err(Error::internal(
                "the helper answered with weaker terms than the leader asked for",
            ));
        }
        HpkePublicKey::from_hex(&terms.helper_key)
            .map_err(|e| Error::internal(format!("the helper's key: {e}")))?;
        let stored = SecureTerms {
            leader_key: self.hpke().public().to_hex(),
            helper_key: terms.helper_key.clone(),
            min_reports: terms.min_reports,
            value_radius: terms.value_radius,
            verify_key: verify_hex,
        };
        Ok((terms, stored))
    }

    /// The leader's part of one sealed report: open its share, verify the proof with the helper
    /// (who stores its output share), and return the leader's output share to store (base64).
    pub(super) async fn verify_report(
        &self,
        round: &RoundRow,
        client_id: &str,
        payload: &[u8],
    ) -> Result<String> {
        let terms = round
            .terms()?
            .ok_or_else(|| Error::internal("a secure round without terms"))?;
        let secure = round.secure_round(terms.min_reports)?;
        let verify_key = VerifyKey::from_bytes(&from_hex(&terms.verify_key, "the verify key")?)
            .map_err(|e| Error::internal(e.to_string()))?;
        let report = Report::from_bytes(payload).map_err(refused)?;
        let (pending, request) =
            leader_init(&secure, &verify_key, self.hpke(), &report).map_err(refused)?;
        let verdict: HelperVerdict = self
            .call_helper(
                reqwest::Method::POST,
                &paths::helper_reports(&round.round_id.to_string()),
                &HelperAggregate {
                    client_id: client_id.to_string(),
                    request: STANDARD.encode(request.to_bytes()),
                },
            )
            .await?;
        let response = STANDARD
            .decode(&verdict.response)
            .map_err(|e| Error::internal(format!("the helper's answer: {e}")))
            .and_then(|b| {
                HelperResponse::from_bytes(&b)
                    .map_err(|e| Error::internal(format!("the helper's answer: {e}")))
            })?;
        let share = leader_finish(&secure, pending, &response).map_err(refused)?;
        Ok(STANDARD.encode(share.to_bytes()))
    }

    /// The FedAvg mean of a closed secure round: the leader's aggregate share of `payloads` (its
    /// stored output shares) and the helper's noisy one, unsharded into `Σ z + η`, then `γ·Σ/n`.
    pub(super) async fn secure_mean(
        &self,
        round: &RoundRow,
        payloads: &[String],
    ) -> Result<Vec<f64>> {
        let terms = round
            .terms()?
            .ok_or_else(|| Error::internal("a secure round without terms"))?;
        let secure = round.secure_round(terms.min_reports)?;
        let mut batch = Batch::new(secure).map_err(|e| Error::internal(e.to_string()))?;
        let mut ids = Vec::with_capacity(payloads.len());
        for p in payloads {
            let bytes = STANDARD
                .decode(p)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            let share = OutputShare::from_bytes(&secure, &bytes)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            ids.push(share.report_id().to_string());
            batch
                .add(share)
                .map_err(|e| Error::internal(e.to_string()))?;
        }
        let release: HelperRelease = self
            .call_helper(
                reqwest::Method::POST,
                &paths::helper_collect(&round.round_id.to_string()),
                &HelperCollect { report_ids: ids },
            )
            .await?;
        let helper = STANDARD
            .decode(&release.aggregate_share)
            .map_err(|e| Error::internal(format!("the helper's share: {e}")))
            .and_then(|b| {
                NoisyAggregateShare::from_bytes(&secure, &b)
                    .map_err(|e| Error::internal(format!("the helper's share: {e}")))
            })?;
        let sum = unshard(&secure, &batch.aggregate_share(), &helper)
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(crate::fedavg::mean_of_lattice_sum(
            &sum,
            batch.count(),
            round.granularity,
        ))
    }
}
