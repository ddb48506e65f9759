//! The protocol bodies (`feedloop_core::protocol`) the server answers with, built from stored rows.

use feedloop_core::protocol::{
    AuditEntry, ModelVersion, Round, RoundPrivacy, RoundStats, TokenGrant, UnixMillis,
    VersionNoise, VersionPrivacy, VersionStats,
};

use crate::db::{AuditRow, RoundRow, VersionRow};
use crate::service::drift::RateEstimate;

fn id_string(v: Option<i64>) -> Option<String> {
    v.map(|v| v.to_string())
}

impl RoundRow {
    pub fn to_wire(&self) -> Round {
        Round {
            round_id: self.round_id.to_string(),
            model_version: self.model_version.to_string(),
            clip_norm: self.clip_norm,
            granularity: self.granularity,
            noise_stddev: self.noise_stddev,
            dimension: self.dimension,
            min_cohort: self.min_cohort,
            target_count: self.target_count,
            deadline: self.deadline.map(UnixMillis),
            status: self.status,
            aggregation: self.aggregation(),
            secure: self.secure_aggregators(),
            received: self.received,
            created_at: UnixMillis(self.created_at),
            closed_at: self.closed_at.map(UnixMillis),
            close_reason: self.close_reason.clone(),
            cohort_size: self.cohort_size,
            published_version: id_string(self.published_version),
            privacy: RoundPrivacy {
                rho: self.rho,
                epsilon_per_participant: self.epsilon,
                delta: self.delta,
            },
        }
    }

    pub fn to_stats(&self) -> RoundStats {
        RoundStats {
            round_id: self.round_id.to_string(),
            status: self.status,
            cohort_size: self.cohort_size,
            received: self.received,
            epsilon_per_participant: self.epsilon,
            delta: self.delta,
            published_version: id_string(self.published_version),
        }
    }
}

impl VersionRow {
    /// The version as listed; `with_head` adds the head's parameters.
    pub fn to_wire(&self, current: i64, with_head: bool) -> ModelVersion {
        ModelVersion {
            version: self.version.to_string(),
            parent_version: id_string(self.parent_version),
            round_id: id_string(self.round_id),
            current: self.version == current,
            cohort_size: self.cohort_size,
            optimizer: self.optimizer.clone(),
            noise: VersionNoise {
                clip_norm: self.clip_norm,
                granularity: self.granularity,
                noise_stddev: self.noise_stddev,
            },
            privacy: VersionPrivacy {
                rho: self.rho,
                epsilon_per_participant: self.epsilon,
                delta: self.delta,
            },
            onnx_sha256: self.onnx_sha256.clone(),
            onnx_url: format!("/v1/models/{}/model.onnx", self.version),
            created_at: UnixMillis(self.created_at),
            flagged: self.flagged != 0,
            flag_reason: self.flag_reason.clone(),
            flagged_at: self.flagged_at.map(UnixMillis),
            head: if with_head {
                serde_json::from_str(&self.head).ok()
            } else {
                None
            },
        }
    }

    pub fn to_stats(&self, rate: &RateEstimate) -> VersionStats {
        let estimate = rate.estimate;
        VersionStats {
            version: self.version.to_string(),
            reports: rate.total,
            reported_ones: rate.ones,
            thumbs_up_rate: estimate.map(|e| e.proportion),
            std_error: estimate.map(|e| e.std_error),
            ci95: estimate.map(|e| {
                [
                    e.proportion - 1.96 * e.std_error,
                    e.proportion + 1.96 * e.std_error,
                ]
            }),
            cohort_size: self.cohort_size,
            epsilon_per_participant: self.epsilon,
            flagged: self.flagged != 0,
            stars: None,
            agreement: None,
            kinds: Vec::new(),
            segments: None,
            sealed: Default::default(),
            flag_reason: self.flag_reason.clone(),
        }
    }
}

impl AuditRow {
    pub fn to_wire(&self) -> AuditEntry {
        AuditEntry {
            id: self.id.clone(),
            at: UnixMillis(self.at),
            admin_fingerprint: self.admin_fingerprint.clone(),
            action: self.action.clone(),
            details: serde_json::from_str(&self.details).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl crate::service::IssuedToken {
    /// The token answer.
    pub fn grant(self) -> TokenGrant {
        TokenGrant {
            client_id: self.claims.client_id,
            deployment: self.claims.deployment,
            token: self.token,
            issued_at: UnixMillis(self.issued_at),
            expires_at: UnixMillis(self.claims.expires_at),
        }
    }
}
