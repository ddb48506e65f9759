//! The one error type of the privacy layer.

use thiserror::Error;

/// Everything that can go wrong in `feedloop_privacy`. Messages say what to change.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PrivacyError {
    /// A configuration or call parameter is out of its documented range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name as spelled in the API.
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What the valid range is.
        reason: &'static str,
    },
    /// The update vector holds NaN or ±∞; the privatizer never guesses a replacement.
    #[error(
        "update value at index {index} is not finite ({value}); fix the learner before privatizing"
    )]
    NonFiniteInput {
        /// Index of the first non-finite value.
        index: usize,
        /// The value, formatted.
        value: String,
    },
    /// Empty update vectors carry nothing to privatize.
    #[error("update vector is empty")]
    EmptyUpdate,
    /// The update is longer than the privatizer supports.
    #[error("update dimension {dimension} exceeds the supported maximum {max}")]
    DimensionTooLarge {
        /// Requested dimension.
        dimension: usize,
        /// Supported maximum.
        max: usize,
    },
    /// γ is too coarse for this dimension: rounding alone could leave the clip ball.
    #[error(
        "granularity {granularity} is too coarse for dimension {dimension} at clip norm {clip_norm}: \
         use granularity <= {suggested_max_granularity} (recommended: clip_norm / (4 * sqrt(dimension)))"
    )]
    GranularityTooCoarse {
        /// γ from the config.
        granularity: f64,
        /// C from the config.
        clip_norm: f64,
        /// Update dimension.
        dimension: usize,
        /// A granularity that works for this dimension.
        suggested_max_granularity: f64,
    },
    /// The operating system could not supply randomness.
    #[error("OS randomness unavailable: {0}")]
    RandomnessUnavailable(String),
    /// Received bytes are not a valid update for the expected round.
    #[error("malformed update payload: {0}")]
    MalformedPayload(String),
    /// A budget policy refused the release; nothing was spent.
    #[error("release refused by the privacy policy: {0}")]
    BudgetRefused(String),
    /// Persisted state could not be read.
    #[error("invalid persisted state: {0}")]
    InvalidState(String),
}

/// `Result` with [`PrivacyError`].
pub type Result<T> = core::result::Result<T, PrivacyError>;

pub(crate) fn invalid(
    name: &'static str,
    value: impl core::fmt::Display,
    reason: &'static str,
) -> PrivacyError {
    PrivacyError::InvalidParameter {
        name,
        value: value.to_string(),
        reason,
    }
}
