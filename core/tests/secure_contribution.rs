//! The device's side of a secure round: it joins only under its own policy (a pinned helper, a
//! large enough batch, enough noise on the sum), and what it releases is a sealed report that the
//! two aggregators — and only the two together — turn back into its clipped, rounded update.

use chacha20::rand_core::SeedableRng;
use feedloop_core::contribution::{DevicePrivacy, RoundConfig, SECURE_TRUST};
use feedloop_core::protocol::SecureAggregators;
use feedloop_core::LocalLearningState;
use feedloop_privacy::budget::{PrivacyPolicy, SecurePolicy, DAY_MS};
use feedloop_privacy::ledger::{sha256_hex, ReleaseParams};
use feedloop_privacy::PrivatizerConfig;
use feedloop_secagg::{
    helper_verify, leader_finish, leader_init, unshard, Batch, HpkeKeyPair, Report, SecureRound,
    VerifyKey,
};

const NOW: u64 = 1_800_000_000_000;
const C: f64 = 1.0;
const GAMMA: f64 = 0.01;

struct Aggregators {
    leader: HpkeKeyPair,
    helper: HpkeKeyPair,
}

fn aggregators() -> Aggregators {
    let mut rng = chacha20::ChaCha20Rng::seed_from_u64(9);
    Aggregators {
        leader: HpkeKeyPair::generate(&mut rng),
        helper: HpkeKeyPair::generate(&mut rng),
    }
}

fn round(a: &Aggregators, sigma: f64, min_reports: i64) -> RoundConfig {
    let cfg = PrivatizerConfig::new(C, GAMMA, sigma).unwrap();
    let radius = SecureRound::for_privatizer(7, 3, &cfg, 1)
        .unwrap()
        .value_radius();
    RoundConfig {
        round_id: "7".into(),
        model_version: "v1".into(),
        clip_norm: C,
        granularity: GAMMA,
        noise_stddev: sigma,
        secure: Some(SecureAggregators {
            leader_key: a.leader.public().to_hex(),
            helper_key: a.helper.public().to_hex(),
            helper_fingerprint: a.helper.public().fingerprint(),
            min_reports,
            value_radius: radius as i64,
        }),
    }
}

fn device(pinned: &[String], min_reports: u64) -> DevicePrivacy {
    // At most ρ = 0.5 per release: σ ≥ 2C on the sum.
    let policy = PrivacyPolicy::new(8.0, 1e-6, 30 * DAY_MS, 0.5)
        .unwrap()
        .with_secure(SecurePolicy::new(pinned.to_vec(), min_reports).unwrap());
    let mut device = DevicePrivacy::new(policy, 3, "v1").unwrap();
    device.set_consent(true, 1, "v1").unwrap();
    device
}

fn learning() -> LocalLearningState {
    LocalLearningState {
        base_version: "v1".into(),
        delta: vec![0.5, -0.25, 0.125],
        example_count: 3,
    }
}

#[test]
fn a_pinned_helpers_round_gets_a_sealed_report_that_only_both_aggregators_open() {
    let a = aggregators();
    let mut device = device(&[a.helper.public().fingerprint()], 10);
    let round = round(&a, 4.0, 10);
    let mut rng = chacha20::ChaCha20Rng::seed_from_u64(1);
    let prepared = device.prepare(&learning(), &round, NOW, &mut rng).unwrap();
    assert!(prepared.is_secure());
    let values = prepared.values();
    let release = device.release(prepared, NOW).unwrap();

    // The ledger: the mechanism, its terms, the trust assumption, the bytes' hash, ρ on σ_h.
    let entry = release.ledger_entry();
    assert_eq!(entry.payload_sha256, sha256_hex(release.bytes()));
    assert_eq!(entry.rho, (2.0 * C) * (2.0 * C) / (2.0 * 4.0 * 4.0));
    match &entry.params {
        ReleaseParams::SecureAggregation {
            helper_fingerprint,
            leader_fingerprint,
            min_reports,
            noise_stddev,
            trust,
            ..
        } => {
            assert_eq!(helper_fingerprint, &a.helper.public().fingerprint());
            assert_eq!(leader_fingerprint, &a.leader.public().fingerprint());
            assert_eq!((*min_reports, *noise_stddev), (10, 4.0));
            assert_eq!(trust, SECURE_TRUST);
        }
        other => panic!("not a secure release: {other:?}"),
    }
    assert_eq!(entry.params.dp_event()["dp_event"], "GaussianDpEvent");
    assert!(device.state().ledger.verify().is_empty());

    // The bytes are a report; the two aggregators together recover exactly the rounded values.
    let report = Report::from_bytes(release.bytes()).unwrap();
    let cfg = PrivatizerConfig::new(C, GAMMA, 4.0).unwrap();
    let terms = SecureRound::for_privatizer(7, 3, &cfg, 10).unwrap();
    let verify_key = VerifyKey::from_bytes(&[3; 32]).unwrap();
    let (pending, request) = leader_init(&terms, &verify_key, &a.leader, &report).unwrap();
    let (helper_share, response) = helper_verify(&terms, &verify_key, &a.helper, &request).unwrap();
    let leader_share = leader_finish(&terms, pending, &response).unwrap();
    let (mut leader, mut helper) = (Batch::new(terms).unwrap(), Batch::new(terms).unwrap());
    leader.add(leader_share).unwrap();
    helper.add(helper_share).unwrap();
    let released = helper
        .release(1, None, &mut chacha20::ChaCha20Rng::seed_from_u64(2))
        .unwrap();
    let sum = unshard(&terms, &leader.aggregate_share(), &released).unwrap();
    assert_eq!(sum, values);
    // 0.5 / γ = 50 (the clipped update's norm is below C: no scaling), give or take rounding.
    assert!((sum[0] - 50).abs() <= 1, "{sum:?}");
}

#[test]
fn the_device_refuses_what_its_policy_does_not_accept() {
    let a = aggregators();
    let pinned = [a.helper.public().fingerprint()];
    let learning = learning();
    let mut rng = chacha20::ChaCha20Rng::seed_from_u64(1);
    let refusal = |device: &DevicePrivacy, round: &RoundConfig| {
        device
            .prepare(
                &learning,
                round,
                NOW,
                &mut chacha20::ChaCha20Rng::seed_from_u64(3),
            )
            .unwrap_err()
            .to_string()
    };
    // No helper pinned: no secure round at all.
    let err = refusal(&device(&[], 10), &round(&a, 4.0, 10));
    assert!(err.contains("not one this device's policy pins"), "{err}");
    // Another helper than the pinned one (a leader swapping in its own "helper").
    let impostor = HpkeKeyPair::generate(&mut rng);
    let mut swapped = round(&a, 4.0, 10);
    let secure = swapped.secure.as_mut().unwrap();
    secure.helper_key = impostor.public().to_hex();
    // The fingerprint the round states is not trusted: the device recomputes it from the key.
    secure.helper_fingerprint = a.helper.public().fingerprint();
    let err = refusal(&device(&pinned, 10), &swapped);
    assert!(err.contains("not one this device's policy pins"), "{err}");
    // A batch smaller than the policy's minimum.
    let err = refusal(&device(&pinned, 50), &round(&a, 4.0, 10));
    assert!(err.contains("needs at least 50"), "{err}");
    // Less noise on the sum than the policy allows (σ = C < 2C).
    let err = refusal(&device(&pinned, 10), &round(&a, 1.0, 10));
    assert!(err.contains("noise multiplier"), "{err}");
    // A value radius that does not follow from C and γ.
    let mut odd = round(&a, 4.0, 10);
    odd.secure.as_mut().unwrap().value_radius += 1;
    let err = refusal(&device(&pinned, 10), &odd);
    assert!(err.contains("value radius"), "{err}");
    // A refusal spends nothing.
    let d = device(&pinned, 50);
    let _ = refusal(&d, &round(&a, 4.0, 10));
    assert_eq!(d.state().budget.lifetime_rho(), 0.0);
}

#[test]
fn a_saved_policy_keeps_its_pinned_helpers_and_older_states_pin_none() {
    let a = aggregators();
    let device = device(&[a.helper.public().fingerprint()], 25);
    let restored = DevicePrivacy::from_json(&device.to_json()).unwrap();
    assert_eq!(
        restored.state().policy.secure(),
        device.state().policy.secure()
    );
    // A policy saved before secure rounds existed has no `secure` field.
    let mut json: serde_json::Value = serde_json::from_str(&device.to_json()).unwrap();
    json["policy"].as_object_mut().unwrap().remove("secure");
    let old = DevicePrivacy::from_json(&json.to_string()).unwrap();
    assert_eq!(old.state().policy.secure(), &SecurePolicy::default());
    assert!(SecurePolicy::new(vec!["ABC".into()], 10).is_err());
    assert!(SecurePolicy::new(vec![], 0).is_err());
}

#[test]
fn a_sealed_report_survives_a_reload_and_leaves_days_later_charged_once() {
    use feedloop_core::outbox::{Outbox, QueuedUpload, SendOutcome};
    const DAY: u64 = 24 * 3600 * 1000;
    let a = aggregators();
    let mut device = device(&[a.helper.public().fingerprint()], 10);
    let round = round(&a, 4.0, 10);
    let prepared = device
        .prepare(
            &learning(),
            &round,
            NOW,
            &mut chacha20::ChaCha20Rng::seed_from_u64(4),
        )
        .unwrap();
    let release = device.release(prepared, NOW).unwrap();
    let mut outbox = Outbox::new();
    outbox.push(QueuedUpload::from_release(&release, NOW), NOW);
    // The helper is down: the leader answers 503 and the report waits.
    outbox.record(
        release.ledger_entry().payload_sha256.as_str(),
        &SendOutcome::RetryLater("503 helper_unavailable".into()),
        NOW,
        0.5,
    );

    // A reload: the privacy state and the queue come back from storage.
    let device = DevicePrivacy::from_json(&device.to_json()).unwrap();
    let outbox = Outbox::from_json(&outbox.to_json(), &device.state().ledger).unwrap();
    // Three days later the same bytes are due, once; nothing was charged again.
    let due = outbox.due(NOW + 3 * DAY);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].bytes(), release.bytes());
    assert_eq!(due[0].round_id(), "7");
    assert_eq!(
        device.state().budget.lifetime_rho(),
        release.ledger_entry().rho
    );
    let releases = device
        .state()
        .ledger
        .entries()
        .iter()
        .filter(|e| e.params.is_release());
    assert_eq!(releases.count(), 1);
    // And the device does not seal a second report for the round.
    let more = LocalLearningState {
        delta: vec![0.75, -0.25, 0.125],
        ..learning()
    };
    let again = device.eligibility(&more, &round, "v1", 3).unwrap_err();
    assert!(again.to_string().contains("already contributed"), "{again}");
}
