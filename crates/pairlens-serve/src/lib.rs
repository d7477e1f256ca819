//! The pairlens viewer: an HTTP server with the page (embedded, no CDN) and a JSON API under
//! `/api/` for explaining an image against captions and querying the result by token span or
//! image box. Explanations are cached; span and box queries never recompute.
//!
//! Modules: [`state`] (model, images, explanation cache, computing), [`api`] (handlers and JSON
//! types), [`guard`] (what keeps other web pages out), [`jobs`] (the bounded job queue),
//! [`assets`] (the embedded files),
//! [`examples`] (the example images), [`error`] (errors as `{"error": …}`), [`cache`] (the LRU).

pub mod api;
pub mod assets;
pub mod cache;
pub mod error;
pub mod examples;
pub mod guard;
pub mod jobs;
pub mod state;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use error::ApiError;
pub use state::{AppState, Config};

/// All routes, behind [`guard::guard`]. Uploads are limited to `config.max_upload_bytes` (413
/// above); other JSON bodies to axum's default of 2 MB.
pub fn router(state: Arc<AppState>) -> Router {
    let upload_limit = state.config.max_upload_bytes;
    let access = state.config.access.clone();
    Router::new()
        .route("/", get(assets::index))
        .route("/index.html", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/style.css", get(assets::style_css))
        .route("/api/info", get(api::info))
        .route(
            "/api/images",
            post(api::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/images/{id}", get(api::image))
        .route("/api/explain", post(api::explain))
        .route("/api/span", post(api::span))
        .route("/api/box", post(api::bbox))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(access, guard::guard))
        .with_state(state)
}

/// Serve until Ctrl-C (or SIGTERM), then stop accepting and let open requests finish.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
