//! Budget invariants: never over budget, spending never decreases, merges never lose spending,
//! and the server cannot lower the device's noise floor.

use feedloop_privacy::budget::{BudgetState, PrivacyPolicy, DAY_MS};
use feedloop_privacy::{accounting::zcdp_to_approx_dp, PrivacyError, PrivatizerConfig};
use proptest::prelude::*;

fn policy() -> PrivacyPolicy {
    // ε = 4 at δ = 1e-6 per 30 days; no single release above ρ = 0.25 (σ/(2C) ≥ √2).
    PrivacyPolicy::new(4.0, 1e-6, 30 * DAY_MS, 0.25).unwrap()
}

/// A release attempt: (ms since the previous attempt, ρ, which tab).
fn attempts() -> impl Strategy<Value = Vec<(u64, f64, usize)>> {
    prop::collection::vec((0u64..3 * DAY_MS, 0.0f64..0.4, 0usize..2), 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn never_over_budget_and_spending_never_decreases(steps in attempts()) {
        let p = policy();
        let mut state = BudgetState::new();
        let mut now = 1_700_000_000_000u64;
        let mut last_lifetime = 0.0;
        for (i, (dt, rho, _)) in steps.into_iter().enumerate() {
            now += dt;
            let before = state.clone();
            match state.charge(&p, &format!("release-{i}"), rho, now) {
                Ok(charge) => {
                    prop_assert!(charge.window_rho <= p.total_rho());
                    prop_assert!(rho <= p.max_rho_per_release());
                    // The persisted snapshot is the new state, including this spend.
                    prop_assert_eq!(BudgetState::from_json(&charge.state_json).unwrap(), state.clone());
                }
                Err(PrivacyError::BudgetRefused(_)) => prop_assert_eq!(&state, &before, "a refusal must not spend"),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            prop_assert!(state.window_rho(&p, now) <= p.total_rho() * (1.0 + 1e-12));
            prop_assert!(zcdp_to_approx_dp(state.window_rho(&p, now), p.delta()).unwrap() <= p.epsilon() * (1.0 + 1e-9));
            prop_assert!(state.lifetime_rho() >= last_lifetime);
            last_lifetime = state.lifetime_rho();
        }
    }

    #[test]
    fn merging_tabs_never_loses_spending(steps in attempts()) {
        let p = policy();
        let mut tabs = [BudgetState::new(), BudgetState::new()];
        let mut now = 1_700_000_000_000u64;
        for (i, (dt, rho, tab)) in steps.into_iter().enumerate() {
            now += dt;
            let _ = tabs[tab].charge(&p, &format!("tab{tab}-{i}"), rho, now);
        }
        let mut ab = tabs[0].clone();
        ab.merge(&tabs[1]);
        let mut ba = tabs[1].clone();
        ba.merge(&tabs[0]);
        prop_assert_eq!(&ab, &ba, "merge is commutative");
        let mut again = ab.clone();
        again.merge(&tabs[1]);
        prop_assert_eq!(&again, &ab, "merge is idempotent");
        // No spend of either tab is lost; totals are at least each tab's.
        for tab in &tabs {
            for (id, spend) in tab.spends() {
                prop_assert!(ab.spends().any(|(i, s)| i == id && s.rho >= spend.rho));
            }
            prop_assert!(ab.lifetime_rho() >= tab.lifetime_rho());
        }
        prop_assert_eq!(ab.len(), tabs[0].len() + tabs[1].len());
    }
}

#[test]
fn refuses_a_round_with_weaker_noise_than_the_policy() {
    let p = policy();
    assert!(p
        .check_round(&PrivatizerConfig::new(1.0, 0.01, 3.0).unwrap())
        .is_ok()); // σ/(2C) = 1.5 ≥ √2
    let err = p
        .check_round(&PrivatizerConfig::new(1.0, 0.01, 2.0).unwrap())
        .unwrap_err(); // 1.0 < √2
    assert!(matches!(err, PrivacyError::BudgetRefused(_)), "{err}");
}

#[test]
fn budget_renews_after_the_window_but_lifetime_does_not() {
    let p = PrivacyPolicy::new(1.0, 1e-6, DAY_MS, 1.0).unwrap();
    let mut s = BudgetState::new();
    let t0 = 1_700_000_000_000u64;
    let rho = p.total_rho() * 0.6;
    s.charge(&p, "a", rho, t0).unwrap();
    assert!(
        s.charge(&p, "b", rho, t0 + 1000).is_err(),
        "second release would exceed the window total"
    );
    s.charge(&p, "c", rho, t0 + DAY_MS).unwrap();
    assert_eq!(s.lifetime_rho(), 2.0 * rho);
    // A clock that jumps backwards still counts the "future" spend.
    assert!(s.charge(&p, "d", rho, t0 - DAY_MS).is_err());
    // Ids are single-use.
    assert!(s.charge(&p, "c", 0.0, t0 + 10 * DAY_MS).is_err());
}

#[test]
fn persisted_state_round_trips_and_rejects_garbage() {
    let p = policy();
    let mut s = BudgetState::new();
    s.charge(&p, "x", 0.1, 5).unwrap();
    let json = s.to_json();
    assert_eq!(BudgetState::from_json(&json).unwrap(), s);
    assert!(
        BudgetState::from_json(r#"{"version":1,"spends":{"x":{"time_ms":1,"rho":-1.0}}}"#).is_err()
    );
    assert!(BudgetState::from_json(r#"{"version":2,"spends":{}}"#).is_err());
    let policy_json = serde_json::to_string(&p).unwrap();
    assert_eq!(
        serde_json::from_str::<PrivacyPolicy>(&policy_json).unwrap(),
        p
    );
    assert!(serde_json::from_str::<PrivacyPolicy>(
        r#"{"epsilon":-1,"delta":1e-6,"window_ms":1,"max_rho_per_release":1}"#
    )
    .is_err());
}
