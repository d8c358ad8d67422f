//! The progress API over HTTP: `POST /progress` (and `GET` for the list) on the TCP listener and on
//! the Unix socket.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::*;

/// The HTTP status a refused post is answered with.
pub fn http_status(e: &PostError) -> StatusCode {
    match e {
        PostError::Invalid(_) => StatusCode::BAD_REQUEST,
        PostError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        PostError::Full(_) => StatusCode::TOO_MANY_REQUESTS,
    }
}

fn router(store: ProgressStore) -> Router {
    Router::new()
        .route("/progress", post(handle_post).get(handle_list))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(store)
}

async fn handle_post(
    State(store): State<ProgressStore>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // A body over the limit is refused by the body-limit layer before it is read: answer in the same
    // JSON form as every other refusal, and count it.
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                store.rejected.fetch_add(1, Ordering::Relaxed);
                return error_response(status, &format!("body is more than the limit of {MAX_BODY_BYTES} bytes"));
            }
            return error_response(status, &rej.body_text());
        }
    };
    match store.post_json(&body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::debug!(error = %e, "progress post refused");
            error_response(http_status(&e), &e.to_string())
        }
    }
}

async fn handle_list(State(store): State<ProgressStore>) -> Response {
    let now = now_ms();
    let list: Vec<Value> = store
        .snapshot(now)
        .into_iter()
        .map(|(job, rank, p)| serde_json::json!({"job": job, "rank": rank, "progress": p}))
        .collect();
    ([(axum::http::header::CONTENT_TYPE, "application/json")], Value::Array(list).to_string()).into_response()
}

fn error_response(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "error": msg }).to_string();
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Bind the progress HTTP listener on `addr` (meant for `127.0.0.1`). Returns the bound address and
/// the server future, which runs until dropped; it needs a Tokio runtime, binding does not.
pub fn serve_http(
    store: ProgressStore,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let fut = async move {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(addr = %local, error = %e, "progress listener could not be registered");
                return;
            }
        };
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, router(store)).await {
            tracing::error!(addr = %local, error = %e, "progress HTTP server stopped");
        }
    };
    Ok((local, fut))
}

/// Bind the progress API on a Unix socket at `path` (same HTTP protocol as [`serve_http`]:
/// `curl --unix-socket PATH -d '{…}' http://localhost/progress`). A stale socket file left by a dead
/// agent is replaced; a live one, or any other kind of file, is an error. The socket is made
/// writable by every local user (mode 0666) so training processes of any user can post.
pub fn serve_unix(store: ProgressStore, path: &Path) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another process is serving {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let std_listener = std::os::unix::net::UnixListener::bind(path)?;
    std_listener.set_nonblocking(true)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    let shown: PathBuf = path.to_path_buf();
    Ok(async move {
        let listener = match tokio::net::UnixListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(path = %shown.display(), error = %e, "progress socket could not be registered");
                return;
            }
        };
        if let Err(e) = axum::serve(listener, router(store)).await {
            tracing::error!(path = %shown.display(), error = %e, "progress socket server stopped");
        }
    })
}
