//! Native benchmarks: ranking 100 candidates end to end, embedding alone, and tokenizer throughput.
//! `make bench-native`; numbers go in the issue notes, never into assertions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use feedloop_core::RewardModel;

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

criterion_group!(benches, rank, tokenizer);
criterion_main!(benches);
