//! The shell on top: the router with its middleware, the HTTP server and the job workers, and
//! the graceful shutdown that stops them in order. Only `main.rs` (and tests) import it; the
//! shared state lives in `state.rs`.
//!
//! `Application::build` does everything that can fail at start (database, migrations, port),
//! so `run_until_stopped` only serves. Tests call the same two functions on a random port.

use std::{any::Any, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_scalar::{Scalar, Servable};

pub use crate::state::{AppState, JSON_BODY_LIMIT};
use crate::{
    config::Config,
    error::{AppError, problem_response},
    http::{self, openapi::ApiDoc},
    telemetry, workers,
};

pub struct Application {
    listener: Option<TcpListener>,
    state: AppState,
}

impl Application {
    /// Connects to everything and binds the port (0 picks a free one). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = if config.run_mode.runs_http() {
            let addr = SocketAddr::new(config.bind_address, config.port);
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            )
        } else {
            None
        };
        let state = AppState::build(config).await?;
        Ok(Self { listener, state })
    }

    /// The bound port, when this process serves HTTP.
    pub fn port(&self) -> Option<u16> {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops accepting connections, lets in-flight
    /// requests and the workers' current jobs finish (up to `SHUTDOWN_GRACE_SECONDS`), and
    /// returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = self.state;
        let grace = state.config.shutdown_grace;
        let workers = if state.config.run_mode.runs_workers() {
            Some(workers::start(state.clone(), shutdown.clone()))
        } else {
            None
        };
        let server = self.listener.map(|listener| {
            // One pub/sub subscription per serving instance feeds its websockets.
            tokio::spawn(state.hub.clone().run(state.redis.clone()));
            metrics::gauge!("ticketing_websocket_connections").set(0.0);
            let app = router(state.clone());
            let token = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
            })
        });
        tracing::info!(mode = ?state.config.run_mode, "started");

        shutdown.cancelled().await;
        tracing::info!(grace_seconds = grace.as_secs(), "shutting down");
        // Websockets never end by themselves: tell them to close (1001) so the server drains.
        state.hub.shutdown.cancel();
        let drain = async {
            if let Some(server) = server {
                match server.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
                    Err(e) => tracing::error!(error = %e, "HTTP server task panicked"),
                }
            }
            if let Some(workers) = workers
                && let Err(e) = workers.await
            {
                tracing::error!(error = %e, "workers task failed");
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("grace period over; exiting with work still in flight");
        }
        state.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The whole HTTP surface: API routes, documentation, and the middleware every route shares.
pub fn router(state: AppState) -> Router {
    let (api_router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(http::ops::router())
        .merge(http::auth::router(state.clone()))
        .merge(http::users::router())
        .merge(http::events::router())
        .merge(http::payments::router())
        .merge(http::tickets::router())
        .merge(http::ws::router())
        .merge(http::attendees::router())
        .merge(http::door::router())
        .split_for_parts();
    let mut openapi = openapi;
    http::openapi::complete(&mut openapi);
    let openapi_json = Arc::new(openapi.to_json().unwrap_or_default());

    let router = api_router
        .route(
            "/openapi.json",
            get(move || {
                let json = openapi_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json.as_str().to_owned(),
                    )
                }
            }),
        )
        // Scalar's page inlines the document; its viewer script loads from a CDN in the
        // browser, nothing is downloaded at build time.
        .merge(Scalar::with_url("/docs", openapi).title("Ticketing API"))
        .merge(http::ops::dev_router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Posters stored on local disk (no Cloudinary configured) are served from here, never
    // sniffed into another content type; with Cloudinary nothing is served from disk.
    let router = if state.config.cloudinary.is_none() {
        router.nest_service(
            "/uploads",
            ServiceBuilder::new()
                .layer(SetResponseHeaderLayer::overriding(
                    axum::http::header::X_CONTENT_TYPE_OPTIONS,
                    axum::http::HeaderValue::from_static("nosniff"),
                ))
                .service(tower_http::services::ServeDir::new(
                    &state.config.upload_dir,
                )),
        )
    } else {
        router
    };
    let timeout = state.config.request_timeout;
    with_middleware(router, timeout).with_state(state)
}

/// The middleware every route shares, outermost first: request id (kept when the client
/// sent a sane one), HTTP metrics and the request's span, panic → 500 problem, the request
/// timeout, and the body size limit. Public so tests can wrap their own routes with it.
pub fn with_middleware<S>(router: Router<S>, request_timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(telemetry::sanitize_request_id))
            .layer(SetRequestIdLayer::x_request_id(telemetry::MakeRequestId))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(middleware::from_fn(telemetry::track_http))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(middleware::from_fn_with_state(request_timeout, timeout))
            .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT)),
    )
}

async fn not_found() -> AppError {
    AppError::not_found("This route")
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// Abandons a request that runs longer than `REQUEST_TIMEOUT_SECONDS` with a 503 problem.
async fn timeout(State(limit): State<Duration>, mut req: Request, next: Next) -> Response {
    // Handlers that call out (the purchase) plan against the same deadline.
    req.extensions_mut().insert(http::extract::RequestDeadline(
        std::time::Instant::now() + limit,
    ));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => AppError::Timeout.into_response(),
    }
}

/// A panic in a handler becomes a logged 500 problem; the connection stays usable.
fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let message = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "handler panicked");
    let error = AppError::Internal(anyhow::anyhow!("panic: {message}"));
    problem_response(StatusCode::INTERNAL_SERVER_ERROR, &error.to_problem())
}
