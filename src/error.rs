//! The browser layer's one error type. Every failure becomes a real JS `Error` whose message
//! starts with "feedloop: " and says what is wrong — here, in one place ([`From<Error> for
//! JsValue`]), never a panic.

use wasm_bindgen::prelude::*;

/// What a fallible export returns.
pub type JsResult<T> = Result<T, Error>;

#[derive(Debug)]
pub enum Error {
    /// Input from the page that cannot be used (a wrong type, an unknown field, a bad option).
    Invalid(String),
    /// A decision of the core refused (model contract, feedback, privacy policy, budget).
    Core(feedloop_core::Error),
    /// IndexedDB failed; what was in memory is kept.
    Storage(String),
}

/// `Error::Invalid` with this message.
pub fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

/// A core refusal of the page's own input, worded as the page's mistake (no "invalid input:"
/// prefix): for options and catalogs the core validates on the layer's behalf.
pub fn page_input(e: feedloop_core::Error) -> Error {
    match e {
        feedloop_core::Error::InvalidInput(message) => Error::Invalid(message),
        other => Error::Core(other),
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(message) => write!(f, "feedloop: {message}"),
            Self::Core(e) => write!(f, "feedloop: {e}"),
            Self::Storage(message) => write!(f, "feedloop: storage: {message}"),
        }
    }
}

impl From<feedloop_core::Error> for Error {
    fn from(e: feedloop_core::Error) -> Self {
        Self::Core(e)
    }
}

impl From<Error> for JsValue {
    fn from(e: Error) -> Self {
        JsError::new(&e.to_string()).into()
    }
}
