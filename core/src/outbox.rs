//! The upload queue: released updates waiting to reach the server.
//!
//! The privacy boundary continues here. A [`QueuedUpload`] is made only from a [`Release`] (which
//! only `DevicePrivacy::release` makes: privatized, charged, in the ledger), and the network layer
//! (`src/sync.rs`) sends only `QueuedUpload`s, so nothing unprivatized can be queued or sent. A queue
//! read back from storage is checked against the ledger: an entry whose bytes are not exactly a
//! recorded release is dropped, so editing the stored queue cannot smuggle data out either.
//!
//! Failed sends wait with exponential backoff; entries expire (the round they were made for has
//! long closed) and the queue is bounded.

use feedloop_privacy::ledger::{sha256_hex, Ledger};
use serde::{Deserialize, Serialize};

use crate::contribution::Release;
use crate::error::{Error, Result};

/// First retry after this long; doubles per failure up to [`MAX_BACKOFF_MS`].
pub const BASE_BACKOFF_MS: u64 = 2_000;
pub const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;
/// An upload older than this is dropped (its round is over).
pub const MAX_AGE_MS: u64 = 7 * 24 * 3600 * 1000;
/// At most this many uploads wait; the oldest goes first.
pub const CAPACITY: usize = 32;

/// A released, privatized update waiting to be sent. Private fields; made only from a [`Release`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedUpload {
    round_id: String,
    model_version: String,
    #[serde(with = "hex_bytes")]
    bytes: Vec<u8>,
    sha256: String,
    queued_at_ms: u64,
    attempts: u32,
    next_attempt_ms: u64,
    /// Handed to `navigator.sendBeacon` (whose response nobody sees): the next send confirms it.
    beaconed: bool,
}

impl QueuedUpload {
    pub fn from_release(release: &Release, now_ms: u64) -> Self {
        Self {
            round_id: release.round().round_id.clone(),
            model_version: release.round().model_version.clone(),
            bytes: release.bytes().to_vec(),
            sha256: release.ledger_entry().payload_sha256.clone(),
            queued_at_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            beaconed: false,
        }
    }

    pub fn round_id(&self) -> &str {
        &self.round_id
    }

    pub fn model_version(&self) -> &str {
        &self.model_version
    }

    /// The privatized wire bytes (`FLDP`).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// SHA-256 of the bytes, as in the ledger.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn next_attempt_ms(&self) -> u64 {
        self.next_attempt_ms
    }

    pub fn beaconed(&self) -> bool {
        self.beaconed
    }
}

/// What the server said to one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored (or already stored: a duplicate of an earlier send).
    Delivered,
    /// Refused for good (round closed, stale model, …): retrying cannot help.
    Refused(String),
    /// Offline, a server error or rate limiting: try again later.
    RetryLater(String),
}

/// Why an upload left the queue, for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settled {
    pub round_id: String,
    pub sha256: String,
    pub delivered: bool,
    pub reason: Option<String>,
}

/// The queue itself (persisted as JSON next to the privacy state).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    uploads: Vec<QueuedUpload>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a stored queue, keeping only entries whose bytes are exactly a release recorded in
    /// `ledger` (hash of the bytes = the entry's hash = a ledger payload hash) after the user's
    /// consent, while it stands: a withdrawal empties the queue, in every tab that reads it.
    pub fn from_json(json: &str, ledger: &Ledger) -> Result<Self> {
        let stored: Outbox = serde_json::from_str(json)
            .map_err(|e| Error::InvalidInput(format!("saved upload queue is corrupt: {e}")))?;
        let Some((true, granted_at)) = ledger.consent() else {
            return Ok(Self::new());
        };
        let recorded: std::collections::HashSet<&str> = ledger.entries()[granted_at + 1..]
            .iter()
            .filter(|e| e.params.is_release())
            .map(|e| e.payload_sha256.as_str())
            .collect();
        let uploads = stored
            .uploads
            .into_iter()
            .filter(|u| sha256_hex(&u.bytes) == u.sha256 && recorded.contains(u.sha256.as_str()))
            .collect();
        Ok(Self { uploads })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the queue always serializes")
    }

    pub fn len(&self) -> usize {
        self.uploads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.uploads.is_empty()
    }

    pub fn uploads(&self) -> &[QueuedUpload] {
        &self.uploads
    }

    /// Queues an upload (once per payload); drops expired entries and, over capacity, the oldest.
    pub fn push(&mut self, upload: QueuedUpload, now_ms: u64) -> Vec<Settled> {
        if !self.uploads.iter().any(|u| u.sha256 == upload.sha256) {
            self.uploads.push(upload);
        }
        self.expire(now_ms)
    }

    /// Drops uploads older than [`MAX_AGE_MS`] and the oldest beyond [`CAPACITY`].
    pub fn expire(&mut self, now_ms: u64) -> Vec<Settled> {
        let mut dropped = Vec::new();
        self.uploads.retain(|u| {
            let keep = now_ms.saturating_sub(u.queued_at_ms) <= MAX_AGE_MS;
            if !keep {
                dropped.push(settled(u, false, Some("expired before it could be sent")));
            }
            keep
        });
        while self.uploads.len() > CAPACITY {
            let u = self.uploads.remove(0);
            dropped.push(settled(
                &u,
                false,
                Some("dropped: the upload queue is full"),
            ));
        }
        dropped
    }

    /// Uploads whose next attempt is due, and those handed to a beacon (which most likely arrived:
    /// one request confirms it and empties the queue).
    pub fn due(&self, now_ms: u64) -> Vec<QueuedUpload> {
        self.uploads
            .iter()
            .filter(|u| u.beaconed || u.next_attempt_ms <= now_ms)
            .cloned()
            .collect()
    }

    /// Records what happened to a send of the upload with hash `sha256`. `jitter` in [0, 1)
    /// spreads retries (so devices that failed together do not retry together).
    pub fn record(
        &mut self,
        sha256: &str,
        outcome: &SendOutcome,
        now_ms: u64,
        jitter: f64,
    ) -> Option<Settled> {
        let at = self.uploads.iter().position(|u| u.sha256 == sha256)?;
        match outcome {
            SendOutcome::Delivered => Some(settled(&self.uploads.remove(at), true, None)),
            SendOutcome::Refused(why) => {
                Some(settled(&self.uploads.remove(at), false, Some(why.as_str())))
            }
            SendOutcome::RetryLater(_) => {
                let u = &mut self.uploads[at];
                u.attempts = u.attempts.saturating_add(1);
                u.next_attempt_ms = now_ms + backoff_ms(u.attempts, jitter);
                None
            }
        }
    }

    /// Marks the due uploads as handed to `sendBeacon`: they stay queued, and the next regular
    /// send confirms them (the server answers a repeat as a duplicate, which counts as delivered).
    pub fn mark_beaconed(&mut self, sha256: &str) {
        if let Some(u) = self.uploads.iter_mut().find(|u| u.sha256 == sha256) {
            u.beaconed = true;
        }
    }
}

fn settled(u: &QueuedUpload, delivered: bool, reason: Option<&str>) -> Settled {
    Settled {
        round_id: u.round_id.clone(),
        sha256: u.sha256.clone(),
        delivered,
        reason: reason.map(str::to_string),
    }
}

/// `BASE · 2^(attempts−1)`, capped, times a factor in [0.5, 1).
pub fn backoff_ms(attempts: u32, jitter: f64) -> u64 {
    let exponent = attempts.saturating_sub(1).min(20);
    let full = (BASE_BACKOFF_MS << exponent).min(MAX_BACKOFF_MS);
    let factor = 0.5 + 0.5 * jitter.clamp(0.0, 1.0);
    (full as f64 * factor) as u64
}

/// Bytes as lowercase hex in JSON (readable in devtools next to the ledger's hashes).
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let hex = String::deserialize(d)?;
        if hex.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex"));
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contribution::{DevicePrivacy, RoundConfig};
    use crate::learning::LocalLearningState;
    use chacha20::rand_core::SeedableRng;
    use feedloop_privacy::budget::{PrivacyPolicy, DAY_MS};

    const NOW: u64 = 1_800_000_000_000;

    fn released(device: &mut DevicePrivacy, round: &str, seed: u64) -> Release {
        let learning = LocalLearningState {
            base_version: "v1".into(),
            delta: vec![0.3, -0.1, 0.2],
            example_count: 2,
        };
        let round = RoundConfig {
            round_id: round.into(),
            model_version: "v1".into(),
            clip_norm: 1.0,
            granularity: 0.01,
            noise_stddev: 4.0,
            secure: None,
        };
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(seed);
        let prepared = device.prepare(&learning, &round, NOW, &mut rng).unwrap();
        device.release(prepared, NOW).unwrap()
    }

    fn device() -> DevicePrivacy {
        let policy = PrivacyPolicy::new(8.0, 1e-6, 30 * DAY_MS, 0.5).unwrap();
        let mut device = DevicePrivacy::new(policy, 3, "v1").unwrap();
        device.set_consent(true, 1, "v1").unwrap(); // the user agreed, long before
        device
    }

    #[test]
    fn retries_back_off_and_settle() {
        let mut device = device();
        let release = released(&mut device, "r1", 1);
        let mut outbox = Outbox::new();
        outbox.push(QueuedUpload::from_release(&release, NOW), NOW);
        outbox.push(QueuedUpload::from_release(&release, NOW), NOW);
        assert_eq!(outbox.len(), 1, "one entry per payload");
        let sha = release.ledger_entry().payload_sha256.clone();
        assert_eq!(outbox.due(NOW).len(), 1);
        let retry = SendOutcome::RetryLater("offline".into());
        assert!(outbox.record(&sha, &retry, NOW, 0.0).is_none());
        assert!(outbox.due(NOW + 999).is_empty(), "waits ≥ BASE/2");
        assert_eq!(outbox.due(NOW + 1000).len(), 1);
        let mut beaconed = outbox.clone();
        beaconed.mark_beaconed(&sha);
        assert_eq!(beaconed.due(NOW).len(), 1, "a beacon is confirmed at once");
        outbox.record(&sha, &retry, NOW, 0.999);
        let second = outbox.uploads()[0].next_attempt_ms() - NOW;
        assert!((2000..4000).contains(&second), "{second}");
        let settled = outbox
            .record(&sha, &SendOutcome::Delivered, NOW, 0.0)
            .unwrap();
        assert!(settled.delivered && outbox.is_empty());
        assert_eq!(backoff_ms(40, 0.99), (MAX_BACKOFF_MS as f64 * 0.995) as u64);
    }

    #[test]
    fn a_stored_queue_keeps_only_recorded_releases() {
        let mut device = device();
        let a = released(&mut device, "r1", 1);
        let b = released(&mut device, "r2", 2);
        let mut outbox = Outbox::new();
        outbox.push(QueuedUpload::from_release(&a, NOW), NOW);
        outbox.push(QueuedUpload::from_release(&b, NOW), NOW);
        let json = outbox.to_json();
        let ledger = &device.state().ledger;
        assert_eq!(Outbox::from_json(&json, ledger).unwrap(), outbox);

        // Someone edits the stored queue: new bytes (with their own matching hash) and a changed
        // payload under a recorded hash. Neither survives.
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let raw = b"my secret text";
        value["uploads"][0]["bytes"] = raw
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into();
        value["uploads"][0]["sha256"] = sha256_hex(raw).into();
        value["uploads"][1]["bytes"] = "00ff".into();
        let restored = Outbox::from_json(&value.to_string(), ledger).unwrap();
        assert!(restored.is_empty());
        // A queue from another device's ledger: nothing survives either.
        let other = device_other_ledger();
        assert!(Outbox::from_json(&json, &other).unwrap().is_empty());
        assert!(Outbox::from_json("{", ledger).is_err());
    }

    #[test]
    fn a_withdrawal_empties_the_queue_and_a_new_grant_does_not_bring_it_back() {
        let mut device = device();
        let a = released(&mut device, "r1", 1);
        let mut outbox = Outbox::new();
        outbox.push(QueuedUpload::from_release(&a, NOW), NOW);
        let json = outbox.to_json();
        device.set_consent(false, NOW + 1, "v1").unwrap();
        assert!(Outbox::from_json(&json, &device.state().ledger)
            .unwrap()
            .is_empty());
        device.set_consent(true, NOW + 2, "v1").unwrap();
        assert!(
            Outbox::from_json(&json, &device.state().ledger)
                .unwrap()
                .is_empty(),
            "released before the withdrawal: never sent"
        );
        let b = released(&mut device, "r2", 2);
        outbox.push(QueuedUpload::from_release(&b, NOW + 3), NOW + 3);
        let kept = Outbox::from_json(&outbox.to_json(), &device.state().ledger).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept.uploads()[0].round_id(), "r2");
    }

    fn device_other_ledger() -> Ledger {
        let mut other = device();
        released(&mut other, "x", 9);
        other.state().ledger.clone()
    }

    #[test]
    fn refused_expired_and_overflowing_uploads_leave_the_queue() {
        let mut device = device();
        let mut outbox = Outbox::new();
        let first = released(&mut device, "r0", 0);
        outbox.push(QueuedUpload::from_release(&first, NOW), NOW);
        let sha = first.ledger_entry().payload_sha256.clone();
        let settled = outbox
            .record(&sha, &SendOutcome::Refused("round closed".into()), NOW, 0.0)
            .unwrap();
        assert_eq!(settled.reason.as_deref(), Some("round closed"));
        outbox.push(QueuedUpload::from_release(&first, NOW), NOW);
        let dropped = outbox.expire(NOW + MAX_AGE_MS + 1);
        assert_eq!(dropped.len(), 1);
        assert!(outbox.is_empty());
        // Over capacity the oldest goes (the ε = 8 policy pays for a few releases; reuse them).
        let release = released(&mut device, "r1", 1);
        let mut template = QueuedUpload::from_release(&release, NOW);
        for i in 0..(CAPACITY + 3) {
            template.sha256 = format!("{i:064x}");
            template.queued_at_ms = NOW + i as u64;
            outbox.push(template.clone(), NOW + i as u64);
        }
        assert_eq!(outbox.len(), CAPACITY);
        assert_eq!(outbox.uploads()[0].sha256, format!("{:064x}", 3));
    }
}
