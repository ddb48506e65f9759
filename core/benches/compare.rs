//! feedloop (tract) on the token ids `tools/bench_native.py` wrote (FEEDLOOP_BENCH_INPUTS), so that it
//! and onnxruntime time the same work: embed + score 1, 32 and 100 candidates. That script reads
//! criterion's estimates. Without the variable (e.g. `make test`'s smoke run) the same pools are built
//! here from www/samples.json with feedloop's tokenizer.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use feedloop_core::{PairFeatures, RewardModel};
use serde::Deserialize;

#[derive(Deserialize)]
struct Inputs {
    context_ids: Vec<u32>,
    pools: std::collections::BTreeMap<String, Vec<Vec<u32>>>,
}

fn embed_and_score(model: &RewardModel, context: &[u32], candidates: &[Vec<u32>]) -> Vec<f32> {
    let mut ids = Vec::with_capacity(candidates.len() + 1);
    ids.push(context.to_vec());
    ids.extend_from_slice(candidates);
    let e = model.embed_ids(&ids).expect("embed");
    let max_tokens = model.info().max_tokens;
    (1..e.len())
        .map(|i| {
            let f = PairFeatures::new(e.row(0), e.row(i), e.token_counts[i], max_tokens);
            model.head().score(&f)
        })
        .collect()
}

/// www/samples.js `candidatePool()`, in Rust.
fn pools_from_samples(model: &RewardModel) -> Inputs {
    #[derive(Deserialize)]
    struct Sample {
        question: String,
        candidates: Vec<String>,
    }
    let samples: Vec<Sample> =
        serde_json::from_str(include_str!("../../www/samples.json")).expect("samples");
    let answers: Vec<&str> = samples
        .iter()
        .flat_map(|s| s.candidates.iter().map(String::as_str))
        .collect();
    const PREFIXES: [&str; 6] = [
        "",
        "In short: ",
        "Good question. ",
        "As far as I know, ",
        "Update: ",
        "Note that ",
    ];
    let pool = |n: usize| -> Vec<Vec<u32>> {
        (0..n)
            .map(|i| {
                let round = i / answers.len();
                let suffix = if round >= PREFIXES.len() {
                    format!(" (#{round})")
                } else {
                    String::new()
                };
                let text = format!(
                    "{}{}{suffix}",
                    PREFIXES[round % PREFIXES.len()],
                    answers[i % answers.len()]
                );
                model.token_ids(&text)
            })
            .collect()
    };
    Inputs {
        context_ids: model.token_ids(&samples[0].question),
        pools: [1, 32, 100]
            .iter()
            .map(|n| (n.to_string(), pool(*n)))
            .collect(),
    }
}

fn compare(c: &mut Criterion) {
    let model = RewardModel::bundled().expect("bundled model");
    let inputs = match std::env::var("FEEDLOOP_BENCH_INPUTS") {
        Ok(path) => serde_json::from_str(&std::fs::read_to_string(&path).expect("read inputs"))
            .expect("inputs json"),
        Err(_) => pools_from_samples(&model),
    };
    let mut group = c.benchmark_group("score_token_ids");
    for (size, pool) in &inputs.pools {
        group.bench_with_input(BenchmarkId::from_parameter(size), pool, |b, pool| {
            b.iter(|| embed_and_score(&model, &inputs.context_ids, pool))
        });
    }
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
