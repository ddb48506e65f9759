use thiserror::Error;

pub type Result<T, E = SecAggError> = std::result::Result<T, E>;

/// Every way a secure-aggregation step can refuse. Each maps to a 4xx on the server (the report or
/// request is bad) except [`SecAggError::Internal`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SecAggError {
    #[error("invalid secure round: {0}")]
    InvalidRound(String),
    #[error("the update does not fit the round: {0}")]
    Measurement(String),
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("the {role} share cannot be opened with this aggregator's key (wrong key, corrupted ciphertext or another round)")]
    Decrypt { role: &'static str },
    #[error("the report's validity proof does not verify: {0}")]
    InvalidProof(String),
    #[error("report {0} was already aggregated in this batch")]
    DuplicateReport(String),
    #[error(
        "the batch has {count} valid reports; at least {minimum} are needed before it is released"
    )]
    BelowMinimum { count: u64, minimum: u64 },
    #[error(
        "this batch was already released once; a second release would spend its privacy twice"
    )]
    AlreadyReleased,
    #[error("the two aggregate shares disagree: {0}")]
    ShareMismatch(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> SecAggError {
    SecAggError::Malformed {
        what,
        detail: detail.to_string(),
    }
}
