//! The actions API: `GET /api/v1/actions` (pending and taken actions, read token) and
//! `POST /api/v1/actions/drain`, `POST /api/v1/actions/resume` (a person's drain or resume; writes,
//! so they need the ingest/admin token). Bodies are `proto::remediation` JSON; errors
//! `{"error": "..."}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use faultline_proto::remediation::{DrainRequest, ResumeRequest};
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::http_error::ApiError;
use crate::remediate::runner::ManualError;

impl From<ManualError> for ApiError {
    fn from(e: ManualError) -> Self {
        let status = match &e {
            ManualError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ManualError::NoAdapter => StatusCode::SERVICE_UNAVAILABLE,
            ManualError::NotFound(_) => StatusCode::NOT_FOUND,
            ManualError::Conflict(_) => StatusCode::CONFLICT,
            ManualError::Scheduler(_) => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string())
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(format!("empty body: expected {what}")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not {what}: {e}")))
}

/// `GET /api/v1/actions`
pub async fn list_actions(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let st2 = st.clone();
    let view = tokio::task::spawn_blocking(move || st2.remediation.view(&*st2))
        .await
        .map_err(|e| ApiError::internal(format!("actions task failed: {e}")))??;
    Ok(Json(view).into_response())
}

/// `POST /api/v1/actions/drain` with `{"node": "...", "reason": "..."}`.
pub async fn post_drain(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.authorize(&headers)?;
    let req: DrainRequest = decode(&body, r#"{"node": "NAME", "reason": "why"}"#)?;
    let st2 = st.clone();
    let rec = tokio::task::spawn_blocking(move || st2.remediation.manual_drain(&*st2, &req))
        .await
        .map_err(|e| ApiError::internal(format!("drain task failed: {e}")))??;
    Ok(Json(rec).into_response())
}

/// `POST /api/v1/actions/resume` with `{"node": "...", "force": false}`.
pub async fn post_resume(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.authorize(&headers)?;
    let req: ResumeRequest = decode(&body, r#"{"node": "NAME", "force": false}"#)?;
    let st2 = st.clone();
    let rec = tokio::task::spawn_blocking(move || st2.remediation.manual_resume(&*st2, &req))
        .await
        .map_err(|e| ApiError::internal(format!("resume task failed: {e}")))??;
    Ok(Json(rec).into_response())
}
