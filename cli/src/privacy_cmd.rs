//! `feedloop privacy …` and `feedloop audit …`: the accountants, the ledger check and the empirical
//! audit of feedloop-privacy, for privacy teams. Every command prints JSON.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use feedloop_privacy::accounting::{
    ddgauss_epsilon, zcdp_to_approx_dp, DistributedDiscreteGaussian, PldAccountant, RdpAccountant,
};
use feedloop_privacy::audit::{audit_gaussian, audit_randomized_response};
use feedloop_privacy::ledger::Ledger;
use feedloop_privacy::randomized_response::RandomizedResponse;
use feedloop_privacy::rng::OsCsprng;
use feedloop_privacy::PrivatizerConfig;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::{print_json, read_file, CliResult};

#[derive(Subcommand)]
pub enum PrivacyCommand {
    /// (ε, δ) of the Poisson-subsampled Gaussian mechanism composed over steps (the server's
    /// central view of DP-FedAvg); prints {"epsilon", "order"}.
    Epsilon(EpsilonArgs),
    /// ε of the distributed discrete Gaussian (client noise shares summed under secure
    /// aggregation; Kairouz–Liu–Steinke 2021 with their τ): the guarantee that holds even if the
    /// aggregators collude. Prints {"epsilon", "order", "tau"}.
    Ddg(DdgArgs),
    /// ε at δ for a zCDP guarantee ρ (the tight Canonne–Kamath–Steinke conversion, as OpenDP).
    Zcdp(ZcdpArgs),
    /// Recompute a device ledger's totals, hashes and order; exit 1 on any inconsistency.
    VerifyLedger(VerifyLedgerArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Accountant {
    /// Rényi DP (dp-accounting `RdpAccountant`).
    Rdp,
    /// Privacy loss distributions (dp-accounting `PLDAccountant`, h = 1e-4): tighter, slower.
    Pld,
}

#[derive(Args)]
pub struct DdgArgs {
    /// Clients whose noise shares are summed (n).
    #[arg(long)]
    clients: u64,
    /// Each client's noise standard deviation, in model units.
    #[arg(long)]
    client_sigma: f64,
    /// Lattice granularity γ (model units per integer step).
    #[arg(long)]
    granularity: f64,
    /// Dimensions of the update.
    #[arg(long)]
    dimension: u64,
    /// L2 sensitivity of the sum in model units, before rounding (`l2_sens`; 2C for replace-one).
    #[arg(long)]
    l2_sensitivity: f64,
    /// Conditional randomized rounding's β in [0, 1) (`beta`).
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    /// Poisson sampling rate q in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    sampling_rate: f64,
    #[arg(long, default_value_t = 1)]
    steps: u64,
    #[arg(long)]
    delta: f64,
}

#[derive(Args)]
pub struct EpsilonArgs {
    /// σ / sensitivity.
    #[arg(long)]
    noise_multiplier: f64,
    /// Poisson sampling probability q in (0, 1].
    #[arg(long)]
    sampling_rate: f64,
    #[arg(long)]
    steps: u64,
    #[arg(long)]
    delta: f64,
    #[arg(long, value_enum, default_value = "rdp")]
    accountant: Accountant,
}

#[derive(Args)]
pub struct ZcdpArgs {
    #[arg(long)]
    rho: f64,
    #[arg(long)]
    delta: f64,
}

#[derive(Args)]
pub struct VerifyLedgerArgs {
    /// A ledger exported by `privacyReport()` / `Ledger::to_json` ("-" reads stdin).
    file: PathBuf,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Run the real privatizer (or randomized response) on two neighbouring inputs many times and
    /// report a Clopper–Pearson 95 % lower bound on ε next to the claimed ε.
    Mechanism(AuditArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MechanismKind {
    Gaussian,
    Rr,
}

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long, value_enum)]
    mechanism: MechanismKind,
    /// Runs per neighbouring input.
    #[arg(long, default_value_t = 100_000)]
    trials: u64,
    /// gaussian: clip norm C.
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// gaussian: lattice granularity γ.
    #[arg(long, default_value_t = 0.01)]
    granularity: f64,
    /// gaussian: noise standard deviation σ (model units).
    #[arg(long, default_value_t = 2.0)]
    sigma: f64,
    /// gaussian: dimensions of the update.
    #[arg(long, default_value_t = 1)]
    dimension: usize,
    /// δ of the claim and of the bound.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// rr: ε of randomized response.
    #[arg(long, default_value_t = 1.0)]
    epsilon: f64,
    /// Draw from ChaCha20 seeded with this instead of the OS generator, so that a privacy team
    /// can rerun an audit and get the same report.
    #[arg(long)]
    seed: Option<u64>,
}

pub fn privacy(command: PrivacyCommand) -> CliResult<Value> {
    match command {
        PrivacyCommand::Epsilon(args) => epsilon(args),
        PrivacyCommand::Ddg(args) => {
            let params = DistributedDiscreteGaussian {
                clients: args.clients,
                client_stddev: args.client_sigma,
                granularity: args.granularity,
                dimension: args.dimension,
                l2_sensitivity: args.l2_sensitivity,
                beta: args.beta,
                sampling_rate: args.sampling_rate,
                steps: args.steps,
            };
            let (epsilon, order) =
                ddgauss_epsilon(&params, args.delta).map_err(|e| e.to_string())?;
            Ok(
                json!({ "epsilon": epsilon, "order": order, "tau": params.tau(), "delta": args.delta }),
            )
        }
        PrivacyCommand::Zcdp(args) => {
            let epsilon = zcdp_to_approx_dp(args.rho, args.delta).map_err(|e| e.to_string())?;
            Ok(json!({ "epsilon": epsilon, "rho": args.rho, "delta": args.delta }))
        }
        PrivacyCommand::VerifyLedger(args) => verify_ledger(args),
    }
}

fn epsilon(args: EpsilonArgs) -> CliResult<Value> {
    if let Accountant::Pld = args.accountant {
        let mut accountant = PldAccountant::new();
        accountant
            .compose_poisson_subsampled_gaussian(
                args.noise_multiplier,
                args.sampling_rate,
                args.steps,
            )
            .map_err(|e| e.to_string())?;
        let epsilon = accountant.epsilon(args.delta).map_err(|e| e.to_string())?;
        return Ok(json!({ "epsilon": epsilon, "accountant": "pld" }));
    }
    let mut accountant = RdpAccountant::new();
    accountant
        .compose_poisson_subsampled_gaussian(args.noise_multiplier, args.sampling_rate, args.steps)
        .map_err(|e| e.to_string())?;
    let (epsilon, order) = accountant
        .epsilon_and_optimal_order(args.delta)
        .map_err(|e| e.to_string())?;
    Ok(json!({ "epsilon": epsilon, "order": order, "accountant": "rdp" }))
}

fn verify_ledger(args: VerifyLedgerArgs) -> CliResult<Value> {
    let bytes = read_file(&args.file)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", args.file.display()))?;
    let ledger = Ledger::from_json(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let issues = ledger.verify();
    let report = json!({
        "ok": issues.is_empty(),
        "entries": ledger.entries().len(),
        "delta": ledger.delta(),
        "total_rho": ledger.total_rho(),
        "issues": issues
            .iter()
            .map(|i| json!({ "index": i.index, "kind": format!("{:?}", i.kind) }))
            .collect::<Vec<_>>(),
    });
    if issues.is_empty() {
        Ok(report)
    } else {
        print_json(&report)?;
        Err(format!(
            "the ledger has {} inconsistenc{}",
            issues.len(),
            if issues.len() == 1 { "y" } else { "ies" }
        ))
    }
}

pub fn audit(command: AuditCommand) -> CliResult<Value> {
    let AuditCommand::Mechanism(args) = command;
    let (mut os, mut seeded);
    let rng: &mut dyn chacha20::rand_core::CryptoRng = match args.seed {
        Some(seed) => {
            seeded =
                <chacha20::ChaCha20Rng as chacha20::rand_core::SeedableRng>::seed_from_u64(seed);
            &mut seeded
        }
        None => {
            os = OsCsprng::new().map_err(|e| e.to_string())?;
            &mut os
        }
    };
    let bar = ProgressBar::new(2 * args.trials);
    bar.set_style(
        ProgressStyle::with_template("{spinner} auditing [{bar:40}] {pos}/{len} runs ({eta} left)")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = match args.mechanism {
        MechanismKind::Gaussian => {
            let config = PrivatizerConfig::new(args.clip, args.granularity, args.sigma)
                .map_err(|e| e.to_string())?;
            audit_gaussian(
                &config,
                args.dimension,
                args.delta,
                args.trials,
                rng,
                progress,
            )
        }
        MechanismKind::Rr => {
            let rr = RandomizedResponse::new(args.epsilon).map_err(|e| e.to_string())?;
            audit_randomized_response(&rr, args.trials, rng, progress)
        }
    }
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let mut value = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    value["consistent"] = json!(report.is_consistent());
    Ok(value)
}
