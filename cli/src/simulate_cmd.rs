//! `feedloop simulate`: a federated simulation over real text, to see what privacy costs in ranking
//! quality.
//!
//! N simulated users share a population taste (a direction μ in the embedding space) with their own
//! variation (uᵢ = normalize(μ + τ·zᵢ)). Each round every user makes `choices` "A or B" choices
//! between real texts, drawn Bradley–Terry with noise (P(a ≻ b) = σ(β·uᵢ·(e_a − e_b))), and learns
//! them with the real client code (`feedloop_core::learning::learn`: clipped SGD with replay on the
//! personal delta); then contributes what it learned since its last contribution through the real
//! privatizer and wire format (`privatize` → `to_bytes` → the server's `decode_update`), and the
//! server's real aggregation (`fedavg_lattice` + the server optimizer) moves the global head. The
//! non-private run (ε = ∞) clips the same updates but adds no noise.
//!
//! `--aggregation secure` replaces the local noise with secure aggregation (`feedloop-secagg`), run
//! for real in process: each device clips and rounds its update without noise
//! (`clip_to_lattice`), shards it with Prio3SumVec and seals the shares with HPKE
//! (`seal_report`, through the report's bytes); the leader and the helper open their shares and
//! verify the proof together; the helper releases its aggregate share with exact discrete Gaussian
//! noise of the same σ, once, on the sum; the leader unshards and averages. The noise on the mean
//! falls from σ/√N (local) to σ/N.
//!
//! Reported per round: pairwise accuracy of the *global* head on held-out pairs, judged against the
//! population taste μ, and the ε each user has spent (zCDP composition over the rounds → (ε, δ)).
//! The noise is set so that all rounds together spend exactly the target ε per user.

use std::path::PathBuf;

use chacha20::rand_core::SeedableRng;
use clap::{Args, ValueEnum};
use feedloop_core::contribution::unreleased_delta;
use feedloop_core::learning::{learn, Example, LearningConfig, LocalLearningState};
use feedloop_core::RewardModel;
use feedloop_privacy::accounting::{max_rho_for_epsilon, zcdp_to_approx_dp};
use feedloop_privacy::sampler::DiscreteGaussian;
use feedloop_privacy::{
    clip_to_lattice, decode_update, privatize, ExpectedRound, PrivatizerConfig,
};
use feedloop_secagg::{
    helper_verify, leader_finish, leader_init, seal_report, unshard, Batch, HelperRequest,
    HelperResponse, HpkeKeyPair, Report, SecureRound, VerifyKey,
};
use feedloop_server::fedavg::{OptimizerState, ServerOptimizer};
use feedloop_server::{aggregate, fedavg_lattice, mean_of_lattice_sum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::CliResult;

#[derive(Args)]
pub struct SimulateArgs {
    /// Numbers of users (comma-separated: one run per value).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    users: Vec<usize>,
    /// Target ε per user over all rounds, at --delta ("inf": no privacy). Comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,inf")]
    epsilon: Vec<String>,
    /// δ for (ε, δ).
    #[arg(long, default_value_t = 1e-6)]
    delta: f64,
    /// Federated rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// "A or B" choices per user per round.
    #[arg(long, default_value_t = 5)]
    choices: usize,
    /// C: each contribution is clipped to this L2 norm.
    #[arg(long, default_value_t = 1.0)]
    clip_norm: f64,
    /// γ: the lattice granularity.
    #[arg(long, default_value_t = 1e-3)]
    granularity: f64,
    /// How updates are aggregated (comma-separated: one run per value): `local`, every device adds
    /// its own noise; `secure`, two aggregators (Prio3 + HPKE) and the helper adds the noise once,
    /// to the sum. Runs without privacy (ε = ∞) are the same plain average in both.
    #[arg(long, value_delimiter = ',', default_value = "local")]
    aggregation: Vec<Aggregation>,
    /// Server optimizer: fedavg, fedavgm or fedadam.
    #[arg(long, default_value = "fedavg")]
    optimizer: String,
    /// Server learning rate (default: the optimizer's).
    #[arg(long)]
    server_lr: Option<f64>,
    /// How much users differ from the population taste (τ).
    #[arg(long, default_value_t = 1.0)]
    heterogeneity: f32,
    /// How decisive choices are (β; smaller = noisier choices).
    #[arg(long, default_value_t = 10.0)]
    decisiveness: f32,
    /// Fraction of pairs held out for evaluation.
    #[arg(long, default_value_t = 0.3)]
    held_out: f64,
    /// Texts to rank, one per line (default: the demo's 40 answers, www/samples.json).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// At most this many texts from the corpus.
    #[arg(long, default_value_t = 400)]
    max_texts: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Repeat every run with this many seeds (--seed, --seed + 1, …): each seed draws its own
    /// population taste, train/held-out split, users and noise; the table shows mean ± sd.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Instead of learning: the staged-rollout loop (`evaluate_sim`): N users report thumbs
    /// through the real client metric path, the server's sequential test decides.
    #[arg(long)]
    evaluate: bool,
    /// --evaluate: runs per (N, drop).
    #[arg(long, default_value_t = 200)]
    runs: u64,
    /// --evaluate: how much lower the canary's true thumbs-up rate is (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,0.05,0.1")]
    drops: Vec<f64>,
    /// --evaluate: the control version's true thumbs-up rate.
    #[arg(long, default_value_t = 0.6)]
    base_rate: f64,
    /// --evaluate: the share of users served the canary.
    #[arg(long, default_value_t = 0.5)]
    canary_fraction: f64,
    /// --evaluate: ε of each thumbs report (randomized response).
    #[arg(long, default_value_t = 1.0)]
    metric_epsilon: f64,
    /// --evaluate: the tolerated drop (the server's --drift-margin).
    #[arg(long, default_value_t = 0.02)]
    margin: f64,
    /// --evaluate: the test's error rate at all looks (the server's --drift-alpha).
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// --evaluate: reports per arm before a verdict (the server's --drift-min-reports).
    #[arg(long, default_value_t = 100)]
    min_reports: u64,
    /// --evaluate: every device pins the helper and seals its report (the server's
    /// --secure-metrics); both aggregators are played here, batches released with noise.
    #[arg(long)]
    secure_metrics: bool,
    /// --evaluate --secure-metrics: reports per released batch (the server's --metric-batch).
    #[arg(long, default_value_t = 100)]
    metric_batch: u64,
    /// --evaluate --secure-metrics: the helper's σ per bucket; default √2/ε of --metric-epsilon
    /// (the same ρ per report as randomized response).
    #[arg(long)]
    metric_noise: Option<f64>,
    /// Also write the results as a Markdown table to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Aggregation {
    Local,
    Secure,
}

impl Aggregation {
    fn name(self) -> &'static str {
        match self {
            Aggregation::Local => "local",
            Aggregation::Secure => "secure",
        }
    }
}

/// The two aggregators of a secure run: their HPKE keys and shared verification key, and the
/// helper's noise (σ_lat = σ/γ, the privatizer's exact dyadic variance).
struct Aggregators {
    leader: HpkeKeyPair,
    helper: HpkeKeyPair,
    verify_key: VerifyKey,
    noise: DiscreteGaussian,
}

/// One secure round in process: the device's report through its bytes, the leader ↔ helper
/// exchange through theirs, both batches.
struct SecureRoundSim<'a> {
    aggregators: &'a Aggregators,
    round: SecureRound,
    leader: Batch,
    helper: Batch,
}

impl<'a> SecureRoundSim<'a> {
    fn new(
        aggregators: &'a Aggregators,
        round: usize,
        dimension: usize,
        config: &PrivatizerConfig,
    ) -> CliResult<Self> {
        let round = SecureRound::for_privatizer(round as u64, dimension, config, 1)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            aggregators,
            round,
            leader: Batch::new(round).map_err(|e| e.to_string())?,
            helper: Batch::new(round).map_err(|e| e.to_string())?,
        })
    }

    fn contribute<R: chacha20::rand_core::CryptoRng>(
        &mut self,
        update: &[f32],
        config: &PrivatizerConfig,
        rng: &mut R,
    ) -> CliResult<()> {
        let a = self.aggregators;
        let lattice = clip_to_lattice(update, config, rng).map_err(|e| e.to_string())?;
        let report = seal_report(
            lattice,
            &self.round,
            a.leader.public(),
            a.helper.public(),
            rng,
        )
        .map_err(|e| e.to_string())?;
        let report = Report::from_bytes(&report.to_bytes()).map_err(|e| e.to_string())?;
        let refused = |e: feedloop_secagg::SecAggError| {
            format!("an aggregator refused a simulated report: {e}")
        };
        let (pending, request) =
            leader_init(&self.round, &a.verify_key, &a.leader, &report).map_err(refused)?;
        let request = HelperRequest::from_bytes(&request.to_bytes()).map_err(refused)?;
        let (helper_share, response) =
            helper_verify(&self.round, &a.verify_key, &a.helper, &request).map_err(refused)?;
        let response = HelperResponse::from_bytes(&response.to_bytes()).map_err(refused)?;
        let leader_share = leader_finish(&self.round, pending, &response).map_err(refused)?;
        self.leader.add(leader_share).map_err(refused)?;
        self.helper.add(helper_share).map_err(refused)?;
        Ok(())
    }

    /// The helper's noisy release (the whole cohort is the minimum), unsharded and averaged.
    fn mean<R: chacha20::rand_core::CryptoRng>(
        mut self,
        config: &PrivatizerConfig,
        rng: &mut R,
    ) -> CliResult<Vec<f64>> {
        let count = self.helper.count();
        let released = self
            .helper
            .release(count, Some(&self.aggregators.noise), rng)
            .map_err(|e| e.to_string())?;
        let sum = unshard(&self.round, &self.leader.aggregate_share(), &released)
            .map_err(|e| e.to_string())?;
        Ok(mean_of_lattice_sum(&sum, count, config.granularity()))
    }
}

#[derive(Deserialize)]
struct Sample {
    candidates: Vec<String>,
}

/// The texts, their feature vectors φ (context-free: items ranked for a feed) and embeddings.
struct Corpus {
    features: Vec<Vec<f32>>,
    embeddings: Vec<Vec<f32>>,
    head: Vec<f32>,
}

fn corpus(args: &SimulateArgs) -> CliResult<(Corpus, usize)> {
    let texts: Vec<String> = match &args.corpus {
        Some(path) => {
            let bytes = crate::read_file(path)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
            let mut seen = std::collections::HashSet::new();
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && seen.insert(l.to_string()))
                .map(str::to_string)
                .collect()
        }
        None => {
            let samples: Vec<Sample> = serde_json::from_str(include_str!("../../www/samples.json"))
                .map_err(|e| format!("www/samples.json: {e}"))?;
            samples.into_iter().flat_map(|s| s.candidates).collect()
        }
    };
    let texts: Vec<String> = texts.into_iter().take(args.max_texts).collect();
    if texts.len() < 4 {
        return Err(format!(
            "the corpus needs at least 4 distinct texts, got {}",
            texts.len()
        ));
    }
    let model = RewardModel::bundled().map_err(|e| e.to_string())?;
    let features = model
        .features("", &texts)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|f| f.to_vector())
        .collect();
    let embedded = model.embed(&texts).map_err(|e| e.to_string())?;
    let embeddings = (0..texts.len()).map(|i| embedded.row(i).to_vec()).collect();
    let head = model.head().to_vector();
    Ok((
        Corpus {
            features,
            embeddings,
            head,
        },
        texts.len(),
    ))
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn gaussian(rng: &mut fastrand::Rng) -> f32 {
    // Box–Muller: the simulated users' tastes, not privacy noise.
    let (u1, u2) = (rng.f64().max(1e-300), rng.f64());
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct User {
    taste: Vec<f32>,
    learning: LocalLearningState,
    contributed: Vec<f32>,
    /// Indices into the training pairs, with the winner first.
    choices: Vec<(usize, usize)>,
}

/// One run: N users, target ε. Returns per-round rows.
#[allow(clippy::too_many_arguments)]
fn run(
    args: &SimulateArgs,
    corpus: &Corpus,
    train: &[(usize, usize)],
    held_out: &[(usize, usize)],
    population: &[f32],
    users: usize,
    epsilon: Option<f64>,
    aggregation: Aggregation,
    seed: u64,
    bar: &ProgressBar,
) -> CliResult<Value> {
    let dimension = corpus.head.len();
    let mut rng = fastrand::Rng::with_seed(seed ^ (users as u64).rotate_left(17));
    let mut noise_rng = chacha20::ChaCha20Rng::seed_from_u64(seed.wrapping_add(users as u64));
    // The noise that makes all rounds together cost exactly ε per user (zCDP adds up).
    let privatizer = match epsilon {
        Some(eps) => {
            let rho_round = max_rho_for_epsilon(eps, args.delta).map_err(|e| e.to_string())?
                / args.rounds as f64;
            // ρ = Δ²/(2σ²) with Δ = 2C (a whole contribution can change).
            let sigma = 2.0 * args.clip_norm / (2.0 * rho_round).sqrt();
            Some(
                PrivatizerConfig::new(args.clip_norm, args.granularity, sigma)
                    .map_err(|e| e.to_string())?,
            )
        }
        None => None,
    };
    let aggregators = match (&privatizer, aggregation) {
        (Some(config), Aggregation::Secure) => {
            let (a, k) = config.lattice_variance();
            Some(Aggregators {
                leader: HpkeKeyPair::generate(&mut noise_rng),
                helper: HpkeKeyPair::generate(&mut noise_rng),
                verify_key: VerifyKey::generate(&mut noise_rng),
                noise: DiscreteGaussian::from_dyadic_variance(a, k).map_err(|e| e.to_string())?,
            })
        }
        _ => None,
    };
    let learning = LearningConfig::default();
    let optimizer = ServerOptimizer::from_name(&args.optimizer)?;
    let optimizer = match args.server_lr {
        Some(lr) => optimizer.with_lr(lr),
        None => optimizer,
    };
    let mut optimizer_state = OptimizerState::fresh(optimizer.name(), dimension);
    let mut global: Vec<f64> = corpus.head.iter().map(|&x| f64::from(x)).collect();
    let mut population_users: Vec<User> = (0..users)
        .map(|_| {
            let taste: Vec<f32> = population
                .iter()
                .map(|m| {
                    m + args.heterogeneity * gaussian(&mut rng) / (population.len() as f32).sqrt()
                })
                .collect();
            User {
                taste: normalized(taste),
                learning: LocalLearningState::new("0", dimension),
                contributed: vec![0.0; dimension],
                choices: Vec::new(),
            }
        })
        .collect();

    let accuracy = |head: &[f64]| -> f64 {
        let head: Vec<f32> = head.iter().map(|&x| x as f32).collect();
        let agree = held_out
            .iter()
            .filter(|&&(a, b)| {
                let model = dot(&head, &corpus.features[a]) - dot(&head, &corpus.features[b]);
                let truth =
                    dot(population, &corpus.embeddings[a]) - dot(population, &corpus.embeddings[b]);
                (model > 0.0) == (truth > 0.0)
            })
            .count();
        agree as f64 / held_out.len() as f64
    };
    let mut rows = vec![json!({ "round": 0, "accuracy": accuracy(&global), "epsilon": 0.0 })];
    let mut spent_rho = 0.0;
    for round in 1..=args.rounds {
        let head: Vec<f32> = global.iter().map(|&x| x as f32).collect();
        let mut lattice_updates: Vec<Vec<i64>> = Vec::with_capacity(users);
        let mut secure = match (&aggregators, &privatizer) {
            (Some(a), Some(config)) => Some(SecureRoundSim::new(a, round, dimension, config)?),
            _ => None,
        };
        let mut plain_updates: Vec<(Vec<f64>, u64)> = Vec::with_capacity(users);
        for user in &mut population_users {
            // Rebase on the new global head (the delta stays: what this user taught applies on top).
            user.learning.base_version = round.to_string();
            for _ in 0..args.choices {
                let (a, b) = train[rng.usize(..train.len())];
                let margin = dot(&user.taste, &corpus.embeddings[a])
                    - dot(&user.taste, &corpus.embeddings[b]);
                let p_a = 1.0 / (1.0 + (-args.decisiveness * margin).exp());
                let pair = if rng.f32() < p_a { (a, b) } else { (b, a) };
                user.choices.push(pair);
                let example = |&(w, l): &(usize, usize)| Example {
                    id: 0,
                    x: corpus.features[w]
                        .iter()
                        .zip(&corpus.features[l])
                        .map(|(x, y)| x - y)
                        .collect(),
                    label: 1.0,
                    weight: 1.0,
                };
                let recent = &user.choices[user
                    .choices
                    .len()
                    .saturating_sub(learning.replay_capacity as usize)..];
                let replay: Vec<Example> = recent.iter().map(example).collect();
                learn(
                    &mut user.learning,
                    &head,
                    &example(&pair),
                    &replay,
                    &learning,
                );
            }
            // What is new since this user's last contribution: the device's rule (core).
            let update = unreleased_delta(&user.learning.delta, &user.contributed)
                .map_err(|e| e.to_string())?;
            user.contributed = user.learning.delta.clone();
            match (&privatizer, secure.as_mut()) {
                (Some(config), Some(secure)) => {
                    secure.contribute(&update, config, &mut noise_rng)?
                }
                (Some(config), None) => {
                    // The real client path: privatize → wire bytes → the server's decoder.
                    let private =
                        privatize(&update, config, &mut noise_rng).map_err(|e| e.to_string())?;
                    let bytes = private.to_bytes();
                    let received = decode_update(
                        &bytes,
                        &ExpectedRound {
                            config: config.clone(),
                            dimension,
                        },
                    )
                    .map_err(|e| format!("the server refused a simulated update: {e}"))?;
                    lattice_updates.push(received.values().to_vec());
                }
                (None, _) => {
                    let norm = update
                        .iter()
                        .map(|x| f64::from(*x).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let scale = if norm > args.clip_norm {
                        args.clip_norm / norm
                    } else {
                        1.0
                    };
                    plain_updates.push((update.iter().map(|&x| f64::from(x) * scale).collect(), 1));
                }
            }
            bar.inc(1);
        }
        let mean = match (&privatizer, secure) {
            (Some(config), Some(secure)) => {
                // One release of the noisy sum per round: the same ρ = (2C)²/2σ² per device.
                spent_rho += config.rho();
                secure.mean(config, &mut noise_rng)?
            }
            (Some(config), None) => {
                spent_rho += config.rho();
                fedavg_lattice(&lattice_updates, config.granularity()).map_err(|e| e.to_string())?
            }
            (None, _) => aggregate(&plain_updates),
        };
        global = optimizer.step(&global, &mean, &mut optimizer_state);
        let epsilon = if privatizer.is_some() {
            zcdp_to_approx_dp(spent_rho, args.delta).map_err(|e| e.to_string())?
        } else {
            f64::INFINITY
        };
        rows.push(json!({ "round": round, "accuracy": accuracy(&global), "epsilon": epsilon }));
    }
    Ok(json!({
        "users": users,
        "seed": seed,
        "targetEpsilon": epsilon,
        "aggregation": aggregation.name(),
        "noiseStddev": privatizer.as_ref().map(PrivatizerConfig::noise_stddev),
        "rhoPerRound": privatizer.as_ref().map(PrivatizerConfig::rho),
        "rounds": rows,
    }))
}

pub fn simulate(args: SimulateArgs) -> CliResult<Value> {
    if args.evaluate {
        return simulate_evaluation(&args);
    }
    if args.rounds == 0 || args.choices == 0 || args.users.contains(&0) {
        return Err("--rounds, --choices and --users must be at least 1".into());
    }
    if !(args.held_out > 0.0 && args.held_out < 1.0) {
        return Err("--held-out must be between 0 and 1".into());
    }
    let epsilons: Vec<Option<f64>> = args
        .epsilon
        .iter()
        .map(|e| match e.trim() {
            "inf" | "∞" | "none" => Ok(None),
            s => s
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x > 0.0)
                .map(Some)
                .ok_or_else(|| format!("--epsilon {s:?} is not a positive number or \"inf\"")),
        })
        .collect::<CliResult<_>>()?;
    if args.seeds == 0 {
        return Err("--seeds must be at least 1".into());
    }
    let (corpus, texts) = corpus(&args)?;
    let dimensions = corpus.embeddings[0].len();
    if args.aggregation.is_empty() {
        return Err("--aggregation needs local or secure".into());
    }
    let total: u64 =
        (args.users.iter().sum::<usize>() * args.rounds * epsilons.len() * args.aggregation.len())
            as u64
            * args.seeds;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} user-rounds ({eta})")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let mut runs = Vec::new();
    let (mut train_pairs, mut held_out_pairs) = (0, 0);
    for seed in (0..args.seeds).map(|k| args.seed.wrapping_add(k)) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let population = normalized((0..dimensions).map(|_| gaussian(&mut rng)).collect());
        let mut pairs: Vec<(usize, usize)> = (0..texts)
            .flat_map(|a| (a + 1..texts).map(move |b| (a, b)))
            .collect();
        rng.shuffle(&mut pairs);
        let held =
            ((pairs.len() as f64 * args.held_out).round() as usize).clamp(1, pairs.len() - 1);
        let (held_out, train) = pairs.split_at(held);
        (train_pairs, held_out_pairs) = (train.len(), held_out.len());
        for &users in &args.users {
            for &aggregation in &args.aggregation {
                for &epsilon in &epsilons {
                    bar.set_message(format!(
                        "seed {seed}, N = {users}, ε = {}, {}",
                        epsilon.map_or("∞".to_string(), |e| e.to_string()),
                        aggregation.name()
                    ));
                    runs.push(run(
                        &args,
                        &corpus,
                        train,
                        held_out,
                        &population,
                        users,
                        epsilon,
                        aggregation,
                        seed,
                        &bar,
                    )?);
                }
            }
        }
    }
    bar.finish_and_clear();
    let result = json!({
        "texts": texts,
        "seeds": args.seeds,
        "trainPairs": train_pairs,
        "heldOutPairs": held_out_pairs,
        "rounds": args.rounds,
        "choicesPerRound": args.choices,
        "clipNorm": args.clip_norm,
        "granularity": args.granularity,
        "delta": args.delta,
        "optimizer": args.optimizer,
        "runs": runs,
    });
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown(&result))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(result)
}

/// Final-round accuracy for each (N, ε), and the ratio to the non-private run of the same N.
fn markdown(result: &Value) -> String {
    let runs = result["runs"].as_array().cloned().unwrap_or_default();
    let final_accuracy = |r: &Value| {
        r["rounds"]
            .as_array()
            .and_then(|a| a.last())
            .map(|l| l["accuracy"].as_f64().unwrap_or(f64::NAN))
            .unwrap_or(f64::NAN)
    };
    let mut users: Vec<u64> = Vec::new();
    for n in runs.iter().filter_map(|r| r["users"].as_u64()) {
        if !users.contains(&n) {
            users.push(n);
        }
    }
    // Final accuracies of every seed's run for (N, ε, aggregation).
    let finals = |n: u64, eps: Option<f64>, aggregation: &str| -> Vec<f64> {
        runs.iter()
            .filter(|r| {
                r["users"].as_u64() == Some(n)
                    && r["targetEpsilon"].as_f64() == eps
                    && r["aggregation"].as_str() == Some(aggregation)
            })
            .map(final_accuracy)
            .collect()
    };
    let mut aggregations: Vec<String> = Vec::new();
    for a in runs.iter().filter_map(|r| r["aggregation"].as_str()) {
        if !aggregations.iter().any(|x| x == a) {
            aggregations.push(a.to_string());
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mean_sd = |v: &[f64]| {
        let m = mean(v);
        if v.len() < 2 {
            return format!("{m:.3}");
        }
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        format!("{m:.3} ± {:.3}", var.sqrt())
    };
    let mut epsilons: Vec<Option<f64>> = Vec::new();
    for r in &runs {
        let e = r["targetEpsilon"].as_f64();
        if !epsilons.contains(&e) {
            epsilons.push(e);
        }
    }
    let label = |e: &Option<f64>| e.map_or("∞".to_string(), |e| format!("{e}"));
    let mut out = String::new();
    out.push_str("| ε per user | ");
    out.push_str(
        &users
            .iter()
            .map(|n| format!("N = {n}"))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" |\n|---|");
    out.push_str(&"---|".repeat(users.len()));
    out.push('\n');
    let mut rows: Vec<(&str, &Option<f64>)> = Vec::new();
    for (i, a) in aggregations.iter().enumerate() {
        // ε = ∞ is the same plain average whatever the aggregation: one row.
        rows.extend(
            epsilons
                .iter()
                .filter(|e| e.is_some() || i == 0)
                .map(|e| (a.as_str(), e)),
        );
    }
    for (aggregation, e) in rows {
        match (e, aggregations.len()) {
            (Some(_), n) if n > 1 => out.push_str(&format!("| {} ({aggregation}) | ", label(e))),
            _ => out.push_str(&format!("| {} | ", label(e))),
        }
        let cells: Vec<String> = users
            .iter()
            .map(|&n| {
                let (private, plain) = (finals(n, *e, aggregation), finals(n, None, aggregation));
                match (private.is_empty(), plain.is_empty()) {
                    (false, false) if e.is_some() => format!(
                        "{} ({:.2}×)",
                        mean_sd(&private),
                        mean(&private) / mean(&plain)
                    ),
                    (false, _) => mean_sd(&private),
                    _ => "–".into(),
                }
            })
            .collect();
        out.push_str(&cells.join(" | "));
        out.push_str(" |\n");
    }
    let start = runs
        .first()
        .and_then(|r| r["rounds"][0]["accuracy"].as_f64())
        .unwrap_or(f64::NAN);
    out.push_str(&format!(
        "\nHeld-out pairwise accuracy of the global model after {} rounds (before any round, first seed: {start:.3}); {}in brackets the ratio to the non-private run with the same N. {} texts, {} training / {} held-out pairs, {} choices per user per round, C = {}, γ = {}, δ = {}, {}.\n",
        result["rounds"],
        match result["seeds"].as_u64() {
            Some(k) if k > 1 => format!("mean ± sd over {k} seeds (each its own taste, split, users and noise); "),
            _ => String::new(),
        },
        result["texts"], result["trainPairs"], result["heldOutPairs"], result["choicesPerRound"], result["clipNorm"], result["granularity"], result["delta"], result["optimizer"],
    ));
    out
}

/// `--evaluate`: the staged-rollout simulation ([`crate::evaluate_sim`]).
fn simulate_evaluation(args: &SimulateArgs) -> CliResult<Value> {
    if args.users.contains(&0) || args.runs == 0 || args.drops.is_empty() {
        return Err("--users, --runs and --drops need at least one user, run and drop".into());
    }
    if !(0.0..=1.0).contains(&args.base_rate)
        || args
            .drops
            .iter()
            .any(|d| !(0.0..=args.base_rate).contains(d))
    {
        return Err(
            "--base-rate must be in [0, 1] and every --drops value in [0, base rate]".into(),
        );
    }
    if !(args.canary_fraction > 0.0 && args.canary_fraction < 1.0) {
        return Err("--canary-fraction must be between 0 and 1".into());
    }
    let evaluation = crate::evaluate_sim::Evaluation {
        users: args.users.clone(),
        drops: args.drops.clone(),
        runs: args.runs,
        base_rate: args.base_rate,
        canary_fraction: args.canary_fraction,
        metric_epsilon: args.metric_epsilon,
        margin: args.margin,
        alpha: args.alpha,
        min_reports: args.min_reports,
        seed: args.seed,
        secure: args.secure_metrics.then(|| {
            let sigma = args
                .metric_noise
                .unwrap_or(std::f64::consts::SQRT_2 / args.metric_epsilon);
            (args.metric_batch.max(1), sigma)
        }),
    };
    let total = args.users.iter().sum::<usize>() as u64 * args.drops.len() as u64 * args.runs;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} reports ({eta})")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let result = crate::evaluate_sim::evaluate(&evaluation, &bar)?;
    bar.finish_and_clear();
    if let Some(path) = &args.markdown {
        std::fs::write(path, crate::evaluate_sim::markdown(&result))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(result)
}
