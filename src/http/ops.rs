//! Operations endpoints: liveness, readiness, Prometheus metrics and the development outbox.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{AppError, AppResult},
    state::AppState,
};

/// The development pages: `/dev/outbox` and the sandbox checkout, behind `dev_only`.
pub fn dev_router(state: AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/dev/outbox", axum::routing::get(dev_outbox))
        .merge(super::sandbox::router())
        .route_layer(axum::middleware::from_fn_with_state(state, dev_only))
}

/// `config::DevPages`: none in production; with `APP_ENV` unset, loopback clients only (the
/// address as per-address limits see it, so behind a trusted proxy a remote client is
/// remote); with `APP_ENV=development`, everyone. Refused is 404, like a route that is not
/// there.
async fn dev_only(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use crate::config::DevPages;
    let allowed = match state.config.dev_pages {
        DevPages::Off => false,
        DevPages::Open => true,
        DevPages::LoopbackOnly => {
            let peer = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0);
            super::extract::client_ip(req.headers(), peer, state.config.trust_forwarded_for)
                .is_some_and(|ip| ip.to_canonical().is_loopback())
        }
    };
    if !allowed {
        return AppError::not_found("This route").into_response();
    }
    next.run(req).await
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// Each dependency: `ok`, or what went wrong.
    pub checks: HealthChecks,
}

#[derive(Serialize, ToSchema)]
pub struct HealthChecks {
    pub postgres: String,
    pub redis: String,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process is running")))]
async fn live() -> StatusCode {
    StatusCode::OK
}

/// 200 when PostgreSQL and Redis answer; 503 naming what is down.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = Health),
        (status = 503, description = "A dependency is down; `checks` says which", body = Health),
    ))]
async fn ready(State(state): State<AppState>) -> Response {
    const BUDGET: Duration = Duration::from_secs(2);
    let pg = async {
        match tokio::time::timeout(
            BUDGET,
            sqlx::query_scalar!("SELECT 1 AS one").fetch_one(&state.db),
        )
        .await
        {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => {
                // The cause stays in the logs: error text is for operators, not for anyone
                // who can reach the health route.
                tracing::warn!(error = %e, "readiness: PostgreSQL is down");
                "down".to_owned()
            }
            Err(_) => "timeout".to_owned(),
        }
    };
    let redis = async {
        match tokio::time::timeout(BUDGET, state.redis.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: Redis is down");
                "down".to_owned()
            }
            Err(_) => "timeout".to_owned(),
        }
    };
    let (postgres, redis) = tokio::join!(pg, redis);
    let healthy = postgres == "ok" && redis == "ok";
    let status = if healthy {
        StatusCode::OK
    } else {
        tracing::warn!(%postgres, %redis, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if healthy { "ok" } else { "unavailable" },
        checks: HealthChecks { postgres, redis },
    };
    let mut response = (status, Json(body)).into_response();
    if !healthy {
        // Like every 503 of this service: when to ask again.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// Prometheus text exposition of every `ticketing_*` series. With `METRICS_TOKEN` set, only
/// for `Authorization: Bearer <METRICS_TOKEN>` (compared in constant time).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "`METRICS_TOKEN` is set and the request does not carry it"),
    ))]
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let expected = secrecy::ExposeSecret::expose_secret(token);
        if !crate::security::signing::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
            return AppError::not_authenticated("/metrics needs the metrics token.")
                .into_response();
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Development only: the last 100 mails the outbox stand-in "sent", newest first.
async fn dev_outbox(State(state): State<AppState>) -> AppResult<Response> {
    if state.config.is_production() || state.config.resend.is_some() {
        return Err(AppError::not_found("This route"));
    }
    let entries = crate::service::notifications::dev_outbox(&state).await?;
    Ok(Json(serde_json::json!({ "items": entries })).into_response())
}
