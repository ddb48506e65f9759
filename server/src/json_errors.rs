//! One error body for every error answer. The handlers' errors are already the JSON
//! [`crate::Error`]; what is not comes from the layers around them — axum's extractor rejections
//! (a path segment that is not UTF-8), tower-http's timeout (408) — and is rewritten here into the
//! same `{"error": {"code", "message"}}`. Request heads too large for the API are refused here
//! with that body too, well below hyper's own limits, whose refusals (431/414 from hyper's parser,
//! before any service runs) cannot carry a body.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use feedloop_core::protocol::ErrorBody;

/// The longest request target (path and query) the API takes; longer: 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry; more: 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Error texts longer than this are cut (they are axum's one-line rejections).
const MAX_MESSAGE_BYTES: usize = 1024;

/// The stable code for an error status that no handler chose.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_server_error() => "internal",
        _ => "client_error",
    }
}

fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody::new(code_for(status), message))).into_response()
}

/// `map_response` middleware: an error answer that is not JSON becomes the JSON error body (its
/// text, when it had one, is the message; server errors say nothing more than that).
pub async fn json_error_bodies(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE_BYTES * 4)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() || status.is_server_error() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        truncate(text, MAX_MESSAGE_BYTES)
    };
    let mut fixed = error_response(status, message);
    // Keep what the layer said besides the body (Allow, Retry-After, CORS, request id).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fixed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fixed
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// `from_fn` middleware: refuses request heads larger than the API needs (414, 431) with the
/// JSON error body.
pub async fn limit_request_head(request: Request<Body>, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return error_response(
            StatusCode::URI_TOO_LONG,
            format!("the request target has {uri_bytes} bytes; at most {MAX_URI_BYTES}"),
        );
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers have {header_bytes} bytes; at most {MAX_HEADER_BYTES}"),
        );
    }
    next.run(request).await
}
