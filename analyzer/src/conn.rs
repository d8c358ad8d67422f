//! Connection handling for the analyzer's listener: a cap on connections served at once, a deadline
//! for request headers (which also closes idle keep-alive connections), graceful shutdown, and JSON
//! for every error answer, including the ones the HTTP layer writes itself.
//!
//! `axum::serve` has no header timeout, so a client that sends half its headers and stops held its
//! socket for as long as it liked; a few hundred of them used up the file descriptors.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tracing::{debug, info, warn};

use crate::limits::LimitsConfig;

/// How long shutdown waits for requests in flight before it closes their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// File descriptors kept free under the connection cap for the store, logs and outgoing
/// notifications.
const RESERVED_FDS: u64 = 64;
/// Largest plain-text error body rewrapped as JSON; longer ones are cut.
const MAX_TEXT_ERROR: usize = 4096;

/// The connection cap actually used: the configured one, lowered to fit the process's open-file
/// limit so that the cap, not `accept` failing with EMFILE, is what a flood meets.
pub fn connection_cap(configured: usize) -> usize {
    // SAFETY: getrlimit only writes the struct it is given.
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok || lim.rlim_cur == libc::RLIM_INFINITY {
        return configured.max(1);
    }
    let fit = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(16);
    configured.min(usize::try_from(fit).unwrap_or(usize::MAX)).max(1)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    cfg: &LimitsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let cap = connection_cap(cfg.max_connections);
    if cap < cfg.max_connections {
        warn!(
            configured = cfg.max_connections,
            used = cap,
            "limits.max_connections lowered to fit the open-file limit"
        );
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(cfg.header_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(cfg.header_timeout));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut full_logged = false;
    tokio::pin!(shutdown);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => {
                full_logged = false;
                p
            }
            Err(_) => {
                if !full_logged {
                    warn!(max = cap, "connection cap reached; new connections wait until one closes");
                    full_logged = true;
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => break,
        };
        let svc = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(peer = ?peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    info!("no longer accepting connections");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        warn!("requests still in flight after the shutdown grace period; closing them");
    }
    Ok(())
}

/// Middleware: an error answer that is not JSON (a path the router could not decode, like `%FF`
/// in an id) is rewritten as `{"error": "..."}` so that every client sees one error shape.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_TEXT_ERROR).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let text = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let body = serde_json::json!({ "error": text }).to_string();
    parts.headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
