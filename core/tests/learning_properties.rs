//! Properties of feedback weights, per-candidate caps and per-example gradient clipping, for any input.

use std::sync::OnceLock;

use feedloop_core::feedback::{KINDS, MAX_WEIGHT};
use feedloop_core::learning::{clipped_gradient, sgd_step};
use feedloop_core::{
    Candidate, Example, FeedbackLoop, FeedbackWeights, LearningConfig, LocalLearningState,
    RawFeedback, RewardModel,
};
use proptest::prelude::*;

fn model() -> &'static RewardModel {
    static MODEL: OnceLock<RewardModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        RewardModel::from_bytes(include_bytes!("../../models/feedloop-default.onnx")).unwrap()
    })
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

/// Any f32, extremes included.
fn any_float() -> impl Strategy<Value = f32> {
    prop_oneof![
        -10.0f32..10.0,
        Just(f32::MAX),
        Just(f32::MIN),
        Just(f32::MIN_POSITIVE / 2.0),
        Just(f32::NAN),
        Just(f32::INFINITY),
        any::<f32>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A clipped gradient is never longer than the clip, and a non-finite one is refused, never used.
    #[test]
    fn clipped_gradients_respect_the_clip(
        theta in prop::collection::vec(any_float(), 6),
        x in prop::collection::vec(any_float(), 6),
        label in 0.0f32..=1.0,
        clip in 0.01f32..10.0,
    ) {
        let example = Example { id: 0, x: x.clone(), label, weight: 1.0 };
        match clipped_gradient(&theta, &example, clip) {
            Some(g) => {
                prop_assert!(g.iter().all(|v| v.is_finite()));
                prop_assert!(norm(&g) <= f64::from(clip) * (1.0 + 1e-5));
            }
            None => prop_assert!(x.iter().any(|v| !v.is_finite()) || theta.iter().any(|v| !v.is_finite())),
        }
    }

    /// One SGD step moves the delta by at most η·(w·G + λ·‖δ‖) and never makes it non-finite.
    #[test]
    fn one_step_is_bounded(
        x in prop::collection::vec(-1e6f32..1e6, 5),
        delta in prop::collection::vec(-3.0f32..3.0, 5),
        label in 0.0f32..=1.0,
        weight in 0.0f32..=MAX_WEIGHT,
    ) {
        let config = LearningConfig::default();
        let global = vec![0.5; 5];
        let mut state = LocalLearningState { base_version: "t".into(), delta: delta.clone(), example_count: 0 };
        let example = Example { id: 0, x, label, weight };
        prop_assert!(sgd_step(&mut state, &global, &example, &config));
        let moved: Vec<f32> = state.delta.iter().zip(&delta).map(|(a, b)| a - b).collect();
        let bound = f64::from(config.learning_rate)
            * (f64::from(weight) * f64::from(config.clip_norm) + f64::from(config.l2) * norm(&delta));
        prop_assert!(norm(&moved) <= bound * (1.0 + 1e-4) + 1e-6);
        prop_assert!(state.delta.iter().all(|v| v.is_finite()));
    }

    /// Weights outside [0, MAX_WEIGHT] (or NaN) are refused; valid ones give weights in range.
    #[test]
    fn weights_are_validated(w in any_float(), cap in 0u32..10) {
        let weights = FeedbackWeights { click: w, max_events_per_candidate: cap, ..FeedbackWeights::default() };
        let valid = w.is_finite() && (0.0..=MAX_WEIGHT).contains(&w) && cap > 0;
        prop_assert_eq!(weights.validate().is_ok(), valid);
    }

    /// Whatever sequence of events arrives, no candidate teaches more than the cap, every event is
    /// logged, and the learned count matches the examples learned.
    #[test]
    fn caps_hold_for_any_event_sequence(
        events in prop::collection::vec((0usize..10, 0usize..4, 0usize..4, 1u32..6, any::<bool>()), 1..40),
        cap in 1u32..4,
    ) {
        let weights = FeedbackWeights { max_events_per_candidate: cap, ..FeedbackWeights::default() };
        let mut fl = FeedbackLoop::new(model().clone(), weights, LearningConfig::default(), 1).unwrap();
        let texts = ["alpha answer", "beta answer", "gamma reply", "delta note"];
        let ids = ["a", "b", "c", "d"];
        let candidates: Vec<Candidate> = ids.iter().zip(texts).map(|(id, text)| Candidate { id, text }).collect();
        fl.rank("a question", &candidates).unwrap();
        let mut learned = 0u64;
        for (kind, i, j, stars, up) in &events {
            let raw = RawFeedback {
                kind: Some(KINDS[*kind].into()),
                candidate: Some(ids[*i].into()),
                winner: Some(ids[*i].into()),
                loser: Some(ids[*j].into()),
                up: Some(*up),
                stars: Some(f64::from(*stars)),
                text: Some("an edited answer".into()),
                category: Some("wrong".into()),
                ms: Some(6000.0),
                ..RawFeedback::default()
            };
            match fl.record(raw, 1e12) {
                Ok(outcome) => learned += u64::from(outcome.learned),
                Err(e) => prop_assert!(KINDS[*kind] == "pairwise" && i == j, "{e}"),
            }
        }
        let state = fl.state();
        prop_assert!(state.events_per_candidate.values().all(|&n| n <= cap));
        prop_assert_eq!(state.learning.example_count, learned);
        prop_assert!(state.learning.delta.iter().all(|v| v.is_finite()));
    }
}
