//! The accountants against the reference libraries: tests/fixtures/privacy_reference.json is
//! written by tools/privacy_reference.py from Google's dp-accounting and OpenDP.

use feedloop_privacy::accounting::rdp::default_orders;
use feedloop_privacy::accounting::{zcdp_to_approx_dp, RdpAccountant};
use feedloop_privacy::ledger::{Ledger, ReleaseParams, ReleaseRecord};
use serde_json::Value;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/privacy_reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/privacy_reference.py)", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("missing {key} in {v}"))
}

fn rel_err(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }
}

#[test]
fn default_orders_are_dp_accountings() {
    let fx = fixture();
    let theirs: Vec<f64> = fx["rdp_default_orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(default_orders(), theirs);
}

#[test]
fn rdp_epsilon_matches_dp_accounting_within_0_1_percent() {
    let fx = fixture();
    let cases = fx["rdp_poisson_gaussian"].as_array().unwrap();
    assert_eq!(cases.len(), 300);
    let mut worst = (0.0f64, String::new());
    let mut order_mismatches = 0;
    for case in cases {
        let (sigma, q, steps, delta) = (
            f(case, "noise_multiplier"),
            f(case, "sampling_probability"),
            f(case, "steps"),
            f(case, "delta"),
        );
        let mut acc = RdpAccountant::new();
        acc.compose_poisson_subsampled_gaussian(sigma, q, steps as u64)
            .unwrap();
        let (eps, order) = acc.epsilon_and_optimal_order(delta).unwrap();
        let want = f(case, "epsilon");
        let err = rel_err(eps, want);
        assert!(
            err <= 1e-3,
            "σ={sigma} q={q} steps={steps} δ={delta}: ε {eps} vs dp-accounting {want}"
        );
        if order != f(case, "optimal_order") {
            order_mismatches += 1;
        }
        if err > worst.0 {
            worst = (err, format!("σ={sigma} q={q} steps={steps} δ={delta}"));
        }
    }
    println!("RDP: {} cases, max relative ε error {:.3e} at {}, optimal-order mismatches {order_mismatches}", cases.len(), worst.0, worst.1);
}

#[test]
fn zcdp_conversion_matches_opendp_within_1e_9() {
    let fx = fixture();
    let cases = fx["zcdp_to_approx_dp"].as_array().unwrap();
    let mut worst = 0.0f64;
    for case in cases {
        let (rho, delta, want) = (f(case, "rho"), f(case, "delta"), f(case, "epsilon"));
        let eps = zcdp_to_approx_dp(rho, delta).unwrap();
        let err = rel_err(eps, want);
        assert!(err <= 1e-9, "ρ={rho} δ={delta}: ε {eps} vs OpenDP {want}");
        worst = worst.max(err);
    }
    println!(
        "zCDP→(ε,δ): {} cases, max relative error vs OpenDP {worst:.3e}",
        cases.len()
    );
}

#[test]
fn ledger_export_replays_in_dp_accounting() {
    let fx = fixture();
    let case = &fx["ledger_replay"];
    let delta = f(case, "delta");
    let mut ledger = Ledger::new(delta).unwrap();
    let mut rdp = RdpAccountant::new();
    for (i, r) in case["releases"].as_array().unwrap().iter().enumerate() {
        let (c, s) = (f(r, "clip_norm"), f(r, "noise_stddev"));
        ledger
            .append(ReleaseRecord {
                time_ms: 1_700_000_000_000 + i as u64,
                purpose: "reference".into(),
                round_id: format!("r{i}"),
                model_version: "v1".into(),
                params: ReleaseParams::DiscreteGaussian {
                    clip_norm: c,
                    granularity: 0.01,
                    noise_stddev: s,
                    dimension: 131,
                },
                payload_sha256: feedloop_privacy::ledger::sha256_hex(&[i as u8]),
            })
            .unwrap();
        rdp.compose_gaussian(s / (2.0 * c), 1).unwrap();
    }
    let export: Value = serde_json::from_str(&ledger.to_json()).unwrap();
    assert_eq!(
        export["dp_event"], case["dp_event"],
        "the exported DpEvent is what the Python replay consumed"
    );
    let (eps, _) = rdp.epsilon_and_optimal_order(delta).unwrap();
    let want = f(case, "epsilon_rdp");
    assert!(
        rel_err(eps, want) <= 1e-3,
        "ledger ε {eps} vs dp-accounting replay {want}"
    );
}

#[test]
fn categorical_response_matches_dp_accountings_pld_for_k_buckets() {
    use feedloop_privacy::categorical_response::CategoricalResponse;
    let fx = fixture();
    let cases = fx["categorical_response"].as_array().unwrap();
    assert_eq!(cases.len(), 25);
    for case in cases {
        let eps = f(case, "requested_epsilon");
        let k = case["categories"].as_u64().unwrap() as u32;
        let mechanism = CategoricalResponse::new(eps, k).unwrap();
        // The same table as the reference (up to the 2^53 grid) ...
        assert!(
            rel_err(
                mechanism.dp_accounting_noise_parameter(),
                f(case, "noise_parameter")
            ) < 1e-12,
            "{case}: noise parameter {}",
            mechanism.dp_accounting_noise_parameter()
        );
        // ... and its exact ε is what dp-accounting's PLD accountant finds, within the PLD's
        // value discretization (1e-4, rounded up), never above the request.
        let pld = f(case, "epsilon_pld");
        assert!(
            mechanism.epsilon() <= eps,
            "{case}: {}",
            mechanism.epsilon()
        );
        assert!(
            (pld - mechanism.epsilon()).abs() <= 2e-4,
            "{case}: exact ε {} vs dp-accounting {pld}",
            mechanism.epsilon()
        );
    }
}

#[test]
fn pld_epsilon_matches_dp_accountings_pld_accountant_within_0_5_percent() {
    use feedloop_privacy::accounting::PldAccountant;
    let fx = fixture();
    let cases = fx["pld"].as_array().unwrap();
    assert_eq!(cases.len(), 3 * 4 * 4 * 2 + 5 * 2);
    let mut worst = (0.0f64, String::new());
    // The accountant for one (kind, σ, q, steps) serves every δ of that case.
    let mut cached: Option<((String, f64, f64, u64), PldAccountant)> = None;
    for case in cases {
        let kind = case["kind"].as_str().unwrap().to_string();
        let (sigma, q, steps, delta) = (
            f(case, "noise_multiplier"),
            f(case, "sampling_probability"),
            f(case, "steps") as u64,
            f(case, "delta"),
        );
        let key = (kind.clone(), sigma, q, steps);
        if cached.as_ref().map(|(k, _)| k) != Some(&key) {
            let mut acc = PldAccountant::new();
            if kind == "gaussian" {
                acc.compose_gaussian(sigma, steps).unwrap();
            } else {
                acc.compose_poisson_subsampled_gaussian(sigma, q, steps)
                    .unwrap();
            }
            cached = Some((key, acc));
        }
        let eps = cached.as_ref().unwrap().1.epsilon(delta).unwrap();
        let want = f(case, "epsilon");
        let err = rel_err(eps, want);
        let label = format!("{kind} σ={sigma} q={q} steps={steps} δ={delta}");
        assert!(err <= 5e-3, "{label}: ε {eps} vs dp-accounting {want}");
        if err > worst.0 {
            worst = (err, label);
        }
    }
    println!(
        "PLD: {} cases, max relative ε error {:.3e} at {}",
        cases.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn ddgauss_epsilon_matches_the_reference_port_within_0_5_percent() {
    use feedloop_privacy::accounting::{ddgauss_epsilon, DistributedDiscreteGaussian};
    let fx = fixture();
    let cases = fx["ddgauss"].as_array().unwrap();
    assert_eq!(cases.len(), 3 * 2 * 2 * 3 * 3);
    let mut worst = (0.0f64, String::new());
    let mut order_mismatches = 0;
    for case in cases {
        let params = DistributedDiscreteGaussian {
            clients: f(case, "clients") as u64,
            client_stddev: f(case, "client_sigma"),
            granularity: f(case, "granularity"),
            dimension: f(case, "dimension") as u64,
            l2_sensitivity: f(case, "l2_sensitivity"),
            beta: f(case, "beta"),
            sampling_rate: f(case, "sampling_rate"),
            steps: f(case, "steps") as u64,
        };
        let (eps, order) = ddgauss_epsilon(&params, f(case, "delta")).unwrap();
        let want = f(case, "epsilon");
        let err = rel_err(eps, want);
        assert!(err <= 5e-3, "{params:?}: ε {eps} vs reference {want}");
        if order != f(case, "order") {
            order_mismatches += 1;
        }
        if err > worst.0 {
            worst = (err, format!("{params:?}"));
        }
    }
    println!(
        "ddgauss: {} cases, max relative ε error {:.3e} at {}, optimal-order mismatches {order_mismatches}",
        cases.len(),
        worst.0,
        worst.1
    );
}
