//! A round's batch on one aggregator: output shares summed, one report per id; the helper's
//! noisy release; and unsharding the two aggregate shares into the noisy integer sum.

use std::collections::BTreeSet;

use feedloop_privacy::sampler::DiscreteGaussian;
use prio::codec::{Encode, ParameterizedDecode};
use prio::field::Field64;
use prio::vdaf::{Aggregatable, Aggregator, Collector};
use rand_core::CryptoRng;

use crate::codec::{put_bytes, Reader};
use crate::error::{malformed, Result, SecAggError};
use crate::report::ReportId;
use crate::round::{SecureRound, Task, MAX_REPORTS};
use crate::verify::OutputShare;

type PrioShare = prio::vdaf::AggregateShare<Field64>;

/// The reports one aggregator has verified for a task (a round's updates, or one batch of a
/// metric's reports), and their summed output shares.
#[derive(Debug, Clone)]
pub struct Batch<T: Task = SecureRound> {
    round: T,
    share: PrioShare,
    ids: BTreeSet<ReportId>,
    released: bool,
}

impl<T: Task> Batch<T> {
    pub fn new(round: T) -> Result<Self> {
        let share = round.vdaf()?.aggregate_init(&());
        Ok(Self {
            round,
            share,
            ids: BTreeSet::new(),
            released: false,
        })
    }

    pub fn round(&self) -> &T {
        &self.round
    }

    /// Valid reports aggregated so far.
    pub fn count(&self) -> u64 {
        self.ids.len() as u64
    }

    pub fn contains(&self, id: &ReportId) -> bool {
        self.ids.contains(id)
    }

    pub fn is_released(&self) -> bool {
        self.released
    }

    /// Adds one verified report. A report id already in the batch is refused (the device's retry
    /// of the same bytes, or a replay), and so is any report after the release.
    pub fn add(&mut self, output: OutputShare) -> Result<()> {
        if self.released {
            return Err(SecAggError::AlreadyReleased);
        }
        if self.ids.contains(&output.id) {
            return Err(SecAggError::DuplicateReport(output.id.to_string()));
        }
        if self.count() >= MAX_REPORTS {
            return Err(SecAggError::InvalidRound(format!(
                "a batch holds at most {MAX_REPORTS} reports"
            )));
        }
        self.share
            .accumulate(&output.share)
            .map_err(|e| SecAggError::Internal(e.to_string()))?;
        self.ids.insert(output.id);
        Ok(())
    }

    /// The leader's aggregate share (no noise: the helper's noise covers the sum).
    pub fn aggregate_share(&self) -> AggregateShare {
        AggregateShare {
            count: self.count(),
            share: self.share.clone(),
        }
    }

    /// The helper's release: its aggregate share plus independent discrete Gaussian noise
    /// N_ℤ(0, σ_lat²) on every coordinate (`noise`; `None` only for a helper configured to add none,
    /// when the devices add the noise). Refused below `minimum` reports, and a second time:
    /// a batch's noise is drawn once, and two noisy releases of one sum would average it away.
    pub fn release<R: CryptoRng + ?Sized>(
        &mut self,
        minimum: u64,
        noise: Option<&DiscreteGaussian>,
        rng: &mut R,
    ) -> Result<NoisyAggregateShare> {
        if self.released {
            return Err(SecAggError::AlreadyReleased);
        }
        let minimum = minimum.max(1);
        if self.count() < minimum {
            return Err(SecAggError::BelowMinimum {
                count: self.count(),
                minimum,
            });
        }
        let mut values = self.share.as_ref().to_vec();
        if let Some(noise) = noise {
            for value in &mut values {
                *value += field_of(noise.sample(rng));
            }
        }
        self.released = true;
        Ok(NoisyAggregateShare(AggregateShare {
            count: self.count(),
            share: PrioShare::from(values),
        }))
    }
}

/// The integer `z` as an element of the field (`p − |z|` for negative `z`).
fn field_of(z: i64) -> Field64 {
    let magnitude = Field64::from(z.unsigned_abs());
    if z < 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// One aggregator's share of a batch's sum, and how many reports it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateShare {
    count: u64,
    share: PrioShare,
}

/// The helper's aggregate share with its noise: the only form in which it leaves the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisyAggregateShare(AggregateShare);

impl AggregateShare {
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.count.to_be_bytes().to_vec();
        put_bytes(
            &mut out,
            &self
                .share
                .get_encoded()
                .expect("in-memory encoding cannot fail"),
        );
        out
    }

    pub fn from_bytes<T: Task>(round: &T, bytes: &[u8]) -> Result<Self> {
        let vdaf = round.vdaf()?;
        let mut reader = Reader::new("aggregate share", bytes);
        let count = u64::from_be_bytes(reader.fixed::<8>()?);
        let share = PrioShare::get_decoded_with_param(&(&vdaf, &()), reader.bytes()?)
            .map_err(|e| malformed("aggregate share", e))?;
        reader.finish()?;
        if share.as_ref().len() != round.output_len() {
            return Err(malformed("aggregate share", "wrong dimension"));
        }
        Ok(Self { count, share })
    }
}

impl NoisyAggregateShare {
    pub fn count(&self) -> u64 {
        self.0.count
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// The leader's decoding of the helper's answer. Whether the helper added its noise is not
    /// visible in the bytes: that is the trust assumption (docs/PRIVACY.md §10).
    pub fn from_bytes<T: Task>(round: &T, bytes: &[u8]) -> Result<Self> {
        AggregateShare::from_bytes(round, bytes).map(Self)
    }
}

/// The leader's final step: the two aggregate shares → `Σ z + η` per coordinate (lattice units),
/// where `Σ z` is the exact sum of the cohort's lattice updates and `η` the helper's noise.
pub fn unshard<T: Task>(
    round: &T,
    leader: &AggregateShare,
    helper: &NoisyAggregateShare,
) -> Result<Vec<i64>> {
    let count = leader.count;
    if helper.count() != count {
        return Err(SecAggError::ShareMismatch(format!(
            "the leader aggregated {count} reports, the helper {}",
            helper.count()
        )));
    }
    let vdaf = round.vdaf()?;
    let sums = vdaf
        .unshard(
            &(),
            [leader.share.clone(), helper.0.share.clone()],
            count as usize,
        )
        .map_err(|e| SecAggError::Internal(format!("Prio3 unshard: {e}")))?;
    let p = i128::from(SecureRound::modulus());
    let offset = i128::from(count) * i128::from(round.offset());
    sums.into_iter()
        .map(|v| {
            // The true sum plus noise is far inside ±p/2 (MAX_REPORTS, MAX_VALUE_RADIUS).
            let v = i128::from(v);
            let signed = if v > p / 2 { v - p } else { v };
            i64::try_from(signed - offset)
                .map_err(|_| SecAggError::Internal("a sum outside i64".into()))
        })
        .collect()
}
