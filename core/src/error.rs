//! One error type for the core; every variant says what went wrong in words a developer can act on.

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a readable ONNX model.
    #[error("malformed ONNX model: {0}")]
    MalformedModel(String),
    /// The model is valid ONNX but does not meet the feedloop model contract (docs/MODEL.md).
    #[error("model does not meet the feedloop contract: {0}")]
    Contract(String),
    /// tract could not plan or run the graph.
    #[error("model inference failed: {0}")]
    Inference(String),
    /// The caller passed something the operation cannot use.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// tract errors carry a context chain; keep all of it, it names the failing node.
pub(crate) fn inference(err: impl std::fmt::Display + std::fmt::Debug) -> Error {
    Error::Inference(format!("{err:#}"))
}
