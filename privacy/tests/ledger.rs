//! The ledger: totals, hash chain, and detection of every kind of tampering.

use chacha20::ChaCha20Rng;
use feedloop_privacy::ledger::{Ledger, LedgerIssueKind, ReleaseRecord};
use feedloop_privacy::randomized_response::RandomizedResponse;
use feedloop_privacy::{accounting::zcdp_to_approx_dp, privatize, PrivatizerConfig};
use rand_core::SeedableRng;
use serde_json::Value;

fn sample_ledger() -> Ledger {
    let mut ledger = Ledger::new(1e-6).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let cfg = PrivatizerConfig::new(1.0, 0.01, 4.0).unwrap();
    for i in 0..3u64 {
        let update = privatize(&[0.1f32; 131], &cfg, &mut rng).unwrap();
        ledger
            .append(ReleaseRecord::for_update(
                &update,
                1_000 + i,
                "reward-head update",
                &format!("round-{i}"),
                "m1",
            ))
            .unwrap();
    }
    let rr = RandomizedResponse::new(1.0).unwrap();
    let bit = rr.respond(true, &mut rng);
    ledger
        .append(ReleaseRecord::for_randomized_response(
            &rr, bit, 2_000, "clicked", "round-3", "m1",
        ))
        .unwrap();
    ledger
}

fn kinds(ledger: &Ledger) -> Vec<(usize, LedgerIssueKind)> {
    ledger
        .verify()
        .into_iter()
        .map(|i| (i.index, i.kind))
        .collect()
}

fn tampered(edit: impl FnOnce(&mut Value)) -> Ledger {
    let mut v: Value = serde_json::from_str(&sample_ledger().to_json()).unwrap();
    edit(&mut v);
    Ledger::from_json(&v.to_string()).unwrap()
}

#[test]
fn a_fresh_ledger_verifies_and_totals_add_up() {
    let ledger = sample_ledger();
    assert_eq!(kinds(&ledger), vec![]);
    let rho_gauss = 2.0 * (1.0f64 / 4.0).powi(2);
    let rr_eps = RandomizedResponse::new(1.0).unwrap().epsilon();
    let total = 3.0 * rho_gauss + rr_eps * rr_eps / 2.0;
    assert!((ledger.total_rho() - total).abs() < 1e-15);
    let last = ledger.entries().last().unwrap();
    assert_eq!(
        last.cumulative_epsilon,
        zcdp_to_approx_dp(total, 1e-6).unwrap()
    );
    // JSON export round-trips and still verifies.
    let back = Ledger::from_json(&ledger.to_json()).unwrap();
    assert_eq!(back, ledger);
    assert!(back.verify().is_empty());
}

#[test]
fn export_carries_dp_accounting_events() {
    let v: Value = serde_json::from_str(&sample_ledger().to_json()).unwrap();
    assert_eq!(
        v["entries"][0]["dp_event"],
        serde_json::json!({"dp_event": "GaussianDpEvent", "noise_multiplier": 2.0})
    );
    assert_eq!(
        v["entries"][3]["dp_event"]["dp_event"],
        "RandomizedResponseDpEvent"
    );
    let composed = &v["dp_event"];
    assert_eq!(composed["dp_event"], "ComposedDpEvent");
    assert_eq!(composed["events"][0]["dp_event"], "SelfComposedDpEvent");
    assert_eq!(composed["events"][0]["count"], 3);
}

#[test]
fn edited_values_are_detected() {
    let l = tampered(|v| v["entries"][1]["rho"] = Value::from(0.0));
    let k = kinds(&l);
    assert!(
        k.contains(&(1, LedgerIssueKind::WrongRho))
            && k.contains(&(1, LedgerIssueKind::WrongEntryHash)),
        "{k:?}"
    );

    let l = tampered(|v| v["entries"][0]["params"]["noise_stddev"] = Value::from(40.0));
    let k = kinds(&l);
    assert!(
        k.contains(&(0, LedgerIssueKind::WrongRho))
            && k.contains(&(0, LedgerIssueKind::WrongCumulativeRho)),
        "{k:?}"
    );

    let l = tampered(|v| v["entries"][2]["purpose"] = Value::from("something else"));
    assert_eq!(kinds(&l), vec![(2, LedgerIssueKind::WrongEntryHash)]);

    let l = tampered(|v| v["entries"][3]["payload_sha256"] = Value::from("not-a-hash"));
    assert!(kinds(&l).contains(&(3, LedgerIssueKind::MalformedPayloadHash)));
}

#[test]
fn deletion_and_reordering_are_detected() {
    let l = tampered(|v| {
        v["entries"].as_array_mut().unwrap().remove(1);
    });
    let k = kinds(&l);
    assert!(
        k.contains(&(1, LedgerIssueKind::WrongIndex))
            && k.contains(&(1, LedgerIssueKind::BrokenChain)),
        "{k:?}"
    );

    let l = tampered(|v| v["entries"].as_array_mut().unwrap().swap(2, 3));
    let k = kinds(&l);
    assert!(
        k.contains(&(2, LedgerIssueKind::BrokenChain))
            && k.contains(&(3, LedgerIssueKind::TimeOrder)),
        "{k:?}"
    );
}

#[test]
fn rewriting_an_entry_with_a_valid_hash_still_breaks_the_chain() {
    // An attacker who recomputes entry 1's own hash cannot fix entry 2's prev_hash without rewriting everything after it.
    let mut ledger = Ledger::new(1e-6).unwrap();
    let original = sample_ledger();
    for (i, e) in original.entries().iter().enumerate() {
        let mut rec = ReleaseRecord {
            time_ms: e.time_ms,
            purpose: e.purpose.clone(),
            round_id: e.round_id.clone(),
            model_version: e.model_version.clone(),
            params: e.params.clone(),
            payload_sha256: e.payload_sha256.clone(),
        };
        if i == 1 {
            rec.purpose = "rewritten".into();
        }
        ledger.append(rec).unwrap();
    }
    let mut v: Value = serde_json::from_str(&original.to_json()).unwrap();
    let forged: Value = serde_json::from_str(&ledger.to_json()).unwrap();
    v["entries"][1] = forged["entries"][1].clone();
    let k = kinds(&Ledger::from_json(&v.to_string()).unwrap());
    assert_eq!(k, vec![(2, LedgerIssueKind::BrokenChain)]);
}

#[test]
fn a_categorical_release_is_charged_and_replayable() {
    use feedloop_privacy::categorical_response::CategoricalResponse;
    let mut ledger = sample_ledger();
    let before = ledger.total_rho();
    let stars = CategoricalResponse::new(0.5, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let reported = stars.respond(3, &mut rng).unwrap();
    let entry = ledger
        .append(ReleaseRecord::for_categorical_response(
            &stars,
            reported,
            3_000,
            "star rating",
            "round-4",
            "m1",
        ))
        .unwrap()
        .clone();
    assert!((ledger.total_rho() - before - stars.rho()).abs() < 1e-15);
    assert_eq!(kinds(&ledger), vec![]);
    // The export names dp-accounting's event for it: k buckets, noise k·q.
    let export: Value = serde_json::from_str(&ledger.to_json()).unwrap();
    let text = export.to_string();
    assert!(text.contains("\"num_buckets\":5"), "{text}");
    assert!((stars.dp_accounting_noise_parameter() - 5.0 / (0.5f64.exp() + 4.0)).abs() < 1e-12);
    // A tampered category count is caught like any other edit.
    let mut v: Value = serde_json::from_str(&ledger.to_json()).unwrap();
    let last = v["entries"].as_array().unwrap().len() - 1;
    v["entries"][last]["params"]["categories"] = serde_json::json!(2);
    let edited = Ledger::from_json(&v.to_string()).unwrap();
    assert!(!edited.verify().is_empty(), "{entry:?}");
}

#[test]
fn consent_changes_are_chained_entries_that_cost_nothing_and_are_not_releases() {
    let mut ledger = Ledger::new(1e-6).unwrap();
    assert_eq!(ledger.consent(), None);
    ledger
        .append(ReleaseRecord::for_consent(true, 500, "m1"))
        .unwrap();
    let released = sample_ledger();
    for e in released.entries() {
        ledger
            .append(ReleaseRecord {
                time_ms: e.time_ms,
                purpose: e.purpose.clone(),
                round_id: e.round_id.clone(),
                model_version: e.model_version.clone(),
                params: e.params.clone(),
                payload_sha256: e.payload_sha256.clone(),
            })
            .unwrap();
    }
    ledger
        .append(ReleaseRecord::for_consent(false, 3_000, "m1"))
        .unwrap();
    assert!(ledger.verify().is_empty());
    assert_eq!(ledger.consent(), Some((false, 5)));
    assert_eq!(
        ledger.total_rho(),
        released.total_rho(),
        "consent costs nothing"
    );
    // The composed event is the releases' alone; each consent entry replays as a no-op.
    assert_eq!(ledger.dp_event(), released.dp_event());
    let export: Value = serde_json::from_str(&ledger.to_json()).unwrap();
    assert_eq!(export["entries"][0]["dp_event"]["dp_event"], "NoOpDpEvent");
    assert_eq!(export["entries"][0]["params"]["mechanism"], "consent");
    assert_eq!(export["entries"][0]["params"]["granted"], true);
    // Two grants at different times are two entries with their own payload hash.
    let (a, b) = (
        ReleaseRecord::for_consent(true, 1, "m1"),
        ReleaseRecord::for_consent(true, 2, "m1"),
    );
    assert_ne!(a.payload_sha256, b.payload_sha256);
    // A withdrawal edited into a grant breaks the chain.
    let mut v: Value = serde_json::from_str(&ledger.to_json()).unwrap();
    v["entries"][5]["params"]["granted"] = true.into();
    let edited = Ledger::from_json(&v.to_string()).unwrap();
    assert!(kinds(&edited).contains(&(5, LedgerIssueKind::WrongEntryHash)));
}
