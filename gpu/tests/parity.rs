//! The GPU kernels against the CPU path of feedloop-core, on the native adapter (lavapipe in CI):
//! scores, the embedding bag on real texts through the bundled model, and learning gradients.

mod common;

use common::{assert_close, backend, own_backend, Rng};
use feedloop_core::learning::Example;
use feedloop_core::{Embeddings, RewardModel};
use feedloop_gpu::{cpu, fallback, GpuError};
use pollster::block_on;
use proptest::prelude::*;

const D: usize = 64;
const MAX_TOKENS: usize = 512;

#[test]
fn scores_match_the_cpu_for_1_100_and_10000_candidates() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng::new(1);
    for n in [1, 100, 10_000] {
        let context = rng.unit_vector(D);
        let candidates = rng.embeddings(n, D, MAX_TOKENS);
        let head = rng.head(D);
        let on_gpu = block_on(gpu.score(&context, &candidates, None, &head, MAX_TOKENS)).unwrap();
        let on_cpu = cpu::score(&context, &candidates, None, &head, MAX_TOKENS);
        let worst = assert_close(&format!("scores (N = {n})"), &on_gpu, &on_cpu);
        eprintln!("N = {n}: largest relative difference {worst:e}");
    }
}

#[test]
fn lexical_heads_score_like_the_cpu_and_refuse_missing_values() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng::new(11);
    for n in [1, 100, 10_000] {
        let context = rng.unit_vector(D);
        let candidates = rng.embeddings(n, D, MAX_TOKENS);
        let head = rng.lexical_head(D);
        let lexical = rng.lexical_values(n);
        let on_gpu =
            block_on(gpu.score(&context, &candidates, Some(&lexical), &head, MAX_TOKENS)).unwrap();
        let on_cpu = cpu::score(&context, &candidates, Some(&lexical), &head, MAX_TOKENS);
        let worst = assert_close(&format!("lexical scores (N = {n})"), &on_gpu, &on_cpu);
        eprintln!("lexical, N = {n}: largest relative difference {worst:e}");
        let resident = block_on(gpu.upload_candidates(&candidates, MAX_TOKENS)).unwrap();
        let again =
            block_on(gpu.score_resident(&resident, &context, Some(&lexical), &head)).unwrap();
        assert_close("resident lexical scores", &again, &on_cpu);
        let missing = block_on(gpu.score(&context, &candidates, None, &head, MAX_TOKENS));
        assert!(
            matches!(missing, Err(GpuError::InvalidInput(_))),
            "{missing:?}"
        );
        let short = block_on(gpu.score(
            &context,
            &candidates,
            Some(&lexical[1..]),
            &head,
            MAX_TOKENS,
        ));
        assert!(matches!(short, Err(GpuError::InvalidInput(_))), "{short:?}");
    }
    let plain = rng.head(D);
    let candidates = rng.embeddings(5, D, MAX_TOKENS);
    let extra = block_on(gpu.score(
        &rng.unit_vector(D),
        &candidates,
        Some(&[0.5; 5]),
        &plain,
        MAX_TOKENS,
    ));
    assert!(matches!(extra, Err(GpuError::InvalidInput(_))), "{extra:?}");
}

#[test]
fn resident_candidates_score_like_uploaded_ones() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng::new(2);
    let candidates = rng.embeddings(777, D, MAX_TOKENS);
    let resident = block_on(gpu.upload_candidates(&candidates, MAX_TOKENS)).unwrap();
    assert_eq!(resident.len(), 777);
    // Several contexts and heads against the same resident candidates.
    for _ in 0..3 {
        let context = rng.unit_vector(D);
        let head = rng.head(D);
        let on_gpu = block_on(gpu.score_resident(&resident, &context, None, &head)).unwrap();
        assert_close(
            "resident scores",
            &on_gpu,
            &cpu::score(&context, &candidates, None, &head, MAX_TOKENS),
        );
    }
}

#[test]
fn empty_and_mismatched_inputs() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng::new(3);
    let head = rng.head(D);
    let none = rng.embeddings(0, D, MAX_TOKENS);
    assert!(
        block_on(gpu.score(&rng.unit_vector(D), &none, None, &head, MAX_TOKENS))
            .unwrap()
            .is_empty()
    );
    let some = rng.embeddings(3, D, MAX_TOKENS);
    let wrong_context =
        block_on(gpu.score(&rng.unit_vector(D + 1), &some, None, &head, MAX_TOKENS));
    assert!(matches!(wrong_context, Err(GpuError::InvalidInput(_))));
    let bad = Embeddings {
        dimensions: D,
        values: vec![0.0; 5],
        token_counts: vec![1, 2],
        token_ids: Vec::new(),
    };
    let bad = block_on(gpu.score(&rng.unit_vector(D), &bad, None, &head, MAX_TOKENS));
    assert!(matches!(bad, Err(GpuError::InvalidInput(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any batch size and width (the kernels take D from the input, the grid any N).
    #[test]
    fn scores_match_for_random_shapes(seed in any::<u64>(), n in 1usize..600, d in 1usize..130) {
        let Some(gpu) = backend() else { return Ok(()) };
        let mut rng = Rng::new(seed);
        let context = rng.unit_vector(d);
        let candidates = rng.embeddings(n, d, MAX_TOKENS);
        let head = rng.head(d);
        let on_gpu = block_on(gpu.score(&context, &candidates, None, &head, MAX_TOKENS)).unwrap();
        assert_close("scores", &on_gpu, &cpu::score(&context, &candidates, None, &head, MAX_TOKENS));
    }
}

fn texts() -> Vec<String> {
    let mut texts: Vec<String> = [
        "how do I reset my password?",
        "Open Settings › Security and choose “Reset password”.",
        "Bananas are yellow.",
        "",
        "   ",
        "!!!",
        "Crème brûlée, naïve café — déjà vu.",
        "日本語のテキストと English mixed 混合",
        "emoji 🎉🚀 and symbols ∑∫√",
        "The quick brown fox jumps over the lazy dog. ",
        "a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Past max_tokens: the model truncates, and so do the ids handed to the GPU.
    texts.push("the password reset link expires after one hour ".repeat(80));
    texts
}

#[test]
fn embedding_bag_matches_the_bundled_model_on_real_texts() {
    let Some(gpu) = backend() else { return };
    let model = RewardModel::bundled().unwrap();
    let table = block_on(gpu.upload_token_table(&model)).unwrap();
    let texts = texts();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| model.token_ids(t)).collect();
    assert!(ids.iter().any(Vec::is_empty), "covers an empty text");
    assert!(
        ids.iter().any(|r| r.len() == MAX_TOKENS),
        "covers a truncated text"
    );

    let on_gpu = block_on(gpu.embed_bag(&table, &ids)).unwrap();
    let on_cpu = model.embed(&texts).unwrap();
    assert_eq!(on_gpu.dimensions, on_cpu.dimensions);
    assert_eq!(on_gpu.token_counts, on_cpu.token_counts);
    let worst = assert_close("embeddings", &on_gpu.values, &on_cpu.values);
    eprintln!("embedding bag: largest relative difference {worst:e}");
    let empty = texts.iter().position(|t| t.is_empty()).unwrap();
    assert!(on_gpu.row(empty).iter().all(|&v| v == 0.0));

    // End to end: GPU embeddings, GPU head ⇒ the model's own scores.
    let context = block_on(gpu.embed_bag(&table, &ids[..1])).unwrap();
    let lexical = model.lexical_values(&ids[0], &on_gpu).unwrap();
    let scores = block_on(gpu.score(
        context.row(0),
        &on_gpu,
        lexical.as_deref(),
        model.head(),
        MAX_TOKENS,
    ))
    .unwrap();
    assert_close("scores", &scores, &model.score(&texts[0], &texts).unwrap());
}

#[test]
fn embedding_bag_matches_on_many_random_token_ids() {
    let Some(gpu) = backend() else { return };
    let model = RewardModel::bundled().unwrap();
    let table = block_on(gpu.upload_token_table(&model)).unwrap();
    let vocab = model.info().vocab_size;
    let mut rng = Rng::new(4);
    let ids: Vec<Vec<u32>> = (0..300)
        .map(|_| {
            let len = rng.below(40);
            (0..len).map(|_| rng.below(vocab) as u32).collect()
        })
        .collect();
    let on_gpu = block_on(gpu.embed_bag(&table, &ids)).unwrap();
    let on_cpu = model.embed_ids(&ids).unwrap();
    assert_close("embeddings", &on_gpu.values, &on_cpu.values);
}

#[test]
fn embedding_bag_refuses_what_the_model_refuses() {
    let Some(gpu) = backend() else { return };
    let model = RewardModel::bundled().unwrap();
    let table = block_on(gpu.upload_token_table(&model)).unwrap();
    let vocab = model.info().vocab_size as u32;
    let outside = block_on(gpu.embed_bag(&table, &[vec![1, vocab]]));
    assert!(matches!(outside, Err(GpuError::InvalidInput(_))));
    assert!(model.embed_ids(&[vec![1, vocab]]).is_err());
    let too_long = block_on(gpu.embed_bag(&table, &[vec![1; MAX_TOKENS + 1]]));
    assert!(matches!(too_long, Err(GpuError::InvalidInput(_))));
    assert!(block_on(gpu.embed_bag(&table, &[])).unwrap().is_empty());
}

/// Pointwise and pairwise examples as learning makes them: φ or φ_w − φ_l, labels in [0, 1].
fn examples(rng: &mut Rng, n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let x = if i % 2 == 0 {
                rng.features(D, MAX_TOKENS)
            } else {
                let (w, l) = (rng.features(D, MAX_TOKENS), rng.features(D, MAX_TOKENS));
                w.iter().zip(&l).map(|(a, b)| a - b).collect()
            };
            Example {
                id: i as u64,
                x,
                label: [0.0, 1.0, 0.25, 0.5, 0.75][rng.below(5)],
                weight: [1.0, 0.5, 0.1, 2.0][rng.below(4)],
            }
        })
        .collect()
}

#[test]
fn gradients_match_the_cpu() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng::new(5);
    for n in [1, 100, 10_000] {
        let examples = examples(&mut rng, n);
        let theta: Vec<f32> = (0..2 * D + 3).map(|_| 2.0 * rng.signed()).collect();
        // 1.0 (the default) rarely clips these; 0.05 clips most examples.
        for clip in [1.0, 0.05] {
            let on_gpu = block_on(gpu.gradient(&theta, &examples, clip)).unwrap();
            let on_cpu = cpu::gradient(&theta, &examples, clip);
            let worst = assert_close(
                &format!("gradient (N = {n}, clip {clip})"),
                &on_gpu,
                &on_cpu,
            );
            eprintln!("gradient N = {n}, clip {clip}: largest relative difference {worst:e}");
        }
    }
}

#[test]
fn gradients_skip_and_clip_extreme_examples_as_the_cpu_does() {
    let Some(gpu) = backend() else { return };
    let p = 2 * D + 3;
    let mut rng = Rng::new(6);
    let mut all = examples(&mut rng, 20);
    let mut huge = vec![0.0; p];
    huge[0] = 3e38;
    huge[1] = -3e38;
    let mut nan = vec![0.5; p];
    nan[7] = f32::NAN;
    let mut infinite = vec![0.5; p];
    infinite[3] = f32::INFINITY;
    for (i, x) in [huge, nan, infinite].into_iter().enumerate() {
        all.push(Example {
            id: 100 + i as u64,
            x,
            label: 1.0,
            weight: 1.0,
        });
    }
    all.push(Example {
        id: 200,
        x: vec![0.1; p],
        label: f32::NAN,
        weight: 1.0,
    });
    let theta: Vec<f32> = (0..p).map(|_| rng.signed()).collect();
    let on_gpu = block_on(gpu.gradient(&theta, &all, 1.0)).unwrap();
    let on_cpu = cpu::gradient(&theta, &all, 1.0);
    assert!(on_cpu.iter().all(|g| g.is_finite()));
    assert_close("gradient", &on_gpu, &on_cpu);

    assert!(block_on(gpu.gradient(&theta, &[], 1.0))
        .unwrap()
        .iter()
        .all(|&g| g == 0.0));
    let wrong = block_on(gpu.gradient(&theta[1..], &all, 1.0));
    assert!(matches!(wrong, Err(GpuError::InvalidInput(_))));
    let bad_clip = block_on(gpu.gradient(&theta, &all, f32::NAN));
    assert!(matches!(bad_clip, Err(GpuError::InvalidInput(_))));
}

#[test]
fn a_lost_device_gives_an_error_not_a_panic() {
    let Some(gpu) = own_backend() else { return };
    let mut rng = Rng::new(7);
    let candidates = rng.embeddings(50, D, MAX_TOKENS);
    let (context, head) = (rng.unit_vector(D), rng.head(D));
    assert!(block_on(gpu.score(&context, &candidates, None, &head, MAX_TOKENS)).is_ok());
    gpu.destroy();
    let after = block_on(gpu.score(&context, &candidates, None, &head, MAX_TOKENS));
    assert!(matches!(after, Err(GpuError::DeviceLost(_))), "{after:?}");
    assert!(gpu.is_lost());
    let examples = examples(&mut rng, 10);
    let gradient = block_on(gpu.gradient(&head.to_vector(), &examples, 1.0));
    assert!(
        matches!(gradient, Err(GpuError::DeviceLost(_))),
        "{gradient:?}"
    );
    let gradient = block_on(gpu.gradient(&head.to_vector(), &[], 1.0));
    assert!(
        gradient.is_ok(),
        "nothing to compute, nothing sent to the GPU"
    );
}

#[test]
fn the_fallback_uses_the_gpu_for_large_batches_and_the_cpu_otherwise() {
    let Some(gpu) = own_backend() else { return };
    let mut rng = Rng::new(8);
    let (context, head) = (rng.unit_vector(D), rng.head(D));
    let small = rng.embeddings(10, D, MAX_TOKENS);
    let large = rng.embeddings(feedloop_gpu::GPU_MIN_CANDIDATES, D, MAX_TOKENS);

    let scored = block_on(fallback::score(
        Some(&gpu),
        false,
        &context,
        &small,
        None,
        &head,
        MAX_TOKENS,
    ));
    assert_eq!((scored.backend, &scored.gpu_error), ("cpu", &None));
    assert_eq!(
        scored.value,
        cpu::score(&context, &small, None, &head, MAX_TOKENS)
    );
    let scored = block_on(fallback::score(
        Some(&gpu),
        false,
        &context,
        &large,
        None,
        &head,
        MAX_TOKENS,
    ));
    let expected = if feedloop_gpu::use_gpu(large.len(), gpu.is_software()) {
        gpu.backend_name()
    } else {
        "cpu"
    };
    assert_eq!((scored.backend, &scored.gpu_error), (expected, &None));
    assert_close(
        "scores",
        &scored.value,
        &cpu::score(&context, &large, None, &head, MAX_TOKENS),
    );
    let scored = block_on(fallback::score(
        Some(&gpu),
        true,
        &context,
        &large,
        None,
        &head,
        MAX_TOKENS,
    ));
    assert_eq!(
        (scored.backend, &scored.gpu_error),
        (gpu.backend_name(), &None)
    );
    assert_close(
        "scores",
        &scored.value,
        &cpu::score(&context, &large, None, &head, MAX_TOKENS),
    );

    // A lost device: the CPU answers, and says why.
    gpu.destroy();
    let scored = block_on(fallback::score(
        Some(&gpu),
        true,
        &context,
        &small,
        None,
        &head,
        MAX_TOKENS,
    ));
    assert_eq!(scored.backend, "cpu");
    assert_eq!(
        scored.value,
        cpu::score(&context, &small, None, &head, MAX_TOKENS)
    );
    let examples = examples(&mut rng, 10);
    let theta = head.to_vector();
    let computed = block_on(fallback::gradient(Some(&gpu), &theta, &examples, 1.0));
    assert_eq!(computed.backend, "cpu");
    assert_eq!(computed.value, cpu::gradient(&theta, &examples, 1.0));
    assert_eq!(feedloop_gpu::backend_name(None), "cpu");
}

#[test]
fn the_choice_is_by_batch_size_and_never_on_a_software_adapter() {
    use feedloop_gpu::{use_gpu, GPU_MIN_CANDIDATES};
    assert!(!use_gpu(GPU_MIN_CANDIDATES - 1, false));
    assert!(use_gpu(GPU_MIN_CANDIDATES, false));
    assert!(!use_gpu(1_000_000, true));
}
