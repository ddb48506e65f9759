//! The update privatizer: clip → integer lattice → discrete Gaussian noise.
//!
//! Units. *Model units* are the units of the update vector (C and σ in
//! [`PrivatizerConfig`] are in model units). *Lattice units* are model units
//! divided by the granularity γ: the privatizer works on integers `z ≈ x / γ`
//! and the receiver multiplies back by γ. Noise σ_lat = σ/γ (rounded *up* to a
//! 53-bit dyadic rational, so the noise actually added is never weaker).
//!
//! Steps for an update `u ∈ ℝ^d`:
//! 1. reject NaN/±∞; compute ‖u‖₂ without overflow (scaled by max |u_i|);
//! 2. clip and scale: `x = u · min(1/γ, c′/‖u‖₂)` with the pre-rounding radius
//!    `c′ < C/γ` chosen so that conditional randomized rounding succeeds with
//!    probability ≥ 1 − e^{-1/2} per try (Kairouz, Liu, Steinke 2021, DDGauss):
//!    `c′² + c′ + d/4 + √d/2 = B`, where `B = ⌊(C/γ)²⌋`;
//! 3. randomized rounding of each coordinate; retry until `Σ z_i² ≤ B`, checked
//!    in exact `u128` arithmetic (after 1000 failed tries: round toward zero,
//!    which never increases the norm; the zero vector as the last resort);
//! 4. add independent discrete Gaussian noise N_ℤ(0, σ_lat²) to each coordinate;
//! 5. clamp to `±M`, `M = ⌊C/γ⌋ + ⌈14·σ_lat⌉` (post-processing, so it cannot
//!    weaken privacy; it changes an output with probability < 2e-42 per value).
//!
//! Sensitivity: any two clipped lattice vectors differ by at most `2√B ≤ 2C/γ`
//! in L2 (a user's whole contribution is replaced under local DP), so one
//! release is ρ-zCDP with `ρ = (2C/γ)² / (2σ_lat²) ≤ 2C²/σ²`.

use rand_core::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, PrivacyError, Result};
use crate::exact;
use crate::sampler::{DiscreteGaussian, MAX_SIGMA};

/// Largest supported update dimension (2^24).
pub const MAX_DIMENSION: usize = 1 << 24;

/// Output values are clamped to `±(⌊C/γ⌋ + ⌈TAIL_SIGMAS·σ_lat⌉)`; the receiver
/// rejects anything outside the same bound.
pub const TAIL_SIGMAS: u64 = 14;

/// Tries of randomized rounding before falling back to rounding toward zero.
const MAX_ROUNDING_TRIES: u32 = 1000;

/// The mechanism that produced a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Clipping, conditional randomized rounding to the γ-lattice, discrete Gaussian noise.
    DiscreteGaussian,
    /// Binary randomized response ([`crate::randomized_response`]).
    RandomizedResponse,
    /// k-ary randomized response ([`crate::categorical_response`]).
    CategoricalResponse,
    /// Clipping and rounding to the γ-lattice on the device, discrete Gaussian noise on the sum
    /// by the helper of a secure round (feedloop-secagg).
    SecureAggregation,
}

/// Privatizer parameters in model units. Validated on construction and on
/// deserialization; the derived lattice quantities are computed once here.
///
/// Invariants: `C`, `γ`, `σ` are finite, positive and normal; `C/γ ≤ 2^40`;
/// `0 < σ/γ ≤ 2^40`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RawConfig", into = "RawConfig")]
pub struct PrivatizerConfig {
    clip_norm: f64,
    granularity: f64,
    noise_stddev: f64,
    derived: Derived,
}

#[derive(Debug, Clone)]
struct Derived {
    /// B = ⌊(C/γ)²⌋: the exact bound on Σ z_i² after rounding.
    norm_bound_sq: u128,
    /// σ_lat² = mantissa · 2^-exponent ≥ (σ/γ)².
    variance_mantissa: u64,
    variance_exponent: i32,
    /// M: the largest |value| an honest release can hold.
    value_bound: i64,
    sampler: DiscreteGaussian,
}

#[derive(Serialize, Deserialize)]
struct RawConfig {
    clip_norm: f64,
    granularity: f64,
    noise_stddev: f64,
}

impl TryFrom<RawConfig> for PrivatizerConfig {
    type Error = PrivacyError;
    fn try_from(raw: RawConfig) -> Result<Self> {
        Self::new(raw.clip_norm, raw.granularity, raw.noise_stddev)
    }
}

impl From<PrivatizerConfig> for RawConfig {
    fn from(c: PrivatizerConfig) -> Self {
        RawConfig {
            clip_norm: c.clip_norm,
            granularity: c.granularity,
            noise_stddev: c.noise_stddev,
        }
    }
}

impl PartialEq for PrivatizerConfig {
    fn eq(&self, other: &Self) -> bool {
        // Bitwise: configs are compared for exact agreement between client and server.
        self.clip_norm.to_bits() == other.clip_norm.to_bits()
            && self.granularity.to_bits() == other.granularity.to_bits()
            && self.noise_stddev.to_bits() == other.noise_stddev.to_bits()
    }
}

fn check_positive_normal(name: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 && v.is_normal() {
        Ok(())
    } else {
        Err(invalid(
            name,
            v,
            "must be finite, positive and not subnormal",
        ))
    }
}

impl PrivatizerConfig {
    /// `clip_norm` C (L2, model units), `granularity` γ (lattice step, model
    /// units), `noise_stddev` σ (model units).
    pub fn new(clip_norm: f64, granularity: f64, noise_stddev: f64) -> Result<Self> {
        check_positive_normal("clip_norm", clip_norm)?;
        check_positive_normal("granularity", granularity)?;
        check_positive_normal("noise_stddev", noise_stddev)?;
        if clip_norm / granularity > MAX_SIGMA {
            return Err(invalid(
                "granularity",
                granularity,
                "clip_norm / granularity must be <= 2^40",
            ));
        }
        if noise_stddev / granularity > MAX_SIGMA {
            return Err(invalid(
                "granularity",
                granularity,
                "noise_stddev / granularity must be <= 2^40",
            ));
        }
        let (c_num, c_den) = exact::ratio_squared(clip_norm, granularity);
        let norm_bound_sq = exact::floor_div_u128(&c_num, &c_den);
        let (s_num, s_den) = exact::ratio_squared(noise_stddev, granularity);
        let (variance_mantissa, variance_exponent) = exact::round_up_dyadic(&s_num, &s_den);
        let sampler = DiscreteGaussian::from_dyadic_variance(variance_mantissa, variance_exponent)?;
        let clip_lattice = exact::isqrt_u128(norm_bound_sq); // ⌊√B⌋ = ⌊C/γ⌋
        let value_bound = clip_lattice + noise_tail(variance_mantissa, variance_exponent);
        let value_bound = i64::try_from(value_bound).expect("both terms are <= 2^45");
        Ok(Self {
            clip_norm,
            granularity,
            noise_stddev,
            derived: Derived {
                norm_bound_sq,
                variance_mantissa,
                variance_exponent,
                value_bound,
                sampler,
            },
        })
    }

    /// C: L2 clip norm in model units.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// γ: lattice step in model units.
    pub fn granularity(&self) -> f64 {
        self.granularity
    }

    /// σ: requested noise standard deviation in model units.
    pub fn noise_stddev(&self) -> f64 {
        self.noise_stddev
    }

    /// `σ / (2C)`: the dp-accounting `GaussianDpEvent` noise multiplier of one
    /// release (sensitivity 2C: a user's whole update is replaced).
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_stddev / (2.0 * self.clip_norm)
    }

    /// ρ of one release (zCDP), `(2C)² / (2σ²)`; an upper bound on the exact
    /// lattice value because σ_lat is rounded up and √B ≤ C/γ.
    pub fn rho(&self) -> f64 {
        crate::accounting::zcdp_rho_gaussian(2.0 * self.clip_norm, self.noise_stddev)
    }

    /// B = ⌊(C/γ)²⌋, the bound on the squared L2 norm of the rounded lattice vector.
    pub fn lattice_norm_bound_sq(&self) -> u128 {
        self.derived.norm_bound_sq
    }

    /// σ_lat² = mantissa · 2^-exponent (exact), the variance of the lattice noise.
    pub fn lattice_variance(&self) -> (u64, i32) {
        (
            self.derived.variance_mantissa,
            self.derived.variance_exponent,
        )
    }

    /// σ_lat as f64 (display only).
    pub fn lattice_sigma(&self) -> f64 {
        exact::dyadic_to_f64(
            self.derived.variance_mantissa,
            self.derived.variance_exponent,
        )
        .sqrt()
    }

    /// M: every honest output value satisfies `|v| ≤ M`.
    pub fn value_bound(&self) -> i64 {
        self.derived.value_bound
    }

    /// The bound the decoder enforces on the squared L2 norm of a `dimension`-value update:
    /// `(√B + σ_lat·√(d + 2√(d·x) + 2x))²` with `x = 40·ln 2`, rounded up (and widened by a
    /// relative 1e-9 against f64 rounding). An honest update is `r + z` (then clamped to ±M, which
    /// only shrinks it) with `‖r‖² ≤ B` and `z` of d independent discrete Gaussians, each
    /// σ_lat-subgaussian (Canonne–Kamath–Steinke 2020, Cor. 9); by Hsu–Kakade–Zhang (2012, Thm. 1)
    /// `P(‖z‖² > σ_lat²(d + 2√(dx) + 2x)) ≤ e^-x = 2^-40`, so with the triangle inequality an
    /// honest update is refused with probability below 2^-40. A client ignoring the mechanism can
    /// move the aggregate by at most this norm, not by d·M² as the per-value bound alone allows.
    pub fn norm_bound_sq(&self, dimension: usize) -> u128 {
        let x = 40.0 * std::f64::consts::LN_2;
        let d = dimension as f64;
        let noise = self.lattice_sigma() * (d + 2.0 * (d * x).sqrt() + 2.0 * x).sqrt();
        let bound = (self.derived.norm_bound_sq as f64).sqrt() + noise;
        (bound * bound * (1.0 + 1e-9)).ceil() as u128
    }

    /// c′: the pre-rounding clip radius in lattice units for dimension `d`
    /// (solves `c′² + c′ + d/4 + √d/2 = B`), or an error if γ is too coarse.
    pub fn prerounding_radius(&self, dimension: usize) -> Result<f64> {
        let d = dimension as f64;
        let slack = self.derived.norm_bound_sq as f64 - d / 4.0 - d.sqrt() / 2.0;
        let radius = ((1.0 + 4.0 * slack).max(0.0).sqrt() - 1.0) / 2.0;
        if radius.is_nan() || radius <= 0.0 {
            return Err(PrivacyError::GranularityTooCoarse {
                granularity: self.granularity,
                clip_norm: self.clip_norm,
                dimension,
                suggested_max_granularity: self.clip_norm / (4.0 * d.sqrt()),
            });
        }
        // Shave a relative 1e-12 so f64 rounding cannot push the target above B.
        Ok(radius * (1.0 - 1e-12))
    }

    pub(crate) fn sampler(&self) -> &DiscreteGaussian {
        &self.derived.sampler
    }
}

/// ⌈√(⌈196·σ_lat²⌉)⌉ ≥ ⌈14·σ_lat⌉ for σ_lat² = a·2^-k.
fn noise_tail(a: u64, k: i32) -> u128 {
    let (num, den) = exact::dyadic_to_ratio(a, k);
    let scaled = (num * (TAIL_SIGMAS * TAIL_SIGMAS) + &den - 1u32) / den;
    let scaled = num_traits::ToPrimitive::to_u128(&scaled).expect("196·2^80 fits u128");
    let root = exact::isqrt_u128(scaled);
    if root * root < scaled {
        root + 1
    } else {
        root
    }
}

/// Everything a receiver needs to interpret a release, and everything the ledger records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UpdateParams {
    /// Always [`Mechanism::DiscreteGaussian`] for updates.
    pub mechanism: Mechanism,
    /// C (model units).
    pub clip_norm: f64,
    /// γ (model units).
    pub granularity: f64,
    /// σ requested (model units).
    pub noise_stddev: f64,
    /// σ_lat² = `lattice_variance_mantissa · 2^-lattice_variance_exponent` (exact).
    pub lattice_variance_mantissa: u64,
    /// See `lattice_variance_mantissa`.
    pub lattice_variance_exponent: i32,
    /// d.
    pub dimension: usize,
    /// M: the bound on every |value|.
    pub value_bound: i64,
    /// ρ of this release (zCDP, Δ = 2C).
    pub rho: f64,
}

impl UpdateParams {
    pub(crate) fn new(cfg: &PrivatizerConfig, dimension: usize) -> Self {
        Self {
            mechanism: Mechanism::DiscreteGaussian,
            clip_norm: cfg.clip_norm,
            granularity: cfg.granularity,
            noise_stddev: cfg.noise_stddev,
            lattice_variance_mantissa: cfg.derived.variance_mantissa,
            lattice_variance_exponent: cfg.derived.variance_exponent,
            dimension,
            value_bound: cfg.derived.value_bound,
            rho: cfg.rho(),
        }
    }
}

/// A privatized update: the only representation of an update that may leave the device.
///
/// Invariant (the privacy boundary): a `PrivatizedUpdate` exists only as the
/// output of [`privatize`]. Its fields are private, it has no public
/// constructor and no `Deserialize`, so no code path can turn raw floats into
/// one. Its values are integers `z = x̃ + η` where `x̃` is a lattice vector with
/// `Σ x̃_i² ≤ ⌊(C/γ)²⌋` and `η_i ~ N_ℤ(0, σ_lat²)` i.i.d. (then clamped to ±M).
/// The server decodes bytes into the distinct type [`crate::ReceivedUpdate`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrivatizedUpdate {
    values: Vec<i64>,
    params: UpdateParams,
}

impl PrivatizedUpdate {
    /// The noisy lattice vector (lattice units; multiply by γ for model units).
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    /// The parameters of the release.
    pub fn params(&self) -> &UpdateParams {
        &self.params
    }

    /// γ (model units per lattice step).
    pub fn granularity(&self) -> f64 {
        self.params.granularity
    }
}
// `to_bytes` (the canonical encoding) is in `crate::wire`, which depends on this module and not the
// other way round.

/// Privatizes one update vector (f32 or f64) with a caller-supplied CSPRNG.
///
/// Errors: empty input, dimension > [`MAX_DIMENSION`], NaN/±∞ anywhere
/// ([`PrivacyError::NonFiniteInput`]), or γ too coarse for the dimension.
/// Subnormal, zero and huge finite inputs are handled (clipped onto the lattice).
pub fn privatize<T, R>(
    update: &[T],
    cfg: &PrivatizerConfig,
    rng: &mut R,
) -> Result<PrivatizedUpdate>
where
    T: Copy + Into<f64>,
    R: CryptoRng + ?Sized,
{
    privatize_impl(update, cfg, rng, Fault::None)
}

/// [`privatize`] with a fresh [`crate::rng::OsCsprng`].
pub fn privatize_with_os_rng<T: Copy + Into<f64>>(
    update: &[T],
    cfg: &PrivatizerConfig,
) -> Result<PrivatizedUpdate> {
    let mut rng = crate::rng::OsCsprng::new()?;
    privatize(update, cfg, &mut rng)
}

/// Deliberate bugs, compiled only into tests, so that the audit can prove it
/// catches them. Production code only ever sees `Fault::None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// Noise with σ/2.
    #[cfg(test)]
    HalfSigma,
    /// No clipping (the lattice bound check is skipped as well).
    #[cfg(test)]
    SkipClipping,
    /// Accounting with sensitivity C instead of 2C (affects only the audit's claim).
    #[cfg(test)]
    SensitivityC,
}

pub(crate) fn privatize_impl<T, R>(
    update: &[T],
    cfg: &PrivatizerConfig,
    rng: &mut R,
    fault: Fault,
) -> Result<PrivatizedUpdate>
where
    T: Copy + Into<f64>,
    R: Rng + ?Sized,
{
    let dimension = update.len();
    let mut lattice = clip_and_round(update, cfg, rng, fault)?;
    let sampler = noise_sampler(cfg, fault);
    let bound = cfg.derived.value_bound;
    for z in lattice.iter_mut() {
        let noisy = z.saturating_add(sampler.sample(rng));
        *z = noisy.clamp(-bound, bound);
    }
    Ok(PrivatizedUpdate {
        values: lattice,
        params: UpdateParams::new(cfg, dimension),
    })
}

/// A clipped, lattice-rounded update *without noise*: the input of secure aggregation, where the
/// noise is added once, to the sum (`feedloop-secagg`).
///
/// Not privatized: it must never leave the device as it is. It has no `Serialize`, no wire
/// encoding and no public constructor but [`clip_to_lattice`]; the only way out of the device is
/// `feedloop_secagg::seal_report`, which consumes it and returns secret shares sealed with HPKE to
/// two aggregators, each of which alone learns nothing about the values.
///
/// Invariant: `Σ z_i² ≤ B = ⌊(C/γ)²⌋`, so every `|z_i| ≤ ⌊√B⌋` ([`LatticeUpdate::value_radius`]).
pub struct LatticeUpdate {
    values: Vec<i64>,
    radius: u64,
}

impl LatticeUpdate {
    /// The lattice vector (lattice units). For sharding only: see the type's invariant.
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    /// R = ⌊√B⌋: every `|z_i| ≤ R`.
    pub fn value_radius(&self) -> u64 {
        self.radius
    }
}

impl std::fmt::Debug for LatticeUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No values in logs or panics: they are not privatized.
        f.debug_struct("LatticeUpdate")
            .field("dimension", &self.values.len())
            .field("radius", &self.radius)
            .finish_non_exhaustive()
    }
}

/// Steps 1–3 of [`privatize`] (reject non-finite, clip, conditional randomized rounding) and no
/// noise: the device's half of secure aggregation. `cfg`'s σ is the noise the *helper* adds to the
/// sum; it does not enter here.
pub fn clip_to_lattice<T, R>(
    update: &[T],
    cfg: &PrivatizerConfig,
    rng: &mut R,
) -> Result<LatticeUpdate>
where
    T: Copy + Into<f64>,
    R: CryptoRng + ?Sized,
{
    let values = clip_and_round(update, cfg, rng, Fault::None)?;
    Ok(LatticeUpdate {
        values,
        radius: lattice_radius(cfg.derived.norm_bound_sq),
    })
}

/// ⌊√B⌋, the largest |z_i| a vector with `Σ z_i² ≤ B` can hold.
pub fn lattice_radius(norm_bound_sq: u128) -> u64 {
    u64::try_from(exact::isqrt_u128(norm_bound_sq)).expect("B ≤ 2^80, so √B < 2^40")
}

fn clip_and_round<T, R>(
    update: &[T],
    cfg: &PrivatizerConfig,
    rng: &mut R,
    fault: Fault,
) -> Result<Vec<i64>>
where
    T: Copy + Into<f64>,
    R: Rng + ?Sized,
{
    let dimension = update.len();
    if dimension == 0 {
        return Err(PrivacyError::EmptyUpdate);
    }
    if dimension > MAX_DIMENSION {
        return Err(PrivacyError::DimensionTooLarge {
            dimension,
            max: MAX_DIMENSION,
        });
    }
    let radius = cfg.prerounding_radius(dimension)?;
    let mut max_abs = 0.0f64;
    for (index, v) in update.iter().enumerate() {
        let v: f64 = (*v).into();
        if !v.is_finite() {
            return Err(PrivacyError::NonFiniteInput {
                index,
                value: v.to_string(),
            });
        }
        max_abs = max_abs.max(v.abs());
    }

    let lattice = if max_abs == 0.0 {
        vec![0i64; dimension]
    } else {
        // ‖u‖ = max_abs · ‖u / max_abs‖: no overflow for huge, no underflow for subnormal inputs.
        let unit_norm = update
            .iter()
            .map(|v| {
                let w = (*v).into() / max_abs;
                w * w
            })
            .sum::<f64>()
            .sqrt();
        let mut scale = (max_abs / cfg.granularity).min(radius / unit_norm);
        #[cfg(test)]
        if fault == Fault::SkipClipping {
            scale = max_abs / cfg.granularity;
        }
        if !scale.is_finite() {
            scale = radius / unit_norm;
        }
        let scaled: Vec<f64> = update
            .iter()
            .map(|v| ((*v).into() / max_abs) * scale)
            .collect();
        round_within_bound(&scaled, cfg.derived.norm_bound_sq, rng, fault)
    };
    Ok(lattice)
}

#[cfg(test)]
fn noise_sampler<'a>(
    cfg: &'a PrivatizerConfig,
    fault: Fault,
) -> std::borrow::Cow<'a, DiscreteGaussian> {
    if fault == Fault::HalfSigma {
        let (a, k) = cfg.lattice_variance();
        return std::borrow::Cow::Owned(
            DiscreteGaussian::from_dyadic_variance(a, k + 2).expect("valid"),
        );
    }
    std::borrow::Cow::Borrowed(cfg.sampler())
}

#[cfg(not(test))]
fn noise_sampler(cfg: &PrivatizerConfig, _fault: Fault) -> &DiscreteGaussian {
    cfg.sampler()
}

/// Conditional randomized rounding: each coordinate goes to ⌊x⌋ or ⌈x⌉ with
/// P(⌈x⌉) = frac(x) (to 2^-64), retried until Σ z² ≤ bound exactly.
fn round_within_bound<R: Rng + ?Sized>(
    scaled: &[f64],
    bound: u128,
    rng: &mut R,
    fault: Fault,
) -> Vec<i64> {
    let _ = fault; // only consulted by test-only faults
    let mut out = vec![0i64; scaled.len()];
    for _ in 0..MAX_ROUNDING_TRIES {
        for (z, &x) in out.iter_mut().zip(scaled) {
            let floor = x.floor();
            // frac·2^64 is exact (power-of-two scaling); the cast truncates to an integer threshold.
            let threshold = ((x - floor) * 18_446_744_073_709_551_616.0) as u64;
            let up = rng.next_u64() < threshold;
            *z = floor as i64 + i64::from(up);
        }
        #[cfg(test)]
        if fault == Fault::SkipClipping {
            return out;
        }
        if squared_norm(&out).is_some_and(|n| n <= bound) {
            return out;
        }
    }
    // Rounding toward zero never increases |x_i|, so the norm stays ≤ c′ < √B.
    for (z, &x) in out.iter_mut().zip(scaled) {
        *z = x.trunc() as i64;
    }
    if squared_norm(&out).is_some_and(|n| n <= bound) {
        return out;
    }
    vec![0; scaled.len()]
}

/// Σ z_i² in exact integer arithmetic (`None` on overflow, which the callers treat as "too large").
pub(crate) fn squared_norm(values: &[i64]) -> Option<u128> {
    values.iter().try_fold(0u128, |acc, &z| {
        let a = u128::from(z.unsigned_abs());
        acc.checked_add(a.checked_mul(a)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn half_sigma_fault_really_halves_sigma() {
        let cfg = PrivatizerConfig::new(1.0, 0.01, 3.0).unwrap();
        let half = noise_sampler(&cfg, Fault::HalfSigma);
        let ratio = cfg.sampler().variance_f64() / half.variance_f64();
        assert_eq!(ratio, 4.0);
    }

    #[test]
    fn skip_clipping_fault_leaves_the_clip_ball() {
        let cfg = PrivatizerConfig::new(1.0, 0.01, 1e-3).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let out = privatize_impl(&[50.0f64], &cfg, &mut rng, Fault::SkipClipping).unwrap();
        // Honest output: ≤ C/γ = 100 plus noise of σ_lat = 0.1; unclipped: pinned at M = 102.
        assert_eq!(out.values()[0], cfg.value_bound(), "{:?}", out.values());
    }

    #[test]
    fn clip_to_lattice_rounds_inside_the_bound_without_noise() {
        let cfg = PrivatizerConfig::new(1.0, 1e-3, 4.0).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let bound = cfg.lattice_norm_bound_sq();
        for scale in [0.0, 1e-4, 0.05, 1.0, 1e6] {
            let update: Vec<f64> = (0..131).map(|i| scale * ((i % 7) as f64 - 3.0)).collect();
            let lattice = clip_to_lattice(&update, &cfg, &mut rng).unwrap();
            assert!(squared_norm(lattice.values()).unwrap() <= bound);
            // ⌊(1/1e-3)²⌋ = 999,999 in f64, so R = 999.
            assert_eq!(lattice.value_radius(), 999);
            assert!(lattice.values().iter().all(|z| z.unsigned_abs() <= 999));
            // No noise: a small update stays within rounding of x/γ.
            if scale == 1e-4 {
                for (z, x) in lattice.values().iter().zip(&update) {
                    assert!((*z as f64 - x / 1e-3).abs() < 1.0);
                }
            }
        }
        assert!(matches!(
            clip_to_lattice(&[1.0, f64::NAN], &cfg, &mut rng).unwrap_err(),
            PrivacyError::NonFiniteInput { index: 1, .. }
        ));
        assert!(matches!(
            clip_to_lattice::<f64, _>(&[], &cfg, &mut rng).unwrap_err(),
            PrivacyError::EmptyUpdate
        ));
        // Debug output never shows the values.
        let lattice = clip_to_lattice(&[0.5f64, -0.25], &cfg, &mut rng).unwrap();
        assert!(!format!("{lattice:?}").contains("500"));
    }
}
