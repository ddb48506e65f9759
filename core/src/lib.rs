//! feedloop's pure core: tokenizer, the ONNX reward model (run by tract), the reward head, feedback
//! events, on-device learning, and contributions (the privacy boundary, via `feedloop-privacy`).
//!
//! No wasm-bindgen, web-sys or js-sys here: the browser layer (`src/`), the CLI and the server use this
//! crate, and everything in it is tested natively.
//!
//! ```no_run
//! # fn main() -> feedloop_core::Result<()> {
//! let bytes = std::fs::read("models/feedloop-default.onnx").unwrap();
//! let model = feedloop_core::RewardModel::from_bytes(&bytes)?;
//! let ranking = model.rank("how do I reset my password?", &["Open Settings › Security.", "Bananas are yellow."])?;
//! assert_eq!(ranking[0].index, 0);
//! # Ok(()) }
//! ```

pub mod contract;
pub mod contribution;
mod dequantize;
pub mod error;
pub mod feedback;
pub mod feedback_loop;
pub mod feedback_volume;
pub mod head;
pub mod learning;
pub mod lexical;
pub mod metric_reports;
pub mod model;
pub mod onnx_runner;
pub mod outbox;
pub mod privacy_report;
pub mod protocol;
pub mod rollout;
pub mod secure_metrics;
pub mod segments;
pub mod tokenizer;

pub use error::{Error, Result};
pub use feedback::{FeedbackEvent, FeedbackWeights, FlagCategory, RawFeedback, Signal};
pub use feedback_loop::{
    Activity, Candidate, CandidateIds, Explanation, FeedbackLoop, FeedbackOutcome, PersonalState,
    RankedCandidate,
};
pub use head::{PairFeatures, RewardHead};
pub use learning::{Example, LearningConfig, LocalLearningState};
pub use model::{rank_scores, Embeddings, ModelInfo, Ranked, RewardModel};
pub use tokenizer::{TokenizerConfig, WordPieceTokenizer};

/// The default model's bytes (`models/feedloop-default.onnx`).
#[cfg(feature = "bundled-model")]
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../../models/feedloop-default.onnx");
