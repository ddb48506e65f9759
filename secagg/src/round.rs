//! What the device, the leader and the helper agree on for one secure round (DAP's "task").

use prio::field::{Field64, FieldElementWithInteger};
use prio::flp::gadgets::{Mul, ParallelSum};
use prio::flp::types::SumVec;
use prio::flp::Type;
use prio::vdaf::prio3::{optimal_chunk_length, Prio3};
use prio::vdaf::xof::XofHmacSha256Aes128;
use rand_core::CryptoRng;

use crate::error::{Result, SecAggError};

/// Prio3SumVec over Field64 with three proofs and the HMAC-SHA256/AES-128 XOF: Janus's
/// `Prio3SumVecField64MultiproofHmacSha256Aes128` (code point 0xFFFF1003). Field64 with three
/// proofs keeps Field128's soundness at about half the upload (TOOLCHAIN.md: 22 KB against 37 KB
/// at d = 131).
pub type Vdaf = Prio3<SumVec<Field64, ParallelSum<Field64, Mul>>, XofHmacSha256Aes128, 32>;

/// What one task's reports measure and how they are checked: a Prio3 validity circuit over
/// Field64 whose aggregate is a vector of integers. [`SecureRound`] (a clipped model update,
/// Prio3SumVec) and [`crate::MetricTask`] (one bucket of a metric, Prio3Histogram) implement it;
/// sealing, verification and batches are written once, for any task.
pub trait Task: Clone + std::fmt::Debug {
    type Circuit: Type<Field = Field64, AggregateResult = Vec<u64>>;

    /// The Prio3 instance of this task.
    fn vdaf(&self) -> Result<Prio3<Self::Circuit, XofHmacSha256Aes128, 32>>;

    /// The VDAF's application context: binds every share and proof to this task and its
    /// privacy terms, so a report cannot be replayed into another task.
    fn context(&self) -> Vec<u8>;

    /// Length of an output share (and of the aggregate).
    fn output_len(&self) -> usize;

    /// What each report adds to every aggregate coordinate on top of its value (the offset that
    /// makes signed values non-negative); unsharding subtracts `count · offset`.
    fn offset(&self) -> u64;
}

/// The VDAF code point (DAP's private range, as Janus registers this variant).
pub const ALGORITHM_ID: u32 = 0xFFFF_1003;
/// Proofs per report: soundness error ≈ (error of one Field64 proof)³.
pub const NUM_PROOFS: u8 = 3;
/// Largest R: with it and [`MAX_REPORTS`] a noisy sum stays far inside ±p/2 (p ≈ 2^64).
pub const MAX_VALUE_RADIUS: u64 = 1 << 30;
/// Most reports one batch aggregates (2^24).
pub const MAX_REPORTS: u64 = 1 << 24;
/// Largest dimension (as the privatizer's).
pub const MAX_DIMENSION: usize = feedloop_privacy::privatizer::MAX_DIMENSION;

/// The aggregators' shared verification key of one round. The leader draws it and gives it to the
/// helper when it opens the round there. It protects the proof's soundness against devices (a
/// device that knew it could forge a proof), not the devices' privacy.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyKey(pub(crate) [u8; 32]);

impl VerifyKey {
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self(key)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            SecAggError::InvalidRound(format!("a verify key has 32 bytes, not {}", bytes.len()))
        })?;
        Ok(Self(key))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyKey(…)")
    }
}

/// One secure round's public parameters. Every device's measurement is `z + R` with the lattice
/// update `z` (`|z_i| ≤ R`), so each coordinate is in `[0, 2R]`, which the proof checks.
///
/// The round's privacy terms (C, γ, the helper's σ and minimum batch) are bound
/// into the VDAF context and so into every share's HPKE associated data: the helper opens a share
/// only under the terms it holds itself, so a leader that told devices a larger σ or minimum than
/// the helper applies gets reports no aggregator can open — a lie wastes reports, never privacy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecureRound {
    round_id: u64,
    dimension: usize,
    value_radius: u64,
    terms: [u8; 32],
}

/// What a device accepts a secure round's ε on: the clip norm C and granularity γ it rounds with,
/// the helper's noise σ (model units, on the sum) and the helper's minimum batch.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PrivacyTerms {
    clip_norm: f64,
    granularity: f64,
    noise_stddev: f64,
    min_reports: u64,
}

impl PrivacyTerms {
    /// SHA-256 of the terms' exact bits (f64s as IEEE-754: JSON round-trips them exactly).
    fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"feedloop-secagg terms v1");
        hash.update(self.clip_norm.to_bits().to_be_bytes());
        hash.update(self.granularity.to_bits().to_be_bytes());
        hash.update(self.noise_stddev.to_bits().to_be_bytes());
        hash.update(self.min_reports.to_be_bytes());
        hash.finalize().into()
    }
}

impl SecureRound {
    pub fn new(round_id: u64, dimension: usize, value_radius: u64) -> Result<Self> {
        if dimension == 0 || dimension > MAX_DIMENSION {
            return Err(SecAggError::InvalidRound(format!(
                "dimension {dimension} is not in 1..={MAX_DIMENSION}"
            )));
        }
        if value_radius == 0 || value_radius > MAX_VALUE_RADIUS {
            return Err(SecAggError::InvalidRound(format!(
                "value radius {value_radius} is not in 1..={MAX_VALUE_RADIUS}"
            )));
        }
        Ok(Self {
            round_id,
            dimension,
            value_radius,
            terms: [0; 32],
        })
    }

    /// The round of `cfg` (C, γ, and σ the helper's noise): R = ⌊√⌊(C/γ)²⌋⌋, the bound the
    /// device's rounding guarantees, with the terms bound in (see [`SecureRound`]).
    pub fn for_privatizer(
        round_id: u64,
        dimension: usize,
        cfg: &feedloop_privacy::PrivatizerConfig,
        min_reports: u64,
    ) -> Result<Self> {
        let radius = feedloop_privacy::privatizer::lattice_radius(cfg.lattice_norm_bound_sq());
        let mut round = Self::new(round_id, dimension, radius)?;
        round.terms = PrivacyTerms {
            clip_norm: cfg.clip_norm(),
            granularity: cfg.granularity(),
            noise_stddev: cfg.noise_stddev(),
            min_reports,
        }
        .digest();
        Ok(round)
    }

    pub fn round_id(&self) -> u64 {
        self.round_id
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// R: every lattice coordinate a device sends is in `[-R, R]`.
    pub fn value_radius(&self) -> u64 {
        self.value_radius
    }

    /// 2R: the largest measurement coordinate the proof accepts.
    pub fn max_measurement(&self) -> u64 {
        2 * self.value_radius
    }

    /// The Prio3SumVec instance of this round.
    pub fn vdaf(&self) -> Result<Vdaf> {
        Task::vdaf(self)
    }

    /// p, the modulus of the field the shares live in.
    pub(crate) fn modulus() -> u64 {
        Field64::modulus()
    }
}

impl Task for SecureRound {
    type Circuit = SumVec<Field64, ParallelSum<Field64, Mul>>;

    fn vdaf(&self) -> Result<Vdaf> {
        let bits = 64 - self.max_measurement().leading_zeros() as usize;
        let chunk_length = optimal_chunk_length(self.dimension * bits);
        let typ = SumVec::new(self.max_measurement(), self.dimension, chunk_length)
            .map_err(|e| SecAggError::InvalidRound(e.to_string()))?;
        Prio3::new(2, NUM_PROOFS, ALGORITHM_ID, typ)
            .map_err(|e| SecAggError::InvalidRound(e.to_string()))
    }

    fn context(&self) -> Vec<u8> {
        let mut ctx = b"feedloop-secagg-v1".to_vec();
        ctx.extend_from_slice(&self.round_id.to_be_bytes());
        ctx.extend_from_slice(&(self.dimension as u64).to_be_bytes());
        ctx.extend_from_slice(&self.value_radius.to_be_bytes());
        ctx.extend_from_slice(&self.terms);
        ctx
    }

    fn output_len(&self) -> usize {
        self.dimension
    }

    fn offset(&self) -> u64 {
        self.value_radius
    }
}
