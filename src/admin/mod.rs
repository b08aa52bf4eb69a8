//! The admin server: health, readiness, metrics, the JSON API, the `/diag` page and the
//! git webhook, on `--admin-addr` (default `127.0.0.1:8877`).
//!
//! It only reads: the snapshot store (what is served, to which node, ACKed or rejected),
//! the pipeline's [`Status`] (which revision is applied, which was rejected and why) and
//! the [`Metrics`]. The one write is the webhook, which only asks the source to fetch now.
//! All inputs come in one [`State`], so `serve` wires it in one place and tests build it
//! from a store and a status they publish themselves.
//!
//! Routes:
//! - `GET /healthz`: the process answers (liveness).
//! - `GET /readyz`: 200 once a snapshot is being served, 503 before.
//! - `GET /metrics`: Prometheus (OpenMetrics text), see [`crate::metrics`].
//! - `GET /api/v1/{status,nodes,nodes/ID,revisions,resources,routes,clusters,diff}`: JSON,
//!   see [`api`].
//! - `GET /diag` (and `/`): the HTML diagnostics page, see [`diag`].
//! - `POST /webhook`: a push notification from the git host.
//!
//! Start reading at [`router`].

mod api;
mod diag;
mod html;
pub mod inventory;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::{self, Metrics};
use crate::pipeline::Status;
use crate::snapshot::Store;

/// The default `--admin-addr`: loopback only. The admin API shows the whole gateway
/// configuration and accepts webhooks, so exposing it is a choice the operator makes by
/// passing another address.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8877);

/// Largest webhook body accepted, in bytes: the verifier's own limit, enforced here
/// before the body is read whole.
pub const MAX_WEBHOOK_BYTES: usize = crate::source::webhook::MAX_BODY;

/// What the source made of a webhook request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Verified: the source fetches now (202).
    Triggered,
    /// Verified, but about something the source does not follow (another branch, a ping)
    /// (200, with the reason).
    Ignored(String),
    /// The signature or token is missing or wrong (401, with the reason).
    Unauthorized(String),
    /// The request is malformed (400, with the reason).
    BadRequest(String),
    /// The body is larger than the verifier reads (413, with the reason).
    TooLarge(String),
}

/// Verifies a webhook request (headers and raw body, as the signature covers the exact
/// bytes) and, when it is genuine, triggers a fetch.
pub type Webhook = Arc<dyn Fn(&HeaderMap, &Bytes) -> WebhookOutcome + Send + Sync>;

/// Everything the admin server reads.
#[derive(Clone)]
pub struct State {
    /// The snapshot store: snapshots, history, nodes, rollout.
    pub store: Arc<Store>,
    /// The pipeline's record of revisions: applied, last attempted, errors, history.
    pub status: watch::Receiver<Arc<Status>>,
    /// The metrics `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// The source's webhook handler; `None` when the source takes no webhooks (a
    /// directory, or git without a webhook secret): `POST /webhook` answers 404 then.
    pub webhook: Option<Webhook>,
    /// Decoded snapshots for `/diag` and the API, by version.
    inventory: Arc<inventory::Cache>,
}

/// Errors of the admin server.
///
/// [`Error::Bind`] needs a fix from the user (another address); [`Error::Serve`] may be
/// retried. The others are per-request answers: [`IntoResponse`] picks their status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The admin address could not be bound.
    #[error("cannot listen for the admin API on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped on an I/O error.
    #[error("admin server failed")]
    Serve(#[source] std::io::Error),
    /// A request named something that does not exist (a node, a snapshot version).
    #[error("{0}")]
    NotFound(String),
    /// A request's parameters are wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Nothing is served yet, so there is nothing to show.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside attache; logged, and answered with a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The result type of the admin server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// === impl State ===

impl State {
    /// The admin's view of a running attache.
    pub fn new(
        store: Arc<Store>,
        status: watch::Receiver<Arc<Status>>,
        metrics: Arc<Metrics>,
        webhook: Option<Webhook>,
    ) -> State {
        State {
            store,
            status,
            metrics,
            webhook,
            inventory: Arc::default(),
        }
    }

    /// The pipeline status as of now (a cheap `Arc` clone; the channel is not held).
    fn status(&self) -> Arc<Status> {
        self.status.borrow().clone()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("store", &self.store)
            .field("webhook", &self.webhook.is_some())
            .finish_non_exhaustive()
    }
}

// === impl Error ===

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Bind { .. } | Error::Serve(_) | Error::Internal(_) => {
                tracing::error!(error = %self, "admin request failed");
                let body = serde_json::json!({ "error": "internal error (see attache's log)" });
                return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response();
            }
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// The admin routes over `state`; no socket, so tests drive it with `oneshot`.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/diag") }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/diag", get(diag::page))
        .route("/webhook", post(webhook))
        .nest("/api/v1", api::router())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .layer(axum::middleware::from_fn(trace))
        .with_state(state)
}

/// Binds `addr` for [`serve`]; warns when it is reachable from other hosts.
///
/// # Errors
///
/// [`Error::Bind`] when the address is taken or not local.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "admin API reachable from other hosts: it shows the whole gateway configuration");
    }
    Ok(listener)
}

/// Serves the admin routes on `listener` until `shutdown` is cancelled.
///
/// # Errors
///
/// [`Error::Serve`] when the server fails.
///
/// # Cancellation
///
/// Cancelling `shutdown` stops accepting, lets requests in progress finish, and returns.
pub async fn serve(listener: TcpListener, state: State, shutdown: CancellationToken) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin server listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)
}

/// One span per request, named by its route (not its path, which holds ids).
async fn trace(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::debug_span!("admin", method = %request.method(), matched_path = %route);
    async move {
        let response = next.run(request).await;
        tracing::debug!(status = response.status().as_u16(), "admin request");
        response
    }
    .instrument(span)
    .await
}

async fn not_found() -> Error {
    Error::NotFound("no such admin endpoint; see /diag, /api/v1/status, /metrics".into())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(axum::extract::State(state): axum::extract::State<State>) -> Response {
    match state.store.stable() {
        Some(snapshot) => (
            StatusCode::OK,
            format!("ready: serving snapshot {}\n", snapshot.version()),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot to serve yet\n",
        )
            .into_response(),
    }
}

async fn metrics_text(
    axum::extract::State(state): axum::extract::State<State>,
) -> Result<Response> {
    let text = state
        .metrics
        .encode(&state.store)
        .map_err(|e| Error::Internal(format!("encoding metrics: {e}")))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    Ok(response)
}

async fn webhook(
    axum::extract::State(state): axum::extract::State<State>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let Some(handler) = &state.webhook else {
        return Err(Error::NotFound(
            "this attache takes no webhooks: its source is not a git repository with a webhook secret".into(),
        ));
    };
    let outcome = handler(&headers, &body);
    tracing::info!(?outcome, bytes = body.len(), "webhook");
    Ok(match outcome {
        WebhookOutcome::Triggered => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "result": "fetch triggered" })),
        )
            .into_response(),
        WebhookOutcome::Ignored(reason) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "result": "ignored", "reason": reason })),
        )
            .into_response(),
        WebhookOutcome::Unauthorized(reason) => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": reason })),
        )
            .into_response(),
        WebhookOutcome::TooLarge(reason) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(serde_json::json!({ "error": reason })),
        )
            .into_response(),
        WebhookOutcome::BadRequest(reason) => return Err(Error::BadRequest(reason)),
    })
}

#[cfg(test)]
mod tests;
