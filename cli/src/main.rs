//! `feedloop` — the command line over feedloop-core.
//!
//! Every command prints JSON on stdout; errors go to stderr with a non-zero exit code.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod evaluate_sim;
mod loadtest_cmd;
mod privacy_cmd;
mod serve_cmd;
mod simulate_cmd;

use clap::{Args, Parser, Subcommand};
use feedloop_core::onnx_runner::{run_onnx, NamedTensor, TensorData};
use feedloop_core::RewardModel;
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Parser)]
#[command(
    name = "feedloop",
    version,
    about = "Privacy-preserving on-device ranking: the feedloop CLI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rank candidate texts for a context with the reward model; prints the ranking as JSON.
    Rank(RankArgs),
    /// Inspect or run ONNX models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Privacy accounting and ledger checks.
    #[command(subcommand)]
    Privacy(privacy_cmd::PrivacyCommand),
    /// Empirical privacy audits of the real mechanisms.
    #[command(subcommand)]
    Audit(privacy_cmd::AuditCommand),
    /// Run the federated averaging server (feedloop-server).
    Serve(Box<serve_cmd::ServeArgs>),
    /// Drive running servers with concurrent simulated devices; report throughput, errors,
    /// latencies and stalls, and verify every acknowledged update is stored.
    Loadtest(Box<loadtest_cmd::LoadtestArgs>),
    /// Simulate federated rounds with simulated users: accuracy against privacy (ε).
    Simulate(Box<simulate_cmd::SimulateArgs>),
}

#[derive(Args)]
struct RankArgs {
    /// The context (a question, a query, a prompt).
    #[arg(long)]
    context: String,
    /// A file with one candidate per line ("-" reads stdin). Empty lines are skipped.
    #[arg(long)]
    candidates: PathBuf,
    /// A feedloop model (ONNX meeting the contract in docs/MODEL.md); the bundled default if absent.
    #[arg(long)]
    model: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Run any ONNX model through tract on inputs from a JSON file; prints every graph output.
    Run(ModelRunArgs),
    /// Check a model against the feedloop contract and print what it declares.
    Info(ModelInfoArgs),
}

#[derive(Args)]
struct ModelRunArgs {
    /// The ONNX file.
    #[arg(long)]
    model: PathBuf,
    /// JSON: {"<input>": {"dtype": "float32"|"int64", "shape": [...], "data": [...]}}
    #[arg(long)]
    inputs: PathBuf,
}

#[derive(Args)]
struct ModelInfoArgs {
    /// A feedloop model; the bundled default if absent.
    #[arg(long)]
    model: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rank(args) => rank(args),
        Command::Model(ModelCommand::Run(args)) => model_run(args),
        Command::Model(ModelCommand::Info(args)) => model_info(args),
        Command::Privacy(command) => privacy_cmd::privacy(command),
        Command::Audit(command) => privacy_cmd::audit(command),
        Command::Serve(args) => serve_cmd::serve(*args),
        Command::Loadtest(args) => loadtest_cmd::loadtest(*args),
        Command::Simulate(args) => simulate_cmd::simulate(*args),
    };
    match result.and_then(|value| print_json(&value)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("feedloop: {message}");
            ExitCode::FAILURE
        }
    }
}

type CliResult<T> = Result<T, String>;

fn print_json(value: &Value) -> CliResult<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| e.to_string())?;
    writeln!(out).map_err(|e| e.to_string())
}

fn read_file(path: &Path) -> CliResult<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        return Ok(buf);
    }
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn load_model(path: Option<&Path>) -> CliResult<RewardModel> {
    match path {
        Some(p) => {
            RewardModel::from_bytes(&read_file(p)?).map_err(|e| format!("{}: {e}", p.display()))
        }
        None => RewardModel::bundled().map_err(|e| e.to_string()),
    }
}

fn rank(args: RankArgs) -> CliResult<Value> {
    let model = load_model(args.model.as_deref())?;
    let bytes = read_file(&args.candidates)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{} is not UTF-8 text", args.candidates.display()))?;
    let candidates: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let ranking = model
        .rank(&args.context, &candidates)
        .map_err(|e| e.to_string())?;
    let ranking: Vec<Value> = ranking
        .iter()
        .map(|r| json!({"index": r.index, "score": r.score, "text": candidates[r.index]}))
        .collect();
    Ok(json!({ "context": args.context, "ranking": ranking }))
}

fn model_info(args: ModelInfoArgs) -> CliResult<Value> {
    let model = load_model(args.model.as_deref())?;
    serde_json::to_value(model.info()).map_err(|e| e.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSpec {
    dtype: String,
    shape: Vec<usize>,
    data: Vec<Value>,
}

fn model_run(args: ModelRunArgs) -> CliResult<Value> {
    let model = read_file(&args.model)?;
    let json = read_file(&args.inputs)?;
    let specs: Map<String, Value> = serde_json::from_slice(&json).map_err(|e| {
        format!(
            "{}: not a JSON object of inputs: {e}",
            args.inputs.display()
        )
    })?;
    let mut inputs = Vec::with_capacity(specs.len());
    for (name, spec) in specs {
        let spec: InputSpec = serde_json::from_value(spec).map_err(|e| {
            format!("input `{name}`: expected {{\"dtype\", \"shape\", \"data\"}}: {e}")
        })?;
        inputs.push(NamedTensor {
            data: parse_data(&name, &spec)?,
            name,
            shape: spec.shape,
        });
    }
    let outputs = run_onnx(&model, &inputs).map_err(|e| e.to_string())?;
    let mut map = Map::new();
    for output in outputs {
        map.insert(
            output.name.clone(),
            json!({ "shape": output.shape, "data": output.data }),
        );
    }
    Ok(json!({ "outputs": map }))
}

fn parse_data(name: &str, spec: &InputSpec) -> CliResult<TensorData> {
    let bad =
        |i: usize, v: &Value| format!("input `{name}`: data[{i}] = {v} is not a {}", spec.dtype);
    match spec.dtype.as_str() {
        "float32" => spec
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_f64().map(|x| x as f32).ok_or_else(|| bad(i, v)))
            .collect::<CliResult<_>>()
            .map(TensorData::F32),
        "int64" => spec
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_i64().ok_or_else(|| bad(i, v)))
            .collect::<CliResult<_>>()
            .map(TensorData::I64),
        other => Err(format!(
            "input `{name}`: dtype {other:?} is not supported (use \"float32\" or \"int64\")"
        )),
    }
}
