//! Model versions: reading them, their ONNX files, and rolling back.

use feedloop_core::protocol::RolloutStatus;
use serde_json::json;

use super::{now_ms, App};
use crate::db::{Store, VersionRow};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::onnx::{rewrite_head, sha256_hex};

impl App {
    pub async fn version(&self, version: i64) -> Result<VersionRow> {
        self.store().version(version).await?.ok_or_else(|| {
            Error::not_found("version_not_found", format!("no model version {version}"))
        })
    }

    /// The ONNX file of a version (rebuilt from the base model; checked against the digest
    /// recorded at publication).
    /// A version's ONNX file (`v` is its row, already read for the ETag). The last file built is
    /// kept: nearly every download is of the current version, so it is rebuilt once per version
    /// instead of once per request.
    pub fn onnx(&self, v: &crate::db::VersionRow, version: i64) -> Result<std::sync::Arc<[u8]>> {
        if let Some((cached, bytes)) = self.onnx_cache().lock().expect("not poisoned").as_ref() {
            if *cached == version {
                return Ok(bytes.clone());
            }
        }
        let bytes: std::sync::Arc<[u8]> = self.build_onnx(v, version)?.into();
        *self.onnx_cache().lock().expect("not poisoned") = Some((version, bytes.clone()));
        Ok(bytes)
    }

    fn build_onnx(&self, v: &crate::db::VersionRow, version: i64) -> Result<Vec<u8>> {
        let head: Vec<f32> = serde_json::from_str(&v.head)
            .map_err(|e| Error::internal(format!("stored head: {e}")))?;
        let bytes = rewrite_head(&self.config().base_model, &head, &version.to_string())?;
        if sha256_hex(&bytes) != v.onnx_sha256 {
            return Err(Error::internal(format!(
                "the ONNX file of version {version} no longer matches its recorded digest: \
                 the server was started with a different base model"
            )));
        }
        Ok(bytes)
    }

    /// Points "current" at an earlier version; aborts an open round (its updates were computed
    /// against the abandoned version) and resets the optimizer state.
    pub async fn rollback(&self, admin_fp: &str, version: i64) -> Result<VersionRow> {
        let row = self.rollback_locked(admin_fp, version).await?;
        self.reopen_auto_round().await;
        Ok(row)
    }

    async fn rollback_locked(&self, admin_fp: &str, version: i64) -> Result<VersionRow> {
        let _guard = self.lifecycle().lock().await;
        let target = self.version(version).await?;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        // Rounds first, then the current-version setting: the order a round close takes them in,
        // so a close and a rollback on two replicas wait for each other instead of deadlocking;
        // whichever commits second sees the other's result.
        let aborted = Store::abort_open_rounds(&mut tx, now).await?;
        let current = Store::current_version_in(&mut tx).await?;
        if version == current {
            return Err(Error::conflict(
                "already_current",
                format!("version {version} is already current"),
            ));
        }
        Store::set_current_version(&mut tx, version).await?;
        Store::clear_optimizer_state(&mut tx).await?;
        // A running rollout ends with the admin's choice: promoted when they picked the canary.
        let rollout = Store::running_rollout_in(&mut tx).await?;
        if let Some(r) = &rollout {
            let status = if r.version == version {
                RolloutStatus::Promoted
            } else {
                RolloutStatus::RolledBack
            };
            let reason = format!("the admin rolled back to version {version}");
            Store::decide_rollout(&mut tx, r.version, status, admin_fp, &reason, None, now).await?;
        }
        Store::audit(
            &mut tx,
            admin_fp,
            "model.rollback",
            &json!({ "from": current, "to": version, "abortedRounds": aborted,
                "endedRollout": rollout.map(|r| r.version) }),
            now,
        )
        .await?;
        tx.commit().await?;
        Metrics::inc(&self.metrics().rollbacks);
        tracing::warn!(
            from = current,
            to = version,
            "rolled back the current model version"
        );
        Ok(target)
    }
}
