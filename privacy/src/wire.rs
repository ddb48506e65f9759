//! The canonical, versioned binary encoding of a privatized update, and the
//! server-side decoder.
//!
//! Layout, version 1 (all integers little-endian):
//!
//! | offset | size | field                                                     |
//! |-------:|-----:|-----------------------------------------------------------|
//! | 0      | 4    | magic `b"FLDP"`                                           |
//! | 4      | 1    | version = 1                                               |
//! | 5      | 1    | mechanism = 1 (discrete Gaussian on the γ-lattice)        |
//! | 6      | 8    | C, clip norm (f64, IEEE-754 bits)                         |
//! | 14     | 8    | γ, granularity (f64)                                      |
//! | 22     | 8    | σ, noise stddev in model units (f64)                      |
//! | 30     | 8    | σ_lat² mantissa `a` (u64)                                 |
//! | 38     | 4    | σ_lat² exponent `k` (i32): σ_lat² = a·2^-k                |
//! | 42     | 4    | d, dimension (u32)                                        |
//! | 46     | …    | d values: zig-zag LEB128 varints (canonical, ≤ 10 bytes)  |
//!
//! Canonical: exactly one byte string per update (no overlong varints, no
//! trailing bytes), so the SHA-256 in the ledger identifies the payload.
//!
//! Invariant of [`decode_update`]: a [`ReceivedUpdate`] exists only if every
//! field matches the [`ExpectedRound`] bit for bit, every value satisfies
//! `|v| ≤ M = ⌊C/γ⌋ + ⌈14·σ_lat⌉` (an honest client exceeds it with probability
//! < 2e-42 per value, and the privatizer clamps to it anyway), and the squared
//! L2 norm is at most [`PrivatizerConfig::norm_bound_sq`] (an honest update
//! exceeds it with probability < 2^-40).

use crate::error::{PrivacyError, Result};
use crate::privatizer::{Mechanism, PrivatizedUpdate, PrivatizerConfig, UpdateParams};

/// `b"FLDP"`.
pub const MAGIC: [u8; 4] = *b"FLDP";
/// The version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Mechanism byte for [`Mechanism::DiscreteGaussian`].
pub const MECHANISM_DISCRETE_GAUSSIAN: u8 = 1;
/// Size of the fixed header before the values.
pub const HEADER_LEN: usize = 46;

impl PrivatizedUpdate {
    /// The canonical wire encoding (the layout above): the only bytes that leave a device.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self.values(), self.params())
    }
}

fn encode(values: &[i64], params: &UpdateParams) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + values.len() * 3);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(MECHANISM_DISCRETE_GAUSSIAN);
    out.extend_from_slice(&params.clip_norm.to_le_bytes());
    out.extend_from_slice(&params.granularity.to_le_bytes());
    out.extend_from_slice(&params.noise_stddev.to_le_bytes());
    out.extend_from_slice(&params.lattice_variance_mantissa.to_le_bytes());
    out.extend_from_slice(&params.lattice_variance_exponent.to_le_bytes());
    let d = u32::try_from(values.len()).expect("dimension <= MAX_DIMENSION < 2^32");
    out.extend_from_slice(&d.to_le_bytes());
    for &v in values {
        write_varint(&mut out, zigzag(v));
    }
    out
}

/// What the server expects of an upload in a round: it rejects anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedRound {
    /// The round's privatizer configuration (compared bit for bit).
    pub config: PrivatizerConfig,
    /// The model's update dimension.
    pub dimension: usize,
}

/// An update decoded on the server. Deliberately a different type from
/// [`crate::PrivatizedUpdate`]: decoding can never manufacture a client-side release.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedUpdate {
    values: Vec<i64>,
    params: UpdateParams,
}

impl ReceivedUpdate {
    /// The noisy lattice vector (lattice units).
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    /// Parameters read from the payload (equal to the expected round's).
    pub fn params(&self) -> &UpdateParams {
        &self.params
    }

    /// Values in model units (`v · γ`). Sum integer vectors first when aggregating.
    pub fn to_model_units(&self) -> Vec<f64> {
        self.values
            .iter()
            .map(|&v| v as f64 * self.params.granularity)
            .collect()
    }

    /// Takes the lattice vector.
    pub fn into_values(self) -> Vec<i64> {
        self.values
    }
}

fn malformed(msg: impl Into<String>) -> PrivacyError {
    PrivacyError::MalformedPayload(msg.into())
}

/// Decodes and validates an uploaded payload against the round's expectations.
pub fn decode_update(bytes: &[u8], expected: &ExpectedRound) -> Result<ReceivedUpdate> {
    if bytes.len() < HEADER_LEN {
        return Err(malformed(format!(
            "{} bytes is shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if bytes[0..4] != MAGIC {
        return Err(malformed("bad magic: not a feedloop privatized update"));
    }
    if bytes[4] != VERSION {
        return Err(malformed(format!(
            "unsupported version {} (this decoder reads {VERSION})",
            bytes[4]
        )));
    }
    if bytes[5] != MECHANISM_DISCRETE_GAUSSIAN {
        return Err(malformed(format!("unknown mechanism byte {}", bytes[5])));
    }
    let f64_at = |o: usize| f64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let (clip_norm, granularity, noise_stddev) = (f64_at(6), f64_at(14), f64_at(22));
    let mantissa = u64::from_le_bytes(bytes[30..38].try_into().expect("8 bytes"));
    let exponent = i32::from_le_bytes(bytes[38..42].try_into().expect("4 bytes"));
    let dimension = u32::from_le_bytes(bytes[42..46].try_into().expect("4 bytes")) as usize;

    let cfg = &expected.config;
    if clip_norm.to_bits() != cfg.clip_norm().to_bits()
        || granularity.to_bits() != cfg.granularity().to_bits()
        || noise_stddev.to_bits() != cfg.noise_stddev().to_bits()
    {
        return Err(malformed(format!(
            "round parameters differ: payload (C={clip_norm}, γ={granularity}, σ={noise_stddev}), expected (C={}, γ={}, σ={})",
            cfg.clip_norm(),
            cfg.granularity(),
            cfg.noise_stddev()
        )));
    }
    if (mantissa, exponent) != cfg.lattice_variance() {
        return Err(malformed(
            "lattice variance does not match the round's configuration",
        ));
    }
    if dimension != expected.dimension {
        return Err(malformed(format!(
            "dimension {dimension}, expected {}",
            expected.dimension
        )));
    }
    let bound = cfg.value_bound();
    let mut values = Vec::with_capacity(dimension);
    let mut pos = HEADER_LEN;
    for i in 0..dimension {
        let (raw, used) =
            read_varint(&bytes[pos..]).map_err(|e| malformed(format!("value {i}: {e}")))?;
        pos += used;
        let v = unzigzag(raw);
        if v.unsigned_abs() > bound.unsigned_abs() {
            return Err(malformed(format!(
                "value {i} = {v} outside the bound ±{bound} implied by C, γ, σ"
            )));
        }
        values.push(v);
    }
    if pos != bytes.len() {
        return Err(malformed(format!(
            "{} trailing bytes after {dimension} values",
            bytes.len() - pos
        )));
    }
    // |v| ≤ M < 2^41 and d ≤ 2^20 (MAX_DIMENSION): the sum fits in u128 with room to spare.
    let norm_sq: u128 = values
        .iter()
        .map(|v| u128::from(v.unsigned_abs()).pow(2))
        .sum();
    let norm_bound = cfg.norm_bound_sq(dimension);
    if norm_sq > norm_bound {
        return Err(malformed(format!(
            "squared L2 norm {norm_sq} above the bound {norm_bound} implied by C, γ, σ and d \
             (an honest update exceeds it with probability below 2^-40)"
        )));
    }
    Ok(ReceivedUpdate {
        values,
        params: UpdateParams::new(cfg, dimension),
    })
}

/// Zig-zag maps signed to unsigned so small magnitudes get short varints.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

pub(crate) fn write_varint(out: &mut Vec<u8>, mut u: u64) {
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

/// Reads one canonical LEB128 varint; returns (value, bytes used).
pub(crate) fn read_varint(bytes: &[u8]) -> core::result::Result<(u64, usize), &'static str> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let payload = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err("varint overflows 64 bits");
        }
        value |= payload << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err("overlong (non-canonical) varint");
            }
            return Ok((value, i + 1));
        }
    }
    if bytes.len() < 10 {
        Err("truncated varint")
    } else {
        Err("varint longer than 10 bytes")
    }
}

impl UpdateParams {
    /// The mechanism byte on the wire.
    pub fn mechanism_byte(&self) -> u8 {
        match self.mechanism {
            Mechanism::DiscreteGaussian => MECHANISM_DISCRETE_GAUSSIAN,
            Mechanism::RandomizedResponse => 2,
            Mechanism::CategoricalResponse => 3,
            // Never in an update: a secure report is sealed shares (feedloop-secagg's format).
            Mechanism::SecureAggregation => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_roundtrips_extremes() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::MAX,
            i64::MIN,
            1 << 40,
            -(1 << 40),
        ] {
            assert_eq!(unzigzag(zigzag(v)), v);
            let mut buf = Vec::new();
            write_varint(&mut buf, zigzag(v));
            assert_eq!(read_varint(&buf), Ok((zigzag(v), buf.len())));
        }
    }

    fn encoded(values: &[i64], cfg: &PrivatizerConfig) -> Vec<u8> {
        encode(values, &UpdateParams::new(cfg, values.len()))
    }

    #[test]
    fn the_squared_norm_bound_refuses_a_maximal_update_and_keeps_honest_ones() {
        let cfg = PrivatizerConfig::new(1.0, 0.001, 4.0).unwrap();
        let d = 131;
        let expected = ExpectedRound {
            config: cfg.clone(),
            dimension: d,
        };
        // Every coordinate at +M: within the per-value bound, far outside the norm bound.
        let m = cfg.value_bound();
        let err = decode_update(&encoded(&vec![m; d], &cfg), &expected).unwrap_err();
        assert!(err.to_string().contains("squared L2 norm"), "{err}");
        // Right at the bound passes, one lattice step past it fails.
        let bound = cfg.norm_bound_sq(d);
        let at = (bound as f64).sqrt().floor() as i64;
        let mut v = vec![0i64; d];
        v[0] = at.min(m);
        v[1] = ((bound - (v[0] as u128).pow(2)) as f64).sqrt().floor() as i64;
        assert!(decode_update(&encoded(&v, &cfg), &expected).is_ok());
        v[2] += 1_000;
        assert!(decode_update(&encoded(&v, &cfg), &expected).is_err());
        // Honest updates of the largest norm the privatizer makes (the whole clip in the
        // update) pass, here 2,000 of them (the bound's false-rejection rate is < 2^-40).
        let mut rng = crate::rng::OsCsprng::new().unwrap();
        let big: Vec<f64> = (0..d).map(|i| if i == 0 { 10.0 } else { 0.0 }).collect();
        let mut worst = 0f64;
        for _ in 0..2_000 {
            let u = crate::privatize(&big, &cfg, &mut rng).unwrap();
            let n: u128 = u
                .values()
                .iter()
                .map(|v| u128::from(v.unsigned_abs()).pow(2))
                .sum();
            worst = worst.max(n as f64 / bound as f64);
            decode_update(&u.to_bytes(), &expected).unwrap();
        }
        eprintln!("closest honest update: {worst:.3} of the bound");
        assert!(worst < 1.0, "closest honest update at {worst} of the bound");
    }

    #[test]
    fn overlong_and_truncated_varints_are_rejected() {
        assert!(read_varint(&[0x80, 0x00]).is_err());
        assert!(read_varint(&[0x81]).is_err());
        assert!(read_varint(&[0xff; 10]).is_err());
    }
}
