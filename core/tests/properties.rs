//! Properties that must hold for any text: no panic, ids inside the vocabulary, finite scores, and a
//! ranking that is a sorted permutation of the input.

use std::sync::OnceLock;

use feedloop_core::RewardModel;
use proptest::prelude::*;

fn model() -> &'static RewardModel {
    static MODEL: OnceLock<RewardModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        RewardModel::from_bytes(include_bytes!("../../models/feedloop-default.onnx")).unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn token_ids_stay_inside_vocabulary_and_limit(text in any::<String>()) {
        let m = model();
        let ids = m.token_ids(&text);
        prop_assert!(ids.len() <= m.info().max_tokens);
        prop_assert!(ids.iter().all(|&id| (id as usize) < m.info().vocab_size));
    }

    #[test]
    fn ranking_is_a_sorted_permutation_with_finite_scores(
        context in any::<String>(),
        candidates in prop::collection::vec(any::<String>(), 0..8),
    ) {
        let ranking = model().rank(&context, &candidates).unwrap();
        let mut indices: Vec<usize> = ranking.iter().map(|r| r.index).collect();
        indices.sort_unstable();
        prop_assert_eq!(indices, (0..candidates.len()).collect::<Vec<_>>());
        prop_assert!(ranking.iter().all(|r| r.score.is_finite()));
        prop_assert!(ranking.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
