//! The privatizer's guarantees on adversarial inputs, and the wire format.

use chacha20::ChaCha20Rng;
use feedloop_privacy::wire::HEADER_LEN;
use feedloop_privacy::{decode_update, privatize, ExpectedRound, PrivacyError, PrivatizerConfig};
use proptest::prelude::*;
use rand_core::SeedableRng;

/// Σ z² exactly.
fn squared_norm(values: &[i64]) -> u128 {
    values
        .iter()
        .map(|&z| u128::from(z.unsigned_abs()).pow(2))
        .sum()
}

/// Coordinates an adversary (or a buggy learner) might produce, finite ones only.
fn adversarial_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(-5e-324),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(1e300),
        Just(-1e-310),
        -1e6f64..1e6,
        -1.0f64..1.0,
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    ]
}

fn config() -> impl Strategy<Value = PrivatizerConfig> {
    (0.1f64..10.0, 1e-4f64..1e-2, 1e-4f64..10.0)
        .prop_map(|(c, g, s)| PrivatizerConfig::new(c, g * c, s).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Every output is an integer vector inside ±M; with negligible noise the
    /// output *is* the rounded vector, which must satisfy Σ z² ≤ ⌊(C/γ)²⌋ exactly.
    #[test]
    fn output_is_on_the_lattice_and_inside_the_clip_bound(
        update in prop::collection::vec(adversarial_value(), 1..64),
        cfg in config(),
        seed in any::<u64>(),
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let out = privatize(&update, &cfg, &mut rng).unwrap();
        prop_assert_eq!(out.values().len(), update.len());
        prop_assert!(out.values().iter().all(|v| v.unsigned_abs() <= cfg.value_bound() as u64));
        // Same input, σ_lat = 1e-4 lattice steps: P(any noise ≠ 0) < 64·e^(−5·10^7).
        let quiet = PrivatizerConfig::new(cfg.clip_norm(), cfg.granularity(), cfg.granularity() * 1e-4).unwrap();
        let rounded = privatize(&update, &quiet, &mut rng).unwrap();
        prop_assert!(squared_norm(rounded.values()) <= quiet.lattice_norm_bound_sq());
        // The encoded payload decodes to the same values under the round's expectations.
        let expected = ExpectedRound { config: cfg.clone(), dimension: update.len() };
        let received = decode_update(&out.to_bytes(), &expected).unwrap();
        prop_assert_eq!(received.values(), out.values());
    }

    /// NaN and ±∞ anywhere are refused with the index of the first one.
    #[test]
    fn non_finite_inputs_are_rejected(
        mut update in prop::collection::vec(-1.0f64..1.0, 1..32),
        position in any::<prop::sample::Index>(),
        bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
    ) {
        let i = position.index(update.len());
        update[i] = bad;
        let cfg = PrivatizerConfig::new(1.0, 0.01, 1.0).unwrap();
        let err = privatize(&update, &cfg, &mut ChaCha20Rng::seed_from_u64(0)).unwrap_err();
        prop_assert!(matches!(err, PrivacyError::NonFiniteInput { index, .. } if index == i), "{:?}", err);
    }

    /// Arbitrary corruption of a valid payload never panics: it either fails to
    /// decode or decodes to values inside the bound.
    #[test]
    fn corrupted_payloads_never_decode_out_of_bounds(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        truncate in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let cfg = PrivatizerConfig::new(1.0, 0.01, 0.5).unwrap();
        let update: Vec<f32> = (0..131).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut bytes = privatize(&update, &cfg, &mut ChaCha20Rng::seed_from_u64(9)).unwrap().to_bytes();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte;
        }
        if let Some(t) = truncate {
            bytes.truncate(t.index(bytes.len()));
        }
        let expected = ExpectedRound { config: cfg.clone(), dimension: 131 };
        if let Ok(r) = decode_update(&bytes, &expected) {
            prop_assert!(r.values().iter().all(|v| v.unsigned_abs() <= cfg.value_bound() as u64));
        }
    }
}

#[test]
fn f32_and_f64_inputs_are_accepted_and_zero_vectors_stay_zero_mean() {
    let cfg = PrivatizerConfig::new(1.0, 0.01, 1e-6).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let z32 = privatize(&[0.0f32; 131], &cfg, &mut rng).unwrap();
    let z64 = privatize(&[0.0f64; 131], &cfg, &mut rng).unwrap();
    assert!(z32.values().iter().chain(z64.values()).all(|&v| v == 0));
}

#[test]
fn rejects_empty_coarse_and_invalid_configurations() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let cfg = PrivatizerConfig::new(1.0, 0.01, 1.0).unwrap();
    assert_eq!(
        privatize::<f32, _>(&[], &cfg, &mut rng).unwrap_err(),
        PrivacyError::EmptyUpdate
    );
    // C/γ = 10 cannot hold 1000 dimensions' rounding error.
    let coarse = PrivatizerConfig::new(1.0, 0.1, 1.0).unwrap();
    assert!(matches!(
        privatize(&vec![0.1f32; 1000], &coarse, &mut rng),
        Err(PrivacyError::GranularityTooCoarse { .. })
    ));
    for (c, g, s) in [
        (0.0, 0.01, 1.0),
        (1.0, 0.0, 1.0),
        (1.0, 0.01, 0.0),
        (f64::NAN, 0.01, 1.0),
        (1.0, 1e-300, 1.0),
        (1.0, 0.01, f64::INFINITY),
        (1.0, 0.01, 5e-324),
    ] {
        assert!(
            PrivatizerConfig::new(c, g, s).is_err(),
            "({c}, {g}, {s}) accepted"
        );
    }
}

#[test]
fn randomized_rounding_is_unbiased_inside_the_ball() {
    // u = (0.123, −0.0456), well inside C = 1: E[z] = u/γ (σ tiny so only rounding is random).
    let cfg = PrivatizerConfig::new(1.0, 0.01, 1e-6).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let n = 20_000;
    let mut sums = [0i64; 2];
    for _ in 0..n {
        let out = privatize(&[0.123f64, -0.0456], &cfg, &mut rng).unwrap();
        sums[0] += out.values()[0];
        sums[1] += out.values()[1];
    }
    let means = [sums[0] as f64 / n as f64, sums[1] as f64 / n as f64];
    // The radius c′ < C/γ does not bind here, so the target is u/γ; rounding variance ≤ 1/4.
    let se = (0.25f64 / n as f64).sqrt();
    assert!(
        (means[0] - 12.3).abs() < 5.0 * se && (means[1] + 4.56).abs() < 5.0 * se,
        "{means:?}"
    );
}

#[test]
fn wire_layout_is_as_documented() {
    let cfg = PrivatizerConfig::new(2.0, 0.25, 0.5).unwrap();
    let out = privatize(
        &[1.0f64, -1.0, 0.0],
        &cfg,
        &mut ChaCha20Rng::seed_from_u64(4),
    )
    .unwrap();
    let b = out.to_bytes();
    assert_eq!(&b[0..4], b"FLDP");
    assert_eq!(b[4], 1);
    assert_eq!(b[5], 1);
    assert_eq!(f64::from_le_bytes(b[6..14].try_into().unwrap()), 2.0);
    assert_eq!(f64::from_le_bytes(b[14..22].try_into().unwrap()), 0.25);
    assert_eq!(f64::from_le_bytes(b[22..30].try_into().unwrap()), 0.5);
    let (a, k) = cfg.lattice_variance();
    assert_eq!(u64::from_le_bytes(b[30..38].try_into().unwrap()), a);
    assert_eq!(i32::from_le_bytes(b[38..42].try_into().unwrap()), k);
    assert_eq!((a, k), (1, -2), "σ/γ = 2 exactly, so σ_lat² = 4 = 1·2^2");
    assert_eq!(u32::from_le_bytes(b[42..46].try_into().unwrap()), 3);
    assert!(b.len() > HEADER_LEN);
}

#[test]
fn decoder_rejects_every_mismatch() {
    let cfg = PrivatizerConfig::new(1.0, 0.01, 0.5).unwrap();
    let out = privatize(&[0.3f32, 0.4], &cfg, &mut ChaCha20Rng::seed_from_u64(5)).unwrap();
    let bytes = out.to_bytes();
    let expected = ExpectedRound {
        config: cfg.clone(),
        dimension: 2,
    };
    assert!(decode_update(&bytes, &expected).is_ok());

    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(decode_update(&bad, &expected).is_err(), "magic");
    let mut bad = bytes.clone();
    bad[4] = 2;
    assert!(decode_update(&bad, &expected).is_err(), "version");
    let weaker = ExpectedRound {
        config: PrivatizerConfig::new(1.0, 0.01, 0.25).unwrap(),
        dimension: 2,
    };
    assert!(decode_update(&bytes, &weaker).is_err(), "σ");
    assert!(
        decode_update(
            &bytes,
            &ExpectedRound {
                config: cfg.clone(),
                dimension: 3
            }
        )
        .is_err(),
        "dimension"
    );
    let mut bad = bytes.clone();
    bad.push(0);
    assert!(decode_update(&bad, &expected).is_err(), "trailing byte");
    assert!(
        decode_update(&bytes[..bytes.len() - 1], &expected).is_err(),
        "truncated"
    );

    // A value just outside ±M, hand-encoded.
    let m = cfg.value_bound() + 1;
    let mut forged = bytes[..HEADER_LEN].to_vec();
    for v in [m, 0] {
        let mut u = ((v << 1) ^ (v >> 63)) as u64;
        while u >= 0x80 {
            forged.push((u as u8) | 0x80);
            u >>= 7;
        }
        forged.push(u as u8);
    }
    let err = decode_update(&forged, &expected).unwrap_err();
    assert!(err.to_string().contains("outside the bound"), "{err}");
}
