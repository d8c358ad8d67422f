//! What every HTTP handler answers with: `ApiError` (a JSON `{"error": ...}` with its status) and
//! the `Accept` header read for content negotiation.

use axum::http::header::{ACCEPT, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::error;

use crate::auth::AuthError;
use crate::store::StoreError;

/// A JSON error answer: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (seconds) with a 429.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after_s: None }
    }
    /// 401 for a missing or unknown token, 403 for a known token used for something it may not do.
    pub fn auth(e: &AuthError) -> Self {
        let status = if e.is_forbidden() { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        Self::new(status, e.to_string())
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(ErrorBody { error: &self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "store read failed");
        Self::internal(format!("store: {e}"))
    }
}

/// Whether the metrics request asks for OpenMetrics.
pub(crate) fn accept_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(ACCEPT).and_then(|v| v.to_str().ok())
}
