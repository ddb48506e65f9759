//! Native benchmarks: ranking 100 candidates end to end, tokenizer throughput, and the feedback loop
//! (re-ranking remembered candidates; one event to a re-ranked list).
//! `make bench-native`; numbers go in the issue notes, never into assertions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use feedloop_core::{
    Candidate, FeedbackLoop, FeedbackWeights, LearningConfig, RawFeedback, RewardModel,
};

/// Real-ish candidate answers of varied length (help-desk style), cycled to the batch size.
const ANSWERS: [&str; 10] = [
    "To reset your password, open the sign-in page, choose 'Forgot password' and follow the link we email you.",
    "You can change your password any time under Settings, Security, Change password.",
    "Passwords must be at least twelve characters long and may not reuse your last five passwords.",
    "If you no longer have access to your email address, contact support with a photo ID and we will verify your account.",
    "Our offices are closed on public holidays; replies may take up to two business days.",
    "Two-factor authentication adds a one-time code from your phone to every sign-in.",
    "Refunds are issued to the original payment method within 5 to 10 business days.",
    "The museum is open daily from nine to five, with late opening on Thursdays.",
    "Bananas are a good source of potassium and vitamin B6.",
    "Clearing your browser cache and cookies often fixes sign-in loops after a password change.",
];

fn candidates(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{} (option {i})", ANSWERS[i % ANSWERS.len()]))
        .collect()
}

fn rank(c: &mut Criterion) {
    let model = RewardModel::bundled().expect("bundled model");
    let mut group = c.benchmark_group("rank");
    for n in [1usize, 32, 100] {
        let cands = candidates(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &cands, |b, cands| {
            b.iter(|| model.rank("How do I reset my password?", cands).unwrap())
        });
    }
    group.finish();
}

fn tokenizer(c: &mut Criterion) {
    let model = RewardModel::bundled().expect("bundled model");
    let text: String = candidates(100).join(" ");
    let mut group = c.benchmark_group("tokenizer");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("encode", |b| b.iter(|| model.tokenizer().encode(&text)));
    group.finish();
}

/// The feedback loop: re-ranking 100 remembered candidates, and one event → re-ranked list.
fn feedback(c: &mut Criterion) {
    let model = RewardModel::bundled().expect("bundled model");
    let texts = candidates(100);
    let ids: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    let list: Vec<Candidate> = ids
        .iter()
        .zip(&texts)
        .map(|(id, text)| Candidate { id, text })
        .collect();
    let weights = FeedbackWeights {
        max_events_per_candidate: u32::MAX,
        ..FeedbackWeights::default()
    };
    let mut fl = FeedbackLoop::new(model, weights, LearningConfig::default(), 1).unwrap();
    let question = "How do I reset my password?";
    fl.rank(question, &list).unwrap();
    let mut group = c.benchmark_group("feedback");
    group.bench_function("rerank_100_cached", |b| {
        b.iter(|| fl.rank(question, &list).unwrap())
    });
    let mut i = 0;
    group.bench_function("record_and_rerank_100", |b| {
        b.iter(|| {
            i += 1;
            let event = RawFeedback {
                kind: Some("thumbs".into()),
                candidate: Some(ids[i % 100].clone()),
                up: Some(i % 2 == 0),
                ..RawFeedback::default()
            };
            fl.record(event, 1e12).unwrap();
            fl.rank(question, &list).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, rank, tokenizer, feedback);
criterion_main!(benches);
